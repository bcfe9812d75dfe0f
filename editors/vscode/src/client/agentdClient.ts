// The agentd client: spawns the daemon, speaks JSON-RPC to it over stdio (LSP framing, through
// vscode-jsonrpc), serves the daemon's requests (`tool/execute`, `permission/request`) and
// restarts it, with bounded backoff, when it dies. It does not import `vscode`, so it runs and is
// tested under plain Node against the real daemon.
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import {
  CancellationTokenSource,
  createMessageConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
  type CancellationToken,
  type MessageConnection,
} from 'vscode-jsonrpc/node';
import type {
  AgentdNotification,
  ClientTool,
  InitializeParams,
  InitializeResult,
  ParamsOf,
  PermissionRequestParams,
  RequestName,
  ResultOf,
  ToolExecuteParams,
  ToolExecuteResult,
} from '../protocol';
import { ErrorCodes } from '../protocol';
import { Emitter, type Disposable, type Event } from './emitter';
import { RestartPolicy, type RestartPolicyOptions } from './restartPolicy';

export type { CancellationToken } from 'vscode-jsonrpc/node';
export { CancellationTokenSource, ResponseError } from 'vscode-jsonrpc/node';

export interface ClientToolHandler {
  definition: ClientTool;
  execute(
    input: unknown,
    request: ToolExecuteParams,
    token: CancellationToken,
  ): Promise<ToolExecuteResult> | ToolExecuteResult;
}

export type PermissionHandler = (
  request: PermissionRequestParams,
  token: CancellationToken,
) => Promise<ResultOf<'permission/request'>> | ResultOf<'permission/request'>;

export interface AgentdClientOptions {
  /** The executable (`agentd.path`). */
  command: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Sent as `workspaceRoot` on initialize. */
  workspaceRoot?: string;
  clientInfo?: { name: string; version?: string };
  /** Editor-side tools, declared as `clientTools` on every `session/chat` and run on `tool/execute`. */
  clientTools?: ClientToolHandler[];
  /** Answers `permission/request`; without one, every request is rejected once. */
  onPermissionRequest?: PermissionHandler;
  restartPolicy?: Partial<RestartPolicyOptions>;
  /** How long the daemon may take to answer `initialize`. */
  initializeTimeoutMs?: number;
  /** How long `stop()` waits for a graceful shutdown before killing the process. */
  shutdownTimeoutMs?: number;
}

export type ClientState = 'stopped' | 'starting' | 'running' | 'restarting' | 'failed';

export interface StateChange {
  state: ClientState;
  /** A sentence for the user: why the daemon stopped, when it restarts, why it was given up on. */
  message?: string;
  attempt?: number;
  delayMs?: number;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** The last lines the daemon wrote to stderr before it died. */
  stderrTail?: string[];
  serverInfo?: InitializeResult['serverInfo'];
  /** Which daemon serves this window (`initialize`'s `daemon`): shared or its own, its pid. */
  daemon?: InitializeResult['daemon'];
}

export class AgentdError extends Error {
  constructor(
    message: string,
    readonly code?: number,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'AgentdError';
  }
}

interface Instance {
  child: ChildProcess;
  connection: MessageConnection;
  ready: Promise<InitializeResult>;
  exited: Promise<void>;
  exitedFlag: boolean;
  stopping: boolean;
}

const STDERR_TAIL = 40;

export class AgentdClient implements Disposable {
  private readonly options: AgentdClientOptions;
  private readonly policy: RestartPolicy;
  private instance: Instance | undefined;
  private starting: Promise<InitializeResult> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private restartWaiters: { resolve: (r: InitializeResult) => void; reject: (e: Error) => void }[] = [];
  private _state: ClientState = 'stopped';
  private lastFailure: string | undefined;
  private stderrTail: string[] = [];
  private disposed = false;
  private tools = new Map<string, ClientToolHandler>();
  private permissionHandler: PermissionHandler | undefined;
  private _initializeResult: InitializeResult | undefined;

