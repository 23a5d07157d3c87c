/** The device API: sizes, gather writes, in-place writes, iteration, flags, stats, backpressure, logging. */
import { describe, expect, test } from "bun:test";
import pino from "pino";
import { Writable } from "node:stream";
import { NetError, type Netback, type Netfront } from "../src/main/index.ts";
import type { EventChannels } from "../src/platform/types.ts";
import { Control, createControlState } from "../src/workers/control.ts";
import { runRole } from "../src/workers/role-loop.ts";
import { silent, simVif, withSimPair } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";



describe("device API", () => {
  test("sizes: typed errors below 14 bytes and above the direction's limit; the limits themselves pass", async () => {
    await withSimPair(async ({ front, back }) => {
      const err = async (p: Promise<void>) => p.then(() => "no error", (e: unknown) => (e instanceof NetError ? e.code : String(e)));
      expect(await err(front.write(new Uint8Array(13)))).toBe("FRAME_TOO_SHORT");
      expect(await err(front.write(new Uint8Array(65536)))).toBe("FRAME_TOO_LONG");
      expect(await err(back.write(new Uint8Array(65550)))).toBe("FRAME_TOO_LONG");
      expect(await err(front.writeWith(-1, () => {}))).toBe("FRAME_TOO_SHORT");
      expect(await err(front.write("abc" as unknown as Uint8Array))).toBe("BAD_ARGUMENT");
      expect(await err(front.writev([new Uint8Array(10), 5 as unknown as Uint8Array]))).toBe("BAD_ARGUMENT");
      const sizes: number[] = [];
      back.listen((f) => sizes.push(f.length));
      const fsizes: number[] = [];
      front.listen((f) => fsizes.push(f.length));
      await front.write(new Uint8Array(14));
      await front.write(new Uint8Array(65535));
      await back.write(new Uint8Array(65549)); // 64 KiB payload + header: 17 RX slots
      await until(() => sizes.length === 2 && fsizes.length === 1);
      expect(sizes).toEqual([14, 65535]);
      expect(fsizes).toEqual([65549]);
      expect(front.stats().txDrops + back.stats().rxDrops).toBe(0);
    });
  });

  test("writev gathers parts; writeWith hands a zeroed view of exactly the size asked", async () => {
    await withSimPair(async ({ front, back }) => {
      const got: Uint8Array[] = [];
      back.listen((f) => got.push(f.slice()));
      // Dirty the queue memory first, so zeroing is observable.
      await front.write(new Uint8Array(5000).fill(0xee));
      await front.writev([Uint8Array.of(1, 2, 3), new Uint8Array(0), new Uint8Array(4096).fill(4), Uint8Array.of(5)]);
      let seen = -1;
      let allZero = false;
      await front.writeWith(3000, (b) => {
        seen = b.length;
        allZero = b.every((x) => x === 0);
        b[0] = 0xaa;
        b[2999] = 0xbb;
      });
      await until(() => got.length === 3);
      expect(got[1]!.length).toBe(4100);
      expect([...got[1]!.subarray(0, 4)]).toEqual([1, 2, 3, 4]);
      expect(got[1]![4099]).toBe(5);
      expect([seen, allZero]).toEqual([3000, true]);
      expect([got[2]!.length, got[2]![0], got[2]![1], got[2]![2999]]).toEqual([3000, 0xaa, 0, 0xbb]);
    });
  });

  test("frames(): an async iterator of copies, in order, ending at disconnect", async () => {
    const vif = await simVif();
    const { front, back } = await vif.pair();
    const it = front.frames();
    for (let i = 0; i < 50; i++) await back.write(new Uint8Array(100).fill(i));
    const seen: number[] = [];
    for await (const f of it) {
      seen.push(f[0]!);
      if (seen.length === 50) break;
    }
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
    const ended = (async () => {
      const rest: Uint8Array[] = [];
      for await (const f of front) rest.push(f);
      return rest.length;
    })();
    await back.write(new Uint8Array(60));
    await until(() => front.stats().rxPackets === 51);
    await front.disconnect();
    await back.disconnect();
    expect(await ended).toBe(1);
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("checksum flags cross in both directions and are exposed to the receiver, as shared frozen infos", async () => {
    await withSimPair(async ({ front, back }) => {
      const atBack: unknown[] = [];
      const atFront: unknown[] = [];
      back.listen((_, info) => atBack.push(info));
      front.listen((_, info) => atFront.push(info));
      await front.write(new Uint8Array(60), { csumBlank: true });
      await front.write(new Uint8Array(60), { dataValidated: true });
      await front.write(new Uint8Array(5000), { csumBlank: true, dataValidated: true });
      await back.write(new Uint8Array(60), { dataValidated: true });
      await back.write(new Uint8Array(9000), { csumBlank: true });
      await back.write(new Uint8Array(60));
      await until(() => atBack.length === 3 && atFront.length === 3);
      expect(atBack).toEqual([
        { csumBlank: true, dataValidated: false, gso: null },
        { csumBlank: false, dataValidated: true, gso: null },
        { csumBlank: true, dataValidated: true, gso: null },
      ]);
      expect(atFront).toEqual([
        { csumBlank: false, dataValidated: true, gso: null },
        { csumBlank: true, dataValidated: false, gso: null },
        { csumBlank: false, dataValidated: false, gso: null },
      ]);
      // Without GSO the info is shared and frozen: nothing to allocate per frame, nothing a
      // listener can change for the next one.
      await back.write(new Uint8Array(60));
      await until(() => atFront.length === 4);
      expect(atFront[3]).toBe(atFront[2]);
      expect(Object.isFrozen(atFront[2])).toBe(true);
    });
  });

  test("resetStats starts the counters again from zero", async () => {
    await withSimPair(async ({ front, back }) => {
      let n = 0;
      back.listen(() => n++);
      await front.write(new Uint8Array(100));
      await until(() => n === 1);
      expect(front.stats().txPackets).toBe(1);
      front.resetStats();
      back.resetStats();
      expect(front.stats().txPackets).toBe(0);
      expect(back.stats().rxBytes).toBe(0);
      await front.write(new Uint8Array(200));
      await until(() => n === 2);
      expect(front.stats()).toMatchObject({ txPackets: 1, txBytes: 200 });
      expect(back.stats()).toMatchObject({ rxPackets: 1, rxBytes: 200 });
    });
  });

  test("backpressure: with nobody receiving, writes wait without spinning the main thread; nothing is lost", async () => {
    await withSimPair(async ({ front, back }) => {
      const frame = new Uint8Array(8192);
      let done = 0;
      let pending: Promise<void>[] = [];
      // 4 MiB queues on both sides plus 256 pages in flight hold ~1000 such frames.
      for (let i = 0; i < 3000; i++) pending.push(front.write(frame.fill(i & 0xff, 0, 1)).then(() => void done++));
      await Bun.sleep(200);
      expect(done).toBeGreaterThan(0);
      expect(done).toBeLessThan(3000);
      // The main thread stays free while writes wait: timers keep firing.
      let ticks = 0;
      const t = setInterval(() => ticks++, 5);
      await Bun.sleep(200);
      clearInterval(t);
      expect(ticks).toBeGreaterThan(10);
      const firstBytes: number[] = [];
      back.listen((f) => firstBytes.push(f[0]!));
      await Promise.all(pending);
      pending = [];
      await until(() => firstBytes.length === 3000, 25_000);
      expect(firstBytes).toEqual(Array.from({ length: 3000 }, (_, i) => i & 0xff));
    });
  }, 30_000);

  test("a listener that throws is logged; other listeners and later frames still get through", async () => {
    await withSimPair(async ({ front, back }) => {
      let good = 0;
      back.listen(() => {
        throw new Error("listener bug");
      });
      back.listen(() => good++);
      for (let i = 0; i < 5; i++) await front.write(new Uint8Array(60));
      await until(() => good === 5);
      expect(back.stats().rxPackets).toBe(5);
    });
  });

  test("a listener that throws on every frame is logged once a second at most, with how many were not", async () => {
    const lines: { msg: string; notLogged?: number }[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    const logger = pino({ level: "info" }, sink);
    const vif = await simVif();
    const { Netback, Netfront } = await import("../src/main/index.ts");
    const [back, front] = await Promise.all([
      Netback.serve({ platform: vif.backPlatform, frontendDomid: vif.guest, logger }),
      Netfront.connect({ platform: vif.frontPlatform, logger: silent }),
    ]);
    let calls = 0;
    back.listen(() => {
      calls++;
      throw new Error("listener bug");
    });
    for (let i = 0; i < 500; i++) await front.write(new Uint8Array(60));
    await until(() => calls === 500);
    await Bun.sleep(1100);
    await front.write(new Uint8Array(60));
    await until(() => calls === 501);
    await front.disconnect();
    await back.disconnect();
    await Bun.sleep(10);
    const threw = lines.filter((l) => l.msg.startsWith("a frame listener threw"));
    expect(threw.length).toBe(2);
    expect(threw[0]!.notLogged).toBe(0);
    expect(threw[1]!.notLogged).toBe(499);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("logging: connection events and errors, never a line per frame", async () => {
    const lines: { msg: string; level: number }[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    const logger = pino({ level: "info" }, sink);
    const vif = await simVif();
    const { Netback, Netfront } = await import("../src/main/index.ts");
    const [back, front] = await Promise.all([
      Netback.serve({ platform: vif.backPlatform, frontendDomid: vif.guest, logger }),
      Netfront.connect({ platform: vif.frontPlatform, logger }),
    ]);
    let n = 0;
    back.listen(() => n++);
    for (let i = 0; i < 200; i++) await front.write(new Uint8Array(60));
    await until(() => n === 200);
    await front.disconnect();
    await back.disconnect();
    await Bun.sleep(10);
    const msgs = lines.map((l) => l.msg);
    expect(msgs.filter((m) => m === "connected").length).toBe(2);
    expect(msgs.filter((m) => m === "disconnected").length).toBe(2);
    expect(lines.length).toBeLessThan(20);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});

describe("spinMicros", () => {
  test("runRole spins spinMicros µs before it blocks: work arriving 1 ms apart costs a sleep each without, none with", () => {
    const sleeps = (spinMicros: number) => {
      const ctl = new Control(createControlState());
      let left = 20;
      let due = performance.now() + 1;
      const role = {
        poll: () => {
          if (left === 0 || performance.now() < due) return false;
          if (--left === 0) ctl.requestStop();
          due = performance.now() + 1;
          return true;
        },
        prepareSleep: () => false,
        woke: () => {},
        drain: () => false,
        blocked: false,
        finish: () => {},
      };
      let waits = 0;
      const evtchn = {
        // Blocks until the next piece of work is due, as an event would wake it.
        wait: () => {
          waits++;
          while (performance.now() < due);
          return [];
        },
        unmask: () => {},
      } as unknown as EventChannels;
      runRole(role, ctl, evtchn, spinMicros);
      expect(left).toBe(0);
      return waits;
    };
    // Cold JIT or a descheduled thread may let a piece of work arrive during the 64 polls.
    expect(sleeps(0)).toBeGreaterThanOrEqual(15);
    expect(sleeps(5000)).toBe(0);
  });

  test("devices whose workers spin move every frame both ways, in order", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ spinMicros: 200 }), vif.connect({ spinMicros: 200 })]);
    const got = { up: [] as number[], down: [] as number[] };
    back.listen((f) => got.up.push(f[0]! | (f[1]! << 8)));
    front.listen((f) => got.down.push(f[0]! | (f[1]! << 8)));
    const N = 3000;
    for (let i = 0; i < N; i++) {
      const f = new Uint8Array(60);
      f[0] = i & 0xff;
      f[1] = i >> 8;
      await front.write(f);
      await back.write(f);
    }
    await until(() => got.up.length === N && got.down.length === N, 30_000);
    const seq = Array.from({ length: N }, (_, i) => i);
    expect(got.up).toEqual(seq);
    expect(got.down).toEqual(seq);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks([vif.guest])).toEqual([]);
  }, 60_000);

  test("a negative, non-finite or huge spinMicros is refused with BAD_ARGUMENT before anything is set up", async () => {
    const vif = await simVif();
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, 1e9]) {
      await expect(vif.connect({ spinMicros: bad })).rejects.toThrow(/BAD_ARGUMENT: option spinMicros must be a number in 0\.\.10000/);
      await expect(vif.serve({ spinMicros: bad })).rejects.toThrow(NetError);
    }
    expect(vif.hv.leaks([vif.guest])).toEqual([]);
  });
});

