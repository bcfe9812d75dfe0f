// The type generator: the committed src/protocol.generated.ts matches the daemon's schema, and the
// generator maps the schema constructs it meets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '../../..');
const gen = join(root, 'scripts/gen-types.mjs');
const schema = join(root, '../../protocol/agentd.schema.json');

test('src/protocol.generated.ts is up to date with protocol/agentd.schema.json', { skip: !existsSync(schema) && 'no schema' }, () => {
  const r = spawnSync(process.execPath, [gen, '--check'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

test('the generator maps refs, unions, enums, consts, optional fields, maps and the methods table', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gen-types-'));
  try {
    const s = {
      $defs: {
        A: { type: 'object', properties: { id: { type: 'string' }, n: { type: ['integer', 'null'] }, kind: { const: 'a' } }, required: ['id', 'kind'], description: 'An A.' },
        B: { type: 'object', properties: { tags: { type: 'array', items: { type: 'string' } }, meta: { type: 'object', additionalProperties: { type: 'number' } } } },
        U: { anyOf: [{ $ref: '#/$defs/A' }, { $ref: '#/$defs/B' }] },
        E: { enum: ['x', 'y'] },
      },
      methods: {
        'a/get': { sender: 'editor', kind: 'request', params: { $ref: '#/$defs/B' }, result: { anyOf: [{ $ref: '#/$defs/A' }, { type: 'null' }] } },
        'a/changed': { sender: 'agentd', kind: 'notification', params: { $ref: '#/$defs/A' } },
        stop: { sender: 'editor', kind: 'request', result: { type: 'null' } },
      },
    };
    writeFileSync(join(dir, 's.json'), JSON.stringify(s));
    execFileSync(process.execPath, [gen, '--schema', join(dir, 's.json'), '--out', join(dir, 'out.ts')]);
    const out = readFileSync(join(dir, 'out.ts'), 'utf8');
    assert.match(out, /\/\*\* An A\. \*\/\nexport interface A \{\n  id: string;\n  n\?: number \| null;\n  kind: "a";\n\}/);
    assert.match(out, /tags\?: string\[\];/);
    assert.match(out, /meta\?: \{\n    \[key: string\]: number;\n  \};/);
    assert.match(out, /export type U = A \| B;/);
    assert.match(out, /export type E = "x" \| "y";/);
    assert.match(out, /"a\/get": \{\n    kind: "request";\n    sender: "editor";\n    params: B;\n    result: A \| null;\n  \};/);
    assert.match(out, /"a\/changed": \{\n    kind: "notification";\n    sender: "agentd";\n    params: A;\n    result: void;/);
    assert.match(out, /"stop": \{\n    kind: "request";\n    sender: "editor";\n    params: undefined;\n    result: null;/);
    // Stale detection.
    const ok = spawnSync(process.execPath, [gen, '--schema', join(dir, 's.json'), '--out', join(dir, 'out.ts'), '--check'], { encoding: 'utf8' });
    assert.equal(ok.status, 0);
    writeFileSync(join(dir, 'out.ts'), out + '// edited\n');
    const stale = spawnSync(process.execPath, [gen, '--schema', join(dir, 's.json'), '--out', join(dir, 'out.ts'), '--check'], { encoding: 'utf8' });
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /stale/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
