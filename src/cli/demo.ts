/**
 * `--demo N`: N vif pairs brought up on a simulated hypervisor in this process (domain 0 serves
 * guests 1..N), so `list` has live vifs to read on a machine without Xen. Odd-numbered vifs get
 * MTU 9000 and two queues, so the listing shows both kinds.
 */
import type { Logger } from "pino";
import { createVif, Netback, Netfront, SimHypervisor } from "../main/index.ts";

export interface DemoVif {
  guest: number;
  devid: number;
  mac: string;
  mtu: number;
  queues: number;
}

export interface Demo {
  hv: SimHypervisor;
  vifs: DemoVif[];
  close(): Promise<void>;
}

export const DEMO_MAX = 32;

/** The MAC of demo vif `i` (0-based): 00:16:3e:00:01:<i+1>. */
export function demoMac(i: number): string {
  return `00:16:3e:00:01:${(i + 1).toString(16).padStart(2, "0")}`;
}

export async function startDemo(n: number, log: Logger): Promise<Demo> {
  const hv = SimHypervisor.create({ vifs: n });
  const dom0 = hv.platform(0);
  const vifs: DemoVif[] = [];
  const devices: (Netfront | Netback)[] = [];
  const close = async () => {
    for (const d of devices) await d.disconnect().catch(() => {});
  };
  try {
    for (let i = 0; i < n; i++) {
      const guest = hv.createDomain();
      const odd = i % 2 === 1;
      const v: DemoVif = { guest, devid: 0, mac: demoMac(i), mtu: odd ? 9000 : 1500, queues: odd ? 2 : 1 };
      await createVif(dom0.xenstore, { frontDomid: guest, backDomid: 0, devid: v.devid, mac: v.mac, mtu: v.mtu });
      const [back, front] = await Promise.all([
        Netback.serve({ platform: hv.platform(0), frontendDomid: guest, devid: v.devid, maxQueues: 2, logger: log }),
        Netfront.connect({ platform: hv.platform(guest), devid: v.devid, queues: v.queues, logger: log }),
      ]);
      devices.push(front, back);
      vifs.push(v);
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { hv, vifs, close };
}
