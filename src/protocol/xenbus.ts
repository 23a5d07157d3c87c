/** XenbusState (io/xenbus.h) and the vif xenstore layout (PROTOCOL.md "Xenstore keys"). */
import { ProtocolError } from "./errors.ts";

export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  InitWait: 2,
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusState = (typeof XenbusState)[keyof typeof XenbusState];

const STATE_NAMES = Object.fromEntries(Object.entries(XenbusState).map(([k, v]) => [v, k])) as Record<number, string>;

export function xenbusStateName(s: number): string {
  return STATE_NAMES[s] ?? `Invalid(${s})`;
}

/**
 * Parse a `state` node. A missing node reads as Unknown (the peer has not started, or has gone);
 * anything else that is not a decimal state number is the peer's error.
 */
export function parseXenbusState(value: string | null, path = "state"): XenbusState | ProtocolError {
  if (value === null) return XenbusState.Unknown;
  if (!/^[0-8]$/.test(value.trim())) {
    return new ProtocolError("BAD_STATE", path, value, "expected a XenbusState number 0..8");
  }
  return Number(value.trim()) as XenbusState;
}

/** Keys in the front end's directory. */
export const FRONT_KEYS = {
  backend: "backend",
  backendId: "backend-id",
  handle: "handle",
  mac: "mac",
  mtu: "mtu",
  state: "state",
  txRingRef: "tx-ring-ref",
  rxRingRef: "rx-ring-ref",
  eventChannel: "event-channel",
  eventChannelTx: "event-channel-tx",
  eventChannelRx: "event-channel-rx",
  requestRxCopy: "request-rx-copy",
  featureRxNotify: "feature-rx-notify",
  featureSg: "feature-sg",
  featureGsoTcpv4: "feature-gso-tcpv4",
  featureGsoTcpv6: "feature-gso-tcpv6",
  featureNoCsumOffload: "feature-no-csum-offload",
  featureIpv6CsumOffload: "feature-ipv6-csum-offload",
  multiQueueNumQueues: "multi-queue-num-queues",
} as const;

/** Keys in the back end's directory. */
export const BACK_KEYS = {
  frontend: "frontend",
  frontendId: "frontend-id",
  state: "state",
  online: "online",
  handle: "handle",
  mac: "mac",
  mtu: "mtu",
  hotplugStatus: "hotplug-status",
  featureSg: "feature-sg",
  featureGsoTcpv4: "feature-gso-tcpv4",
  featureGsoTcpv6: "feature-gso-tcpv6",
  featureRxCopy: "feature-rx-copy",
  featureRxFlip: "feature-rx-flip",
  featureSplitEventChannels: "feature-split-event-channels",
  multiQueueMaxQueues: "multi-queue-max-queues",
  featureCtrlRing: "feature-ctrl-ring",
} as const;

export function frontendDir(frontDomid: number, devid: number): string {
  return `/local/domain/${frontDomid}/device/vif/${devid}`;
}

export function backendDir(backDomid: number, frontDomid: number, devid: number): string {
  return `/local/domain/${backDomid}/backend/vif/${frontDomid}/${devid}`;
}

/** Per-queue subdirectory's name, and path: used only when two or more queues are negotiated. */
export function queueName(queue: number): string {
  return `queue-${queue}`;
}

export function queueDir(dir: string, queue: number): string {
  return `${dir}/${queueName(queue)}`;
}

/** A `feature-*` flag: "1" is on; absent, "0" or anything else is off. */
export function parseFeature(value: string | null): boolean {
  return value !== null && value.trim() === "1";
}

/** A decimal unsigned value from a peer (domid, ring ref, port, mtu), range-checked. */
export function parseUint(value: string | null, path: string, max: number): number | ProtocolError {
  if (value === null) return new ProtocolError("BAD_KEY", path, "(missing)", "the key is required");
  const t = value.trim();
  if (!/^[0-9]{1,10}$/.test(t) || Number(t) > max) {
    return new ProtocolError("BAD_KEY", path, value, `expected a decimal integer in 0..${max}`);
  }
  return Number(t);
}

/** "aa:bb:cc:dd:ee:ff" → 6 bytes. */
export function parseMac(value: string | null, path = "mac"): Uint8Array | ProtocolError {
  if (value === null) return new ProtocolError("BAD_KEY", path, "(missing)", "the key is required");
  const m = /^([0-9a-fA-F]{2}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})$/.exec(value.trim());
  if (!m) return new ProtocolError("BAD_KEY", path, value, "expected a MAC address aa:bb:cc:dd:ee:ff");
  return Uint8Array.from(m.slice(1, 7).map((h) => parseInt(h, 16)));
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}
