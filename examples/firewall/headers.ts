/**
 * The headers the rules look at, read from a frame a guest (or the uplink) sent: Ethernet, then
 * IPv4 / IPv6 (extension headers walked) / ARP, then the TCP or UDP ports. Every length and
 * offset comes from the other domain, so each is checked against the bytes actually there;
 * a frame that does not hold together is "malformed" (dropped and counted by the bridge), never
 * an exception. One FrameHeaders object is reused for every frame: nothing is allocated.
 */

export const ETH_HLEN = 14;
export const ETHERTYPE = { IPV4: 0x0800, ARP: 0x0806, IPV6: 0x86dd } as const;
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

/** What parseHeaders found. -1: not there (not IP, or a later fragment without ports). */
export class FrameHeaders {
  ethertype = -1;
  /** IPv4 protocol, or IPv6's last next header (after the extension headers). */
  proto = -1;
  sport = -1;
  dport = -1;
}

/** IPv6 extension headers we walk past (RFC 8200 order), at most this many in a row. */
const IPV6_MAX_EXT = 8;
const NH_HOP = 0;
const NH_ROUTING = 43;
const NH_FRAGMENT = 44;
const NH_AH = 51;
const NH_DSTOPTS = 60;

/**
 * Fill `h` from `f`; return null when the frame is well formed, else why it is not (a constant
 * string, for the counters and logs).
 */
export function parseHeaders(f: Uint8Array, h: FrameHeaders): string | null {
  h.ethertype = h.proto = h.sport = h.dport = -1;
  if (f.length < ETH_HLEN) return "shorter than an Ethernet header";
  const type = (f[12]! << 8) | f[13]!;
  h.ethertype = type;
  if (type === ETHERTYPE.IPV4) return parseIpv4(f, h);
  if (type === ETHERTYPE.IPV6) return parseIpv6(f, h);
  // ARP for IPv4 over Ethernet is 28 bytes; anything shorter cannot be answered or learned from.
  if (type === ETHERTYPE.ARP) return f.length - ETH_HLEN < 28 ? "ARP shorter than 28 bytes" : null;
  // Below 0x0600 it is an 802.3 length; other types are not looked into.
  return null;
}

function parseIpv4(f: Uint8Array, h: FrameHeaders): string | null {
  const o = ETH_HLEN;
  const avail = f.length - o;
  if (avail < 20) return "IPv4 header truncated";
  const vihl = f[o]!;
  if (vihl >> 4 !== 4) return "IPv4 version is not 4";
  const ihl = (vihl & 0x0f) * 4;
  if (ihl < 20) return "IPv4 header length below 20";
  const total = (f[o + 2]! << 8) | f[o + 3]!;
  // Ethernet may pad a short packet (so more bytes than total is fine), never the other way.
  if (total < ihl || total > avail) return "IPv4 total length does not fit the frame";
  h.proto = f[o + 9]!;
  const fragOffset = ((f[o + 6]! & 0x1f) << 8) | f[o + 7]!;
  if (fragOffset !== 0) return null; // a later fragment: no L4 header here
  return parseL4(f, o + ihl, total - ihl, h);
}

function parseIpv6(f: Uint8Array, h: FrameHeaders): string | null {
  const o = ETH_HLEN;
  const avail = f.length - o;
  if (avail < 40) return "IPv6 header truncated";
  if (f[o]! >> 4 !== 6) return "IPv6 version is not 6";
  const payload = (f[o + 4]! << 8) | f[o + 5]!;
  // Payload length 0 is a jumbogram (hop-by-hop option); no vif carries one.
  if (payload === 0 || 40 + payload > avail) return "IPv6 payload length does not fit the frame";
  let nh = f[o + 6]!;
  let off = o + 40;
  const end = off + payload;
  for (let n = 0; ; n++) {
    if (nh !== NH_HOP && nh !== NH_ROUTING && nh !== NH_FRAGMENT && nh !== NH_AH && nh !== NH_DSTOPTS) break;
    if (n === IPV6_MAX_EXT) return "too many IPv6 extension headers";
    if (off + 8 > end) return "IPv6 extension header truncated";
    const next = f[off]!;
    if (nh === NH_FRAGMENT) {
      const fragOffset = ((f[off + 2]! << 8) | f[off + 3]!) >> 3;
      h.proto = next;
      if (fragOffset !== 0) return null; // a later fragment: no L4 header here
      off += 8;
    } else {
      const len = nh === NH_AH ? (f[off + 1]! + 2) * 4 : (f[off + 1]! + 1) * 8;
      if (off + len > end) return "IPv6 extension header truncated";
      off += len;
    }
    nh = next;
  }
  h.proto = nh;
  return parseL4(f, off, end - off, h);
}

/** TCP / UDP ports (and minimum header sizes) of an IP payload of `len` bytes at `off`. */
function parseL4(f: Uint8Array, off: number, len: number, h: FrameHeaders): string | null {
  const p = h.proto;
  if (p === IPPROTO.TCP) {
    if (len < 20) return "TCP header truncated";
    const dataOff = (f[off + 12]! >> 4) * 4;
    if (dataOff < 20 || dataOff > len) return "TCP data offset out of range";
  } else if (p === IPPROTO.UDP) {
    if (len < 8) return "UDP header truncated";
  } else if (p === IPPROTO.ICMP || p === IPPROTO.ICMPV6) {
    return len < 4 ? "ICMP header truncated" : null;
  } else return null;
  h.sport = (f[off]! << 8) | f[off + 1]!;
  h.dport = (f[off + 2]! << 8) | f[off + 3]!;
  return null;
}
