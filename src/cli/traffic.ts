/**
 * The frames `capture` exchanges: IPv4/UDP datagrams from the front end to the back end's
 * echo port, and the back end's echo of each (addresses and ports swapped). Each follows from
 * its sequence number alone, so a test can rebuild what was sent and compare bytes.
 */
import { NETBACK_MAC } from "../main/index.ts";

export const FRONT_IP = [10, 0, 0, 1] as const;
export const BACK_IP = [10, 0, 0, 2] as const;
export const ECHO_PORT = 7;
const HEADERS = 14 + 20 + 8;
/** The smallest frame: an Ethernet minimum of 60 bytes (without the FCS). */
export const MIN_TRAFFIC_SIZE = 60;

/** Datagram `seq` from `frontMac` to the back end, `size` bytes in all. */
export function requestFrame(seq: number, size: number, frontMac: Uint8Array): Uint8Array {
  const f = new Uint8Array(size);
  f.set(NETBACK_MAC, 0);
  f.set(frontMac, 6);
  f[12] = 0x08; // IPv4
  f[13] = 0x00;
  const ip = 14;
  f[ip] = 0x45;
  put16(f, ip + 2, size - 14);
  put16(f, ip + 4, seq & 0xffff); // identification
  f[ip + 8] = 64; // TTL
  f[ip + 9] = 17; // UDP
  f.set(FRONT_IP, ip + 12);
  f.set(BACK_IP, ip + 16);
  put16(f, ip + 10, ipChecksum(f.subarray(ip, ip + 20)));
  const udp = ip + 20;
  put16(f, udp, 40000 + (seq % 1000));
  put16(f, udp + 2, ECHO_PORT);
  put16(f, udp + 4, size - 34);
  // UDP checksum 0: none (allowed over IPv4). The payload says what the frame is.
  const text = new TextEncoder().encode(`bun-xen-net capture ${seq} `);
  for (let i = HEADERS; i < size; i++) f[i] = text[(i - HEADERS) % text.length]!;
  return f;
}

/** The echo of a request: Ethernet, IP and UDP source and destination swapped (the IP checksum stays valid). */
export function echoFrame(req: Uint8Array): Uint8Array {
  const f = req.slice();
  f.set(req.subarray(6, 12), 0);
  f.set(req.subarray(0, 6), 6);
  f.set(req.subarray(30, 34), 26);
  f.set(req.subarray(26, 30), 30);
  f.set(req.subarray(36, 38), 34);
  f.set(req.subarray(34, 36), 36);
  return f;
}

/** Whether `f` is one of our requests (so the back end echoes only those). */
export function isRequest(f: Uint8Array): boolean {
  return f.length >= HEADERS && f[12] === 0x08 && f[13] === 0 && f[23] === 17 && ((f[36]! << 8) | f[37]!) === ECHO_PORT;
}

function put16(b: Uint8Array, off: number, v: number): void {
  b[off] = v >> 8;
  b[off + 1] = v & 0xff;
}

function ipChecksum(h: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < h.length; i += 2) s += (h[i]! << 8) | h[i + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
