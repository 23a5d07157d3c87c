/**
 * Netfront's side of the xenbus handshake (Linux xen-netfront's talk_to_netback and
 * netback_changed): find the backend, read what it offers, publish our rings and event
 * channel, and close. The data path allocates the rings and the channel between awaitBackend
 * and publishFrontend.
 */
import type { DomId, XenStore } from "../../platform/types.ts";
import { FRONT_KEYS, BACK_KEYS, parseFeature, queueName, XenbusState } from "../../protocol/xenbus.ts";
import { asHandshakeError, HandshakeError } from "./errors.ts";
import {
  awaitPeerKeys,
  closeEnd,
  Deadline,
  flag,
  read,
  readMac,
  readState,
  readUintOr,
  switchState,
  U32_MAX,
  uintKey,
  waitForState,
  type CloseResult,
  type WaitOptions,
} from "./wait.ts";

export const DEFAULT_MTU = 1500;
export const MTU_MIN = 68;
export const MTU_MAX = 65535;

export interface BackendInfo {
  backendId: DomId;
  backendPath: string;
  /** Ours, as the toolstack assigned it (frontend dir `mac`). */
  mac: Uint8Array;
  mtu: number;
  features: {
    rxCopy: true;
    sg: boolean;
    gsoTcpv4: boolean;
    gsoTcpv6: boolean;
    splitEventChannels: boolean;
    maxQueues: number;
    ctrlRing: boolean;
    /** The backend wrote multi-queue-max-queues at all: then Linux netfront writes multi-queue-num-queues. */
    multiQueue: boolean;
  };
}

/**
 * Wait for the backend and read its offer. `backend-id` and `backend` may be written late and
 * in either order: nothing is read until both exist. Our state is then made Initialising
 * (see resetFrontend), and the backend's InitWait awaited: only a fresh offer counts, as in
 * Linux netfront; a backend still Connected belongs to an earlier connection and is not
 * joined. A backend in Closing/Closed is waited on: it may come back within the bound.
 */
export async function awaitBackend(xs: XenStore, frontPath: string, opts: WaitOptions = {}): Promise<BackendInfo> {
  const d = new Deadline(opts);
  const { id: backendId, path: backendPath } = await awaitPeerKeys(xs, frontPath, FRONT_KEYS.backendId, FRONT_KEYS.backend, d);
  const backState = `${backendPath}/${BACK_KEYS.state}`;
  await resetFrontend(xs, frontPath, backState, d);

  await waitForState(xs, backState, (s) => s === XenbusState.InitWait, d.opts());

  const key = (k: string) => `${backendPath}/${k}`;
  const rxCopyPath = key(BACK_KEYS.featureRxCopy);
  const rxCopy = await read(xs, rxCopyPath);
  if (!parseFeature(rxCopy)) {
    throw new HandshakeError("NO_RX_COPY", rxCopyPath, rxCopy, "the backend does not offer rx-copy (flip mode is not supported)");
  }
  const feature = async (k: string) => parseFeature(await read(xs, key(k)));
  const maxQueuesPath = key(BACK_KEYS.multiQueueMaxQueues);
  const maxQueuesRaw = await read(xs, maxQueuesPath);
  return {
    backendId,
    backendPath,
    mac: await readMac(xs, `${frontPath}/${FRONT_KEYS.mac}`),
    mtu: await readUintOr(xs, `${frontPath}/${FRONT_KEYS.mtu}`, DEFAULT_MTU, MTU_MAX, MTU_MIN),
    features: {
      rxCopy: true,
      sg: await feature(BACK_KEYS.featureSg),
      gsoTcpv4: await feature(BACK_KEYS.featureGsoTcpv4),
      gsoTcpv6: await feature(BACK_KEYS.featureGsoTcpv6),
      splitEventChannels: await feature(BACK_KEYS.featureSplitEventChannels),
      maxQueues: maxQueuesRaw === null ? 1 : uintKey(maxQueuesPath, maxQueuesRaw, U32_MAX, 1),
      ctrlRing: await feature(BACK_KEYS.featureCtrlRing),
      multiQueue: maxQueuesRaw !== null,
    },
  };
}

