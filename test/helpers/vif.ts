/** A simulated machine with one guest and one vif: the setup every device test starts from. */
import pino from "pino";
import { createVif } from "../../src/main/xenbus/toolstack.ts";
import { Netback, Netfront, SimHypervisor, type NetbackOptions, type NetfrontOptions } from "../../src/main/index.ts";

export const silent = pino({ level: "silent" });
export const GUEST_MAC = "00:16:3e:00:00:01";

export async function simVif(opts: { devid?: number; sim?: Parameters<typeof SimHypervisor.create>[0] } = {}) {
  const hv = SimHypervisor.create({ pages: 4096, ...opts.sim });
  const guest = hv.createDomain();
  const devid = opts.devid ?? 0;
  const dom0 = hv.platform(0);
  const paths = await createVif(dom0.xenstore, { frontDomid: guest, backDomid: 0, devid, mac: GUEST_MAC });
  const frontPlatform = hv.platform(guest);
  const backPlatform = hv.platform(0);
  return {
    hv,
    guest,
    devid,
    paths,
    dom0,
    frontPlatform,
    backPlatform,
    serve: (o: Partial<NetbackOptions> = {}) => Netback.serve({ platform: backPlatform, frontendDomid: guest, devid, logger: silent, ...o }),
    connect: (o: Partial<NetfrontOptions> = {}) => Netfront.connect({ platform: frontPlatform, devid, logger: silent, ...o }),
    /** Both ends connected, backend offered first. */
    async pair(front: Partial<NetfrontOptions> = {}, back: Partial<NetbackOptions> = {}) {
      const [backDev, frontDev] = await Promise.all([this.serve(back), this.connect(front)]);
      return { back: backDev, front: frontDev };
    },
  };
}

export type SimPair = Awaited<ReturnType<Awaited<ReturnType<typeof simVif>>["pair"]>>;

/**
 * Run `fn` on a connected pair of a fresh simulated vif (the ends with `front` and `back`
 * options), then disconnect both ends, close the platforms and check that nothing leaked (the
 * end of every device test).
 */
export async function withSimPair(fn: (p: SimPair & { vif: Awaited<ReturnType<typeof simVif>> }) => Promise<void>, front: Partial<NetfrontOptions> = {}, back: Partial<NetbackOptions> = {}): Promise<void> {
  const vif = await simVif();
  const pair = await vif.pair(front, back);
  try {
    await fn({ ...pair, vif });
  } finally {
    await pair.front.disconnect();
    await pair.back.disconnect();
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  }
  const leaks = vif.hv.leaks();
  if (leaks.length > 0) throw new Error(`leaked: ${JSON.stringify(leaks)}`);
}
