/**
 * GSO on the simulated hypervisor: frames written with `gso` arrive whole between our ends
 * (both offer it), or as valid TCP segments to a peer that did not offer it; the keys each end
 * writes; bad `gso` options. Wire format slot by slot: gso-wire.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { NetError, type FrameInfo } from "../src/main/index.ts";
import { setPartialTcpChecksum } from "../src/protocol/tcp-segment.ts";
import { packet, verifies } from "./helpers/packets.ts";
import { silent, simVif } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

/** A TCP frame of `payload` bytes: sequence 0xfffff800 (it wraps), ACK|PSH|FIN, IPv4 id 0x1234. */
function tcpFrame(v6: boolean, payload: number, seed = 3): Uint8Array {
  const b = packet({ v6, tcp: true, payload, seed });
  const ip = 14;
  const tcp = ip + (v6 ? 40 : 20);
  const dv = new DataView(b.buffer);
  dv.setUint32(tcp + 4, 0xfffff800);
  b[tcp + 13] = 0x19;
  if (!v6) dv.setUint16(ip + 4, 0x1234);
  return b;
}

/** The same frame with its checksum field as a CHECKSUM_PARTIAL packet carries it (what csumBlank says). */
function partial(f: Uint8Array): Uint8Array {
  const c = f.slice();
  setPartialTcpChecksum(c, 0, c.length);
  return c;
}

/** Segments checked as a receiver would: each valid, sequence contiguous, payload joined = the original's. */
function expectSegmentsOf(segs: Uint8Array[], original: Uint8Array, v6: boolean, mss: number): void {
  const hdr = 14 + (v6 ? 40 : 20) + 20;
  const tcp = hdr - 20;
  expect(segs.length).toBe(Math.ceil((original.length - hdr) / mss));
  let seq = 0xfffff800;
  const joined: number[] = [];
  segs.forEach((s, i) => {
    expect(verifies(s)).toBe(true);
    const dv = new DataView(s.buffer, s.byteOffset, s.byteLength);
    expect(dv.getUint32(tcp + 4)).toBe(seq);
    expect(s.length - hdr).toBe(Math.min(mss, original.length - hdr - i * mss));
    seq = (seq + s.length - hdr) >>> 0;
    for (const x of s.subarray(hdr)) joined.push(x);
  });
  expect(Uint8Array.from(joined)).toEqual(original.slice(hdr));
}

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

async function withPair(o: { front?: { gso?: boolean; scatterGather?: boolean }; back?: { gso?: boolean; scatterGather?: boolean } }, fn: (p: Awaited<ReturnType<Vif["pair"]>>, vif: Vif) => Promise<void>) {
  const vif = await simVif();
  const [back, front] = await Promise.all([vif.serve({ logger: silent, ...o.back }), vif.connect({ logger: silent, ...o.front })]);
  try {
    await fn({ back, front }, vif);
  } finally {
    await front.disconnect();
    await back.disconnect();
    closeAll(vif);
  }
  expect(vif.hv.leaks()).toEqual([]);
}

function collect(dev: { listen(cb: (f: Uint8Array, i: FrameInfo) => void): () => void }) {
  const got: { frame: Uint8Array; info: FrameInfo }[] = [];
  dev.listen((f, info) => got.push({ frame: f.slice(), info }));
  return got;
}

