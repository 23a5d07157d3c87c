/** The protocol core: pure code, no I/O. */
export * from "./errors.ts";
export * from "./u32.ts";
export * from "./ring.ts";
export * from "./netif.ts";
export * from "./tx-request.ts";
export * from "./tx-response.ts";
export * from "./rx-request.ts";
export * from "./rx-response.ts";
export * from "./extra-info.ts";
export * from "./extra-chain.ts";
export * from "./tx-packet.ts";
export * from "./rx-packet.ts";
export * from "./xenbus.ts";
export * from "./checksum.ts";
export * from "./tcp-segment.ts";
