// `agentd acp` driven by a second, independent client: the official ACP TypeScript SDK
// (@agentclientprotocol/sdk, pinned in package.json). It spawns the real daemon
// (`python -m agentd acp`), which talks to agentd's scripted model on loopback, and walks
// the flows an editor uses: initialize, session/new, a streamed prompt, a tool call
// gated by session/request_permission, cancel mid-stream, session/list, and
// session/load in a second process.
//
// Every line agentd writes is tapped before the SDK reads it and checked three ways:
// against the SDK package's schema/v1/schema.json (Ajv, draft 2020-12), against the
// SDK's own zod schemas (what its typed routes parse with), and for custom keys at the
// root of a spec type (only `_meta` may carry agentd's own fields). The SDK must also
// deliver every session/update to the handler (it drops what its schemas refuse).
//
//   AGENTD_MODEL_URL=http://127.0.0.1:PORT/v1 node tests/acp/client.test.mjs
//
// Without AGENTD_MODEL_URL it starts `python -m agentd scripted-model` itself.
// AGENTD_PYTHON names the interpreter (default python3). tests/test_acp_typescript.py
// runs it under pytest.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { client, ndJsonStream } from "@agentclientprotocol/sdk";
import Ajv2020Module from "ajv/dist/2020.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const PYTHON = process.env.AGENTD_PYTHON || "python3";
const require = createRequire(import.meta.url);
const SDK_DIR = path.dirname(require.resolve("@agentclientprotocol/sdk/schema/v1/schema.json"));
// The SDK's generated zod schemas: not an export of the package, so by file.
const zod = await import(path.join(SDK_DIR, "..", "..", "dist", "v1", "schema", "zod.gen.js"));

// --- the schema check ---------------------------------------------------------------------

// The spec type of the result of each request the client sends.
const RESULT_TYPES = {
  initialize: "InitializeResponse",
  "session/new": "NewSessionResponse",
  "session/load": "LoadSessionResponse",
  "session/resume": "ResumeSessionResponse",
  "session/list": "ListSessionsResponse",
  "session/prompt": "PromptResponse",
  "session/delete": "DeleteSessionResponse",
  "session/close": "CloseSessionResponse",
  "session/set_config_option": "SetSessionConfigOptionResponse",
};
// The spec type of the params of each method agentd may send.
const PARAMS_TYPES = {
  "session/update": "SessionNotification",
  "session/request_permission": "RequestPermissionRequest",
  "$/cancel_request": "CancelRequestNotification",
};

