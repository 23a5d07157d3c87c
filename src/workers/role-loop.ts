/**
 * How a ring worker spends its time: poll while there is work, spin a little when there is
 * none, then arm the ring's event index and the queue's waiting flag and block on the event
 * channel. The ring workers run it, and so does the two-worker ring benchmark (bench/), so the
 * figures it reports come from this very loop.
 */
import type { EventChannels, GrantTable } from "../platform/types.ts";
import type { ProtocolError } from "../protocol/errors.ts";
import { BackRx } from "./back-rx.ts";
import { BackTx } from "./back-tx.ts";
import { Counter, type Control } from "./control.ts";
import type { FrameQueue } from "./frame-queue.ts";
import { FrontRx } from "./front-rx.ts";
import { FrontTx } from "./front-tx.ts";
import type { PeerNotifier, RingRole, RingWorkerInit } from "./role.ts";

/** Polls before sleeping: a wake-up costs 20–40 µs on these machines, a poll well under 1 µs. */
export const SPIN_POLLS = 64;
/** Bound every sleep, so a lost wake-up can only ever cost this much. */
export const MAX_SLEEP_MS = 1000;

/**
 * Run `role` until the control block asks us to stop. With nothing to do it polls SPIN_POLLS
 * times, and on for `spinMicros` µs when that is set: a peer on another CPU usually answers
 * within tens of µs, and blocking then costs a wake-up on each side (2–25 µs each here). Worth
 * it when each ring thread has a CPU to itself; on a machine with fewer CPUs than busy threads
 * the spinning takes the CPU the peer needs.
 */
export function runRole(role: RingRole, ctl: Control, evtchn: EventChannels, spinMicros = 0): void {
  while (!ctl.stopRequested) {
    if (role.poll()) continue;
    let moved = false;
    for (let i = 0; i < SPIN_POLLS && !moved; i++) moved = role.poll();
    if (!moved && spinMicros > 0) {
      const until = performance.now() + spinMicros / 1000;
      // performance.now() costs about a poll; look at the clock every 16th.
      for (let i = 1; !moved; i++) {
        moved = role.poll();
        if ((i & 15) === 0 && performance.now() > until) break;
      }
    }
    if (moved) continue;
    if (role.prepareSleep()) {
      role.woke();
      continue;
    }
    if (ctl.stopRequested) break;
    ctl.add(Counter.sleeps, 1);
    // Events carry no news: whatever woke us, the next poll re-reads the rings.
    for (const port of evtchn.wait(MAX_SLEEP_MS)) evtchn.unmask(port);
    role.woke();
  }
}

/** The role `init` names, on this thread. */
export function makeRole(
  init: RingWorkerInit,
  q: FrameQueue,
  ctl: Control,
  kick: PeerNotifier,
  gnttab: GrantTable,
  onError: (e: ProtocolError) => void,
): RingRole {
  switch (init.role) {
    case "front-tx":
      return new FrontTx(init, q, ctl, kick, onError);
    case "front-rx":
      return new FrontRx(init, q, ctl, kick, onError);
    case "back-tx":
      return new BackTx(init, q, ctl, kick, gnttab, onError);
    case "back-rx":
      return new BackRx(init, q, ctl, kick, gnttab, onError);
  }
}
