// Bounded restarts with exponential backoff: a daemon that keeps dying is given up on, visibly,
// instead of being respawned in a silent loop.

export interface RestartPolicyOptions {
  /** Restarts allowed within `windowMs` before giving up. */
  maxRestarts: number;
  windowMs: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const defaultRestartPolicy: RestartPolicyOptions = {
  maxRestarts: 5,
  windowMs: 3 * 60_000,
  baseDelayMs: 500,
  maxDelayMs: 15_000,
};

export type RestartDecision =
  | { restart: true; attempt: number; delayMs: number }
  | { restart: false; attempt: number; crashes: number };

export class RestartPolicy {
  private crashes: number[] = [];

  constructor(
    readonly options: RestartPolicyOptions = defaultRestartPolicy,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a crash and says whether (and after how long) to restart. */
  onCrash(): RestartDecision {
    const t = this.now();
    this.crashes = this.crashes.filter((c) => t - c < this.options.windowMs);
    this.crashes.push(t);
    const attempt = this.crashes.length;
    if (attempt > this.options.maxRestarts) {
      return { restart: false, attempt, crashes: attempt };
    }
    const delayMs = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (attempt - 1));
    return { restart: true, attempt, delayMs };
  }

  /** Forgets past crashes (after a manual restart, or a settings change). */
  reset(): void {
    this.crashes = [];
  }
}