describe("default platform", () => {
  test("without a platform option the devices use the embedded simulated hypervisor (no Xen here)", async () => {
    const { Netback, Netfront, defaultSimHypervisor, createVif } = await import("../src/main/index.ts");

    const hv = defaultSimHypervisor();
    expect(defaultSimHypervisor()).toBe(hv);
    if (!hv.exists(5)) hv.createDomain(5);
    const dom0 = hv.platform(0);
    await createVif(dom0.xenstore, { frontDomid: 5, backDomid: 0, devid: 3, mac: "00:16:3e:00:00:05" });
    const [back, front] = await Promise.all([
      Netback.serve({ frontendDomid: 5, devid: 3, logger: silent }),
      Netfront.connect({ domid: 5, devid: 3, logger: silent }),
    ]);
    let got = 0;
    back.listen(() => got++);
    await front.write(new Uint8Array(60));
    await until(() => got === 1);
    await front.disconnect();
    await back.disconnect();
    expect(hv.leaks([5])).toEqual([]);
    dom0.close();
  });

  test("BUN_XEN_NET_PLATFORM=xen without Xen: a typed error naming what is missing; junk is refused too", async () => {
    const { Netfront } = await import("../src/main/index.ts");
    const saved = process.env.BUN_XEN_NET_PLATFORM;
    try {
      process.env.BUN_XEN_NET_PLATFORM = "xen";
      await expect(Netfront.connect({ domid: 6 })).rejects.toThrow(/ENOENT.*(\/dev\/xen|xenstored)/);
      process.env.BUN_XEN_NET_PLATFORM = "kvm";
      await expect(Netfront.connect({ domid: 6 })).rejects.toThrow(/must be "sim" or "xen"/);
    } finally {
      if (saved === undefined) delete process.env.BUN_XEN_NET_PLATFORM;
      else process.env.BUN_XEN_NET_PLATFORM = saved;
    }
  });
});

