/** TCP and UDP frames over IPv4 and IPv6 for the checksum tests, and a receiver's check of them. */
import { mulberry32 } from "./prng.ts";

/** A frame: Ethernet (optional VLAN tag), IPv4 or IPv6, TCP or UDP, `payload` random bytes. */
export function packet(o: { v6?: boolean; tcp?: boolean; vlan?: boolean; payload: number; ipOptions?: number; seed?: number }): Uint8Array {
  const rnd = mulberry32(o.seed ?? 1);
  const eth = o.vlan ? 18 : 14;
  const ipHdr = o.v6 ? 40 : 20 + (o.ipOptions ?? 0);
  const l4Hdr = o.tcp ? 20 : 8;
  const b = new Uint8Array(eth + ipHdr + l4Hdr + o.payload);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
  const dv = new DataView(b.buffer);
  if (o.vlan) {
    dv.setUint16(12, 0x8100);
    dv.setUint16(16, o.v6 ? 0x86dd : 0x0800);
  } else dv.setUint16(12, o.v6 ? 0x86dd : 0x0800);
  const ip = eth;
  const l4len = l4Hdr + o.payload;
  if (o.v6) {
    b[ip] = 0x60;
    dv.setUint16(ip + 4, l4len);
    b[ip + 6] = o.tcp ? 6 : 17;
  } else {
    b[ip] = 0x40 | (ipHdr / 4);
    dv.setUint16(ip + 2, ipHdr + l4len);
    dv.setUint16(ip + 6, 0x4000); // don't fragment, offset 0
    b[ip + 9] = o.tcp ? 6 : 17;
  }
  if (!o.tcp) dv.setUint16(ip + ipHdr + 4, l4len);
  else b[ip + ipHdr + 12] = 0x50;
  return b;
}

/** A receiver's check: true when the segment's checksum is right. */
export function verifies(b: Uint8Array): boolean {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const vlan = dv.getUint16(12) === 0x8100;
  const ip = vlan ? 18 : 14;
  const v6 = (b[ip]! >> 4) === 6;
  const l4 = v6 ? ip + 40 : ip + (b[ip]! & 15) * 4;
  const l4len = v6 ? dv.getUint16(ip + 4) : dv.getUint16(ip + 2) - (l4 - ip);
  const proto = v6 ? b[ip + 6]! : b[ip + 9]!;
  const words: number[] = [];
  const add = (from: number, n: number) => {
    for (let i = 0; i < n; i += 2) words.push((b[from + i]! << 8) | (i + 1 < n ? b[from + i + 1]! : 0));
  };
  if (v6) add(ip + 8, 32);
  else add(ip + 12, 8);
  words.push(proto, l4len >>> 16, l4len & 0xffff);
  add(l4, l4len);
  let s = 0;
  for (const w of words) {
    s += w;
    s = (s & 0xffff) + (s >>> 16);
  }
  return s === 0xffff;
}

