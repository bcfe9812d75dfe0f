// What the chat shows for a finished answer's tokens and cost. Pure (no DOM, no `vscode`).
//
// agentd adds up the usage the model reports at the end of each step. A step that was stopped
// (or failed) before the model's last chunk has no report: agentd stores zeros for it, which
// would read as "0 in · 0 out · $0.00" although tokens streamed. A model call always has input
// tokens, so a step with 0 input tokens is a step whose usage is unknown, and is said so.
import type { Message, Part, Usage } from '../protocol';
import { formatCost, formatTokens } from '../webview/format';

export interface UsageSummary {
  /** The line under the answer, e.g. "1.2k in · 80 out · $0.0004" or "usage unknown". */
  text: string;
  /** The exact numbers, and why some are unknown. */
  title: string;
  /** Steps whose usage the model never reported. */
  unknownSteps: number;
}

const known = (u: Usage | undefined) => (u?.inputTokens ?? 0) > 0;

export function describeUsage(info: Pick<Message, 'usage' | 'cost' | 'finishReason'>, parts: readonly Part[]): UsageSummary {
  const steps = parts.filter((p): p is Extract<Part, { type: 'step-finish' }> => p.type === 'step-finish');
  let unknownSteps = steps.filter((s) => !known(s.usage)).length;
  // No step closed at all (a daemon that stopped mid-run): nothing was reported either.
  if (steps.length === 0 && !known(info.usage)) unknownSteps = 1;
  const u = info.usage ?? {};
  const stopped = info.finishReason === 'aborted' ? 'stopped' : info.finishReason === 'error' ? 'failed' : 'unfinished';
  const why =
    `The model reports token usage when it finishes a step; ${unknownSteps === 1 ? `the ${stopped} step` : `${unknownSteps} steps`} ` +
    'ended before it did, so the tokens streamed there and their cost are unknown.';
  if (!known(u)) return { text: 'usage unknown', title: why, unknownSteps: Math.max(unknownSteps, 1) };
  const bits = [`${formatTokens(u.inputTokens)} in`, `${formatTokens(u.outputTokens)} out`];
  if (u.reasoningTokens) bits.push(`${formatTokens(u.reasoningTokens)} reasoning`);
  if (u.cacheReadTokens) bits.push(`${formatTokens(u.cacheReadTokens)} cached`);
  if (info.cost !== undefined && info.cost !== null) bits.push(formatCost(info.cost));
  const exact = [
    `Input tokens: ${u.inputTokens ?? 0}`,
    `Output tokens: ${u.outputTokens ?? 0}`,
    `Reasoning tokens: ${u.reasoningTokens ?? 0}`,
    `Cache read: ${u.cacheReadTokens ?? 0}`,
    `Cache write: ${u.cacheWriteTokens ?? 0}`,
    `Cost: $${info.cost ?? 0}`,
  ].join('\n');
  if (!unknownSteps) return { text: bits.join(' · '), title: exact, unknownSteps };
  return {
    text: `${bits.join(' · ')} + ${unknownSteps === 1 ? `${stopped} step` : `${unknownSteps} steps`}: usage unknown`,
    title: `${exact}\n\nThese count the completed steps only. ${why}`,
    unknownSteps,
  };
}
