/**
 * An RX packet from a chain of netif_rx_responses, as the front end reads it.
 *
 * Every response carries its own fragment size in `status` (negative: the back end dropped
 * the packet); extras follow the first response when it is flagged extra_info; more_data
 * chains the fragments. Each response sits in the ring slot of the request whose buffer it
 * filled (Linux netfront's rule), so the front end recycles buffers by slot, and checks the
 * id against the one it posted there. Verdicts follow Linux netfront: a bad response drops
 * the packet and the ring goes on.
 */
import { ProtocolError } from "./errors.ts";
import { type ExtraInfo } from "./extra-info.ts";
import { isExtraChainError, readExtraChain, type SlotSource } from "./extra-chain.ts";
import { GRANT_PAGE_SIZE, MAX_PACKET_SIZE, NETIF_RSP, NETRXF, NR_SLOTS_MIN, ETH_HLEN } from "./netif.ts";
import { decodeRxResponse, emptyRxResponse, type RxResponse } from "./rx-response.ts";

export interface RxFragment {
  id: number;
  offset: number;
  size: number;
  /** Position of this response from the packet's first slot (extras included). */
  slot: number;
}

export interface RxPacket {
  size: number;
  /** The first response's checksum flags (data_validated, csum_blank); framing bits masked off. */
  flags: number;
  frags: RxFragment[];
  extras: readonly ExtraInfo[];
  /** Ring slots used, extras included: each one frees the buffer posted in it. */
  slots: number;
}

export interface RxParseError {
  error: ProtocolError;
  /** Slots consumed by the bad packet; their buffers are reposted. */
  slots: number;
  /** Ids read from the consumed data responses, in ring order. */
  ids: number[];
}

export interface RxLimits {
  /** Data slots per packet (default 18: a 64 KiB packet at one page per slot, plus slack). */
  maxSlots: number;
  /** Largest packet accepted (default 65535 + Ethernet header). */
  maxPacketSize: number;
}

export const DEFAULT_RX_LIMITS: RxLimits = {
  maxSlots: NR_SLOTS_MIN,
  maxPacketSize: MAX_PACKET_SIZE + ETH_HLEN,
};

/**
 * Fragment objects a scratch packet owns, kept across parses: `frags` is cut to each packet's
 * length, and these let a longer chain reuse the objects a shorter one left out.
 */
const fragPools = new WeakMap<RxPacket, RxFragment[]>();

/**
 * A packet to parse into again and again: a one-slot packet without extras (nearly every
 * packet) then allocates nothing, a chain only its extras and the fragments it needs beyond
 * the longest seen so far. What it holds is valid until the next parse into it.
 */
export function scratchRxPacket(): RxPacket {
  const frag: RxFragment = { id: 0, offset: 0, size: 0, slot: 0 };
  const p: RxPacket = { size: 0, flags: 0, frags: [frag], extras: NO_EXTRAS, slots: 0 };
  fragPools.set(p, [frag]);
  return p;
}

/** The response being read: copied out of the ring here, never kept past the call. */
const cur: RxResponse = emptyRxResponse();

/**
 * Parse the packet whose first response is at ring index `start`, `available` published.
 * When `into` is given (see scratchRxPacket) a valid packet is written into it and returned;
 * errors are always new objects. Without it every packet is a new object.
 */
export function parseRxPacket(
  src: SlotSource,
  start: number,
  available: number,
  limits: RxLimits = DEFAULT_RX_LIMITS,
  into?: RxPacket,
): RxPacket | RxParseError {
  if (available < 1) throw new RangeError("parseRxPacket needs at least one published response");
  const first = decodeRxResponse(src.view, src.slotOffset(start), cur);
  if ((first.flags & (NETRXF.moreData | NETRXF.extraInfo)) === 0) return parseSingle(first, limits, into);
  return parseChain(src, start, available, limits, into);
}

/**
 * The common case, one response and no extras, without the chain machinery: the same checks
 * in the same order as parseChain, the first failing one reported.
 */
function parseSingle(r: RxResponse, limits: RxLimits, into: RxPacket | undefined): RxPacket | RxParseError {
  let error: ProtocolError | null = null;
  if (r.flags & NETRXF.gsoPrefix) {
    error = new ProtocolError("BAD_FLAGS", "rx_response[0].flags", r.flags, "gso_prefix is not supported");
  } else if (r.status < 0) {
    error = badStatus(0, r.status);
  } else if (r.offset + r.status > GRANT_PAGE_SIZE) {
    error = crossesPage(0, r.offset, r.status);
  } else if (1 > limits.maxSlots) {
    error = tooManySlots(1, limits);
  } else if (r.status > limits.maxPacketSize) {
    error = tooLong(r.status, limits);
  }
  if (error !== null) return { error, slots: 1, ids: [r.id] };
  const flags = r.flags & (NETRXF.dataValidated | NETRXF.csumBlank);
  if (into === undefined) return { size: r.status, flags, frags: [{ id: r.id, offset: r.offset, size: r.status, slot: 0 }], extras: [], slots: 1 };
  let f = into.frags[0];
  if (f === undefined) into.frags[0] = f = { id: 0, offset: 0, size: 0, slot: 0 };
  // Writing an array's length is a slow path even when it does not change.
  if (into.frags.length !== 1) into.frags.length = 1;
  f.id = r.id;
  f.offset = r.offset;
  f.size = r.status;
  f.slot = 0;
  into.size = r.status;
  into.flags = flags;
  into.extras = NO_EXTRAS;
  into.slots = 1;
  return into;
}