class SchemaCheck {
  constructor() {
    this.schema = JSON.parse(readFileSync(path.join(SDK_DIR, "schema.json"), "utf8"));
    this.defs = this.schema.$defs;
    const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module;
    // strict: false, as the schema carries annotations Ajv does not know (x-…).
    this.ajv = new Ajv2020({ strict: false, allErrors: true });
    const integer = (lo, hi) => ({
      type: "number",
      validate: (n) => Number.isInteger(n) && n >= lo && n <= hi,
    });
    this.ajv.addFormat("uint16", integer(0, 0xffff));
    this.ajv.addFormat("int32", integer(-(2 ** 31), 2 ** 31 - 1));
    this.ajv.addFormat("uint32", integer(0, 2 ** 32 - 1));
    this.ajv.addFormat("int64", integer(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
    this.ajv.addFormat("uint64", integer(0, Number.MAX_SAFE_INTEGER));
    this.ajv.addFormat("double", { type: "number", validate: (n) => Number.isFinite(n) });
    this.ajv.addFormat("uri", {
      type: "string",
      validate: (s) => URL.canParse(s),
    });
    this.ajv.addSchema(this.schema, "acp");
    this.validators = new Map();
  }

  validator(node) {
    // A node of the schema, its local refs pointing into the schema added as "acp".
    const key = JSON.stringify(node).replaceAll('"#/$defs/', '"acp#/$defs/');
    if (!this.validators.has(key)) this.validators.set(key, this.ajv.compile(JSON.parse(key)));
    return this.validators.get(key);
  }

  /** The problems of `value` as the spec type `type` (empty: none). */
  check(type, value) {
    const problems = [];
    const validate = this.validator({ $ref: `#/$defs/${type}` });
    if (!validate(value)) {
      const errors = validate.errors.slice(0, 5).map((e) => `${e.instancePath} ${e.message}`);
      problems.push(`${type} (JSON schema): ${errors.join("; ")}`);
    }
    const parsed = zod[`z${type}`].safeParse(value);
    if (!parsed.success) {
      problems.push(`${type} (SDK zod): ${parsed.error.message.slice(0, 600)}`);
    }
    const extra = this.extraKeys({ $ref: `#/$defs/${type}` }, value, "");
    if (extra.length) problems.push(`${type}: custom fields outside _meta: ${extra.join(", ")}`);
    return problems;
  }

  resolve(node) {
    while (node.$ref) node = this.defs[node.$ref.split("/").pop()];
    return node;
  }

  /** The parts of `node` that apply to `value`: itself, its allOf, and the oneOf /
   * anyOf branches it validates against (recursively). */
  branches(node, value) {
    node = this.resolve(node);
    const out = [node];
    for (const sub of node.allOf ?? []) out.push(...this.branches(sub, value));
    for (const key of ["oneOf", "anyOf"]) {
      for (const sub of node[key] ?? []) {
        if (this.validator(sub)(value)) out.push(...this.branches(sub, value));
      }
    }
    return out;
  }

  extraKeys(node, value, at) {
    const branches = this.branches(node, value);
    const extra = [];
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      const props = {};
      let open = false;
      for (const b of branches) {
        Object.assign(props, b.properties ?? {});
        const additional = b.additionalProperties;
        if (additional !== undefined && additional !== false && !b.properties) open = true;
      }
      if (Object.keys(props).length && !open) {
        for (const k of Object.keys(value)) if (!(k in props)) extra.push(`${at}/${k}`);
      }
      for (const [k, v] of Object.entries(value)) {
        if (k in props && k !== "_meta") extra.push(...this.extraKeys(props[k], v, `${at}/${k}`));
      }
    } else if (Array.isArray(value)) {
      const b = branches.find((b) => b.items && typeof b.items === "object");
      if (b) value.forEach((item, i) => extra.push(...this.extraKeys(b.items, item, `${at}/${i}`)));
    }
    return extra;
  }
}

const CHECK = new SchemaCheck();

// --- the scripted model -----------------------------------------------------------------------

let modelUrl = process.env.AGENTD_MODEL_URL;
let modelProcess = null;

async function startModel() {
  if (modelUrl) return;
  modelProcess = spawn(PYTHON, ["-m", "agentd", "scripted-model"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [line] = await new Promise((resolve, reject) => {
    let buffered = "";
    modelProcess.stdout.on("data", (chunk) => {
      buffered += chunk;
      if (buffered.includes("\n")) resolve(buffered.split("\n"));
    });
    modelProcess.once("exit", (code) => reject(new Error(`scripted-model exited ${code}`)));
  });
  modelUrl = JSON.parse(line).baseUrl;
}

async function control(route, body) {
  const origin = new URL(modelUrl).origin;
  const response = await fetch(`${origin}/_scripted/${route}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  assert.equal(response.status, 200, `scripted model ${route}: ${await response.text()}`);
}

const enqueue = (...responses) => control("enqueue", { responses });

// --- one agentd acp process and the SDK's client connection to it ----------------------------

class Agent {
  constructor(dirs) {
    this.messages = []; // every message agentd wrote, in order, as parsed from its line
    this.problems = []; // schema failures and stray output
    this.delivered = []; // session/update params as the SDK's handler received them
    this.permissionRequests = [];
    this.permission = () => ({ outcome: { outcome: "selected", optionId: "allow_once" } });
    this.sentMethods = new Map(); // id of each request we sent -> method
    this.waiters = new Set();
    this.stderr = "";
    this.child = spawn(PYTHON, ["-m", "agentd", "acp"], {
      cwd: ROOT,
      env: {
        ...process.env,
        PYTHONPATH: ROOT,
        PYTHONUNBUFFERED: "1",
        AGENTD_DATA_DIR: dirs.data,
        AGENTD_STATE_DIR: dirs.state,
        AGENTD_CONFIG: dirs.config,
        OPENAI_API_KEY: "sk-test-key-123456",
        OPENAI_BASE_URL: "",
        AGENTD_MODEL: "",
        AGENTD_TITLE_MODEL: "",
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stderr.on("data", (chunk) => (this.stderr += chunk));
    this.exited = once(this.child, "exit");

    // Taps on both directions: bytes pass through unchanged, lines are parsed here.
    const fromAgent = Readable.toWeb(this.child.stdout).pipeThrough(
      lineTap((line) => this.received(line)),
    );
    const toAgent = lineTap((line) => {
      const message = JSON.parse(line);
      if (message.method && message.id !== undefined) {
        this.sentMethods.set(message.id, message.method);
      }
    });
    toAgent.readable.pipeTo(Writable.toWeb(this.child.stdin)).catch(() => {});

    const app = client({ name: "agentd-ts-tests" })
      .onNotification("session/update", ({ params }) => {
        this.delivered.push(params);
        this.changed();
      })
      .onRequest("session/request_permission", async ({ params }) => {
        this.permissionRequests.push(params);
        this.changed();
        return await this.permission(params);
      });
    this.connection = app.connect(ndJsonStream(toAgent.writable, fromAgent));
    this.ctx = this.connection.agent;
  }

  received(line) {
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      this.problems.push(`not a JSON line on stdout: ${line.slice(0, 200)}`);
      return;
    }
    this.messages.push(message);
    if (message.jsonrpc !== "2.0") this.problems.push(`no jsonrpc 2.0: ${line.slice(0, 200)}`);
    let problems = [];
    if (typeof message.method === "string") {
      const type = PARAMS_TYPES[message.method];
      if (type) problems = CHECK.check(type, message.params);
      else if (!message.method.startsWith("_agentd/")) problems = [`agentd sent ${message.method}`];
    } else if (message.id !== undefined) {
      const method = this.sentMethods.get(message.id);
      if ("error" in message) problems = CHECK.check("Error", message.error);
      else if (RESULT_TYPES[method]) problems = CHECK.check(RESULT_TYPES[method], message.result);
    }
    for (const p of problems) this.problems.push(`${p}\n    in ${line.slice(0, 1200)}`);
    this.changed();
  }

  changed() {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves once `predicate()` holds (checked on each message from agentd). */
  waitFor(predicate, what, ms = 30_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; stderr:\n${this.stderr.slice(-3000)}`));
      }, ms);
      const check = () => {
        if (!predicate()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  updates(sessionId) {
    return this.messages
      .filter((m) => m.method === "session/update" && m.params.sessionId === sessionId)
      .map((m) => m.params.update);
  }

  text(sessionId, kind = "agent_message_chunk") {
    return this.updates(sessionId)
      .filter((u) => u.sessionUpdate === kind && u.content.type === "text")
      .map((u) => u.content.text)
      .join("");
  }

  async initialize() {
    return await this.ctx.request("initialize", {
      protocolVersion: 1,
      clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
      clientInfo: { name: "agentd-ts-tests", version: "1" },
    });
  }

  /** Every message agentd sent passed the schema, and the SDK delivered every update
   * to its handler (it reads a line after the tap has seen it: wait for it to catch up,
   * a refused update never arrives). */
  async assertClean() {
    assert.deepEqual(this.problems, [], "messages from agentd that the ACP v1 schema refuses");
    const updates = this.messages.filter((m) => m.method === "session/update").length;
    await this.waitFor(
      () => this.delivered.length >= updates,
      `the SDK to deliver ${updates} session/update notifications (it has ` +
        `${this.delivered.length}: it dropped what its schemas refuse)`,
      10_000,
    );
  }

  /** End of input ends agentd (there is no shutdown request in ACP): exit 0 within 5 s. */
  async close() {
    const started = Date.now();
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    const [code] = await this.exited;
    clearTimeout(timer);
    this.connection.close();
    assert.equal(code, 0, `agentd acp exit code; stderr:\n${this.stderr.slice(-3000)}`);
    assert.ok(Date.now() - started < 5_000, "agentd acp took over 5 s to exit after EOF");
  }
}

/** A byte stream that passes through unchanged and hands each complete line to `onLine`. */
function lineTap(onLine) {
  const decoder = new TextDecoder();
  let pending = "";
  return new TransformStream({
    transform(chunk, controller) {
      pending += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        if (line.trim()) onLine(line);
      }
      controller.enqueue(chunk);
    },
  });
}

// --- the flows --------------------------------------------------------------------------------

const tmp = mkdtempSync(path.join(tmpdir(), "agentd-acp-ts-"));
const ws = path.join(tmp, "ws");
const dirs = {
  data: path.join(tmp, "data"),
  state: path.join(tmp, "state"),
  config: path.join(tmp, "config.toml"),
};
let agent = null;
let sessionId = null;
// Per assistant message, the text that streamed in the first process.
const streamedText = new Map();
const prompts = [];

before(async () => {
  mkdirSync(ws);
  await startModel();
  await control("reset");
  // context_window: agentd sends usage_update only when it knows it.
  writeFileSync(
    dirs.config,
    'default_model = "scripted"\n' +
      "[providers.local]\n" +
      `base_url = "${modelUrl}"\n` +
      'api_key_env = "OPENAI_API_KEY"\n' +
      "[models.scripted]\n" +
      'provider = "local"\n' +
      "context_window = 32000\n",
  );
  agent = new Agent(dirs);
});

after(async () => {
  if (agent && agent.child.exitCode === null) agent.child.kill("SIGKILL");
  if (modelProcess) modelProcess.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
});

function collectStreamed(message) {
  const updates = agent.updates(sessionId).filter((u) => u.sessionUpdate === "agent_message_chunk");
  for (const u of updates) streamedText.set(u.messageId, "");
  for (const u of updates) streamedText.set(u.messageId, streamedText.get(u.messageId) + u.content.text);
  return message;
}

test("initialize answers protocol version 1 with agentd's capabilities", async () => {
  // A version agentd does not speak is answered with its own (the client decides).
  const init = await agent.ctx.request("initialize", {
    protocolVersion: 9,
    clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
    clientInfo: { name: "agentd-ts-tests", version: "1" },
  });
  assert.equal(init.protocolVersion, 1);
  assert.equal(init.agentCapabilities.loadSession, true);
  assert.deepEqual(init.agentCapabilities.sessionCapabilities.list, {});
  assert.equal(init.agentInfo.name, "agentd");
  assert.deepEqual(init.authMethods, []);
  assert.ok(init.agentCapabilities._meta.agentd.toolContextDir);
  await agent.assertClean();
});

test("session/new through the SDK's session builder", async () => {
  const session = await agent.ctx
    .buildSession({ cwd: ws, mcpServers: [], _meta: { agentd: { title: "ts client" } } })
    .start();
  sessionId = session.sessionId;
  assert.match(sessionId, /^ses_/);
  const created = session.newSessionResponse;
  assert.equal(created._meta.agentd.created, true);
  const [option] = created.configOptions;
  assert.deepEqual([option.id, option.currentValue], ["model", "scripted"]);
  session.dispose();
  // /compact is advertised once the client knows the session.
  await agent.waitFor(
    () => agent.updates(sessionId).some((u) => u.sessionUpdate === "available_commands_update"),
    "available_commands_update",
  );
  await agent.assertClean();
});

test("a prompt streams agent_message_chunk and answers end_turn", async () => {
  await enqueue({ text: "Hello from the scripted model.", chunkSize: 4, delayMs: 5 });
  prompts.push("hi");
  const answer = await agent.ctx.request("session/prompt", {
    sessionId,
    prompt: [{ type: "text", text: "hi" }],
  });
  assert.equal(answer.stopReason, "end_turn");
  const meta = answer._meta.agentd;
  assert.match(meta.runId, /^run_/);
  assert.equal(meta.finishReason, "stop");
  assert.equal(agent.text(sessionId), "Hello from the scripted model.");
  const chunks = agent.updates(sessionId).filter((u) => u.sessionUpdate === "agent_message_chunk");
  assert.ok(chunks.length > 1, "the text streamed in several chunks");
  assert.deepEqual(new Set(chunks.map((c) => c.messageId)), new Set([meta.messageId]));
  // The user's own prompt is not echoed back live.
  assert.equal(agent.text(sessionId, "user_message_chunk"), "");
  const usage = agent.updates(sessionId).filter((u) => u.sessionUpdate === "usage_update");
  assert.ok(usage.length >= 1 && usage.every((u) => u.size === 32000 && u.used > 0));
  collectStreamed();
  await agent.assertClean();
});

test("a write_file call asks session/request_permission; allow_once writes the file", async () => {
  const content = "written through the TypeScript SDK\n";
  await enqueue(
    { toolCalls: [{ name: "write_file", arguments: { path: "out.txt", content } }] },
    { text: "Done." },
  );
  prompts.push("write out.txt");
  const before = agent.messages.length;
  const answer = await agent.ctx.request("session/prompt", {
    sessionId,
    prompt: [{ type: "text", text: "write out.txt" }],
  });
  assert.equal(answer.stopReason, "end_turn");
  assert.equal(readFileSync(path.join(ws, "out.txt"), "utf8"), content);

  const [asked] = agent.permissionRequests;
  assert.equal(agent.permissionRequests.length, 1);
  assert.equal(asked.sessionId, sessionId);
  assert.equal(asked.toolCall.kind, "edit");
  assert.equal(asked.toolCall.status, "pending");
  assert.deepEqual(asked.toolCall.rawInput, { path: "out.txt", content });
  assert.deepEqual(asked.toolCall.locations, [{ path: path.join(ws, "out.txt") }]);
  assert.deepEqual(
    asked.options.map((o) => [o.optionId, o.kind]).sort(),
    [
      ["allow_always", "allow_always"],
      ["allow_once", "allow_once"],
      ["reject_always", "reject_always"],
      ["reject_once", "reject_once"],
    ],
  );
  // The tool_call is announced before the permission request, so the editor shows it.
  const turn = agent.messages.slice(before);
  const callAt = turn.findIndex(
    (m) => m.params?.update?.sessionUpdate === "tool_call" &&
      m.params.update.toolCallId === asked.toolCall.toolCallId,
  );
  const askedAt = turn.findIndex((m) => m.method === "session/request_permission");
  assert.ok(callAt >= 0 && callAt < askedAt, "tool_call before session/request_permission");
  const finals = turn
    .filter((m) => m.params?.update?.toolCallId === asked.toolCall.toolCallId)
    .map((m) => m.params.update);
  const done = finals.at(-1);
  assert.equal(done.sessionUpdate, "tool_call_update");
  assert.equal(done.status, "completed");
  assert.deepEqual(
    done.content.find((c) => c.type === "diff"),
    { type: "diff", path: path.join(ws, "out.txt"), oldText: null, newText: content },
  );
  collectStreamed();
  await agent.assertClean();
});

test("session/cancel mid-stream answers the prompt with stopReason cancelled", async () => {
  const full = Array.from({ length: 300 }, (_, i) => `w${i}`).join(" ");
  await enqueue({ text: full, delayMs: 15 });
  prompts.push("tell me a long story");
  const textBefore = agent.text(sessionId).length;
  const answered = agent.ctx.request("session/prompt", {
    sessionId,
    prompt: [{ type: "text", text: "tell me a long story" }],
  });
  await agent.waitFor(() => agent.text(sessionId).length > textBefore + 20, "20 streamed chars");
  await agent.ctx.notify("session/cancel", { sessionId });
  const answer = await answered;
  assert.equal(answer.stopReason, "cancelled");
  assert.equal(answer._meta.agentd.finishReason, "aborted");
  const streamed = agent.text(sessionId).length - textBefore;
  assert.ok(streamed > 20 && streamed < full.length, `streamed ${streamed} of ${full.length}`);
  collectStreamed();
  await agent.assertClean();
});

test("session/list lists the session with its cwd, title and time", async () => {
  const listed = await agent.ctx.request("session/list", {});
  const mine = listed.sessions.find((s) => s.sessionId === sessionId);
  assert.ok(mine, "the session is listed");
  assert.equal(mine.cwd, ws);
  assert.equal(mine.title, "ts client");
  assert.match(mine.updatedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const filtered = await agent.ctx.request("session/list", { cwd: ws });
  assert.deepEqual(filtered.sessions.map((s) => s.sessionId), [sessionId]);
  const elsewhere = await agent.ctx.request("session/list", { cwd: path.join(tmp, "nowhere") });
  assert.deepEqual(elsewhere.sessions, []);
  await agent.assertClean();
  await agent.close();
});

test("session/load in a second agentd process replays what streamed", async () => {
  const first = agent;
  agent = new Agent(dirs);
  await agent.initialize();
  const loaded = await agent.ctx.request("session/load", { sessionId, cwd: ws, mcpServers: [] });
  assert.deepEqual(loaded, {}); // `{}` exactly (acp-v1.md), not null
  const replayed = agent.updates(sessionId);
  // Everything replayed comes before the answer.
  const answerAt = agent.messages.findIndex((m) => m.id !== undefined && "result" in m &&
    agent.sentMethods.get(m.id) === "session/load");
  const lastUpdateAt = agent.messages.findLastIndex((m) => m.method === "session/update");
  assert.ok(lastUpdateAt < answerAt, "the replay precedes the session/load answer");
  assert.equal(replayed.at(-1).sessionUpdate, "available_commands_update");

  assert.deepEqual(
    replayed.filter((u) => u.sessionUpdate === "user_message_chunk").map((u) => u.content.text),
    prompts,
  );
  const again = new Map();
  for (const u of replayed.filter((u) => u.sessionUpdate === "agent_message_chunk")) {
    again.set(u.messageId, (again.get(u.messageId) ?? "") + u.content.text);
  }
  const nonEmpty = (m) => new Map([...m].filter(([, text]) => text));
  assert.deepEqual(nonEmpty(again), nonEmpty(streamedText), "replayed text = streamed text");

  // The tool call: one tool_call with the id it had live and its final state.
  const live = first.updates(sessionId).filter((u) => u.toolCallId !== undefined);
  const [call] = replayed.filter((u) => u.sessionUpdate === "tool_call");
  assert.equal(call.toolCallId, live[0].toolCallId);
  assert.equal(call.status, "completed");
  assert.equal(call.kind, "edit");
  assert.deepEqual(call.rawInput, live.at(-1).rawInput);
  assert.deepEqual(call.content, live.at(-1).content);
  // The cancelled turn says so on its last replayed update.
  const lastChunk = replayed.filter((u) => u.sessionUpdate === "agent_message_chunk").at(-1);
  assert.equal(lastChunk._meta.agentd.finishReason, "aborted");

  const listed = await agent.ctx.request("session/list", {});
  assert.ok(listed.sessions.some((s) => s.sessionId === sessionId && s.cwd === ws));
  await agent.assertClean();
  await agent.close();
});
