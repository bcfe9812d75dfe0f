// The client layer: everything here runs under plain Node (no `vscode` import).
export * from './agentdClient';
export * from './daemonEnv';
export * from './daemonInfo';
export * from './editLogic';
export * from './mcp';
export * from './emitter';
export * from './restartPolicy';
export * from './permissionChoices';
export * from './restrictedMode';
export { ChatState } from '../shared/chatState';
export { sandboxLabel, sandboxSentence } from '../shared/sandbox';
export { describeUsage } from '../shared/usage';
export type { UsageSummary } from '../shared/usage';
export type { Change, MessageState } from '../shared/chatState';
export * from '../protocol';
