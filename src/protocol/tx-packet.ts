/**
 * A TX packet from a chain of netif_tx_requests, as the back end reads it.
 *
 * Layout on the ring: the first request (its size = the whole packet), then its extra-info
 * slots if flagged, then one request per further fragment while more_data is set. The first
 * fragment's own length is what remains of the total after the others. The verdicts follow
 * Linux netback: a packet that breaks a per-packet rule is dropped (each slot answered
 * ERROR); one that breaks the ring's framing (page crossing, endless chains, slot counts
 * past the fatal limit, bad extras) is fatal: the peer is broken and the ring is abandoned.
 */
import { ProtocolError } from "./errors.ts";
import { type ExtraInfo } from "./extra-info.ts";
import { isExtraChainError, readExtraChain, type SlotSource } from "./extra-chain.ts";
import { ETH_HLEN, FATAL_SLOTS, GRANT_PAGE_SIZE, MAX_PACKET_SIZE, NETTXF, NR_SLOTS_MIN } from "./netif.ts";
import { decodeTxRequest, type TxRequest } from "./tx-request.ts";

export interface TxFragment {
  gref: number;
  offset: number;
  /** This fragment's own length (for the first, the remainder of the total). */
  size: number;
  id: number;
}

export interface TxPacket {
  /** Total bytes, the first request's size. */
  size: number;
  /** The first request's checksum flags (csum_blank, data_validated); framing bits masked off. */
  flags: number;
  frags: TxFragment[];
  extras: readonly ExtraInfo[];
  /** Ring slots used, extras included: the back end answers each one. */
  slots: number;
}

export interface TxParseError {
  error: ProtocolError;
  /** Slots this packet occupies, which the back end answers with ERROR (extras with NULL). */
  slots: number;
  /** True when the peer must be treated as broken and the ring abandoned. */
  fatal: boolean;
  /** Ids of the data requests, in ring order, copied out (dropped packets are answered per id). */
  ids: number[];
}

export interface TxLimits {
  /** Data slots above this drop the packet (default XEN_NETIF_NR_SLOTS_MIN, 18). */
  maxSlots: number;
  /** Data slots above this are fatal (default Linux netback's 20). */
  fatalSlots: number;
  /** Largest packet accepted (default 65535). */
  maxPacketSize: number;
}

export const DEFAULT_TX_LIMITS: TxLimits = {
  maxSlots: NR_SLOTS_MIN,
  fatalSlots: FATAL_SLOTS,
  maxPacketSize: MAX_PACKET_SIZE,
};

function fatal(error: ProtocolError, slots: number): TxParseError {
  return { error, slots, fatal: true, ids: [] };
}

/**
 * A packet to parse into again and again: the one-request case (nearly every packet) then
 * allocates nothing. What it holds is valid until the next parse into it.
 */
export function scratchTxPacket(): TxPacket {
  const frag = { gref: 0, offset: 0, size: 0, id: 0 };
  const p = { size: 0, flags: 0, frags: [frag], extras: NO_EXTRAS, slots: 0 };
  fragPools.set(p, [frag]);
  return p;
}

/**
 * Every fragment object a scratch packet has had: `frags` is cut to one by each one-request
 * packet, and a chain after it takes its objects back from here instead of making new ones.
 */
const fragPools = new WeakMap<TxPacket, TxFragment[]>();

/**
 * The requests of the packet being parsed, copied out of the ring: reused by every call (a
 * parse never keeps them past its return), grown to the longest chain seen.
 */
const reqPool: TxRequest[] = [{ gref: 0, offset: 0, flags: 0, id: 0, size: 0 }];

/** reqPool[0], named: an element read from a module array costs the hot path a few ns. */
const firstReq = reqPool[0]!;

function pooledReq(i: number): TxRequest {
  while (reqPool.length <= i) reqPool.push({ gref: 0, offset: 0, flags: 0, id: 0, size: 0 });
  return reqPool[i]!;
}

/** A dropped packet: every data request's id, in ring order, so each can be answered. */
function dropped(error: ProtocolError, slots: number, nreqs: number): TxParseError {
  const ids: number[] = new Array(nreqs);
  for (let i = 0; i < nreqs; i++) ids[i] = reqPool[i]!.id;
  return { error, slots, fatal: false, ids };
}

/**
 * Parse the packet starting at ring index `start`, with `available` requests published from
 * there. A valid front end publishes whole packets, so a chain running past `available` is
 * fatal, as in Linux netback. With `into` (see scratchTxPacket) a valid packet is written
 * there, its fragment objects reused, so only extras and errors allocate; without it every
 * result is a new object.
 */
export function parseTxPacket(
  src: SlotSource,
  start: number,
  available: number,
  limits: TxLimits = DEFAULT_TX_LIMITS,
  into?: TxPacket,
): TxPacket | TxParseError {
  if (available < 1) throw new RangeError("parseTxPacket needs at least one published request");
  const first = decodeTxRequest(src.view, src.slotOffset(start), firstReq);
  if ((first.flags & (NETTXF.moreData | NETTXF.extraInfo)) === 0) return parseSingle(first, limits, into);
  return parseChain(src, start, available, limits, into, first);
}

/**
 * A packet flagged more_data or extra_info. Apart from parseTxPacket so that the one-request
 * path stays small enough for the JIT to inline (it ran at 15 ns a packet inside this, 7 apart).
 */
