/**
 * Filling in a TCP or UDP checksum that was left blank (csum_blank), for a peer that cannot
 * take blank checksums (a front end with feature-no-csum-offload=1, or without
 * feature-ipv6-csum-offload for IPv6). Computed from scratch over the pseudo-header and the
 * whole segment, whatever the field held (a partial sum, as Linux leaves it, or anything else),
 * as QEMU's net_checksum_calculate does. Pure: bytes in, bytes out, no I/O.
 */

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

export type L3 = "ipv4" | "ipv6" | null;

/** The network layer of an Ethernet frame (through up to two VLAN tags), and where it starts. */
export function l3Of(b: Uint8Array, off: number, len: number): { l3: L3; at: number } {
  let at = 12;
  let type = len >= 14 ? (b[off + 12]! << 8) | b[off + 13]! : 0;
  for (let tags = 0; tags < 2 && (type === ETH_P_8021Q || type === ETH_P_8021AD) && len >= at + 6; tags++) {
    at += 4;
    type = (b[off + at]! << 8) | b[off + at + 1]!;
  }
  at += 2;
  return { l3: type === ETH_P_IP ? "ipv4" : type === ETH_P_IPV6 ? "ipv6" : null, at };
}

/** Ones'-complement sum of `len` bytes at `at`, added to `sum` (not folded). */
export function sum16(b: Uint8Array, at: number, len: number, sum: number): number {
  let i = 0;
  for (; i + 1 < len; i += 2) sum += (b[at + i]! << 8) | b[at + i + 1]!;
  if (i < len) sum += b[at + i]! << 8;
  return sum;
}

/** Fold a ones'-complement sum to 16 bits. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Write the TCP or UDP checksum of the frame at `b[off .. off+len)`. IPv4 (not a fragment) or
 * IPv6 without extension headers. False, and the frame untouched, when it is none of these or
 * its lengths do not fit the frame.
 */
export function fillChecksum(b: Uint8Array, off: number, len: number): boolean {
  const { l3, at } = l3Of(b, off, len);
  const ip = off + at;
  let proto: number;
  let l4: number;
  let l4len: number;
  let pseudo: number;
  if (l3 === "ipv4") {
    if (len < at + 20) return false;
    const ihl = (b[ip]! & 0x0f) * 4;
    const total = (b[ip + 2]! << 8) | b[ip + 3]!;
    const frag = ((b[ip + 6]! << 8) | b[ip + 7]!) & 0x3fff; // more-fragments and offset
    if ((b[ip]! >> 4) !== 4 || ihl < 20 || frag !== 0 || total < ihl || at + total > len) return false;
    proto = b[ip + 9]!;
    l4 = ip + ihl;
    l4len = total - ihl;
    pseudo = sum16(b, ip + 12, 8, proto + l4len);
  } else if (l3 === "ipv6") {
    if (len < at + 40 || (b[ip]! >> 4) !== 6) return false;
    proto = b[ip + 6]!;
    l4 = ip + 40;
    l4len = (b[ip + 4]! << 8) | b[ip + 5]!;
    if (at + 40 + l4len > len) return false;
    pseudo = sum16(b, ip + 8, 32, proto + l4len);
  } else return false;
  let field: number;
  if (proto === IPPROTO_TCP && l4len >= 20) field = l4 + 16;
  else if (proto === IPPROTO_UDP && l4len >= 8) field = l4 + 6;
  else return false;
  b[field] = 0;
  b[field + 1] = 0;
  let c = 0xffff - fold(sum16(b, l4, l4len, pseudo));
  // UDP sends 0 as 0xffff (0 means "no checksum").
  if (c === 0 && proto === IPPROTO_UDP) c = 0xffff;
  b[field] = c >> 8;
  b[field + 1] = c & 0xff;
  return true;
}
