/**
 * Where the CLI runs: real Xen (this domain, through /dev/xen and xenstore) or, without Xen,
 * the simulated hypervisor in this process. And the device pair bench and capture drive: a vif
 * whose two ends this process owns.
 */
import pino, { type Logger } from "pino";
import { createVif, destroyVif, Netback, Netfront, SimHypervisor } from "../main/index.ts";
import { xenPresent } from "../main/platform-default.ts";
import { createXenPlatform } from "../platform/xen/platform.ts";
import type { Platform } from "../platform/types.ts";
import { UsageError } from "./usage.ts";

export type HostKind = "xen" | "sim";

/** Real Xen when /dev/xen is there; BUN_XEN_NET_PLATFORM=sim|xen overrides, as for the devices. */
export function hostKind(): HostKind {
  const want = process.env.BUN_XEN_NET_PLATFORM ?? (xenPresent() ? "xen" : "sim");
  if (want !== "xen" && want !== "sim") throw new UsageError(`BUN_XEN_NET_PLATFORM must be "sim" or "xen", got ${JSON.stringify(want)}`);
  return want;
}

/** Logs go to stderr (stdout is the table or the JSON), warnings and worse unless BUN_XEN_NET_LOG says otherwise. */
export function cliLogger(): Logger {
  return pino({ name: "bun-xen-net", level: process.env.BUN_XEN_NET_LOG ?? "warn" }, pino.destination(2));
}

/** A Netfront and the Netback serving it, both in this process, on one vif. */
export interface SelfPair {
  kind: HostKind;
  front: Netfront;
  back: Netback;
  /** Where the vif lives, for the report. */
  where: string;
  close(): Promise<void>;
}

/**
 * Simulated: a fresh machine, domain 0 serving a guest's vif. Real Xen: a vif of this domain
 * to itself (front and back both here, on a device id no vif uses), removed again at close.
 */
export async function selfPair(kind: HostKind, log: Logger): Promise<SelfPair> {
  if (kind === "sim") {
    const hv = SimHypervisor.create({ pages: 4096 });
    const guest = hv.createDomain();
    await createVif(hv.platform(0).xenstore, { frontDomid: guest, backDomid: 0, devid: 0, mac: "00:16:3e:00:00:01" });
    const [back, front] = await Promise.all([
      Netback.serve({ platform: hv.platform(0), frontendDomid: guest, logger: log }),
      Netfront.connect({ platform: hv.platform(guest), logger: log }),
    ]);
    return {
      kind,
      front,
      back,
      where: `simulated hypervisor, domain ${guest} fronting, domain 0 serving`,
      async close() {
        await front.disconnect();
        await back.disconnect();
      },
    };
  }
  const platform = await createXenPlatform();
  const me = platform.domid;
  let devid = -1;
  let made = false;
  try {
    devid = await freeDevid(platform);
    await createVif(platform.xenstore, { frontDomid: me, backDomid: me, devid, mac: randomMac() });
    made = true;
    const [back, front] = await Promise.all([
      Netback.serve({ platform, frontendDomid: me, devid, logger: log }),
      Netfront.connect({ platform, devid, logger: log }),
    ]);
    return {
      kind,
      front,
      back,
      where: `Xen, domain ${me} fronting and serving its own vif ${devid}`,
      async close() {
        try {
          await front.disconnect();
          await back.disconnect();
        } finally {
          await destroyVif(platform.xenstore, me, me, devid).catch(() => {});
          platform.close();
        }
      },
    };
  } catch (e) {
    if (made) await destroyVif(platform.xenstore, me, me, devid).catch(() => {});
    platform.close();
    throw e;
  }
}

/** The lowest device id under this domain's device/vif that no vif uses. */
async function freeDevid(p: Platform): Promise<number> {
  const used = new Set((await p.xenstore.directory(`/local/domain/${p.domid}/device/vif`).catch(() => [] as string[])).map(Number));
  let d = 0;
  while (used.has(d)) d++;
  return d;
}

/** A locally administered unicast MAC in Xen's 00:16:3e range, random in its last three bytes. */
function randomMac(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return ["00", "16", "3e", ...Array.from(b, (x) => x.toString(16).padStart(2, "0"))].join(":");
}