function parseChain(src: SlotSource, start: number, available: number, limits: TxLimits, into: TxPacket | undefined, first: TxRequest): TxPacket | TxParseError {
  let used = 1;
  let extras: readonly ExtraInfo[] = into === undefined ? [] : NO_EXTRAS;
  if (first.flags & NETTXF.extraInfo) {
    const chain = readExtraChain(src, start + used, available - used, "tx_extra_info");
    // Bad extras break the ring's framing: fatal, as in Linux netback.
    if (isExtraChainError(chain)) return fatal(chain.error, used);
    extras = chain.extras;
    used += chain.slots;
  }

  let n = 1;
  let cur = first;
  while (cur.flags & NETTXF.moreData) {
    if (n >= limits.fatalSlots) {
      return fatal(
        new ProtocolError("TOO_MANY_SLOTS", "tx_request.flags", "more_data", `packet asks for more than ${limits.fatalSlots} slots`),
        used,
      );
    }
    if (used >= available) {
      return fatal(
        new ProtocolError("CHAIN_NOT_TERMINATED", "tx_request.flags", "more_data", `chain runs past the ${available} published request(s)`),
        used,
      );
    }
    cur = decodeTxRequest(src.view, src.slotOffset(start + used), pooledReq(n));
    used++;
    n++;
  }

  // Sizes: later fragments carry their own, the first carries the total.
  let remaining = first.size;
  for (let i = 1; i < n; i++) {
    const r = reqPool[i]!;
    if (r.size > remaining) {
      return dropped(new ProtocolError("SIZE_MISMATCH", `tx_request[${i}].size`, r.size, `larger than the ${remaining} bytes the first request leaves`), used, n);
    }
    remaining -= r.size;
  }

  for (let i = 0; i < n; i++) {
    const r = reqPool[i]!;
    const size = i === 0 ? remaining : r.size;
    if (r.offset + size > GRANT_PAGE_SIZE) {
      return fatal(
        new ProtocolError("FRAGMENT_CROSSES_PAGE", `tx_request[${i}].offset`, r.offset, `offset + ${size} bytes crosses the ${GRANT_PAGE_SIZE}-byte page`),
        used,
      );
    }
  }

  if (n > limits.maxSlots) {
    return dropped(new ProtocolError("TOO_MANY_SLOTS", "tx_request.flags", n, `packet uses ${n} slots, limit ${limits.maxSlots}`), used, n);
  }
  if (first.size < ETH_HLEN) {
    return dropped(new ProtocolError("PACKET_TOO_SHORT", "tx_request.size", first.size, `smaller than an Ethernet header (${ETH_HLEN})`), used, n);
  }
  if (first.size > limits.maxPacketSize) {
    return dropped(new ProtocolError("PACKET_TOO_LONG", "tx_request.size", first.size, `larger than the maximum ${limits.maxPacketSize}`), used, n);
  }
  const flags = first.flags & (NETTXF.csumBlank | NETTXF.dataValidated);
  const frags: TxFragment[] = into === undefined ? new Array(n) : into.frags;
  if (into !== undefined) {
    let pool = fragPools.get(into);
    if (pool === undefined) fragPools.set(into, (pool = frags.slice()));
    while (pool.length < n) pool.push({ gref: 0, offset: 0, size: 0, id: 0 });
    frags.length = n;
    for (let i = 0; i < n; i++) frags[i] = pool[i]!;
  }
  for (let i = 0; i < n; i++) {
    const r = reqPool[i]!;
    const size = i === 0 ? remaining : r.size;
    const f = frags[i];
    if (f === undefined) frags[i] = { gref: r.gref, offset: r.offset, size, id: r.id };
    else {
      f.gref = r.gref;
      f.offset = r.offset;
      f.size = size;
      f.id = r.id;
    }
  }
  if (into === undefined) return { size: first.size, flags, frags, extras, slots: used };
  into.size = first.size;
  into.flags = flags;
  into.extras = extras;
  into.slots = used;
  return into;
}

/**
 * The common case, one request and no extras, without the chain machinery: the same checks in
 * the same order as the general path (page crossing is fatal; then length limits drop).
 */
function parseSingle(r: TxRequest, limits: TxLimits, into: TxPacket | undefined): TxPacket | TxParseError {
  if (r.offset + r.size > GRANT_PAGE_SIZE) {
    return fatal(new ProtocolError("FRAGMENT_CROSSES_PAGE", "tx_request[0].offset", r.offset, `offset + ${r.size} bytes crosses the ${GRANT_PAGE_SIZE}-byte page`), 1);
  }
  if (r.size < ETH_HLEN) {
    return { error: new ProtocolError("PACKET_TOO_SHORT", "tx_request.size", r.size, `smaller than an Ethernet header (${ETH_HLEN})`), slots: 1, fatal: false, ids: [r.id] };
  }
  if (r.size > limits.maxPacketSize) {
    return { error: new ProtocolError("PACKET_TOO_LONG", "tx_request.size", r.size, `larger than the maximum ${limits.maxPacketSize}`), slots: 1, fatal: false, ids: [r.id] };
  }
  const flags = r.flags & (NETTXF.csumBlank | NETTXF.dataValidated);
  if (into === undefined) return { size: r.size, flags, frags: [{ gref: r.gref, offset: r.offset, size: r.size, id: r.id }], extras: NO_EXTRAS, slots: 1 };
  into.size = r.size;
  into.flags = flags;
  into.extras = NO_EXTRAS;
  into.slots = 1;
  const f = into.frags[0]!;
  // Writing an array's length is a slow path even when it does not change.
  if (into.frags.length !== 1) into.frags.length = 1;
  f.gref = r.gref;
  f.offset = r.offset;
  f.size = r.size;
  f.id = r.id;
  return into;
}

const NO_EXTRAS: readonly ExtraInfo[] = Object.freeze([]);

export function isTxParseError(r: TxPacket | TxParseError): r is TxParseError {
  return (r as TxParseError).error !== undefined;
}
