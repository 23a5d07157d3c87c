/**
 * The vifs a domain fronts (`device/vif/<devid>` under its home) and serves
 * (`backend/vif/<frontend domid>/<devid>`), read from xenstore as the toolstack and both ends
 * left them. Every value comes from another domain or the toolstack: each is parsed, and one
 * that does not parse is shown as unknown (null), never trusted.
 */
import { PlatformError, type XenStore } from "../platform/types.ts";
import { BACK_KEYS, FRONT_KEYS, formatMac, parseFeature, parseMac, parseUint, parseXenbusState, queueDir, xenbusStateName } from "../protocol/xenbus.ts";

export interface VifFeatures {
  /** Both ends offer scatter-gather (packets of several slots). */
  sg: boolean;
  /** The back end offers split event channels and the front end uses them (a channel per ring). */
  splitEventChannels: boolean;
  /** Queues the front end asked for (multi-queue-num-queues; 1 without the key). */
  queues: number;
  /** Queues the back end offers (multi-queue-max-queues; 1 without the key). */
  maxQueues: number;
  /** The front end takes IPv4 / IPv6 frames with a blank checksum. */
  csumIpv4: boolean;
  csumIpv6: boolean;
  /** Both ends offer TCP segmentation offload. */
  gsoTcpv4: boolean;
  gsoTcpv6: boolean;
  /** The front end notifies when it posts RX buffers. */
  rxNotify: boolean;
}

export interface VifInfo {
  /** "front": this domain uses the vif (netfront); "back": this domain serves it (netback). */
  role: "front" | "back";
  domid: number;
  /** The other end's domain, or null when its id does not parse. */
  peer: number | null;
  devid: number;
  /** This end's directory, and the other end's (as this end's directory names it). */
  path: string;
  peerPath: string | null;
  state: string;
  peerState: string;
  mac: string | null;
  /** The vif's MTU (1500 when the toolstack wrote none), or null when the key does not parse. */
  mtu: number | null;
  features: VifFeatures;
}

const MAX_DOMID = 0x7fef;

/** Children of `path`, or none when it does not exist (or we may not read it). */
async function children(xs: XenStore, path: string): Promise<string[]> {
  try {
    return await xs.directory(path);
  } catch (e) {
    if (e instanceof PlatformError && (e.code === "ENOENT" || e.code === "EACCES")) return [];
    throw e;
  }
}

/** A node's value, or null when missing or unreadable. */
async function read(xs: XenStore, path: string | null): Promise<string | null> {
  if (path === null) return null;
  try {
    return await xs.read(path);
  } catch (e) {
    if (e instanceof PlatformError && (e.code === "ENOENT" || e.code === "EACCES")) return null;
    throw e;
  }
}

function isDevid(name: string): boolean {
  return /^[0-9]{1,9}$/.test(name);
}

export async function listVifs(xs: XenStore, domid: number): Promise<VifInfo[]> {
  const home = `/local/domain/${domid}`;
  const out: VifInfo[] = [];
  for (const d of (await children(xs, `${home}/device/vif`)).filter(isDevid).sort((a, b) => Number(a) - Number(b))) {
    const path = `${home}/device/vif/${d}`;
    const backPath = await read(xs, `${path}/${FRONT_KEYS.backend}`);
    const peer = parseUint(await read(xs, `${path}/${FRONT_KEYS.backendId}`), "backend-id", MAX_DOMID);
    out.push(await describe(xs, "front", domid, Number(d), path, backPath === null ? null : backPath.trim(), typeof peer === "number" ? peer : null, path, backPath === null ? null : backPath.trim()));
  }
  const fronts = (await children(xs, `${home}/backend/vif`)).filter(isDevid).sort((a, b) => Number(a) - Number(b));
  for (const f of fronts) {
    for (const d of (await children(xs, `${home}/backend/vif/${f}`)).filter(isDevid).sort((a, b) => Number(a) - Number(b))) {
      const path = `${home}/backend/vif/${f}/${d}`;
      const frontPath = await read(xs, `${path}/${BACK_KEYS.frontend}`);
      const peer = parseUint(await read(xs, `${path}/${BACK_KEYS.frontendId}`), "frontend-id", MAX_DOMID);
      const fp = frontPath === null ? null : frontPath.trim();
      out.push(await describe(xs, "back", domid, Number(d), path, fp, typeof peer === "number" ? peer : Number(f), fp, path));
    }
  }
  return out;
}

