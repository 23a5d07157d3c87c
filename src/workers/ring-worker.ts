/**
 * The body of every ring worker. The main thread sends one init message; from then on the
 * worker runs a synchronous loop (poll, spin briefly, arm the event indices, block on the
 * event channel) and hears from the main thread only through shared memory: the control
 * block's stop flag and kicks on its event-channel handle. It owns no resources: the main
 * thread shared or mapped the pages and bound the ports, and releases them after we stop.
 */
import { openPlatform } from "../platform/open.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { PeerBroken } from "./back-tx.ts";
import { Control, Counter, WorkerState } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { PeerNotifier, type RingWorkerInit } from "./role.ts";
import { makeRole, runRole } from "./role-loop.ts";

/** Messages a ring worker posts to the main thread. */
export type RingWorkerMessage =
  | { type: "running" }
  | { type: "peer-error"; code: string; field: string; value: number | string; message: string; suppressed: number }
  | { type: "stopped"; failure: string | null };

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
    const broken = err instanceof PeerBroken || err instanceof ProtocolError;
    // A fatal peer error is a peer error too: counted, as the ones that only drop a packet.
    if (broken) ctl.add(Counter.errors, 1);
    failure = broken ? err.message : `worker ${init.role} crashed: ${String((err as Error)?.stack ?? err)}`;
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
  runRole(role, ctl, evtchn, init.spinMicros);
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