describe("between our ends (both offer GSO)", () => {
  test("the keys: both write feature-gso-tcpv4/v6=1", async () => {
    await withPair({}, async (_p, vif) => {
      const xs = vif.dom0.xenstore;
      for (const dir of [vif.paths.frontPath, vif.paths.backPath]) {
        expect([await xs.read(`${dir}/feature-gso-tcpv4`), await xs.read(`${dir}/feature-gso-tcpv6`)]).toEqual(["1", "1"]);
      }
    });
  });

  for (const v6 of [false, true]) {
    test(`${v6 ? "TCP/IPv6" : "TCP/IPv4"}: Netfront → Netback and Netback → Netfront arrive whole, byte-exact, info.gso as sent`, async () => {
      await withPair({}, async ({ back, front }) => {
        const atBack = collect(back);
        const atFront = collect(front);
        const type = v6 ? "tcpv6" : "tcpv4";
        const up = partial(tcpFrame(v6, 60000, 1)); // 60054 or 60074 bytes
        const down = partial(tcpFrame(v6, 65549 - 14 - (v6 ? 60 : 40), 2)); // the largest an RX packet may be
        await front.write(up, { gso: { type, size: 1448 }, csumBlank: true });
        await back.write(down, { gso: { type: v6 ? 2 : 1, size: 8948 }, csumBlank: true });
        await until(() => atBack.length === 1 && atFront.length === 1);
        expect(atBack[0]!.frame).toEqual(up);
        expect(atBack[0]!.info).toEqual({ csumBlank: true, dataValidated: true, gso: { type: v6 ? 2 : 1, size: 1448 } });
        expect(down.length).toBe(65549);
        expect(atFront[0]!.frame).toEqual(down);
        expect(atFront[0]!.info).toEqual({ csumBlank: true, dataValidated: true, gso: { type: v6 ? 2 : 1, size: 8948 } });
        expect(front.stats()).toMatchObject({ txPackets: 1, rxPackets: 1, txDrops: 0, rxDrops: 0, txErrors: 0, rxErrors: 0 });
        expect(back.stats()).toMatchObject({ txPackets: 1, rxPackets: 1, txDrops: 0, rxDrops: 0 });
      });
    });
  }

  test("a frame with a complete checksum (no csumBlank) goes as CHECKSUM_PARTIAL: the field becomes the pseudo-header sum, the rest byte-exact", async () => {
    await withPair({}, async ({ back, front }) => {
      const atBack = collect(back);
      const f = tcpFrame(false, 20000);
      await front.write(f, { gso: { type: "tcpv4", size: 1448 } });
      await until(() => atBack.length === 1);
      expect(atBack[0]!.frame).toEqual(partial(f));
      expect(atBack[0]!.info.csumBlank).toBe(true);
    });
  });

  test("mixed GSO and plain frames keep their order, each with its own info (write, writev, writeWith, tryWrite)", async () => {
    await withPair({}, async ({ back, front }) => {
      const atBack = collect(back);
      const sent: { frame: Uint8Array; gso: boolean }[] = [];
      for (let i = 0; i < 40; i++) {
        const big = i % 2 === 0;
        const f = big ? partial(tcpFrame(false, 3000 + i * 977, i)) : packet({ payload: 100 + i, seed: i });
        sent.push({ frame: f, gso: big });
        const o = big ? { gso: { type: "tcpv4" as const, size: 1000 + i }, csumBlank: true } : {};
        const how = i % 8;
        if (how < 2) await front.write(f, o);
        else if (how < 4) await front.writev([f.subarray(0, 30), f.subarray(30)], o);
        else if (how < 6) await front.writeWith(f.length, (b) => b.set(f), o);
        else {
          while (!front.tryWrite(f, o)) await front.writable();
        }
      }
      await until(() => atBack.length === 40);
      atBack.forEach((g, i) => {
        expect(g.frame).toEqual(sent[i]!.frame);
        expect(g.info.gso).toEqual(sent[i]!.gso ? { type: 1, size: 1000 + i } : null);
      });
    });
  });
});