/**
 * Make our state Initialising before a connection. A state a connection left behind
 * (Initialised, Connected, Closing: its owner died without closing; nobody on this machine
 * holds the device, or we would not be here) is first closed properly, as Linux's
 * xenbus_reset_frontend does after a kexec: Closing, the backend's answer, Closed, its
 * answer. Only then does a backend that still serves the old connection let go and offer
 * the device again. Each wait is bounded by `d`; a backend that does not answer is not waited
 * for longer.
 */
async function resetFrontend(xs: XenStore, frontPath: string, backState: string, d: Deadline): Promise<void> {
  const S = XenbusState;
  const statePath = `${frontPath}/${FRONT_KEYS.state}`;
  const ours = await readState(xs, statePath).catch(() => S.Unknown);
  if (ours === S.Initialising) return;
  if (ours === S.Initialised || ours === S.Connected || ours === S.Closing || ours === S.Reconfiguring || ours === S.Reconfigured) {
    const answered = (accept: (s: XenbusState) => boolean) =>
      waitForState(xs, backState, accept, { timeoutMs: Math.min(d.remaining(), STALE_RESET_MS) }).catch(() => null);
    await switchState(xs, frontPath, S.Closing);
    await answered((s) => s === S.Closing || s === S.Closed || s === S.InitWait || s === S.Unknown);
    await switchState(xs, frontPath, S.Closed);
    await answered((s) => s === S.Closed || s === S.InitWait || s === S.Unknown);
  }
  await switchState(xs, frontPath, S.Initialising);
}

/** How long a reset of a stale connection waits for each of the backend's answers. */
const STALE_RESET_MS = 2000;

/** One queue's rings and channel(s). */
export interface QueueKeys {
  txRingRef: number;
  rxRingRef: number;
  /** One port, or two with split event channels (only if the backend offers them). */
  eventChannel: number | { tx: number; rx: number };
}

export interface FrontendKeys {
  /** One per queue (at most what the backend offered). */
  queues: QueueKeys[];
  features: {
    sg: boolean;
    gsoTcpv4: boolean;
    gsoTcpv6: boolean;
    rxNotify: boolean;
    noCsumOffload: boolean;
    ipv6CsumOffload: boolean;
  };
}

export interface PublishOptions {
  /**
   * Write multi-queue-num-queues=1. Linux netfront writes it exactly when the backend wrote
   * multi-queue-max-queues (pass BackendInfo.features.multiQueue).
   */
  numQueuesKey?: boolean;
  /** Transaction retries on EAGAIN (default 16). */
  maxRetries?: number;
  signal?: AbortSignal;
}

export const DEFAULT_TX_RETRIES = 16;

/**
 * Publish our rings, channels and features in ONE transaction (the backend reads them only
 * after our Connected, and must never see half of them), retrying on EAGAIN; then switch to
 * Connected. After `maxRetries` conflicts the EAGAIN surfaces as HandshakeError XENSTORE with
 * the PlatformError as its cause; nothing was written then.
 *
 * One queue: its keys go flat in the frontend dir (and multi-queue-num-queues=1 with
 * `numQueuesKey`). Several: multi-queue-num-queues=N and each queue's keys under queue-0 ..
 * queue-N-1 (queueDir() in protocol/xenbus.ts), none at the top level. Keys of the other
 * layouts, left by an earlier connection, are removed: a backend must not bind stale ports.
 */
