#!/usr/bin/env node
// Generates src/protocol.generated.ts from the daemon's JSON Schema
// (protocol/agentd.schema.json at the repository root, generated from agentd's attrs classes).
//
//   node scripts/gen-types.mjs            write src/protocol.generated.ts
//   node scripts/gen-types.mjs --check    exit 1 when the committed file is stale
//   node scripts/gen-types.mjs --schema <file> [--out <file>]
//
// A small generator of our own rather than json-schema-to-typescript: the schema also carries a
// `methods` table (method name -> params / result types) which becomes the `AgentdMethods`
// interface that the client is typed by, and the output must be byte-stable for the check.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, resolve, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const args = process.argv.slice(2);
const argValue = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const check = args.includes('--check');
const schemaPath = resolve(argValue('--schema') ?? resolve(root, '../../protocol/agentd.schema.json'));
const outPath = resolve(argValue('--out') ?? resolve(root, 'src/protocol.generated.ts'));

if (!existsSync(schemaPath)) {
  console.error(`gen-types: schema not found: ${schemaPath}`);
  process.exit(2);
}
const schema = JSON.parse(readFileSync(schemaPath, 'utf8'));
const defs = { ...(schema.definitions ?? {}), ...(schema.$defs ?? {}) };

const RESERVED = new Set(['AgentdMethods', 'AgentdMethodName']);
const identOf = (name) => {
  let id = String(name).replace(/[^A-Za-z0-9_$]/g, '_');
  if (/^[0-9]/.test(id)) id = '_' + id;
  if (RESERVED.has(id)) id = id + '_';
  return id;
};
const defNameFromRef = (ref) => {
  const m = /^#\/(?:\$defs|definitions)\/(.+)$/.exec(ref);
  if (!m) throw new Error(`gen-types: unsupported $ref ${ref}`);
  const name = m[1].replace(/~1/g, '/').replace(/~0/g, '~');
  if (!(name in defs)) throw new Error(`gen-types: $ref to unknown definition ${ref}`);
  return name;
};
const propKey = (k) => (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(k) ? k : JSON.stringify(k));
const indent = (text, pad) => text.split('\n').map((l, i) => (i === 0 || l === '' ? l : pad + l)).join('\n');
const docComment = (s, pad) => {
  const text = [s.title && s.title !== true ? null : null, s.description].filter(Boolean).join('\n');
  if (!text) return '';
  const lines = String(text).replace(/\*\//g, '*\\/').split('\n');
  if (lines.length === 1) return `${pad}/** ${lines[0]} */\n`;
  return `${pad}/**\n${lines.map((l) => `${pad} * ${l}`.trimEnd()).join('\n')}\n${pad} */\n`;
};
const union = (types) => {
  const uniq = [...new Set(types)];
  if (uniq.includes('unknown')) return 'unknown';
  return uniq.length === 0 ? 'never' : uniq.join(' | ');
};
const wrap = (t) => (/[|&]/.test(t) && !/^\{[\s\S]*\}$/.test(t) ? `(${t})` : t);

function tsType(s) {
  if (s === true || s === undefined || s === null) return 'unknown';
  if (s === false) return 'never';
  if (s.$ref) return identOf(defNameFromRef(s.$ref));
  if ('const' in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return union(s.enum.map((v) => JSON.stringify(v)));
  if (Array.isArray(s.oneOf) || Array.isArray(s.anyOf)) {
    const branches = (s.oneOf ?? s.anyOf).map(tsType);
    return union(branches.map(wrapUnionMember));
  }
  if (Array.isArray(s.allOf)) {
    const parts = s.allOf.map(tsType).filter((t) => t !== 'unknown');
    return parts.length === 0 ? 'unknown' : parts.map(wrap).join(' & ');
  }
  if (Array.isArray(s.type)) {
    return union(s.type.map((t) => tsType({ ...s, type: t })).map(wrapUnionMember));
  }
  switch (s.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array': {
      if (Array.isArray(s.prefixItems)) return `[${s.prefixItems.map(tsType).join(', ')}]`;
      if (Array.isArray(s.items)) return `[${s.items.map(tsType).join(', ')}]`;
      return `${wrap(tsType(s.items ?? true))}[]`;
    }
    case 'object':
      return objectType(s);
    default:
      if (s.properties || s.additionalProperties !== undefined) return objectType(s);
      return 'unknown';
  }
}
function wrapUnionMember(t) {
  return /&/.test(t) && !/^\{[\s\S]*\}$/.test(t) ? `(${t})` : t;
}
function objectType(s) {
  const props = s.properties ?? {};
  const required = new Set(s.required ?? []);
  const lines = [];
  for (const [k, v] of Object.entries(props)) {
    const opt = required.has(k) ? '' : '?';
    lines.push(`${docComment(v ?? {}, '')}${propKey(k)}${opt}: ${tsType(v)};`);
  }
  const ap = s.additionalProperties;
  const hasProps = lines.length > 0;
  if (ap !== false && (ap !== undefined || !hasProps)) {
    const valueType = ap === undefined || ap === true || !hasProps ? (ap && ap !== true ? tsType(ap) : 'unknown') : 'unknown';
    lines.push(`[key: string]: ${valueType};`);
  }
  if (lines.length === 0) return '{}';
  return `{\n${lines.map((l) => '  ' + indent(l, '  ')).join('\n')}\n}`;
}

// --- definitions -------------------------------------------------------------------------------
const out = [];
out.push('// Generated by scripts/gen-types.mjs from protocol/agentd.schema.json. Do not edit by hand:');
out.push('// run `npm run gen:types` after the daemon regenerates the schema (`npm run check:types` fails');
out.push('// when this file is stale).');
out.push('/* eslint-disable */');
out.push('');

const names = Object.keys(defs).sort();
for (const name of names) {
  const s = defs[name];
  const t = tsType(s);
  out.push(docComment(s, '').trimEnd());
  if (/^\{[\s\S]*\}$/.test(t) && !t.includes('\n}\n|') && s.type === 'object') {
    out.push(`export interface ${identOf(name)} ${t}`);
  } else {
    out.push(`export type ${identOf(name)} = ${t};`);
  }
  out.push('');
}

// --- methods table -----------------------------------------------------------------------------
function methodEntries(m) {
  if (!m) return [];
  if (Array.isArray(m)) return m.map((e) => [e.method ?? e.name, e]);
  return Object.entries(m);
}
const typeOfRefOrName = (x) => {
  if (x === undefined || x === null) return null;
  if (typeof x === 'string') return defs[x] !== undefined ? identOf(x) : tsType({ $ref: x });
  return tsType(x);
};
const entries = methodEntries(schema.methods ?? schema.properties?.methods?.const);
if (entries.length) {
  out.push('/** Every method of the wire protocol: its kind, sender, params and result. */');
  out.push('export interface AgentdMethods {');
  for (const [name, e] of entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const kindRaw = e.kind ?? e.type ?? (e.result === undefined && e.response === undefined ? 'notification' : 'request');
    const kind = /notif/i.test(String(kindRaw)) ? 'notification' : 'request';
    const params = typeOfRefOrName(e.params ?? e.paramsType ?? e.request) ?? 'undefined';
    const resultRaw = e.result ?? e.resultType ?? e.response;
    const result = kind === 'notification' ? 'void' : (typeOfRefOrName(resultRaw) ?? 'null');
    const lines = [`kind: ${JSON.stringify(kind)};`];
    for (const key of ['sender', 'direction']) {
      if (e[key] !== undefined) lines.push(`${key}: ${JSON.stringify(String(e[key]))};`);
    }
    lines.push(`params: ${indent(params, '    ')};`);
    lines.push(`result: ${indent(result, '    ')};`);
    out.push(`${docComment(e, '  ')}  ${JSON.stringify(name)}: {\n${lines.map((l) => '    ' + l).join('\n')}\n  };`);
  }
  out.push('}');
  out.push('');
  out.push('export type AgentdMethodName = keyof AgentdMethods;');
  out.push('');
}

const text = out.join('\n').replace(/\n{3,}/g, '\n\n').replace(/^\n/gm, (m) => m);
if (check) {
  const current = existsSync(outPath) ? readFileSync(outPath, 'utf8') : '';
  if (current !== text) {
    console.error(
      `gen-types: ${relative(process.cwd(), outPath)} is stale with respect to ${relative(process.cwd(), schemaPath)}; run \`npm run gen:types\` and commit the result.`,
    );
    process.exit(1);
  }
  console.log(`gen-types: ${relative(process.cwd(), outPath)} is up to date (${names.length} types, ${entries.length} methods).`);
} else {
  writeFileSync(outPath, text);
  console.log(`gen-types: wrote ${relative(process.cwd(), outPath)} (${names.length} types, ${entries.length} methods).`);
}
