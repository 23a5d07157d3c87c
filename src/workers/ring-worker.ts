/**
 * The body of every ring worker. The main thread sends one init message; from then on the
 * worker runs a synchronous loop (poll, spin briefly, arm the event indices, block on the
 * event channel) and hears from the main thread only through shared memory: the control
 * block's stop flag and kicks on its event-channel handle. It owns no resources: the main
 * thread shared or mapped the pages and bound the ports, and releases them after we stop.
 */
import { openPlatform } from "../platform/open.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { BackRx } from "./back-rx.ts";
import { BackTx, PeerBroken } from "./back-tx.ts";
import { Control, Counter, WorkerState } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { FrontRx } from "./front-rx.ts";
import { FrontTx } from "./front-tx.ts";
import { PeerNotifier, type RingRole, type RingWorkerInit } from "./role.ts";

/** Messages a ring worker posts to the main thread. */
export type RingWorkerMessage =
  | { type: "running" }
  | { type: "peer-error"; code: string; field: string; value: number | string; message: string; suppressed: number }
  | { type: "stopped"; failure: string | null };

/** Polls before sleeping: a wake-up costs 20–40 µs on these machines, a poll well under 1 µs. */
const SPIN_POLLS = 64;
/** Bound every sleep, so a lost wake-up can only ever cost this much. */
const MAX_SLEEP_MS = 1000;
/** Peer errors reported per second at most; the rest are counted, not posted. */
const ERROR_REPORTS_PER_SEC = 10;

declare const self: Worker;

self.onmessage = (e: MessageEvent<RingWorkerInit>) => {
  self.onmessage = null;
  const init = e.data;
  const ctl = new Control(init.control);
  let failure: string | null = null;
  try {
    run(init, ctl);
  } catch (err) {
    failure = err instanceof PeerBroken || err instanceof ProtocolError ? err.message : `worker ${init.role} crashed: ${String((err as Error)?.stack ?? err)}`;
    ctl.fail(failure);
  }
  ctl.setState(failure === null ? WorkerState.stopped : WorkerState.failed);
  self.postMessage({ type: "stopped", failure } satisfies RingWorkerMessage);
};

function run(init: RingWorkerInit, ctl: Control): void {
  const platform = openPlatform(init.platform);
  const evtchn = platform.openEventChannels(init.evtchn);
  const q = new FrameQueue(init.queue);
  const kick = new PeerNotifier(evtchn, init.port, ctl);
  const onError = rateLimitedReporter();
  const role = makeRole(init, q, ctl, kick, platform.gnttab, onError);

  ctl.setState(WorkerState.running);
  self.postMessage({ type: "running" } satisfies RingWorkerMessage);
  while (!ctl.stopRequested) {
    if (role.poll()) continue;
    let moved = false;
    for (let i = 0; i < SPIN_POLLS && !moved; i++) moved = role.poll();
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

function makeRole(
  init: RingWorkerInit,
  q: FrameQueue,
  ctl: Control,
  kick: PeerNotifier,
  gnttab: ReturnType<typeof openPlatform>["gnttab"],
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

/** Post peer errors to the main thread (which logs them), at most ERROR_REPORTS_PER_SEC. */
function rateLimitedReporter(): (e: ProtocolError) => void {
  let windowStart = 0;
  let sent = 0;
  let suppressed = 0;
  return (e) => {
    const now = performance.now();
    if (now - windowStart >= 1000) {
      windowStart = now;
      sent = 0;
    }
    if (sent >= ERROR_REPORTS_PER_SEC) {
      suppressed++;
      return;
    }
    sent++;
    self.postMessage({ type: "peer-error", code: e.code, field: e.field, value: e.value, message: e.message, suppressed } satisfies RingWorkerMessage);
    suppressed = 0;
  };
}