  private readonly stateEmitter = new Emitter<StateChange>();
  private readonly notificationEmitter = new Emitter<AgentdNotification>();
  private readonly logEmitter = new Emitter<string>();

  /** State changes: starting, running, restarting (with attempt and delay), failed, stopped. */
  readonly onDidChangeState: Event<StateChange> = this.stateEmitter.event;
  /** Every notification the daemon sends, in order. */
  readonly onNotification: Event<AgentdNotification> = this.notificationEmitter.event;
  /** The daemon's stderr, line by line, and the client's own diagnostics. */
  readonly onLog: Event<string> = this.logEmitter.event;

  constructor(options: AgentdClientOptions) {
    this.options = options;
    this.policy = new RestartPolicy({
      maxRestarts: options.restartPolicy?.maxRestarts ?? 5,
      windowMs: options.restartPolicy?.windowMs ?? 180_000,
      baseDelayMs: options.restartPolicy?.baseDelayMs ?? 500,
      maxDelayMs: options.restartPolicy?.maxDelayMs ?? 15_000,
    });
    for (const tool of options.clientTools ?? []) this.tools.set(tool.definition.name, tool);
    this.permissionHandler = options.onPermissionRequest;
  }

  get state(): ClientState {
    return this._state;
  }

  get initializeResult(): InitializeResult | undefined {
    return this._initializeResult;
  }

  /** The process id of the running daemon, if any. */
  get pid(): number | undefined {
    return this.instance?.child.pid;
  }

  get clientToolDefinitions(): ClientTool[] {
    return [...this.tools.values()].map((t) => t.definition);
  }

  registerClientTool(tool: ClientToolHandler): Disposable {
    this.tools.set(tool.definition.name, tool);
    return { dispose: () => this.tools.delete(tool.definition.name) };
  }

  setPermissionHandler(handler: PermissionHandler | undefined): void {
    this.permissionHandler = handler;
  }

  /** Starts the daemon (if it is not running) and resolves once `initialize` has answered. */
  start(): Promise<InitializeResult> {
    if (this.disposed) return Promise.reject(new AgentdError('agentd client is disposed'));
    if (this.instance && this._state === 'running') return this.instance.ready;
    if (this.starting) return this.starting;
    if (this._state === 'restarting') {
      return new Promise((resolve, reject) => this.restartWaiters.push({ resolve, reject }));
    }
    if (this._state === 'failed') this.policy.reset();
    return this.launch();
  }

  /** Stops the daemon (`shutdown`, `exit`, then a kill if it does not go) and restarts it. */
  async restart(): Promise<InitializeResult> {
    await this.stop();
    this.policy.reset();
    return this.start();
  }

  /** Sends a request, starting the daemon first if needed. */
  async request<M extends RequestName>(
    method: M,
    params: ParamsOf<M>,
    token?: CancellationToken,
  ): Promise<ResultOf<M>> {
    await this.start();
    const inst = this.instance;
    if (!inst || inst.exitedFlag) throw new AgentdError(`agentd is not running (${this.lastFailure ?? 'exited'})`);
    try {
      // vscode-jsonrpc takes trailing arguments as positional params: never pass an undefined token.
      const args: unknown[] = params === undefined ? [] : [params];
      if (token) args.push(token);
      const result = await inst.connection.sendRequest(method, ...args);
      return result as ResultOf<M>;
    } catch (err) {
      throw toAgentdError(err, method);
    }
  }

  // --- typed helpers for the requests the editor makes ------------------------------------------

  createSession(params: ParamsOf<'session/create'> = {} as ParamsOf<'session/create'>) {
    return this.request('session/create', params);
  }

  /** `session/chat`, declaring the registered client tools unless `clientTools` is given. */
  chat(params: ParamsOf<'session/chat'>, token?: CancellationToken) {
    const withTools =
      params.clientTools === undefined && this.tools.size > 0
        ? { ...params, clientTools: this.clientToolDefinitions }
        : params;
    return this.request('session/chat', withTools, token);
  }

  abort(sessionId: string) {
    return this.request('session/abort', { sessionId } as ParamsOf<'session/abort'>);
  }

