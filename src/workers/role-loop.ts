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
import { Counter, StopMode, type Control } from "./control.ts";
import type { FrameQueue } from "./frame-queue.ts";
import { FrontRx } from "./front-rx.ts";
import { FrontTx } from "./front-tx.ts";
import type { PeerNotifier, RingRole, RingWorkerInit } from "./role.ts";

/** Polls before sleeping: a wake-up costs 20–40 µs on these machines, a poll well under 1 µs. */
export const SPIN_POLLS = 64;
/** Bound every sleep, so a lost wake-up can only ever cost this much. */
export const MAX_SLEEP_MS = 1000;

/**
 * Run `role` until the control block asks us to stop: at once (StopMode.now), or once the
 * role has taken in what the peer left on the ring (StopMode.drain); then `finish` accounts
 * for what the peer will never answer. With nothing to do it polls SPIN_POLLS
 * times, and on for `spinMicros` µs when that is set: a peer on another CPU usually answers
 * within tens of µs, and blocking then costs a wake-up on each side (2–25 µs each here). Worth
 * it when each ring thread has a CPU to itself; on a machine with fewer CPUs than busy threads
 * the spinning takes the CPU the peer needs.
 */
export function runRole(role: RingRole, ctl: Control, evtchn: EventChannels, spinMicros = 0): void {
  // A fatal peer error ends the loop with a throw: the role still accounts for its work.
  try {
    for (;;) {
      const mode = ctl.stopMode;
      if (mode === StopMode.now) break;
      const draining = mode === StopMode.drain;
      if (step(role, draining)) continue;
      let moved = false;
      for (let i = 0; i < SPIN_POLLS && !moved; i++) moved = step(role, draining);
      if (!moved && spinMicros > 0 && !draining) {
        const until = performance.now() + spinMicros / 1000;
        // performance.now() costs about a poll; look at the clock every 16th.
        for (let i = 1; !moved; i++) {
          moved = role.poll();
          if ((i & 15) === 0 && performance.now() > until) break;
        }
      }
      if (moved) continue;
      // Drained: nothing left on the ring, and no frame waiting for room in the queue.
      if (draining && !role.blocked) break;
      if (role.prepareSleep()) {
        role.woke();
        continue;
      }
      if (ctl.stopMode !== mode) continue;
      ctl.add(Counter.sleeps, 1);
      // Events carry no news: whatever woke us, the next poll re-reads the rings.
      for (const port of evtchn.wait(MAX_SLEEP_MS)) evtchn.unmask(port);
      role.woke();
    }
  } finally {
    role.finish();
  }
}

function step(role: RingRole, draining: boolean): boolean {
  return draining ? role.drain() : role.poll();
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