/** A packet flagged more_data or extra_info: fragments, extras, the first error found. */
function parseChain(src: SlotSource, start: number, available: number, limits: RxLimits, into: RxPacket | undefined): RxPacket | RxParseError {
  let pool: RxFragment[] | undefined;
  let frags: RxFragment[];
  if (into === undefined) {
    frags = [];
  } else {
    frags = into.frags;
    pool = fragPools.get(into);
    if (pool === undefined) fragPools.set(into, (pool = frags.slice()));
  }
  let nfrags = 0;
  let extras: readonly ExtraInfo[] = into === undefined ? [] : NO_EXTRAS;
  let firstError: ProtocolError | null = null;
  let used = 0;
  let flags = 0;
  let total = 0;

  for (;;) {
    const rsp = decodeRxResponse(src.view, src.slotOffset(start + used), cur);
    const slot = used++;
    if (slot === 0) flags = rsp.flags;
    if (firstError === null && rsp.flags & NETRXF.gsoPrefix) {
      firstError = new ProtocolError("BAD_FLAGS", `rx_response[${slot}].flags`, rsp.flags, "gso_prefix is not supported");
    }
    if (rsp.status < 0) {
      firstError ??= badStatus(slot, rsp.status);
    } else if (rsp.offset + rsp.status > GRANT_PAGE_SIZE) {
      firstError ??= crossesPage(slot, rsp.offset, rsp.status);
    }
    const size = rsp.status < 0 ? 0 : rsp.status;
    if (pool === undefined) {
      frags.push({ id: rsp.id, offset: rsp.offset, size, slot });
    } else {
      let f = pool[nfrags];
      if (f === undefined) pool[nfrags] = f = { id: 0, offset: 0, size: 0, slot: 0 };
      f.id = rsp.id;
      f.offset = rsp.offset;
      f.size = size;
      f.slot = slot;
      frags[nfrags] = f;
    }
    nfrags++;
    total += size;

    if (slot === 0 && rsp.flags & NETRXF.extraInfo) {
      const chain = readExtraChain(src, start + used, available - used, "rx_extra_info");
      if (isExtraChainError(chain)) {
        firstError ??= chain.error;
        if (chain.slots === null) {
          used = available; // the chain's end is unknowable: drop everything published
          break;
        }
        used += chain.slots;
      } else {
        extras = chain.extras;
        used += chain.slots;
      }
    }
    if (!(rsp.flags & NETRXF.moreData)) break;
    if (used >= available) {
      firstError ??= new ProtocolError("CHAIN_NOT_TERMINATED", "rx_response.flags", "more_data", `chain runs past the ${available} published response(s)`);
      break;
    }
  }
  frags.length = nfrags;

  // The loop is bounded by the published responses, so an over-long chain is read to its end
  // (or to rsp_prod) and dropped whole, leaving the next packet intact.
  if (nfrags > limits.maxSlots) firstError ??= tooManySlots(nfrags, limits);
  if (firstError === null && total > limits.maxPacketSize) firstError = tooLong(total, limits);
  if (firstError !== null) {
    const ids: number[] = new Array(nfrags);
    for (let i = 0; i < nfrags; i++) ids[i] = frags[i]!.id;
    return { error: firstError, slots: used, ids };
  }
  flags &= NETRXF.dataValidated | NETRXF.csumBlank;
  if (into === undefined) return { size: total, flags, frags, extras, slots: used };
  into.size = total;
  into.flags = flags;
  into.extras = extras;
  into.slots = used;
  return into;
}

function badStatus(slot: number, status: number): ProtocolError {
  return status < NETIF_RSP.dropped
    ? new ProtocolError("BAD_STATUS", `rx_response[${slot}].status`, status, "expected -2 (dropped), -1 (error) or a size")
    : new ProtocolError("BAD_STATUS", `rx_response[${slot}].status`, status, "the back end reported an error for this packet");
}

function crossesPage(slot: number, offset: number, status: number): ProtocolError {
  return new ProtocolError("FRAGMENT_CROSSES_PAGE", `rx_response[${slot}].offset`, offset, `offset + ${status} bytes crosses the ${GRANT_PAGE_SIZE}-byte page`);
}

function tooManySlots(n: number, limits: RxLimits): ProtocolError {
  return new ProtocolError("TOO_MANY_SLOTS", "rx_response.flags", n, `packet uses ${n} data slots, limit ${limits.maxSlots}`);
}

function tooLong(total: number, limits: RxLimits): ProtocolError {
  return new ProtocolError("PACKET_TOO_LONG", "rx_response.status", total, `fragments add up to more than ${limits.maxPacketSize}`);
}

const NO_EXTRAS: readonly ExtraInfo[] = Object.freeze([]);

export function isRxParseError(r: RxPacket | RxParseError): r is RxParseError {
  return (r as RxParseError).error !== undefined;
}

/** Data slots a back end needs to deliver `size` bytes when it fills each page from offset 0. */
export function rxSlotsFor(size: number): number {
  return Math.max(1, Math.ceil(size / GRANT_PAGE_SIZE));
}
