/** What a ring worker runs: one role per ring and end (front/back × TX/RX). */
import type { DomId, EventChannels, PagesDescriptor, PlatformDescriptor, Port } from "../platform/types.ts";
import type { ProtocolError } from "../protocol/errors.ts";
import { Counter, type Control, type ControlState } from "./control.ts";
import { FrameQueue, type FrameQueueState } from "./frame-queue.ts";
import { WakeBits, type WakeBitsState } from "./wake-bits.ts";

export type RoleName = "front-tx" | "front-rx" | "back-tx" | "back-rx";

/** Everything a worker needs, as data that crosses postMessage. */
export interface RingWorkerInit {
  role: RoleName;
  platform: PlatformDescriptor;
  /** The event-channel handle the main thread opened for this worker, and our port on it. */
  evtchn: unknown;
  port: Port;
  control: ControlState;
  /** Frames to send (TX roles: main → worker) or received (RX roles: worker → main). */
  queue: FrameQueueState;
  /** The ring page: shared by us (front) or mapped from the front end (back). */
  ring: PagesDescriptor;
  /** Front roles: the pre-shared data pages, one per ring slot, and their grant refs. */
  data: { pages: PagesDescriptor; refs: number[] } | null;
  /** The other end's domain: the back end grant-copies from/to it. */
  peer: DomId;
  /** Largest frame accepted, Ethernet header included. */
  maxFrame: number;
  /** How long the worker keeps polling with nothing to do before it blocks (µs; 0: SPIN_POLLS polls). */
  spinMicros: number;
  /**
   * The peer does not notify when it makes room (a front end without feature-rx-notify posting
   * RX buffers): while the role waits for it, poll every this many ms (0 or absent: it notifies).
   */
  pollMs?: number;
  /**
   * Back-rx: which frames the front end takes with a blank checksum (absent: all). A blank one
   * it cannot take is filled in before it goes out.
   */
  peerCsumOffload?: { ipv4: boolean; ipv6: boolean };
  /**
   * How the role tells the main thread its queue needs attention (frames arrived, room freed):
   * a bit of the pool's doorbell. Null: Atomics.notify on the queue's own index word, for a
   * main-thread end that waits on it (the benchmarks).
   */
  bell?: { bits: WakeBitsState; index: number } | null;
  /**
   * The queue's other ring, when both share this role's port (one event channel): where its
   * role is woken (a slot of its worker's WakeBits, and that worker's waiter to kick). The
   * worker that owns the port wakes it whenever the port fires.
   */
  partner?: { bits: WakeBitsState; index: number; waiter: unknown } | null;
}

/** What a role rings when the main thread waits on its queue. */
export interface QueueBell {
  ring(): void;
}

/** The bell `init` names; `word`: the queue word a main thread without a doorbell waits on. */
export function queueBell(init: RingWorkerInit, q: FrameQueue, word: typeof FrameQueue.PROD | typeof FrameQueue.CONS): QueueBell {
  const b = init.bell;
  if (b === undefined || b === null) return { ring: () => q.wake(word) };
  const bits = new WakeBits(b.bits);
  const index = b.index;
  return {
    ring: () => {
      if (bits.set(index)) bits.wake();
    },
  };
}

export interface RingRole {
  /** Do the work available now; true if anything moved. */
  poll(): boolean;
  /**
   * The session is ending (StopMode.drain): take in what the peer already put on the ring,
   * send it nothing new; true if anything moved.
   */
  drain(): boolean;
  /** Waiting for room in the main thread's queue (a drain then waits too, for the main thread). */
  readonly blocked: boolean;
  /** The role stops for good: account for work the peer will never finish. */
  finish(): void;
  /**
   * About to sleep: arm the ring's event index and the queue's waiting flag, then look once
   * more. True when work arrived meanwhile (do not sleep).
   */
  prepareSleep(): boolean;
  /** Woken: lower the waiting flags. */
  woke(): void;
  /**
   * Going to sleep with work that only the peer can unblock, from a peer that will not notify
   * (a front end without feature-rx-notify): poll again after this many ms. 0 or absent: sleep
   * until an event.
   */
  readonly pollAfterMs?: number;
}

/**
 * Within one poll, publish (push the ring, wake the queue's other side) every this many
 * packets, not only at the end: the peer on another CPU starts on the first ones while we do
 * the rest. Pushing once per poll turns a full ring into stop-and-go, each side idle while the
 * other works through 256 slots.
 */
export const PUBLISH_EVERY = 64;

/** Sends event-channel notifications to the peer, and counts them. */
export class PeerNotifier {
  constructor(
    private readonly evtchn: EventChannels,
    private readonly port: Port,
    private readonly ctl: Control,
  ) {}
  notify(): void {
    this.evtchn.notify(this.port);
    this.ctl.add(Counter.notifies, 1);
  }
}

/** A role that produces into the main thread's queue and stopped because it was full. */
export class QueueFull {
  /** Bytes of the frame waiting for room, or -1. */
  private need = -1;

  constructor(private readonly q: FrameQueue) {}

  block(len: number): void {
    this.need = len;
  }

  get blocked(): boolean {
    return this.need >= 0;
  }

  /** Raise the producer flag (the main thread kicks us when it frees room); true if room came meanwhile. */
  prepareSleep(): boolean {
    this.q.setProducerWaiting(true);
    return this.q.hasRoom(this.need);
  }

  woke(): void {
    this.q.setProducerWaiting(false);
    this.need = -1;
  }
}

/**
 * A queued frame larger than this session may send (it was written for an earlier session
 * whose peer allowed more, e.g. scatter-gather): taken off the queue and counted as written
 * and never delivered (lost and dropped), settled so a flush does not wait for it. Sending it
 * would use what the peer did not offer (several slots to a peer without feature-sg).
 */
export function dropOversize(q: FrameQueue, off: number, ctl: Control): void {
  q.release(off);
  countOversize(ctl);
}

/** The counting of dropOversize, for a role that gives the record back itself (with a batch). */
export function countOversize(ctl: Control): void {
  ctl.add(Counter.lost, 1);
  ctl.add(Counter.drops, 1);
  ctl.settle(1);
}

/** A packet dropped because the peer broke a rule: counted as a drop and an error, reported. */
export function dropPacket(ctl: Control, onError: (e: ProtocolError) => void, e: ProtocolError): void {
  ctl.add(Counter.drops, 1);
  ctl.add(Counter.errors, 1);
  onError(e);
}
