// Which daemon serves the window, in words (`initialize`'s `daemon`), for the status bar's
// tooltip and the output channel. Pure, tested under plain Node.
import type { InitializeResult } from '../protocol';

export function describeDaemon(serverInfo?: InitializeResult['serverInfo'], daemon?: InitializeResult['daemon']): string {
  const version = serverInfo ? `agentd ${serverInfo.version}` : 'agentd';
  if (!daemon) return `${version} is running`;
  if (!daemon.shared) {
    return `${version} is running: this window's own daemon (pid ${daemon.pid}); its answers ${
      daemon.onDisconnect === 'continue' ? 'go on' : 'stop'
    } when the window closes or reloads`;
  }
  const n = daemon.connections;
  return (
    `${version} is running: the shared daemon (pid ${daemon.pid}), ${n} editor${n === 1 ? '' : 's'} connected when this window joined; ` +
    `answers ${daemon.onDisconnect === 'continue' ? 'go on through a window reload' : 'stop when the window that asked closes or reloads'}`
  );
}
