// Small display formatters for the chat view.

export function formatTokens(n: number | undefined): string {
  const v = n ?? 0;
  if (v < 1000) return String(v);
  if (v < 10_000) return (v / 1000).toFixed(1).replace(/\.0$/, '') + 'k';
  if (v < 1_000_000) return Math.round(v / 1000) + 'k';
  return (v / 1_000_000).toFixed(1).replace(/\.0$/, '') + 'M';
}

export function formatCost(c: number | undefined): string {
  const v = c ?? 0;
  if (v === 0) return '$0.00';
  if (v < 0.01) return '$' + v.toPrecision(2).replace(/0+$/, '').replace(/\.$/, '');
  return '$' + v.toFixed(v < 1 ? 3 : 2);
}

export function formatRelativeTime(ms: number | undefined, now = Date.now()): string {
  if (!ms) return '';
  const s = Math.round((now - ms) / 1000);
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  if (d < 7) return `${d} d ago`;
  return new Date(ms).toLocaleDateString();
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export const finishReasonLabel: Record<string, string> = {
  stop: '',
  aborted: 'Stopped',
  length: 'Output limit reached',
  'tool-calls': 'Step limit reached',
  error: 'Failed',
  'content-filter': 'Blocked by the content filter',
  interrupted: 'Interrupted (agentd stopped during the run)',
};
