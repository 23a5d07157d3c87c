/**
 * Undo actions, run last-in first-out: what a failed connect or a disconnect releases. Built on
 * the platform's AsyncDisposableStack (LIFO order, each step run once, a stack usable once);
 * what it adds is a name per step, and that a step that fails is logged and reported while the
 * others still run, rather than aggregated into one SuppressedError chain.
 */
import type { Logger } from "pino";

export class Cleanup {
  private stack = new AsyncDisposableStack();
  private steps = 0;
  /** Failures of the run in progress, as "what: message". */
  private failed: { what: string; err: unknown }[] = [];

  /** Nothing left to release. */
  get empty(): boolean {
    return this.steps === 0;
  }

  add(what: string, fn: () => unknown): void {
    this.steps++;
    this.stack.defer(async () => {
      this.steps--;
      try {
        await fn();
      } catch (err) {
        this.failed.push({ what, err });
      }
    });
  }

  /** Run every step even if some fail; failures are logged and returned. The Cleanup may be used again. */
  async run(log: Logger): Promise<string[]> {
    const stack = this.stack;
    this.stack = new AsyncDisposableStack();
    await stack.disposeAsync();
    const failed = this.failed;
    this.failed = [];
    for (const f of failed) log.error({ err: f.err }, `release failed: ${f.what}`);
    return failed.map((f) => `${f.what}: ${(f.err as Error)?.message ?? String(f.err)}`);
  }
}