async function describe(xs: XenStore, role: "front" | "back", domid: number, devid: number, path: string, peerPath: string | null, peer: number | null, front: string | null, back: string | null): Promise<VifInfo> {
  const f = (k: string) => read(xs, front === null ? null : `${front}/${k}`);
  const b = (k: string) => read(xs, back === null ? null : `${back}/${k}`);
  const stateOf = async (dir: string | null) => {
    if (dir === null) return "Unknown";
    const s = parseXenbusState(await read(xs, `${dir}/state`));
    return typeof s === "number" ? xenbusStateName(s) : "Invalid";
  };
  const macText = await read(xs, `${path}/mac`);
  const mac = macText === null ? null : parseMac(macText);
  const mtuText = (await read(xs, `${path}/mtu`)) ?? (await read(xs, role === "front" ? (back === null ? null : `${back}/mtu`) : front === null ? null : `${front}/mtu`));
  const mtu = mtuText === null ? 1500 : parseUint(mtuText, "mtu", 65535);
  const count = (v: string | null) => {
    if (v === null) return 1;
    const n = parseUint(v, "queues", 1024);
    return typeof n === "number" && n >= 1 ? n : 1;
  };
  const queues = count(await f(FRONT_KEYS.multiQueueNumQueues));
  // With several queues the event channels are under queue-N/ (netif.h), else in the directory itself.
  const evDir = queues > 1 && front !== null ? queueDir(front, 0) : front;
  const splitUsed = (await read(xs, evDir === null ? null : `${evDir}/${FRONT_KEYS.eventChannelTx}`)) !== null;
  return {
    role,
    domid,
    peer,
    devid,
    path,
    peerPath,
    state: await stateOf(path),
    peerState: await stateOf(peerPath),
    mac: mac instanceof Uint8Array ? formatMac(mac) : null,
    mtu: typeof mtu === "number" ? mtu : null,
    features: {
      sg: parseFeature(await f(FRONT_KEYS.featureSg)) && parseFeature(await b(BACK_KEYS.featureSg)),
      splitEventChannels: splitUsed && parseFeature(await b(BACK_KEYS.featureSplitEventChannels)),
      queues,
      maxQueues: count(await b(BACK_KEYS.multiQueueMaxQueues)),
      csumIpv4: front !== null && (await f(FRONT_KEYS.featureNoCsumOffload))?.trim() !== "1",
      csumIpv6: parseFeature(await f(FRONT_KEYS.featureIpv6CsumOffload)),
      gsoTcpv4: parseFeature(await f(FRONT_KEYS.featureGsoTcpv4)) && parseFeature(await b(BACK_KEYS.featureGsoTcpv4)),
      gsoTcpv6: parseFeature(await f(FRONT_KEYS.featureGsoTcpv6)) && parseFeature(await b(BACK_KEYS.featureGsoTcpv6)),
      rxNotify: parseFeature(await f(FRONT_KEYS.featureRxNotify)),
    },
  };
}

/** The features as one short column: what is on, e.g. "sg split mq=2/2 csum4 csum6 rx-notify". */
export function featureText(x: VifFeatures): string {
  const on: string[] = [];
  if (x.sg) on.push("sg");
  if (x.splitEventChannels) on.push("split");
  if (x.queues > 1 || x.maxQueues > 1) on.push(`mq=${x.queues}/${x.maxQueues}`);
  if (x.csumIpv4) on.push("csum4");
  if (x.csumIpv6) on.push("csum6");
  if (x.gsoTcpv4) on.push("gso4");
  if (x.gsoTcpv6) on.push("gso6");
  if (x.rxNotify) on.push("rx-notify");
  return on.length === 0 ? "-" : on.join(" ");
}
