// Names for the wire types the extension uses, derived from the generated method table so that
// nothing here restates a wire shape by hand: when the daemon's schema changes, `npm run
// gen:types` updates src/protocol.generated.ts and these follow.
import type { AgentdMethods } from './protocol.generated';

export type { AgentdMethods } from './protocol.generated';

export type MethodName = keyof AgentdMethods;
export type RequestName = {
  [M in MethodName]: AgentdMethods[M]['kind'] extends 'request' ? M : never;
}[MethodName];
export type NotificationName = {
  [M in MethodName]: AgentdMethods[M]['kind'] extends 'notification' ? M : never;
}[MethodName];
/** Notifications the daemon sends (sender `agentd`). */
export type ServerNotificationName = {
  [M in MethodName]: AgentdMethods[M] extends { kind: 'notification'; sender: 'agentd' } ? M : never;
}[MethodName];
export type ParamsOf<M extends MethodName> = AgentdMethods[M]['params'];
export type ResultOf<M extends MethodName> = AgentdMethods[M]['result'];

export type InitializeParams = ParamsOf<'initialize'>;
export type InitializeResult = ResultOf<'initialize'>;
export type Session = ResultOf<'session/get'>['session'];
export type SessionStatus = Session['status'];
export type Message = ResultOf<'session/chat'>['message'];
export type Part = NonNullable<Message['parts']>[number];
export type TextPart = Extract<Part, { type: 'text' }>;
export type ReasoningPart = Extract<Part, { type: 'reasoning' }>;
export type ToolPart = Extract<Part, { type: 'tool' }>;
export type ToolState = ToolPart['state'];
export type StepFinishPart = Extract<Part, { type: 'step-finish' }>;
export type Usage = Session['usage'];
export type InputPart = ParamsOf<'session/chat'>['parts'][number];
export type ClientTool = NonNullable<ParamsOf<'session/chat'>['clientTools']>[number];
export type ToolExecuteParams = ParamsOf<'tool/execute'>;
export type ToolExecuteResult = ResultOf<'tool/execute'>;
export type PermissionRequestParams = ParamsOf<'permission/request'>;
export type PermissionOutcome = ResultOf<'permission/request'>['outcome'];
/** How a command runs: on `permission/request` and on a command's tool state. */
export type CommandSandbox = NonNullable<PermissionRequestParams['sandbox']>;
/** `initialize`'s word on the sandbox (available here or not, configured defaults). */
export type SandboxInfo = InitializeResult['sandbox'];
export type MessageInfo = ParamsOf<'message/updated'>['message'];
export type ErrorInfo = ParamsOf<'session/error'>['error'];
export type McpListParams = ParamsOf<'mcp/list'>;
export type McpServerInfo = ResultOf<'mcp/list'>['servers'][number];
export type McpToolInfo = McpServerInfo['tools'][number];
export type McpStatusServer = ParamsOf<'mcp/status'>['server'];

/** A notification from the daemon, as the client forwards it (method plus typed params). */
export type AgentdNotification = {
  [M in ServerNotificationName]: { method: M; params: ParamsOf<M> };
}[ServerNotificationName];

/** JSON-RPC error codes of the contract. */
export const ErrorCodes = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  ServerNotInitialized: -32002,
  RequestCancelled: -32800,
  SessionNotFound: 1001,
  SessionBusy: 1002,
  ModelNotConfigured: 1003,
} as const;
