/** Constants of io/netif.h: flags, statuses, extra-info types, limits. */

/** Flags of a netif_tx_request. */
export const NETTXF = {
  csumBlank: 1, // the checksum field is blank: the receiver must fill it (partial checksum)
  dataValidated: 2, // the checksum was already validated
  moreData: 4, // another fragment of this packet follows
  extraInfo: 8, // netif_extra_info slots follow this request
} as const;

/** Flags of a netif_rx_response. */
export const NETRXF = {
  dataValidated: 1,
  csumBlank: 2,
  moreData: 4,
  extraInfo: 8,
  gsoPrefix: 16, // legacy GSO prefix descriptor; no backend we serve or use sends it
} as const;

/** netif_tx_response.status and netif_rx_response.status when negative. */
export const NETIF_RSP = {
  dropped: -2,
  error: -1,
  okay: 0,
  /** The answer written for a slot that held extra info, not data. */
  null: 1,
} as const;

export const EXTRA_TYPE = {
  none: 0,
  gso: 1,
  mcastAdd: 2,
  mcastDel: 3,
  hash: 4,
} as const;
/** One past the highest defined extra type (XEN_NETIF_EXTRA_TYPE_MAX). */
export const EXTRA_TYPE_MAX = 5;

/** netif_extra_info.flags */
export const EXTRA_FLAG_MORE = 1;

export const GSO_TYPE = { none: 0, tcpv4: 1, tcpv6: 2 } as const;

/** XEN_NETIF_MAX_TX_SIZE: a packet's size is a u16. */
export const MAX_PACKET_SIZE = 0xffff;
/** XEN_NETIF_NR_SLOTS_MIN: slots per packet every back end must accept. */
export const NR_SLOTS_MIN = 18;
/** Linux netback's fatal_skb_slots default: a front end asking for more is treated as malicious. */
export const FATAL_SLOTS = 20;
export const ETH_HLEN = 14;
export const DEFAULT_MTU = 1500;
/** The largest MTU without scatter-gather (Linux's ETH_DATA_LEN cap on both drivers). */
export const ETH_DATA_LEN = 1500;

/** Bytes in a granted page; a fragment never crosses it. */
export const GRANT_PAGE_SIZE = 4096;
