/**
 * A flow of frames for measuring a device path: batches sent from one device, each done when
 * the other has received every frame of it. The CLI's bench uses it, and so do the repo's
 * benchmarks (bench/device-pair.ts), so both measure the same loop.
 */
import type { NetDevice } from "../main/index.ts";

export class Flow {
  private received = 0;
  private target = 0;
  private done: (() => void) | null = null;
  private readonly frame: Uint8Array;
  private readonly unlisten: () => void;

  constructor(
    private readonly from: NetDevice,
    to: NetDevice,
    size: number,
    /** A batch that has not arrived by then fails (the caller reports it) instead of hanging; none when absent. */
    private readonly timeoutMs?: number,
  ) {
    this.frame = new Uint8Array(size).map((_, i) => i);
    this.frame.fill(0xff, 0, 6); // broadcast destination
    this.unlisten = to.listen(() => {
      if (++this.received >= this.target && this.done !== null) {
        const d = this.done;
        this.done = null;
        d();
      }
    });
  }

  async batch(n: number): Promise<void> {
    this.target = this.received + n;
    const arrived = new Promise<void>((r) => (this.done = r));
    for (let i = 0; i < n; i++) {
      while (!this.from.tryWrite(this.frame)) await this.from.writable(this.frame.length);
    }
    if (this.received >= this.target) {
      this.done = null;
      return;
    }
    if (this.timeoutMs === undefined) return arrived;
    const ms = this.timeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([arrived, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${this.target - this.received} of ${n} frames did not arrive within ${ms / 1000} s`)), ms)))]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.unlisten();
  }
}
