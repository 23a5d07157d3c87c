/** The software TCP segmenter (src/protocol/tcp-segment.ts), checked against a receiver's view written apart. */
import { describe, expect, test } from "bun:test";
import { parseTcpFrame, SegmentError, segmentTcp, setPartialTcpChecksum } from "../src/protocol/tcp-segment.ts";
import { packet, verifies } from "./helpers/packets.ts";

/** The IPv4 header checksum as a receiver checks it: the header's words sum to 0xffff. */
function ipv4HeaderOk(b: Uint8Array, ip: number): boolean {
  const ihl = (b[ip]! & 15) * 4;
  let s = 0;
  for (let i = 0; i < ihl; i += 2) {
    s += (b[ip + i]! << 8) | b[ip + i + 1]!;
    s = (s & 0xffff) + (s >>> 16);
  }
  return s === 0xffff;
}

const u16 = (b: Uint8Array, at: number) => (b[at]! << 8) | b[at + 1]!;
const u32 = (b: Uint8Array, at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;

/** A TCP frame with a known sequence number, id and flags. */
function tcpFrame(o: { v6?: boolean; vlan?: boolean; payload: number; ipOptions?: number; seq?: number; flags?: number; id?: number }): Uint8Array {
  const b = packet({ v6: o.v6 ?? false, tcp: true, vlan: o.vlan ?? false, payload: o.payload, ipOptions: o.ipOptions ?? 0, seed: o.payload + 7 });
  const f = parseTcpFrame(b, 0, b.length);
  if (f instanceof SegmentError) throw f;
  const dv = new DataView(b.buffer);
  dv.setUint32(f.tcp + 4, o.seq ?? 0xfffff000); // near the wrap
  b[f.tcp + 13] = o.flags ?? 0x18 | 0x01 | 0x80; // PSH ACK FIN CWR
  if (!o.v6) {
    dv.setUint16(f.ip + 4, o.id ?? 0xfffe);
    if (o.ipOptions) for (let i = 0; i < o.ipOptions; i++) b[f.ip + 20 + i] = 1; // NOPs
  }
  return b;
}

describe("segmentTcp", () => {
  for (const [name, o] of [
    ["IPv4", { payload: 20000 }],
    ["IPv4 with options", { payload: 9000, ipOptions: 8 }],
    ["IPv6", { v6: true, payload: 20000 }],
    ["IPv4 in 802.1Q", { vlan: true, payload: 5000 }],
    ["IPv6 in 802.1Q", { v6: true, vlan: true, payload: 5001 }],
  ] as const) {
    test(`${name}: valid segments, contiguous sequence, payload unchanged`, () => {
      const mss = 1448;
      const big = tcpFrame(o);
      const f = parseTcpFrame(big, 0, big.length) as Exclude<ReturnType<typeof parseTcpFrame>, SegmentError>;
      const before = big.slice();
      const segs = segmentTcp(big, mss);
      if (segs instanceof SegmentError) throw segs;
      expect(big).toEqual(before); // the input is untouched
      expect(segs.length).toBe(Math.ceil(o.payload / mss));
      let seq = 0xfffff000;
      const payload: number[] = [];
      segs.forEach((s, i) => {
        const last = i === segs.length - 1;
        expect(s.subarray(0, f.ip)).toEqual(big.subarray(0, f.ip)); // Ethernet header and tag
        const plen = s.length - f.payload;
        expect(plen).toBe(last ? o.payload - mss * i : mss);
        expect(verifies(s)).toBe(true);
        if (o.v6 === true) expect(u16(s, f.ip + 4)).toBe(f.tcpLen + plen);
        else {
          expect(u16(s, f.ip + 2)).toBe(f.ipLen + f.tcpLen + plen);
          expect(u16(s, f.ip + 4)).toBe((0xfffe + i) & 0xffff); // wraps too
          expect(ipv4HeaderOk(s, f.ip)).toBe(true);
        }
        expect(u32(s, f.tcp + 4)).toBe(seq);
        seq = (seq + plen) >>> 0;
        const flags = s[f.tcp + 13]!;
        expect(flags & 0x01).toBe(last ? 0x01 : 0); // FIN
        expect(flags & 0x08).toBe(last ? 0x08 : 0); // PSH
        expect(flags & 0x80).toBe(i === 0 ? 0x80 : 0); // CWR
        expect(flags & 0x10).toBe(0x10); // ACK everywhere
        for (const x of s.subarray(f.payload)) payload.push(x);
      });
      expect(Uint8Array.from(payload)).toEqual(big.slice(f.payload));
    });
  }

  test("a payload within one MSS, or none, is one segment with its checksum made right", () => {
    for (const n of [0, 1, 1448]) {
      const segs = segmentTcp(tcpFrame({ payload: n }), 1448) as Uint8Array[];
      expect(segs.length).toBe(1);
      expect(verifies(segs[0]!)).toBe(true);
      expect(segs[0]![14 + 20 + 13]! & 0x09).toBe(0x09); // FIN and PSH kept on the only one
    }
  });

  test("trailing Ethernet padding is not payload", () => {
    const f = tcpFrame({ payload: 3000 });
    const padded = new Uint8Array(f.length + 10);
    padded.set(f);
    const segs = segmentTcp(padded, 1000) as Uint8Array[];
    expect(segs.map((s) => s.length - 54)).toEqual([1000, 1000, 1000]);
  });

  test("malformed frames are typed errors", () => {
    const code = (b: Uint8Array, mss = 1000, type?: number) => {
      const r = segmentTcp(b, mss, type);
      return r instanceof SegmentError ? r.code : "ok";
    };
    expect(code(packet({ payload: 100 }))).toBe("NOT_TCP"); // UDP
    expect(code(packet({ v6: true, payload: 100 }))).toBe("NOT_TCP");
    const arp = tcpFrame({ payload: 10 });
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect(code(arp)).toBe("NOT_IP");
    expect(code(tcpFrame({ payload: 10 }), 1000, 2)).toBe("WRONG_FAMILY");
    expect(code(tcpFrame({ v6: true, payload: 10 }), 1000, 1)).toBe("WRONG_FAMILY");
    expect(code(tcpFrame({ payload: 10 }).subarray(0, 30))).toBe("TRUNCATED");
    const long = tcpFrame({ payload: 10 });
    long[16] = 0xff; // total length past the frame
    expect(code(long)).toBe("TRUNCATED");
    const frag = tcpFrame({ payload: 10 });
    frag[20] = 0x20; // more fragments
    expect(code(frag)).toBe("IP_FRAGMENT");
    const doff = tcpFrame({ payload: 10 });
    doff[14 + 20 + 12] = 0x40; // 16-byte TCP header
    expect(code(doff)).toBe("BAD_HEADER");
    expect(code(tcpFrame({ payload: 10 }), 0)).toBe("BAD_MSS");
    expect(code(tcpFrame({ payload: 10 }), 65536)).toBe("BAD_MSS");
    expect(code(new Uint8Array(0))).toBe("NOT_IP");
  });

  test("setPartialTcpChecksum leaves what CHECKSUM_PARTIAL carries: completing it gives a valid checksum", () => {
    for (const v6 of [false, true]) {
      const b = tcpFrame({ v6, payload: 3000 });
      expect(setPartialTcpChecksum(b, 0, b.length)).toBe(true);
      expect(verifies(b)).toBe(false);
      // Complete it as a receiver given csum_blank does: sum from the TCP header on, field included.
      const f = parseTcpFrame(b, 0, b.length) as Exclude<ReturnType<typeof parseTcpFrame>, SegmentError>;
      let s = 0;
      for (let i = f.tcp; i < b.length; i += 2) s += (b[i]! << 8) | (i + 1 < b.length ? b[i + 1]! : 0);
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      const c = 0xffff - s;
      b[f.tcp + 16] = c >> 8;
      b[f.tcp + 17] = c & 0xff;
      expect(verifies(b)).toBe(true);
    }
    expect(setPartialTcpChecksum(packet({ payload: 10 }), 0, 60)).toBe(false);
  });
});
