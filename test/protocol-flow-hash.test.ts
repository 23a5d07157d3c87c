/** The flow hash that picks a frame's queue: one flow, one queue; flows spread; never reads past the frame. */
import { describe, expect, test } from "bun:test";
import { flowHash, queueFor } from "../src/protocol/flow-hash.ts";

function ipv4(opts: { src?: number; dst?: number; proto?: number; sport?: number; dport?: number; frag?: number; payload?: number; vlan?: boolean }): Uint8Array {
  const vlan = opts.vlan ? 4 : 0;
  const f = new Uint8Array(14 + vlan + 20 + 8 + (opts.payload ?? 20));
  const dv = new DataView(f.buffer);
  f.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
  if (opts.vlan) {
    dv.setUint16(12, 0x8100);
    dv.setUint16(14, 42);
  }
  dv.setUint16(12 + vlan, 0x0800);
  const l3 = 14 + vlan;
  f[l3] = 0x45;
  dv.setUint16(l3 + 6, opts.frag ?? 0);
  f[l3 + 9] = opts.proto ?? 17;
  dv.setUint32(l3 + 12, opts.src ?? 0x0a000001);
  dv.setUint32(l3 + 16, opts.dst ?? 0x0a000002);
  dv.setUint16(l3 + 20, opts.sport ?? 1000);
  dv.setUint16(l3 + 22, opts.dport ?? 2000);
  for (let i = l3 + 28; i < f.length; i++) f[i] = i * 7;
  return f;
}

describe("flow hash", () => {
  test("one flow, one hash: whatever the payload and length", () => {
    const h = flowHash(ipv4({ payload: 10 }));
    for (const payload of [0, 1, 100, 1472]) expect(flowHash(ipv4({ payload }))).toBe(h);
  });

  test("flows spread: 400 UDP flows over 4 queues fill every queue", () => {
    const counts = [0, 0, 0, 0];
    for (let p = 0; p < 400; p++) counts[queueFor(ipv4({ sport: 10_000 + p }), 4)]!++;
    for (const c of counts) expect(c).toBeGreaterThan(50);
  });

  test("the pieces of a fragmented datagram take one queue; TCP and UDP with the same ports are two flows", () => {
    const first = ipv4({ frag: 0x2000 }); // MF
    const later = ipv4({ frag: 0x00b9, sport: 9, dport: 9 }); // an offset, and no ports in it
    expect(flowHash(first)).toBe(flowHash(later));
    expect(flowHash(ipv4({ proto: 6 }))).not.toBe(flowHash(ipv4({ proto: 17 })));
  });

  test("a VLAN tag is looked through; non-IP frames go by their MAC addresses", () => {
    expect(flowHash(ipv4({ vlan: true }))).toBe(flowHash(ipv4({})));
    const arp = new Uint8Array(42);
    arp.set([255, 255, 255, 255, 255, 255, 2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    const arp2 = arp.slice();
    arp2[30] = 99; // another target address, same hosts
    expect(flowHash(arp)).toBe(flowHash(arp2));
  });

  test("IPv6: addresses, next header and ports", () => {
    const v6 = (sport: number) => {
      const f = new Uint8Array(14 + 40 + 8 + 10);
      const dv = new DataView(f.buffer);
      dv.setUint16(12, 0x86dd);
      f[14] = 0x60;
      f[14 + 6] = 17;
      f[14 + 8 + 15] = 1;
      f[14 + 24 + 15] = 2;
      dv.setUint16(54, sport);
      return f;
    };
    expect(flowHash(v6(1))).toBe(flowHash(v6(1)));
    expect(flowHash(v6(1))).not.toBe(flowHash(v6(2)));
  });

  test("truncated and hostile headers never read past the frame (and never throw)", () => {
    const base = ipv4({ payload: 0 });
    for (let n = 0; n <= base.length; n++) expect(typeof flowHash(base.subarray(0, n))).toBe("number");
    const lying = ipv4({ payload: 0 });
    lying[14] = 0x4f; // IHL 60 bytes, longer than the frame
    expect(typeof flowHash(lying)).toBe("number");
    expect(queueFor(base, 1)).toBe(0);
  });
});
