/**
 * Netback's side of the xenbus handshake (Linux xen-netback's xenbus.c): advertise, wait for
 * the frontend's keys, connect; follow the frontend's state while running; close and, when the
 * device stays, get ready for a reconnect.
 */
import type { DomId, XenStore, XsWatch } from "../../platform/types.ts";
import { BACK_KEYS, FRONT_KEYS, parseFeature, queueDir, XenbusState } from "../../protocol/xenbus.ts";
import { asHandshakeError, HandshakeError } from "./errors.ts";
import {
  awaitPeerKeys,
  checkPathValue,
  closeEnd,
  Deadline,
  flag,
  read,
  readMac,
  readState,
  readUint,
  readUintOr,
  serialized,
  switchState,
  U32_MAX,
  uintKey,
  waitForState,
  watchToken,
  type CloseResult,
  type WaitOptions,
} from "./wait.ts";
import { DEFAULT_MTU, DEFAULT_TX_RETRIES, MTU_MAX, MTU_MIN } from "./frontend.ts";


export interface BackendFeatures {
  sg: boolean;
  gsoTcpv4: boolean;
  gsoTcpv6: boolean;
  splitEventChannels: boolean;
  /** Most queues the frontend may ask for (multi-queue-max-queues). */
  maxQueues: number;
}

/** Most queues a backend offers (Linux netback's default is the CPUs; netfront asks for 8 at most). */
export const MAX_QUEUES = 64;

/**
 * Write our features (one transaction, so a frontend never sees half an offer), then InitWait.
 * multi-queue-max-queues is always written, as Linux netback does; a Linux frontend then
 * answers with multi-queue-num-queues=1.
 */
export async function advertiseBackend(xs: XenStore, backPath: string, features: BackendFeatures): Promise<void> {
  if (!Number.isInteger(features.maxQueues) || features.maxQueues < 1 || features.maxQueues > MAX_QUEUES) {
    throw new RangeError(`maxQueues must be an integer in 1..${MAX_QUEUES}, got ${String(features.maxQueues)}`);
  }
  const K = BACK_KEYS;
  const writes: [string, string][] = [
    [K.featureSg, flag(features.sg)],
    [K.featureGsoTcpv4, flag(features.gsoTcpv4)],
    [K.featureGsoTcpv6, flag(features.gsoTcpv6)],
    [K.featureRxCopy, "1"],
    [K.featureRxFlip, "0"],
    [K.featureSplitEventChannels, flag(features.splitEventChannels)],
    [K.multiQueueMaxQueues, String(features.maxQueues)],
    [K.featureCtrlRing, "0"],
  ];
  const statePath = `${backPath}/${K.state}`;
  try {
    await xs.transaction(async (tx) => {
      // Writing into a removed directory would re-create it: check inside the transaction.
      if ((await xs.read(statePath, tx)) === null) {
        throw new HandshakeError("GONE", statePath, null, "the device directory is gone (the toolstack removed the vif)");
      }
      for (const [k, v] of writes) await xs.write(`${backPath}/${k}`, v, tx);
    }, DEFAULT_TX_RETRIES);
  } catch (e) {
    throw asHandshakeError(e, backPath);
  }
  await switchState(xs, backPath, XenbusState.InitWait);
}

/** One queue's rings and channels, as the frontend published them. */
export interface QueueInfo {
  txRingRef: number;
  rxRingRef: number;
  /** Not split: tx === rx, one port. */
  eventChannel: { tx: number; rx: number; split: boolean };
}

export interface FrontendInfo {
  frontendId: DomId;
  frontendPath: string;
  /** The frontend's MAC, from the backend dir (the toolstack's copy; netback reads it there). */
  mac: Uint8Array;
  /** The vif's MTU: the backend dir's `mtu` (libxl writes it), else the frontend dir's, else 1500. */
  mtu: number;
  /** As many as the frontend asked for (multi-queue-num-queues, default 1). */
  queues: QueueInfo[];
  features: {
    sg: boolean;
    gsoTcpv4: boolean;
    gsoTcpv6: boolean;
    rxNotify: boolean;
    noCsumOffload: boolean;
    ipv6CsumOffload: boolean;
  };
}

