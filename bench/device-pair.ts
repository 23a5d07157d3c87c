/** A netback and a netfront connected on a fresh simulated hypervisor, for benchmarks. */
import pino from "pino";
import { Netback, Netfront, SimHypervisor, createVif } from "../src/main/index.ts";
import type { NetDevice } from "../src/main/device.ts";

export interface Pair {
  front: Netfront;
  back: Netback;
  close(): Promise<void>;
}

/** BENCH_DATA_PAGES=N: the Netfront's dataPages (to compare against the default). */
export async function devicePair(): Promise<Pair> {
  const hv = SimHypervisor.create({ pages: 4096 });
  const guest = hv.createDomain();
  const logger = pino({ level: "warn" });
  await createVif(hv.platform(0).xenstore, { frontDomid: guest, backDomid: 0, devid: 0, mac: "00:16:3e:00:00:01" });
  const [back, front] = await Promise.all([
    Netback.serve({ platform: hv.platform(0), frontendDomid: guest, logger }),
    Netfront.connect({ platform: hv.platform(guest), logger, ...(process.env.BENCH_DATA_PAGES ? { dataPages: Number(process.env.BENCH_DATA_PAGES) } : {}) }),
  ]);
  return {
    front,
    back,
    async close() {
      await front.disconnect();
      await back.disconnect();
      hv.assertNoLeaks([guest]);
    },
  };
}

/** Sends batches from `from` and resolves when `to` has received each whole batch. */
export class Flow {
  private received = 0;
  private target = 0;
  private done: (() => void) | null = null;
  private readonly frame: Uint8Array;

  constructor(
    private readonly from: NetDevice,
    to: NetDevice,
    size: number,
  ) {
    this.frame = new Uint8Array(size).map((_, i) => i);
    to.listen(() => {
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
    if (this.received < this.target) await arrived;
    else this.done = null;
  }
}
