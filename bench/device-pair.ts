/** A netback and a netfront connected on a fresh simulated hypervisor, for benchmarks. */
import pino from "pino";
import { Netback, Netfront, SimHypervisor, createVif } from "../src/main/index.ts";

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

/** Batches of frames from one device to the other (the same loop as the CLI's bench). */
export { Flow } from "../src/cli/flow.ts";