/**
 * Wait for the frontend's Initialised or Connected, then read and validate its keys. A
 * frontend in Closing/Closed is waited on (it may reconnect) within the bound. The frontend
 * wrote its keys in one transaction before switching state, so plain reads see all of them.
 */
export async function awaitFrontend(xs: XenStore, backPath: string, opts: WaitOptions = {}): Promise<FrontendInfo> {
  const d = new Deadline(opts);
  const { id: frontendId, path: frontendPath } = await awaitPeerKeys(xs, backPath, BACK_KEYS.frontendId, BACK_KEYS.frontend, d);

  const S = XenbusState;
  const frontState = `${frontendPath}/${FRONT_KEYS.state}`;
  // A frontend that goes Closing or Closed while it is connecting gave up on us (Linux:
  // xenbus_dev_fatal): fail now, not at the timeout. One already Closed when we start is
  // between connections and is waited on.
  let connecting = false;
  const s = await waitForState(
    xs,
    frontState,
    (s) => {
      if (s === S.Initialising || s === S.Initialised) connecting = true;
      return s === S.Initialised || s === S.Connected || (connecting && (s === S.Closing || s === S.Closed));
    },
    d.opts(),
  );
  if (s === S.Closing || s === S.Closed) {
    throw new HandshakeError("PEER_CLOSED", frontState, String(s), "the frontend closed while connecting (it refused the vif or our offer)");
  }

  const K = FRONT_KEYS;
  const key = (k: string) => `${frontendPath}/${k}`;
  const rxCopyPath = key(K.requestRxCopy);
  const rxCopy = await read(xs, rxCopyPath);
  // Linux netback: missing means 0, and 0 (flip) is refused.
  if (rxCopy?.trim() !== "1") {
    throw new HandshakeError("NO_RX_COPY", rxCopyPath, rxCopy, "the frontend does not request rx-copy (flip mode is not supported)");
  }
  // As Linux netback: one queue's keys sit in the frontend dir, several queues' under queue-N/.
  const queuesPath = key(K.multiQueueNumQueues);
  const offered = await readUintOr(xs, `${backPath}/${BACK_KEYS.multiQueueMaxQueues}`, 1, MAX_QUEUES, 1);
  const count = await readUintOr(xs, queuesPath, 1, U32_MAX, 1);
  if (count > offered) {
    throw new HandshakeError("BAD_KEY", queuesPath, String(count), `the frontend asks for more queues than this backend offered (multi-queue-max-queues=${offered})`);
  }
  const queues: QueueInfo[] = [];
  for (let q = 0; q < count; q++) {
    const dir = count === 1 ? frontendPath : queueDir(frontendPath, q);
    queues.push({
      txRingRef: await readUint(xs, `${dir}/${K.txRingRef}`, U32_MAX),
      rxRingRef: await readUint(xs, `${dir}/${K.rxRingRef}`, U32_MAX),
      eventChannel: await readEventChannels(xs, backPath, dir),
    });
  }
  const feature = async (k: string) => parseFeature(await read(xs, key(k)));
  return {
    frontendId,
    frontendPath,
    mac: await readMac(xs, `${backPath}/${BACK_KEYS.mac}`),
    mtu: await readFirstMtu(xs, [`${backPath}/${BACK_KEYS.mtu}`, key(K.mtu)]),
    queues,
    features: {
      sg: await feature(K.featureSg),
      gsoTcpv4: await feature(K.featureGsoTcpv4),
      gsoTcpv6: await feature(K.featureGsoTcpv6),
      rxNotify: await feature(K.featureRxNotify),
      noCsumOffload: await feature(K.featureNoCsumOffload),
      ipv6CsumOffload: await feature(K.featureIpv6CsumOffload),
    },
  };
}

/** The first of `paths` that holds an MTU, checked; DEFAULT_MTU when none does. */
async function readFirstMtu(xs: XenStore, paths: string[]): Promise<number> {
  for (const p of paths) {
    const v = await read(xs, p);
    if (v !== null) return uintKey(p, v, MTU_MAX, MTU_MIN);
  }
  return DEFAULT_MTU;
}

