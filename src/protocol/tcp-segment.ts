/**
 * TCP segmentation in software, as Linux's GSO does it (tcp_gso_segment with inet_gso_segment
 * or ipv6_gso_segment): one large TCP/IPv4 or TCP/IPv6 frame becomes MSS-sized frames, each a
 * valid packet on its own. Used when a peer did not offer GSO of that type: what was not
 * offered is never put on the wire. Pure: bytes in, new frames out, no I/O; malformed input is
 * a SegmentError value, never an exception from deep inside.
 *
 * Per segment: the Ethernet header (and VLAN tags) and IP header copied; IPv4 total length,
 * id (incremented per segment) and header checksum; IPv6 payload length; TCP sequence
 * advanced by the payload before it; FIN and PSH kept only on the last, CWR only on the
 * first; the TCP checksum complete over pseudo-header and segment.
 */
import { fold, l3Of, sum16 } from "./checksum.ts";

export const GSO_TCPV4 = 1;
export const GSO_TCPV6 = 2;

export type SegmentErrorCode =
  | "NOT_IP" // no IPv4 or IPv6 after the Ethernet header and tags
  | "WRONG_FAMILY" // the frame's IP version is not the GSO type's
  | "NOT_TCP" // the IP packet does not carry TCP (or IPv6 extension headers come first)
  | "TRUNCATED" // a header or a length runs past the frame
  | "BAD_HEADER" // an IP or TCP header field no packet may have
  | "IP_FRAGMENT" // an IPv4 fragment cannot be segmented
  | "BAD_MSS"; // the segment size is not 1..65535

export class SegmentError extends Error {
  override readonly name = "SegmentError";
  constructor(
    readonly code: SegmentErrorCode,
    /** The header field at fault, e.g. `ipv4.total_length`. */
    readonly field: string,
    readonly value: number | string,
    detail: string,
  ) {
    super(`${code}: ${field}=${value}: ${detail}`);
  }
}

/** Where the headers of a TCP frame are: offsets from the frame's start. */
export interface TcpFrame {
  /** 1 (TCP/IPv4) or 2 (TCP/IPv6): the GSO type this frame is. */
  type: number;
  /** The IP header. */
  ip: number;
  /** The IP header's length (IPv4: IHL × 4 with options; IPv6: 40). */
  ipLen: number;
  /** The TCP header. */
  tcp: number;
  /** The TCP header's length (data offset × 4, options included). */
  tcpLen: number;
  /** Where the payload starts and how long it is (by the IP length, not trailing padding). */
  payload: number;
  payloadLen: number;
}

const IPPROTO_TCP = 6;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * The headers of a TCP/IPv4 or TCP/IPv6 frame in `b[off .. off+len)`, checked: every header
 * and length within the frame, IPv4 not a fragment, IPv6 with TCP as its next header. With
 * `type` (1 or 2) the frame must be of that family.
 */
export function parseTcpFrame(b: Uint8Array, off: number, len: number, type?: number): TcpFrame | SegmentError {
  const { l3, at } = l3Of(b, off, len);
  if (l3 === null) return new SegmentError("NOT_IP", "ethertype", len >= 14 ? (b[off + at - 2]! << 8) | b[off + at - 1]! : "none", "expected IPv4 (0x0800) or IPv6 (0x86dd), after up to two VLAN tags");
  const family = l3 === "ipv4" ? GSO_TCPV4 : GSO_TCPV6;
  if (type !== undefined && type !== family) {
    return new SegmentError("WRONG_FAMILY", "gso.type", type, `the frame is ${l3}, GSO type ${type === GSO_TCPV4 ? "tcpv4" : "tcpv6"} wants ${type === GSO_TCPV4 ? "ipv4" : "ipv6"}`);
  }
  const ip = off + at;
  let ipLen: number;
  let l4end: number;
  if (l3 === "ipv4") {
    if (len < at + 20) return new SegmentError("TRUNCATED", "ipv4", len - at, "an IPv4 header needs 20 bytes");
    const v = b[ip]!;
    ipLen = (v & 0x0f) * 4;
    if (v >> 4 !== 4 || ipLen < 20) return new SegmentError("BAD_HEADER", "ipv4.version_ihl", v, "expected version 4 and a header of at least 20 bytes");
    const total = (b[ip + 2]! << 8) | b[ip + 3]!;
    if (total < ipLen || at + total > len) return new SegmentError("TRUNCATED", "ipv4.total_length", total, `the frame holds ${len - at} bytes of IP packet, header ${ipLen}`);
    const frag = ((b[ip + 6]! << 8) | b[ip + 7]!) & 0x3fff;
    if (frag !== 0) return new SegmentError("IP_FRAGMENT", "ipv4.frag", frag, "a fragment (more-fragments or an offset) cannot be segmented");
    if (b[ip + 9] !== IPPROTO_TCP) return new SegmentError("NOT_TCP", "ipv4.protocol", b[ip + 9]!, "expected 6 (TCP)");
    l4end = at + total;
  } else {
    if (len < at + 40) return new SegmentError("TRUNCATED", "ipv6", len - at, "an IPv6 header needs 40 bytes");
    if (b[ip]! >> 4 !== 6) return new SegmentError("BAD_HEADER", "ipv6.version", b[ip]! >> 4, "expected 6");
    ipLen = 40;
    const plen = (b[ip + 4]! << 8) | b[ip + 5]!;
    if (at + 40 + plen > len) return new SegmentError("TRUNCATED", "ipv6.payload_length", plen, `the frame holds ${len - at - 40} bytes after the IPv6 header`);
    if (b[ip + 6] !== IPPROTO_TCP) return new SegmentError("NOT_TCP", "ipv6.next_header", b[ip + 6]!, "expected 6 (TCP), with no extension headers");
    l4end = at + 40 + plen;
  }
  const tcp = ip + ipLen;
  const l4len = off + l4end - tcp;
  if (l4len < 20) return new SegmentError("TRUNCATED", "tcp", l4len, "a TCP header needs 20 bytes");
  const tcpLen = (b[tcp + 12]! >> 4) * 4;
  if (tcpLen < 20 || tcpLen > l4len) return new SegmentError("BAD_HEADER", "tcp.data_offset", tcpLen, `expected 20..${Math.min(60, l4len)} bytes of TCP header`);
  return { type: family, ip: ip - off, ipLen, tcp: tcp - off, tcpLen, payload: tcp - off + tcpLen, payloadLen: l4len - tcpLen };
}