  listSessions(params: ParamsOf<'session/list'> = {} as ParamsOf<'session/list'>) {
    return this.request('session/list', params);
  }

  getSession(sessionId: string) {
    return this.request('session/get', { sessionId } as ParamsOf<'session/get'>);
  }

  messages(params: ParamsOf<'session/messages'>) {
    return this.request('session/messages', params);
  }

  renameSession(sessionId: string, title: string) {
    return this.request('session/update', { sessionId, title } as ParamsOf<'session/update'>);
  }

  deleteSession(sessionId: string) {
    return this.request('session/delete', { sessionId } as ParamsOf<'session/delete'>);
  }

  listModels() {
    return this.request('models/list', {} as ParamsOf<'models/list'>);
  }

  /** `mcp/list`; with `connect: true` the daemon starts its servers first (may take seconds). */
  listMcpServers(params: ParamsOf<'mcp/list'> = {}, token?: CancellationToken) {
    return this.request('mcp/list', params, token);
  }

  /** Graceful stop: `shutdown`, `exit`, and a kill if the process is still there after the timeout. */
  async stop(): Promise<void> {
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
      this.rejectRestartWaiters(new AgentdError('agentd was stopped'));
    }
    const inst = this.instance;
    if (!inst) {
      this.setState({ state: 'stopped' });
      return;
    }
    inst.stopping = true;
    const timeout = this.options.shutdownTimeoutMs ?? 3000;
    if (!inst.exitedFlag) {
      try {
        await withTimeout(inst.connection.sendRequest('shutdown'), timeout);
        inst.connection.sendNotification('exit').catch(() => undefined);
      } catch {
        // A daemon that does not answer shutdown is killed below.
      }
      try {
        inst.child.stdin?.end();
      } catch {
        /* already closed */
      }
      if (!(await withTimeout(inst.exited, timeout).then(() => true, () => false))) {
        inst.child.kill('SIGTERM');
        if (!(await withTimeout(inst.exited, 1000).then(() => true, () => false))) inst.child.kill('SIGKILL');
        await withTimeout(inst.exited, 1000).catch(() => undefined);
      }
    }
    if (this.instance === inst) this.instance = undefined;
    this.setState({ state: 'stopped' });
  }

  dispose(): void {
    if (this.disposed) return;
    void this.stop().finally(() => {
      this.disposed = true;
      this.stateEmitter.dispose();
      this.notificationEmitter.dispose();
      this.logEmitter.dispose();
    });
  }

  // --- process lifecycle -------------------------------------------------------------------------

  private launch(): Promise<InitializeResult> {
    this.setState({ state: 'starting' });
    const p = this.spawnAndInitialize().then(
      (result) => {
        this.starting = undefined;
        return result;
      },
      (err: Error) => {
        this.starting = undefined;
        throw err;
      },
    );
    this.starting = p;
    return p;
  }

  private spawnAndInitialize(): Promise<InitializeResult> {
    const opts = this.options;
    this.stderrTail = [];
    let child: ChildProcess;
    try {
      child = spawn(opts.command, opts.args ?? [], {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: ['pipe', 'pipe', 'pipe'],
        windowsHide: true,
      });
    } catch (err) {
      return Promise.reject(this.fail(`Could not start agentd (${opts.command}): ${(err as Error).message}`));
    }

    // vscode-jsonrpc turns a failed stdin write into an unhandled rejection (it rethrows inside
    // a promise executor), which would take down the extension host when the daemon dies with a
    // request in flight. So it writes to a sink that never fails; a dead pipe's error is logged
    // by the stdin listener below, and the pending requests are rejected when the process exits.
    const stdin = child.stdin!;
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        if (stdin.destroyed || !stdin.writable) return callback();
        stdin.write(chunk, () => callback());
      },
    });
    const connection = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(sink));
    let resolveExited!: () => void;
    const inst: Instance = {
      child,
      connection,
      ready: undefined as unknown as Promise<InitializeResult>,
      exited: new Promise<void>((r) => (resolveExited = r)),
      exitedFlag: false,
      stopping: false,
    };
    this.instance = inst;

    let stderrBuf = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderrBuf += chunk;
      let nl: number;
      while ((nl = stderrBuf.indexOf('\n')) >= 0) {
        const line = stderrBuf.slice(0, nl).replace(/\r$/, '');
        stderrBuf = stderrBuf.slice(nl + 1);
        this.pushStderr(line);
      }
    });
    // A write to a dead daemon's stdin must not crash the editor's extension host.
    child.stdin?.on('error', (err) => this.logEmitter.fire(`[client] stdin: ${err.message}`));

    let spawnError: Error | undefined;
    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnError = err;
      this.logEmitter.fire(`[client] spawn error: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      if (stderrBuf) this.pushStderr(stderrBuf);
      stderrBuf = '';
      inst.exitedFlag = true;
      connection.dispose(); // rejects every pending request
      resolveExited();
      this.onExit(inst, code, signal, spawnError);
    });
    // `error` without `exit` happens when the executable cannot be spawned at all.
    child.on('error', () => {
      if (!inst.exitedFlag && child.pid === undefined) {
        inst.exitedFlag = true;
        connection.dispose();
        resolveExited();
        this.onExit(inst, null, null, spawnError);
      }
    });

    connection.onNotification((method: string, params: unknown) => {
      this.notificationEmitter.fire({ method, params } as AgentdNotification);
    });
    connection.onRequest('tool/execute', (params: ToolExecuteParams, token: CancellationToken) =>
      this.executeClientTool(params, token),
    );
    connection.onRequest('permission/request', async (params: PermissionRequestParams, token: CancellationToken) => {
      if (!this.permissionHandler) return { outcome: 'reject_once' };
      try {
        return await this.permissionHandler(params, token);
      } catch (err) {
        this.logEmitter.fire(`[client] permission handler failed: ${(err as Error).message}`);
        return { outcome: 'reject_once' };
      }
    });
    connection.onError(([err]) => this.logEmitter.fire(`[client] connection error: ${err.message}`));
    connection.listen();

    const initParams = {
      processId: process.pid,
      clientInfo: opts.clientInfo ?? { name: 'agentd-vscode' },
      protocolVersion: 1,
      capabilities: { clientTools: true, permissionRequests: true },
      ...(opts.workspaceRoot ? { workspaceRoot: opts.workspaceRoot } : {}),
    } as InitializeParams;

    inst.ready = (async () => {
      let result: InitializeResult;
      try {
        result = (await withTimeout(
          Promise.race([
            connection.sendRequest('initialize', initParams) as Promise<InitializeResult>,
            inst.exited.then(() => {
              throw new Error('exited before answering initialize');
            }),
          ]),
          opts.initializeTimeoutMs ?? 20_000,
          'initialize timed out',
        )) as InitializeResult;
      } catch (err) {
        const reason = spawnError ? describeSpawnError(opts.command, spawnError) : (err as Error).message;
        if (!inst.exitedFlag) {
          inst.stopping = true; // its exit is this failure, not a second crash
          child.kill('SIGKILL');
        }
        throw this.initFailure(inst, reason);
      }
      await connection.sendNotification('initialized', {});
      this._initializeResult = result;
      this.lastFailure = undefined;
      this.setState({ state: 'running', serverInfo: result.serverInfo, daemon: result.daemon });
      const waiters = this.restartWaiters;
      this.restartWaiters = [];
      for (const w of waiters) w.resolve(result);
      return result;
    })();
    // Avoid an unhandled rejection when nobody awaits a failed start (e.g. a restart attempt).
    inst.ready.catch(() => undefined);
    return inst.ready;
  }

  private initFailure(inst: Instance, reason: string): Error {
    if (this.instance === inst) this.instance = undefined;
    const decision = this.isSpawnFailure(reason) ? undefined : this.policy.onCrash();
    if (decision && decision.restart) {
      this.scheduleRestart(`agentd failed to start (${reason})`, decision.attempt, decision.delayMs, null, null);
      return new AgentdError(`agentd failed to start: ${reason}`);
    }
    return this.fail(`agentd failed to start: ${reason}`);
  }

  private isSpawnFailure(reason: string): boolean {
    return /not found|ENOENT|EACCES|permission denied/i.test(reason);
  }

  private onExit(
    inst: Instance,
    code: number | null,
    signal: NodeJS.Signals | null,
    spawnError: Error | undefined,
  ): void {
    if (this.instance === inst) this.instance = undefined;
    // Expected (stop(), or a failed initialize that already reported itself) or before ready.
    if (inst.stopping || this.disposed || this._state === 'starting') return;
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    if (spawnError) {
      this.fail(describeSpawnError(this.options.command, spawnError));
      return;
    }
    const decision = this.policy.onCrash();
    if (decision.restart) {
      this.scheduleRestart(`agentd stopped unexpectedly (${how})`, decision.attempt, decision.delayMs, code, signal);
    } else {
      this.fail(
        `agentd stopped unexpectedly (${how}) and was restarted ${decision.crashes - 1} times in ` +
          `${Math.round(this.policy.options.windowMs / 1000)} s; not restarting it again.`,
        code,
        signal,
      );
    }
  }

  private scheduleRestart(
    why: string,
    attempt: number,
    delayMs: number,
    exitCode: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    const max = this.policy.options.maxRestarts;
    this.setState({
      state: 'restarting',
      message: `${why}; restarting in ${formatDelay(delayMs)} (attempt ${attempt} of ${max}).`,
      attempt,
      delayMs,
      exitCode,
      signal,
      stderrTail: [...this.stderrTail],
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.disposed) return;
      this.launch().catch(() => {
        /* a failed attempt has already scheduled the next one, or failed visibly */
      });
    }, delayMs);
  }

  private fail(message: string, exitCode: number | null = null, signal: NodeJS.Signals | null = null): AgentdError {
    this.lastFailure = message;
    this.setState({ state: 'failed', message, exitCode, signal, stderrTail: [...this.stderrTail] });
    const err = new AgentdError(message);
    this.rejectRestartWaiters(err);
    return err;
  }

  private rejectRestartWaiters(err: Error) {
    const waiters = this.restartWaiters;
    this.restartWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  private setState(change: StateChange): void {
    this._state = change.state;
    this.stateEmitter.fire(change);
  }

  private pushStderr(line: string): void {
    this.stderrTail.push(line);
    if (this.stderrTail.length > STDERR_TAIL) this.stderrTail.shift();
    this.logEmitter.fire(line);
  }

  private async executeClientTool(params: ToolExecuteParams, token: CancellationToken): Promise<ToolExecuteResult> {
    const tool = this.tools.get(params.name);
    if (!tool) {
      return { output: `Unknown client tool: ${params.name}`, isError: true } as ToolExecuteResult;
    }
    try {
      return await tool.execute(params.input, params, token);
    } catch (err) {
      // A failing tool is a result the model can read, not a protocol error.
      return { output: `Error: ${(err as Error).message ?? String(err)}`, isError: true } as ToolExecuteResult;
    }
  }
}

function describeSpawnError(command: string, err: NodeJS.ErrnoException): string {
  if (err.code === 'ENOENT') {
    return `agentd executable not found: '${command}'. Install agentd from its clone (cd agentd && pip install .) or set "agentd.path".`;
  }
  if (err.code === 'EACCES') return `agentd executable is not executable: '${command}'.`;
  return `Could not start agentd ('${command}'): ${err.message}`;
}

function toAgentdError(err: unknown, method: string): Error {
  if (err instanceof ResponseError) {
    return new AgentdError(err.message, err.code, err.data);
  }
  if (err instanceof Error) {
    return new AgentdError(`${method}: ${err.message}`);
  }
  return new AgentdError(`${method}: ${String(err)}`);
}

/** True for the error a cancelled (or aborted-while-queued) `session/chat` answers with. */
export function isCancelled(err: unknown): boolean {
  return err instanceof AgentdError && err.code === ErrorCodes.RequestCancelled;
}

function withTimeout<T>(p: Promise<T>, ms: number, message = 'timed out'): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(message)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`;
}

