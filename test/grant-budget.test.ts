/**
 * Grants a Netfront takes: a guest's gntalloc allows 1024 by default, so a guest with several
 * vifs must fit. With the defaults a vif takes 242 (2 rings, 120 data pages each way): four fit.
 * One that does not fit fails with the hypervisor's ENOSPC and leaves the others untouched.
 */
import { describe, expect, test } from "bun:test";
import pino from "pino";
import { Netback, Netfront, PlatformError, SimHypervisor, createVif } from "../src/main/index.ts";
import { until } from "./helpers/until.ts";

const silent = pino({ level: "silent" });

/** Ref numbers below 8 are reserved by the simulated grant table: 1024 usable grants. */
const GNTALLOC_LIMIT = 1024;

async function machine(vifs: number) {
  const hv = SimHypervisor.create({ grantsPerDomain: GNTALLOC_LIMIT + 8 });
  const guest = hv.createDomain();
  for (let devid = 0; devid < vifs; devid++) {
    await createVif(hv.platform(0).xenstore, { frontDomid: guest, backDomid: 0, devid, mac: `00:16:3e:00:01:0${devid}` });
  }
  return { hv, guest };
}

describe("grants per vif", () => {
  test("four vifs in one guest fit its 1024 grants with the defaults, each carrying frames both ways", async () => {
    const { hv, guest } = await machine(4);
    const pairs = await Promise.all(
      [0, 1, 2, 3].map(async (devid) => {
        const [back, front] = await Promise.all([
          Netback.serve({ platform: hv.platform(0), frontendDomid: guest, devid, logger: silent }),
          Netfront.connect({ platform: hv.platform(guest), devid, logger: silent }),
        ]);
        return { back, front };
      }),
    );
    let up = 0;
    let down = 0;
    for (const { back, front } of pairs) {
      back.listen(() => up++);
      front.listen(() => down++);
    }
    for (const { back, front } of pairs) {
      for (let i = 0; i < 500; i++) {
        await front.write(new Uint8Array(1514));
        await back.write(new Uint8Array(1514));
      }
    }
    await until(() => up === 2000 && down === 2000, 10_000);
    for (const { back, front } of pairs) {
      await front.disconnect();
      await back.disconnect();
    }
    expect(hv.leaks()).toEqual([]);
  }, 30_000);

  test("a fifth vif does not fit: ENOSPC from the grant table, nothing of it left, the four others go on", async () => {
    const { hv, guest } = await machine(5);
    const pairs: { back: Netback; front: Netfront }[] = [];
    for (const devid of [0, 1, 2, 3]) {
      const [back, front] = await Promise.all([
        Netback.serve({ platform: hv.platform(0), frontendDomid: guest, devid, logger: silent }),
        Netfront.connect({ platform: hv.platform(guest), devid, logger: silent }),
      ]);
      pairs.push({ back, front });
    }
    const serving = Netback.serve({ platform: hv.platform(0), frontendDomid: guest, devid: 4, logger: silent, timeoutMs: 2000 });
    const err = await Netfront.connect({ platform: hv.platform(guest), devid: 4, logger: silent, timeoutMs: 2000 }).catch((e) => e);
    expect(err).toBeInstanceOf(PlatformError);
    expect((err as PlatformError).code).toBe("ENOSPC");
    expect((err as PlatformError).message).toContain("This vif needs 242 grants");
    expect((err as PlatformError).message).toContain("xen-gntalloc");
    await serving.catch(() => {});
    let got = 0;
    pairs[3]!.back.listen(() => got++);
    for (let i = 0; i < 100; i++) await pairs[3]!.front.write(new Uint8Array(600));
    await until(() => got === 100);
    for (const { back, front } of pairs) {
      await front.disconnect();
      await back.disconnect();
    }
    expect(hv.leaks()).toEqual([]);
  }, 30_000);

  test("fewer data pages fit more vifs: eight vifs with dataPages 56 (114 grants each)", async () => {
    const { hv, guest } = await machine(8);
    const pairs = await Promise.all(
      [0, 1, 2, 3, 4, 5, 6, 7].map(async (devid) => {
        const [back, front] = await Promise.all([
          Netback.serve({ platform: hv.platform(0), frontendDomid: guest, devid, logger: silent }),
          Netfront.connect({ platform: hv.platform(guest), devid, logger: silent, dataPages: 56 }),
        ]);
        return { back, front };
      }),
    );
    let up = 0;
    for (const { back } of pairs) back.listen(() => up++);
    for (const { front } of pairs) for (let i = 0; i < 200; i++) await front.write(new Uint8Array(1514));
    await until(() => up === 1600, 10_000);
    for (const { back, front } of pairs) {
      await front.disconnect();
      await back.disconnect();
    }
    expect(hv.leaks()).toEqual([]);
  }, 30_000);
});
