/** bun-xen-net: the public API. */
export { Netfront, type NetfrontOptions } from "./netfront.ts";
export { Netback, NETBACK_MAC, type NetbackOptions } from "./netback.ts";
export { VifServer, type ServeAllOptions, type VifEvent } from "./vif-server.ts";
export { configurePool, type PoolOptions } from "./pool.ts";
export { NetDevice, type FrameInfo, type FrameListener, type NetStats, type WriteOptions } from "./device.ts";
export { NetError, type NetErrorCode } from "./errors.ts";
export type { LinkEvent, LinkListener, LinkState } from "./link.ts";
export { prometheusText, observeDevices, type MetricsSource, type MetricLabels, type OtelMeter, type OtelObservable } from "./metrics.ts";
export { defaultSimHypervisor } from "./platform-default.ts";
export { createVif, destroyVif, type VifSpec } from "./xenbus/toolstack.ts";
export { HandshakeError } from "./xenbus/errors.ts";
export { SimHypervisor, type SimOptions } from "../platform/sim/index.ts";
export { openPlatform } from "../platform/open.ts";
export { PlatformError, type Platform } from "../platform/types.ts";
export { ProtocolError } from "../protocol/errors.ts";
export { formatMac, parseMac } from "../protocol/xenbus.ts";
export type { ByteSink, Capture, CaptureDirection, CaptureOptions, CaptureSink, CaptureStats } from "./capture.ts";
export { encodePcapFileHeader, encodePcapRecord, decodePcapFile, LINKTYPE_ETHERNET, PCAP_MAGIC_MICROS } from "./pcap.ts";