function put16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** The pseudo-header's sum (addresses, protocol, this L4 length), not folded. */
function pseudoSum(b: Uint8Array, f: TcpFrame, l4len: number): number {
  return f.type === GSO_TCPV4 ? sum16(b, f.ip + 12, 8, IPPROTO_TCP + l4len) : sum16(b, f.ip + 8, 32, IPPROTO_TCP + l4len);
}

/**
 * Write into the TCP checksum field what a CHECKSUM_PARTIAL packet carries there (Linux's
 * __tcp_v4_send_check / __tcp_v6_send_check): the folded pseudo-header sum over the whole
 * TCP length. A receiver told csum_blank (GSO or not) adds the segment's sum to it; a GSO
 * receiver adjusts it per segment. False, and the frame untouched, if it is not TCP.
 */
export function setPartialTcpChecksum(b: Uint8Array, off: number, len: number): boolean {
  const f = parseTcpFrame(b, off, len);
  if (f instanceof SegmentError) return false;
  const v = b.subarray(off, off + len);
  put16(v, f.tcp + 16, fold(pseudoSum(v, f, f.tcpLen + f.payloadLen)));
  return true;
}

/**
 * Split a TCP frame into segments of at most `mss` payload bytes each (one segment when the
 * payload fits, or is empty: its lengths and checksums are still made right). `type` (1 or 2),
 * when given, must match the frame's family. The frame is not modified.
 */
export function segmentTcp(frame: Uint8Array, mss: number, type?: number): Uint8Array[] | SegmentError {
  if (!Number.isInteger(mss) || mss < 1 || mss > 0xffff) return new SegmentError("BAD_MSS", "gso.size", String(mss), "a segment size is 1..65535");
  const f = parseTcpFrame(frame, 0, frame.byteLength, type);
  if (f instanceof SegmentError) return f;
  const hdr = f.payload; // Ethernet, tags, IP and TCP headers: copied into every segment
  const n = Math.max(1, Math.ceil(f.payloadLen / mss));
  const seq0 = ((frame[f.tcp + 4]! << 24) | (frame[f.tcp + 5]! << 16) | (frame[f.tcp + 6]! << 8) | frame[f.tcp + 7]!) >>> 0;
  const id0 = f.type === GSO_TCPV4 ? (frame[f.ip + 4]! << 8) | frame[f.ip + 5]! : 0;
  const flags0 = frame[f.tcp + 13]!;
  const out: Uint8Array[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const from = i * mss;
    const plen = Math.min(mss, f.payloadLen - from);
    const s = new Uint8Array(hdr + plen);
    s.set(frame.subarray(0, hdr), 0);
    s.set(frame.subarray(f.payload + from, f.payload + from + plen), hdr);
    const l4len = f.tcpLen + plen;
    if (f.type === GSO_TCPV4) {
      put16(s, f.ip + 2, f.ipLen + l4len);
      put16(s, f.ip + 4, (id0 + i) & 0xffff);
      put16(s, f.ip + 10, 0);
      put16(s, f.ip + 10, 0xffff - fold(sum16(s, f.ip, f.ipLen, 0)));
    } else {
      put16(s, f.ip + 4, l4len);
    }
    const seq = (seq0 + from) >>> 0;
    s[f.tcp + 4] = seq >>> 24;
    s[f.tcp + 5] = (seq >>> 16) & 0xff;
    s[f.tcp + 6] = (seq >>> 8) & 0xff;
    s[f.tcp + 7] = seq & 0xff;
    let fl = flags0;
    if (i < n - 1) fl &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) fl &= ~TCP_CWR;
    s[f.tcp + 13] = fl;
    put16(s, f.tcp + 16, 0);
    put16(s, f.tcp + 16, 0xffff - fold(sum16(s, f.tcp, l4len, pseudoSum(s, f, l4len))));
    out[i] = s;
  }
  return out;
}

/** Bytes of each full segment's frame: the headers plus `mss` (what must fit the peer's maximum). */
export function segmentFrameSize(frame: Uint8Array, mss: number): number | SegmentError {
  const f = parseTcpFrame(frame, 0, frame.byteLength);
  if (f instanceof SegmentError) return f;
  return f.payload + Math.min(mss, Math.max(f.payloadLen, 0));
}
