/**
 * Errors for anything a peer wrote that breaks the netif protocol.
 *
 * The peer is another domain: its mistakes (or attacks) are expected input, so they are
 * values the data path can count and act on, never untyped exceptions. Every error names
 * the field and the value that broke the rule, so a log line is enough to diagnose a peer.
 */

export type ProtocolErrorCode =
  | "RING_OVERFLOW" // a producer index claims more entries than the ring can hold
  | "TOO_MANY_SLOTS" // a packet uses more slots than the limit
  | "FRAGMENT_CROSSES_PAGE" // offset + size runs past the granted page
  | "SIZE_MISMATCH" // fragment sizes do not add up to the packet size
  | "PACKET_TOO_SHORT" // smaller than an Ethernet header
  | "PACKET_TOO_LONG" // larger than the negotiated maximum
  | "CHAIN_NOT_TERMINATED" // a more_data chain runs past the published entries
  | "EXTRA_CHAIN_NOT_TERMINATED" // an extra-info chain runs past the published entries
  | "BAD_EXTRA_TYPE" // unknown or duplicated extra-info type
  | "BAD_GSO" // a GSO extra with an unknown type or zero segment size
  | "BAD_STATUS" // a response status outside the defined range
  | "BAD_FLAGS" // flags the protocol forbids in this position
  | "BAD_ID" // a response for an id that is not outstanding
  | "BAD_GREF" // a grant reference the peer never gave us, or not with the access needed
  | "BAD_STATE" // a xenbus state string that is not a known state
  | "BAD_KEY"; // a xenstore value that does not parse

export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly code: ProtocolErrorCode,
    /** The wire field at fault, e.g. `tx_request.size` or `req_prod`. */
    readonly field: string,
    /** The offending value as read from the peer. */
    readonly value: number | string,
    detail: string,
  ) {
    super(`${code}: ${field}=${value}: ${detail}`);
  }
}
