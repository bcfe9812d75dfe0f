#!/usr/bin/env node
// Records real agentd notifications for the webview tests and screenshots:
// runs the daemon against its scripted model server, plays a few turns in one session (markdown
// with a script-injection payload, a client tool round trip, reasoning, an abort, a provider
// error) and writes test/fixtures/agentd-notifications.json.
//
//   npm run record:fixture        (needs `agentd` on PATH, or AGENTD_PATH)
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lib, makeClient, root, runEvents, startScriptedModel, tempDirs, waitFor } from '../test/client/helpers.mjs';

const MARKDOWN = [
  '# Result',
  '',
  'Here is **bold** text, `inline code` and a list:',
  '',
  '- one',
  '- two',
  '',
  '```ts',
  'const x: number = 1;',
  'console.log(x);',
  '```',
  '',
  'Model output that tries to inject markup is shown as text:',
  '',
  "<script>window.__pwned = 'script'</script>",
  '<img src=x onerror="window.__pwned=\'img\'">',
  "[click me](javascript:window.__pwned='link') and a [real link](https://example.com).",
  '',
].join('\n');

const dirs = tempDirs();
const configPath = join(dirs.base, 'config.toml');
// Prices, so that the recorded turns carry a non-zero cost like a real model's would.
writeFileSync(configPath, '[models.scripted]\nprovider = "default"\ninput_price = 3\noutput_price = 15\n');
const model = await startScriptedModel();
const selection = JSON.stringify({ path: 'src/app.ts', languageId: 'typescript', text: 'let total = items.reduce((a, b) => a + b, 0);' });
const { client, notifications } = makeClient(model, dirs, {
  env: { AGENTD_CONFIG: configPath },
  clientTools: [
    {
      definition: lib.EDITOR_TOOL_DEFINITIONS.find((t) => t.name === 'editor_selection'),
      execute: () => ({ output: selection, title: 'src/app.ts' }),
    },
  ],
});

try {
  const init = await client.start();
  // A given title means no title-model call, which would otherwise take an enqueued answer.
  const { session } = await client.createSession({ title: 'Recorded session' });
  const turns = [];
  const play = async (name, text, { enqueue, abortAfterDeltas } = {}) => {
    if (enqueue) await model.enqueue(enqueue);
    const from = notifications.length;
    const chat = client.chat({ sessionId: session.id, parts: [{ type: 'text', text }] });
    if (abortAfterDeltas) {
      await waitFor(() => notifications.slice(from).filter((n) => n.method === 'part/delta').length >= abortAfterDeltas, { what: 'deltas' });
      await client.abort(session.id);
    }
    const result = await chat;
    const events = runEvents(notifications.slice(from), session.id, result.runId);
    turns.push({ name, userText: text, sessionId: session.id, runId: result.runId, events, result });
    console.log(`${name}: ${events.length} notifications, finishReason ${result.message.finishReason}`);
  };

  await play('markdown', 'Show me some markdown', {
    enqueue: [{ text: MARKDOWN, chunkSize: 9, delayMs: 2, usage: { prompt_tokens: 1200, completion_tokens: 160 } }],
  });
  await play('tool', '/tool editor_selection {}');
  await play('reasoning', '/reason why is the sky blue');
  await play('abort', '/stream 60 40', { abortAfterDeltas: 8 });
  await play('error', '/error 401');

  const { session: finalSession } = await client.getSession(session.id);
  const fixture = {
    source: 'recorded from the real agentd by scripts/record-fixture.mjs against agentd.scripted_model',
    agentdVersion: init.serverInfo.version,
    session: finalSession,
    turns,
  };
  // Make the file stable across recordings of the same daemon: paths of the temp dir vary.
  const text = JSON.stringify(fixture, null, 1).replaceAll(dirs.base, '/workspace');
  writeFileSync(join(root, 'test/fixtures/agentd-notifications.json'), text + '\n');
  console.log(`wrote test/fixtures/agentd-notifications.json (${turns.length} turns)`);
} finally {
  await client.stop();
  await model.close();
  dirs.cleanup();
}
