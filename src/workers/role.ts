/** What a ring worker runs: one role per ring and end (front/back × TX/RX). */
import type { DomId, EventChannels, PagesDescriptor, PlatformDescriptor, Port } from "../platform/types.ts";
import { Counter, type Control, type ControlState } from "./control.ts";
import type { FrameQueueState } from "./frame-queue.ts";

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
}

export interface RingRole {
  /** Do the work available now; true if anything moved. */
  poll(): boolean;
  /**
   * About to sleep: arm the ring's event index and the queue's waiting flag, then look once
   * more. True when work arrived meanwhile (do not sleep).
   */
  prepareSleep(): boolean;
  /** Woken: lower the waiting flags. */
  woke(): void;
}

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
