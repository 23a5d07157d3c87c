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
import { decodeRxResponse } from "./rx-response.ts";

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
  extras: ExtraInfo[];
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

/** Parse the packet whose first response is at ring index `start`, `available` published. */
export function parseRxPacket(
  src: SlotSource,
  start: number,
  available: number,
  limits: RxLimits = DEFAULT_RX_LIMITS,
): RxPacket | RxParseError {
  if (available < 1) throw new RangeError("parseRxPacket needs at least one published response");
  const frags: RxFragment[] = [];
  let extras: ExtraInfo[] = [];
  let firstError: ProtocolError | null = null;
  let used = 0;
  let flags = 0;
  let total = 0;
  const fail = (e: ProtocolError) => {
    firstError ??= e;
  };

  for (;;) {
    const rsp = decodeRxResponse(src.view, src.slotOffset(start + used));
    const slot = used++;
    if (slot === 0) flags = rsp.flags;
    if (rsp.flags & NETRXF.gsoPrefix) {
      fail(new ProtocolError("BAD_FLAGS", `rx_response[${slot}].flags`, rsp.flags, "gso_prefix is not supported"));
    }
    if (rsp.status < 0) {
      if (rsp.status < NETIF_RSP.dropped) {
        fail(new ProtocolError("BAD_STATUS", `rx_response[${slot}].status`, rsp.status, "expected -2 (dropped), -1 (error) or a size"));
      } else {
        fail(new ProtocolError("BAD_STATUS", `rx_response[${slot}].status`, rsp.status, "the back end reported an error for this packet"));
      }
    } else if (rsp.offset + rsp.status > GRANT_PAGE_SIZE) {
      fail(
        new ProtocolError("FRAGMENT_CROSSES_PAGE", `rx_response[${slot}].offset`, rsp.offset, `offset + ${rsp.status} bytes crosses the ${GRANT_PAGE_SIZE}-byte page`),
      );
    }
    frags.push({ id: rsp.id, offset: rsp.offset, size: rsp.status < 0 ? 0 : rsp.status, slot });
    total += rsp.status < 0 ? 0 : rsp.status;

    if (slot === 0 && rsp.flags & NETRXF.extraInfo) {
      const chain = readExtraChain(src, start + used, available - used, "rx_extra_info");
      if (isExtraChainError(chain)) {
        fail(chain.error);
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
      fail(new ProtocolError("CHAIN_NOT_TERMINATED", "rx_response.flags", "more_data", `chain runs past the ${available} published response(s)`));
      break;
    }
  }

  // The loop is bounded by the published responses, so an over-long chain is read to its end
  // (or to rsp_prod) and dropped whole, leaving the next packet intact.
  if (frags.length > limits.maxSlots) {
    fail(new ProtocolError("TOO_MANY_SLOTS", "rx_response.flags", frags.length, `packet uses ${frags.length} data slots, limit ${limits.maxSlots}`));
  }
  if (firstError === null && total > limits.maxPacketSize) {
    firstError = new ProtocolError("PACKET_TOO_LONG", "rx_response.status", total, `fragments add up to more than ${limits.maxPacketSize}`);
  }
  if (firstError !== null) return { error: firstError, slots: used, ids: frags.map((f) => f.id) };
  return { size: total, flags: flags & (NETRXF.dataValidated | NETRXF.csumBlank), frags, extras, slots: used };
}

export function isRxParseError(r: RxPacket | RxParseError): r is RxParseError {
  return (r as RxParseError).error !== undefined;
}

/** Data slots a back end needs to deliver `size` bytes when it fills each page from offset 0. */
export function rxSlotsFor(size: number): number {
  return Math.max(1, Math.ceil(size / GRANT_PAGE_SIZE));
}
