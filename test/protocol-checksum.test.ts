/**
 * Filling blank TCP/UDP checksums (protocol/checksum.ts), checked the way a receiver checks
 * them: the ones'-complement sum over pseudo-header and segment, checksum included, is 0xffff.
 * The checker here is written independently of the code under test.
 */
import { describe, expect, test } from "bun:test";
import { fillChecksum, l3Of } from "../src/protocol/index.ts";
import { packet, verifies } from "./helpers/packets.ts";

describe("fillChecksum", () => {
  const cases = [
    { name: "UDP over IPv4", o: { payload: 100 } },
    { name: "TCP over IPv4 with IP options, odd length", o: { tcp: true, payload: 1001, ipOptions: 8 } },
    { name: "UDP over IPv6", o: { v6: true, payload: 1400 } },
    { name: "TCP over IPv6, odd length", o: { v6: true, tcp: true, payload: 33 } },
    { name: "TCP over IPv4 behind a VLAN tag", o: { vlan: true, tcp: true, payload: 1460 } },
    { name: "UDP over IPv6 behind a VLAN tag, empty payload", o: { vlan: true, v6: true, payload: 0 } },
  ];
  for (const c of cases) {
    test(`${c.name}: the receiver's check passes, only the checksum field changed`, () => {
      for (let seed = 1; seed <= 20; seed++) {
        const b = packet({ ...c.o, seed });
        const before = b.slice();
        expect(fillChecksum(b, 0, b.length)).toBe(true);
        expect(verifies(b)).toBe(true);
        const changed = [...b.keys()].filter((i) => b[i] !== before[i]);
        expect(changed.every((i) => changed.length <= 2 && Math.abs(i - changed[0]!) <= 1)).toBe(true);
      }
    });
  }

  test("a UDP checksum that computes to 0 is sent as 0xffff (0 means none)", () => {
    const b = packet({ payload: 64, seed: 3 });
    const dv = new DataView(b.buffer);
    const field = 14 + 20 + 6;
    fillChecksum(b, 0, b.length);
    // Add the checksum into the first payload word: the sum becomes 0xffff, its complement 0.
    const w = dv.getUint16(14 + 28) + dv.getUint16(field);
    dv.setUint16(14 + 28, (w & 0xffff) + (w >>> 16));
    expect(fillChecksum(b, 0, b.length)).toBe(true);
    expect(dv.getUint16(field)).toBe(0xffff);
    expect(verifies(b)).toBe(true);
  });

  test("within a larger buffer, at an offset", () => {
    const p = packet({ tcp: true, payload: 300, seed: 7 });
    const buf = new Uint8Array(p.length + 100).fill(0xee);
    buf.set(p, 50);
    expect(fillChecksum(buf, 50, p.length)).toBe(true);
    expect(verifies(buf.subarray(50, 50 + p.length))).toBe(true);
    expect([buf[49], buf[50 + p.length]]).toEqual([0xee, 0xee]);
  });

  test("what it cannot fill is left as it was: not IP, an IPv4 fragment, other protocols, lengths past the frame, truncated headers", () => {
    const arp = packet({ payload: 10 });
    new DataView(arp.buffer).setUint16(12, 0x0806);
    const frag = packet({ payload: 100 });
    new DataView(frag.buffer).setUint16(14 + 6, 0x2000); // more fragments
    const icmp = packet({ payload: 40 });
    icmp[14 + 9] = 1;
    const long4 = packet({ payload: 40 });
    new DataView(long4.buffer).setUint16(14 + 2, 2000);
    const long6 = packet({ v6: true, payload: 40 });
    new DataView(long6.buffer).setUint16(14 + 4, 2000);
    const shortTcp = packet({ tcp: true, payload: 0 }).subarray(0, 14 + 20 + 10);
    new DataView(shortTcp.buffer).setUint16(14 + 2, 30);
    for (const b of [arp, frag, icmp, long4, long6, shortTcp, new Uint8Array(10)]) {
      const before = b.slice();
      expect(fillChecksum(b, 0, b.length)).toBe(false);
      expect(b).toEqual(before);
    }
  });

  test("l3Of sees through up to two VLAN tags", () => {
    const b = new Uint8Array(64);
    const dv = new DataView(b.buffer);
    dv.setUint16(12, 0x88a8);
    dv.setUint16(16, 0x8100);
    dv.setUint16(20, 0x86dd);
    expect(l3Of(b, 0, 64)).toEqual({ l3: "ipv6", at: 22 });
    dv.setUint16(12, 0x0800);
    expect(l3Of(b, 0, 64)).toEqual({ l3: "ipv4", at: 14 });
    expect(l3Of(b, 0, 10).l3).toBeNull();
  });
});