describe("to a peer that did not offer GSO: segments cut here", () => {
  for (const v6 of [false, true]) {
    test(`${v6 ? "IPv6" : "IPv4"}: Netfront to a Netback with gso: false`, async () => {
      await withPair({ back: { gso: false } }, async ({ back, front }, vif) => {
        expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/feature-gso-tcpv4`)).toBe("0");
        const atBack = collect(back);
        const f = tcpFrame(v6, 30000);
        await front.write(f, { gso: { type: v6 ? "tcpv6" : "tcpv4", size: 1448 }, csumBlank: true });
        await until(() => atBack.length === Math.ceil(30000 / 1448));
        expectSegmentsOf(atBack.map((g) => g.frame), f, v6, 1448);
        for (const g of atBack) expect(g.info).toEqual({ csumBlank: false, dataValidated: true, gso: null });
        expect(front.stats().txPackets).toBe(atBack.length);
      });
    });
  }

  test("Netback to a Netfront with gso: false (it wrote 0: what it can receive), and a peer without scatter-gather (MSS within its 1514)", async () => {
    for (const front of [{ gso: false }, { scatterGather: false }]) {
      await withPair({ front }, async ({ back, front }, vif) => {
        expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/feature-gso-tcpv4`)).toBe("0");
        const atFront = collect(front);
        const f = tcpFrame(false, 20000);
        await back.write(f, { gso: { type: 1, size: 1460 } });
        await until(() => atFront.length === Math.ceil(20000 / 1460));
        expectSegmentsOf(atFront.map((g) => g.frame), f, false, 1460);
        // Larger segments than the peer's frames: refused, naming why.
        if (front.maxFrameSize < 9000) {
          await expect(back.write(f, { gso: { type: 1, size: 8000 } })).rejects.toThrow(/gso.size 8000 makes segments of 8054 bytes, more than its maxFrameSize/);
        }
      });
    }
  });

  test("a Netfront with gso: false sends segments to a Netback that offers GSO", async () => {
    await withPair({ front: { gso: false } }, async ({ back, front }) => {
      const atBack = collect(back);
      const f = tcpFrame(true, 10000);
      await front.write(f, { gso: { type: 2, size: 1000 } });
      await until(() => atBack.length === 10);
      expectSegmentsOf(atBack.map((g) => g.frame), f, true, 1000);
    });
  });
});

describe("bad gso options are BAD_ARGUMENT naming what is wrong", () => {
  test("type, size, frame", async () => {
    await withPair({}, async ({ front, back }) => {
      const f = tcpFrame(false, 5000);
      const cases: [unknown, RegExp][] = [
        [{ type: "udp", size: 1448 }, /gso.type must be "tcpv4", "tcpv6", 1 or 2, got "udp"/],
        [{ type: 3, size: 1448 }, /gso.type .* got 3/],
        [{ type: "tcpv4", size: 0 }, /gso.size must be an integer in 1..65535 \(the MSS\), got 0/],
        [{ type: "tcpv4", size: 65536 }, /gso.size .* got 65536/],
        [{ type: "tcpv4", size: 1.5 }, /gso.size/],
        [{ type: "tcpv4" }, /gso.size .* got undefined/],
        ["tcpv4", /option gso must be \{ type, size \}/],
        [{ type: "tcpv6", size: 1448 }, /needs a TCP frame of its type: WRONG_FAMILY/],
      ];
      for (const [gso, msg] of cases) {
        const e = await front.write(f, { gso: gso as never }).catch((x: unknown) => x);
        expect(e).toBeInstanceOf(NetError);
        expect((e as NetError).code).toBe("BAD_ARGUMENT");
        expect(String(e)).toMatch(msg);
        expect(() => front.tryWrite(f, { gso: gso as never })).toThrow(msg);
      }
      await expect(front.write(packet({ payload: 3000 }), { gso: { type: 1, size: 1000 } })).rejects.toThrow(/NOT_TCP/);
      const huge = tcpFrame(false, 65535 - 54 + 1);
      await expect(front.write(huge, { gso: { type: 1, size: 1000 } })).rejects.toThrow(/FRAME_TOO_LONG: write: a GSO frame may have at most 65535 bytes, got 65536/);
      // null / undefined gso: a plain write.
      await front.write(packet({ payload: 100 }), { gso: null });
      await until(() => back.stats().rxPackets === 1);
      expect(front.stats().txPackets).toBe(1); // nothing of the refused writes went out
    });
  });
});
