/**
 * Which queue a frame goes out on, with several queues: a hash of its flow, so every frame of
 * one flow takes the same queue and stays in order (PROTOCOL.md "Multi-queue"; Linux picks the
 * queue from the skb's flow hash the same way).
 *
 * The flow, read from the frame (never past its end; a frame too short for a header falls
 * back to a shorter key): IPv4 and IPv6 by addresses, protocol, and TCP/UDP/SCTP ports; an
 * IPv4 fragment (or an IPv6 packet with extension headers) by addresses and protocol only,
 * so its pieces stay together; 802.1Q tags are looked through; anything else by its MAC
 * addresses, so one conversation (ARP, say) keeps to one queue.
 */

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const PORTS: ReadonlySet<number> = new Set([6, 17, 132, 136]); // TCP, UDP, SCTP, UDP-Lite

/** FNV-1a over bytes [from, to) of `f`, continuing from `h`. */
function mix(h: number, f: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ f[i]!, 0x01000193);
  return h;
}

const SEED = 0x811c9dc5;

/** A 32-bit hash of the frame's flow (see above). */
export function flowHash(f: Uint8Array): number {
  const n = f.length;
  if (n < 14) return mix(SEED, f, 0, n) >>> 0;
  let at = 12;
  let type = (f[at]! << 8) | f[at + 1]!;
  // Look through up to two VLAN tags.
  for (let tags = 0; tags < 2 && (type === ETH_P_8021Q || type === ETH_P_8021AD) && at + 6 <= n; tags++) {
    at += 4;
    type = (f[at]! << 8) | f[at + 1]!;
  }
  const l3 = at + 2;
  if (type === ETH_P_IP && l3 + 20 <= n && f[l3]! >> 4 === 4) {
    const ihl = (f[l3]! & 0x0f) * 4;
    const proto = f[l3 + 9]!;
    let h = mix(SEED, f, l3 + 12, l3 + 20); // addresses
    h = Math.imul(h ^ proto, 0x01000193);
    const fragmented = (((f[l3 + 6]! << 8) | f[l3 + 7]!) & 0x3fff) !== 0; // MF or an offset
    const l4 = l3 + ihl;
    if (!fragmented && ihl >= 20 && PORTS.has(proto) && l4 + 4 <= n) h = mix(h, f, l4, l4 + 4);
    return h >>> 0;
  }
  if (type === ETH_P_IPV6 && l3 + 40 <= n && f[l3]! >> 4 === 6) {
    const next = f[l3 + 6]!;
    let h = mix(SEED, f, l3 + 8, l3 + 40); // addresses
    h = Math.imul(h ^ next, 0x01000193);
    const l4 = l3 + 40;
    if (PORTS.has(next) && l4 + 4 <= n) h = mix(h, f, l4, l4 + 4);
    return h >>> 0;
  }
  return mix(SEED, f, 0, 12) >>> 0;
}

/** The queue, of `queues`, that frame `f` goes out on. */
export function queueFor(f: Uint8Array, queues: number): number {
  return queues <= 1 ? 0 : flowHash(f) % queues;
}
