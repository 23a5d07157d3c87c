/**
 * Frames built by hand, for the demo (and the tests): Ethernet, ARP, IPv4 and IPv6 with TCP,
 * UDP and ICMP, with real checksums, so what goes through the firewall is what a guest's stack
 * would send. Not on the forwarding path: these allocate freely.
 */
import { parseMac } from "bun-xen-net";
import { ETHERTYPE, IPPROTO } from "./headers.ts";

export const BROADCAST = "ff:ff:ff:ff:ff:ff";

export function mac(s: string): Uint8Array {
  const m = parseMac(s);
  if (m instanceof Error) throw m;
  return m;
}

export function ethernet(dst: string, src: string, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(mac(dst), 0);
  f.set(mac(src), 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

/** An ARP request (who has `targetIp`? tell `senderIp`), broadcast. */
export function arpRequest(src: string, senderIp: readonly number[], targetIp: readonly number[]): Uint8Array {
  const a = new Uint8Array(28);
  a.set([0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, hlen 6, plen 4, request
  a.set(mac(src), 8);
  a.set(senderIp, 14);
  a.set(targetIp, 24);
  return ethernet(BROADCAST, src, ETHERTYPE.ARP, a);
}

/** The one's-complement sum of RFC 1071, folded, over `parts`. */
export function inetChecksum(...parts: Uint8Array[]): number {
  let sum = 0;
  for (const p of parts) {
    for (let i = 0; i + 1 < p.length; i += 2) sum += (p[i]! << 8) | p[i + 1]!;
    if (p.length % 2 === 1) sum += p[p.length - 1]! << 8;
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function ipv4(src: readonly number[], dst: readonly number[], proto: number, l4: Uint8Array, id = 0): Uint8Array {
  const p = new Uint8Array(20 + l4.length);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, p.length);
  dv.setUint16(4, id);
  p[6] = 0x40; // don't fragment
  p[8] = 64;
  p[9] = proto;
  p.set(src, 12);
  p.set(dst, 16);
  dv.setUint16(10, inetChecksum(p.subarray(0, 20)));
  p.set(l4, 20);
  // (A TCP or UDP payload too short for its header, as tests build on purpose, gets no checksum.)
  if ((proto === IPPROTO.TCP && l4.length >= 20) || (proto === IPPROTO.UDP && l4.length >= 8)) {
    const pseudo = new Uint8Array(12);
    pseudo.set(src, 0);
    pseudo.set(dst, 4);
    pseudo[9] = proto;
    new DataView(pseudo.buffer).setUint16(10, l4.length);
    const at = 20 + (proto === IPPROTO.TCP ? 16 : 6);
    dv.setUint16(at, 0);
    const c = inetChecksum(pseudo, p.subarray(20));
    dv.setUint16(at, proto === IPPROTO.UDP && c === 0 ? 0xffff : c);
  }
  return p;
}

/** An IPv6 packet; `payload` may start with extension headers, `nh` is the first next header. */
export function ipv6(src: Uint8Array, dst: Uint8Array, nh: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(40 + payload.length);
  p[0] = 0x60;
  new DataView(p.buffer).setUint16(4, payload.length);
  p[6] = nh;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  p.set(payload, 40);
  return p;
}

/** A hop-by-hop options header (8 bytes, PadN) in front of `next`. */
export function hopByHop(next: number, rest: Uint8Array): Uint8Array {
  const h = new Uint8Array(8 + rest.length);
  h[0] = next;
  h[1] = 0;
  h[2] = 1; // PadN
  h[3] = 4;
  h.set(rest, 8);
  return h;
}

/** ICMP (or ICMPv6) echo: type 8 request / 0 reply for IPv4, 128 / 129 for IPv6. */
export function icmpEcho(type: number, id: number, seq: number, data: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  const dv = new DataView(m.buffer);
  m[0] = type;
  dv.setUint16(4, id);
  dv.setUint16(6, seq);
  m.set(data, 8);
  dv.setUint16(2, inetChecksum(m));
  return m;
}

export const TCP_SYN = 0x02;
export const TCP_ACK = 0x10;
export const TCP_PSH = 0x08;

export function tcp(sport: number, dport: number, seq: number, flags: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const t = new Uint8Array(20 + data.length);
  const dv = new DataView(t.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint32(4, seq >>> 0);
  t[12] = 5 << 4;
  t[13] = flags;
  dv.setUint16(14, 65535);
  t.set(data, 20);
  return t;
}

export function udp(sport: number, dport: number, data: Uint8Array): Uint8Array {
  const u = new Uint8Array(8 + data.length);
  const dv = new DataView(u.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint16(4, u.length);
  u.set(data, 8);
  return u;
}

/**
 * The echo reply a host would send to an IPv4 ICMP echo request frame, from `ourMac`; null if
 * `f` is not one. Built from the request's bytes: addresses swapped, type 0, checksums redone.
 */
export function echoReply(f: Uint8Array, ourMac: Uint8Array): Uint8Array | null {
  if (f.length < 14 + 20 + 8 || f[12] !== 0x08 || f[13] !== 0x00 || f[14] !== 0x45 || f[23] !== IPPROTO.ICMP || f[34] !== 8) return null;
  const total = (f[16]! << 8) | f[17]!;
  if (total < 28 || 14 + total > f.length) return null;
  const r = f.slice(0, 14 + total);
  r.set(f.subarray(6, 12), 0);
  r.set(ourMac, 6);
  r.set(f.subarray(30, 34), 26);
  r.set(f.subarray(26, 30), 30);
  const dv = new DataView(r.buffer);
  dv.setUint16(24, 0);
  dv.setUint16(24, inetChecksum(r.subarray(14, 34)));
  r[34] = 0;
  dv.setUint16(36, 0);
  dv.setUint16(36, inetChecksum(r.subarray(34, 14 + total)));
  return r;
}