describe("nobody listening", () => {
  test("frames that arrive after the last listener left wait in the queue for the next one", async () => {
    await withSimPair(async ({ front, back }) => {
      const first: number[] = [];
      const off = back.listen((f) => first.push(f[0]!));
      await front.write(new Uint8Array(60).fill(1));
      await until(() => first.length === 1);
      off();
      for (let i = 2; i <= 5; i++) await front.write(new Uint8Array(60).fill(i));
      await Bun.sleep(50);
      const later: number[] = [];
      back.listen((f) => later.push(f[0]!));
      await until(() => later.length === 4);
      expect([first, later]).toEqual([[1], [2, 3, 4, 5]]);
    });
  });
});

describe("tryWrite and writable", () => {
  test("tryWrite queues without a promise, says false when the queue is full, and writable() says when to offer again", async () => {
    await withSimPair(async ({ front, back }) => {
      expect(() => front.tryWrite(new Uint8Array(10))).toThrow(/FRAME_TOO_SHORT/);
      const frame = new Uint8Array(8192);
      let queued = 0;
      const fill = () => {
        while (queued < 5000 && front.tryWrite(frame.fill(queued & 0xff, 0, 1))) queued++;
      };
      // Nobody receives at the back end yet: its queue, the ring and ours fill up. The workers
      // move frames on while we write, so "full" holds only once three top-ups in a row added
      // nothing.
      fill();
      for (let still = 0; still < 3; ) {
        await Bun.sleep(20);
        const before = queued;
        fill();
        still = queued === before ? still + 1 : 0;
      }
      // At least what the TX pages hold in flight (120 pages, two per frame) and our queue's window.
      expect(queued).toBeGreaterThan(60);
      expect(queued).toBeLessThan(5000);
      expect(front.tryWrite(frame)).toBe(false);
      const got: number[] = [];
      back.listen((f) => got.push(f[0]!));
      await front.writable(frame.length);
      expect(front.tryWrite(frame.fill(queued & 0xff, 0, 1))).toBe(true);
      queued++;
      await until(() => got.length === queued, 25_000);
      expect(got).toEqual(Array.from({ length: queued }, (_, i) => i & 0xff));
    });
  }, 30_000); // ~90 ms alone; once over 5 s on this 2-core machine while another suite ran
});

describe("await using", () => {
  test("a Netfront and a Netback declared with `await using` are disconnected when their scope ends, nothing left behind", async () => {
    const vif = await simVif();
    let front: Netfront | null = null;
    let back: Netback | null = null;
    {
      const [b0, f0] = await Promise.all([vif.serve({ reconnect: false }), vif.connect({ reconnect: false })]);
      await using b = b0;
      await using f = f0;
      [front, back] = [f, b];
      let got = 0;
      b.listen(() => got++);
      await f.write(new Uint8Array(100));
      await until(() => got === 1);
    }
    expect([front!.connected, back!.connected]).toEqual([false, false]);
    expect((await front!.closed).code).toBe("DISCONNECTED");
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)).toBe("6");
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});