/**
 * Split channels only if we advertised them and the frontend wrote both; otherwise the single
 * `event-channel` is required (Linux netback falls back to it the same way). Port 0 is never
 * a bound port.
 */
async function readEventChannels(xs: XenStore, backPath: string, frontendPath: string): Promise<QueueInfo["eventChannel"]> {
  const K = FRONT_KEYS;
  const offered = parseFeature(await read(xs, `${backPath}/${BACK_KEYS.featureSplitEventChannels}`));
  if (offered) {
    const txPath = `${frontendPath}/${K.eventChannelTx}`;
    const rxPath = `${frontendPath}/${K.eventChannelRx}`;
    const tx = await read(xs, txPath);
    const rx = await read(xs, rxPath);
    if (tx !== null && rx !== null) return { tx: uintKey(txPath, tx, U32_MAX, 1), rx: uintKey(rxPath, rx, U32_MAX, 1), split: true };
  }
  const port = await readUint(xs, `${frontendPath}/${K.eventChannel}`, U32_MAX, 1);
  return { tx: port, rx: port, split: false };
}

/** After mapping the rings and binding the channel: Connected. */
export async function connectBackend(xs: XenStore, backPath: string): Promise<void> {
  await switchState(xs, backPath, XenbusState.Connected);
}

/**
 * For the running phase: call `onState` with the peer's state on registration and on every
 * change (repeats dropped), so the data path notices a peer going Closing/Closed. A value that
 * is not a state goes to `onError` (default: reportError) and is not delivered. The caller
 * must unwatch.
 */
export async function watchPeerState(
  xs: XenStore,
  statePath: string,
  onState: (s: XenbusState) => void,
  onError: (e: unknown) => void = reportError,
): Promise<XsWatch> {
  let active = true;
  let last: XenbusState | null = null;
  const evaluate = serialized(async () => {
    if (!active) return;
    let s: XenbusState;
    try {
      s = await readState(xs, statePath);
    } catch (e) {
      if (active) onError(e);
      return;
    }
    // Re-check: unwatch() may have run while we read.
    if (!active || s === last) return;
    last = s;
    onState(s);
  });
  let w: XsWatch;
  try {
    w = await xs.watch(statePath, watchToken("peer-state"), evaluate);
  } catch (e) {
    throw asHandshakeError(e, statePath);
  }
  return {
    path: w.path,
    token: w.token,
    unwatch() {
      active = false;
      w.unwatch();
    },
  };
}

/**
 * Close our end as netback does: Closing, wait (bounded) for the frontend's Closing or Closed
 * (or its directory gone), Closed. Stop the data path and unmap the rings BEFORE calling this:
 * our Closed tells the frontend it may free the granted pages. Best effort: see closeEnd.
 * The frontend's state is found through our `frontend` key; without one we only switch states
 * (and report the close as unacknowledged).
 */
export async function closeBackend(xs: XenStore, backPath: string, opts: WaitOptions = {}): Promise<CloseResult> {
  const fePath = `${backPath}/${BACK_KEYS.frontend}`;
  let peerStatePath: string | null = null;
  try {
    peerStatePath = `${checkPathValue(fePath, await read(xs, fePath))}/${FRONT_KEYS.state}`;
  } catch (e) {
    // A missing or broken `frontend` key must not stop a close: there is just no one to wait for.
    if (!(e instanceof HandshakeError && e.code === "BAD_KEY")) throw e;
  }
  return closeEnd(xs, backPath, peerStatePath, false, opts);
}

/**
 * After a close, while the device stays (`online` = 1): advertise again and go back to
 * InitWait so the frontend can reconnect, as Linux netback does. Returns false, changing
 * nothing, when the toolstack is taking the device away (`online` is not 1): we stay Closed.
 */
export async function resetBackendForReconnect(xs: XenStore, backPath: string, features: BackendFeatures): Promise<boolean> {
  if ((await read(xs, `${backPath}/${BACK_KEYS.online}`))?.trim() !== "1") return false;
  await advertiseBackend(xs, backPath, features);
  return true;
}