export async function publishFrontend(xs: XenStore, frontPath: string, keys: FrontendKeys, opts: PublishOptions = {}): Promise<void> {
  checkKeys(keys);
  new Deadline(opts.signal === undefined ? {} : { signal: opts.signal }).checkAborted(frontPath);
  const K = FRONT_KEYS;
  const f = keys.features;
  const many = keys.queues.length > 1;
  const writes: [string, string][] = [];
  keys.queues.forEach((q, i) => {
    const at = (k: string) => (many ? `${queueName(i)}/${k}` : k);
    writes.push([at(K.txRingRef), String(q.txRingRef)], [at(K.rxRingRef), String(q.rxRingRef)]);
    const ec = q.eventChannel;
    if (typeof ec === "number") writes.push([at(K.eventChannel), String(ec)]);
    else writes.push([at(K.eventChannelTx), String(ec.tx)], [at(K.eventChannelRx), String(ec.rx)]);
  });
  writes.push(
    [K.requestRxCopy, "1"],
    [K.featureRxNotify, flag(f.rxNotify)],
    [K.featureSg, flag(f.sg)],
    [K.featureGsoTcpv4, flag(f.gsoTcpv4)],
    [K.featureGsoTcpv6, flag(f.gsoTcpv6)],
    [K.featureNoCsumOffload, flag(f.noCsumOffload)],
    [K.featureIpv6CsumOffload, flag(f.ipv6CsumOffload)],
  );
  if (many || opts.numQueuesKey === true) writes.push([K.multiQueueNumQueues, String(keys.queues.length)]);
  const flat = [K.txRingRef, K.rxRingRef, K.eventChannel, K.eventChannelTx, K.eventChannelRx];
  const statePath = `${frontPath}/${K.state}`;
  try {
    await xs.transaction(async (tx) => {
      // Writing into a removed directory would re-create it: check inside the transaction.
      if ((await xs.read(statePath, tx)) === null) {
        throw new HandshakeError("GONE", statePath, null, "the device directory is gone (the toolstack removed the vif)");
      }
      for (const c of await xs.directory(frontPath, tx)) if (/^queue-\d+$/.test(c)) await xs.rm(`${frontPath}/${c}`, tx);
      for (const k of flat) await xs.rm(`${frontPath}/${k}`, tx);
      if (!many && opts.numQueuesKey !== true) await xs.rm(`${frontPath}/${K.multiQueueNumQueues}`, tx);
      for (const [k, v] of writes) await xs.write(`${frontPath}/${k}`, v, tx);
    }, opts.maxRetries ?? DEFAULT_TX_RETRIES);
  } catch (e) {
    throw asHandshakeError(e, frontPath);
  }
  await switchState(xs, frontPath, XenbusState.Connected);
}

function checkKeys(k: FrontendKeys): void {
  const u32 = (name: string, v: unknown, min = 0) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > U32_MAX) throw new RangeError(`${name} must be an integer in ${min}..${U32_MAX}, got ${String(v)}`);
  };
  if (!Array.isArray(k.queues) || k.queues.length < 1) throw new RangeError("at least one queue's keys are needed");
  k.queues.forEach((q, i) => {
    u32(`queues[${i}].txRingRef`, q.txRingRef);
    u32(`queues[${i}].rxRingRef`, q.rxRingRef);
    // Port 0 is never a bound port in Xen.
    if (typeof q.eventChannel === "number") u32(`queues[${i}].eventChannel`, q.eventChannel, 1);
    else {
      u32(`queues[${i}].eventChannel.tx`, q.eventChannel.tx, 1);
      u32(`queues[${i}].eventChannel.rx`, q.eventChannel.rx, 1);
    }
  });
}

/**
 * After publishFrontend: wait for the backend's Connected. The frontend must not transmit
 * before it. A backend that goes Closing/Closed/away instead has refused our keys: PEER_CLOSED
 * (fail fast; the caller closes our end).
 */
export async function awaitBackendConnected(xs: XenStore, backendPath: string, opts: WaitOptions = {}): Promise<void> {
  const S = XenbusState;
  const statePath = `${backendPath}/${BACK_KEYS.state}`;
  const s = await waitForState(xs, statePath, (s) => s === S.Connected || s === S.Closing || s === S.Closed || s === S.Unknown, opts);
  if (s !== S.Connected) {
    throw new HandshakeError("PEER_CLOSED", statePath, String(s), "the backend closed instead of connecting");
  }
}

/**
 * Close our end: Closing, wait for the backend's Closing or Closed (or its directory gone),
 * Closed, wait for its Closed (or gone, or InitWait: Linux netback goes back there when the
 * device stays online). Best effort and bounded: see closeEnd. Free the rings only once
 * `acknowledged` (the backend no longer maps them); otherwise leak them rather than hand
 * pages the backend may still write back to the allocator.
 */
export function closeFrontend(xs: XenStore, frontPath: string, backendPath: string, opts: WaitOptions = {}): Promise<CloseResult> {
  return closeEnd(xs, frontPath, `${backendPath}/${BACK_KEYS.state}`, true, opts);
}
