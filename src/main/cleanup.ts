/** Undo actions, run last-in first-out: what a failed connect or a disconnect releases. */
import type { Logger } from "pino";

export class Cleanup {
  private readonly steps: { what: string; fn: () => unknown }[] = [];

  /** Nothing left to release. */
  get empty(): boolean {
    return this.steps.length === 0;
  }

  add(what: string, fn: () => unknown): void {
    this.steps.push({ what, fn });
  }

  /** Run every step even if some fail; failures are logged and returned. */
  async run(log: Logger): Promise<string[]> {
    const failed: string[] = [];
    while (this.steps.length > 0) {
      const { what, fn } = this.steps.pop()!;
      try {
        await fn();
      } catch (e) {
        failed.push(`${what}: ${(e as Error)?.message ?? String(e)}`);
        log.error({ err: e }, `release failed: ${what}`);
      }
    }
    return failed;
  }
}
