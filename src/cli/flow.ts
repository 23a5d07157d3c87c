/**
 * A flow of frames for measuring a device path: batches sent from one device, each done when
 * the other has received every frame of it. The CLI's bench uses it, and so do the repo's
 * benchmarks (bench/device-pair.ts), so both measure the same loop. Per frame (tryWrite and
 * listen, what most applications use) or batched (tryWriteMany and listenBatch).
 */
import type { NetDevice } from "../main/index.ts";

export class Flow {
  private received = 0;
  private target = 0;
  private done: (() => void) | null = null;
  private readonly frame: Uint8Array;
  /** The batched sender's array: the same frame many times (tryWriteMany takes a slice of it). */
  private readonly many: Uint8Array[];
  private readonly unlisten: () => void;

  constructor(
    private readonly from: NetDevice,
    to: NetDevice,
    size: number,
    /** A batch that has not arrived by then fails (the caller reports it) instead of hanging; none when absent. */
    private readonly timeoutMs?: number,
    /** Send with tryWriteMany and receive with listenBatch. */
    private readonly batched = false,
  ) {
    this.frame = new Uint8Array(size).map((_, i) => i);
    this.frame.fill(0xff, 0, 6); // broadcast destination
    this.many = batched ? Array.from({ length: 64 }, () => this.frame) : [];
    this.unlisten = batched ? to.listenBatch((b) => this.arrived(b.length)) : to.listen(() => this.arrived(1));
  }

  private arrived(n: number): void {
    this.received += n;
    if (this.received >= this.target && this.done !== null) {
      const d = this.done;
      this.done = null;
      d();
    }
  }

  private async send(n: number): Promise<void> {
    if (!this.batched) {
      for (let i = 0; i < n; i++) {
        while (!this.from.tryWrite(this.frame)) await this.from.writable(this.frame.length);
      }
      return;
    }
    const many = this.many;
    while (n > 0) {
      const sent = this.from.tryWriteMany(n >= many.length ? many : many.slice(0, n));
      n -= sent;
      if (n > 0 && sent < many.length) await this.from.writable(this.frame.length);
    }
  }

  async batch(n: number): Promise<void> {
    this.target = this.received + n;
    const arrived = new Promise<void>((r) => (this.done = r));
    await this.send(n);
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
