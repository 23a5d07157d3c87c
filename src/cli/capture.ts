/**
 * `bun-xen-net capture`: a pcap file of real traffic through the driver. A vif has one owner
 * at a time, so this command cannot attach to a vif another process drives: it brings up its
 * own pair (as bench does), has the front end send UDP datagrams that the back end echoes,
 * and captures on the front end with the same API applications use (device.capture()).
 */
import type { Capture, CaptureDirection } from "../main/index.ts";
import { cliLogger, hostKind, selfPair } from "./host.ts";
import { echoFrame, isRequest, MIN_TRAFFIC_SIZE, requestFrame } from "./traffic.ts";
import { intOption, parse, secondsOption, UsageError } from "./usage.ts";

export const CAPTURE_HELP = `usage: bun-xen-net capture --out FILE [--count N] [--duration S] [--direction tx|rx|both]
                           [--size B] [--snaplen N] [--json]

Writes a pcap file (tcpdump -r FILE, Wireshark) of the frames a Netfront sends and receives.
A vif is driven by one process at a time, so this command does not attach to a vif another
program uses: it brings up its own pair in this process (without Xen, on the simulated
hypervisor; on Xen, a vif of this domain to itself, removed afterwards) in which the front
end sends IPv4/UDP datagrams 10.0.0.1 -> 10.0.0.2 port 7 and the back end echoes each, and
captures on the front end: tx are the datagrams, rx the echoes. To capture an application's
own vif, call device.capture(path, {direction, count, signal}) in that application.

  --out FILE         the pcap file to write (required)
  --count N          stop after N frames captured (default 20 unless --duration is given)
  --duration S       stop after S seconds
  --direction D      tx, rx or both (default both)
  --size B           bytes per frame, 60..1514 (default 98)
  --snaplen N        bytes kept of each frame (default 65535)
  --json             print the capture's counts as JSON
  -h, --help         this text`;

/** An echo that has not come back by then never will. */
const ECHO_TIMEOUT_MS = 5000;

export async function captureCommand(argv: string[]): Promise<number> {
  const o = parse("capture", argv, {
    out: { type: "string", short: "o" },
    count: { type: "string", short: "c" },
    duration: { type: "string" },
    direction: { type: "string" },
    size: { type: "string" },
    snaplen: { type: "string" },
    json: { type: "boolean" },
  });
  if (o.help) {
    console.log(CAPTURE_HELP);
    return 0;
  }
  const out = o.out as string | undefined;
  if (out === undefined || out === "") throw new UsageError("capture: --out FILE is required");
  const seconds = o.duration === undefined ? null : secondsOption("capture", "duration", o.duration as string, 0);
  const count = intOption("capture", "count", o.count as string | undefined, seconds === null ? 20 : 0, 1, 1e9);
  const direction = (o.direction ?? "both") as CaptureDirection;
  if (!["tx", "rx", "both"].includes(direction)) throw new UsageError(`capture: --direction must be tx, rx or both, got ${JSON.stringify(o.direction)}`);
  const size = intOption("capture", "size", o.size as string | undefined, 98, MIN_TRAFFIC_SIZE, 1514);
  const snaplen = intOption("capture", "snaplen", o.snaplen as string | undefined, 65535, 1, 262144);

  const pair = await selfPair(hostKind(), cliLogger());
  let cap: Capture | null = null;
  try {
    const { front, back } = pair;
    back.listen((f) => {
      if (isRequest(f)) void back.write(echoFrame(f)).catch(() => {});
    });
    let echoed: ((id: number) => void) | null = null;
    front.listen((f) => echoed?.((f[18]! << 8) | f[19]!));

    cap = await front.capture(out, {
      direction,
      snaplen,
      ...(count > 0 ? { count } : {}),
      ...(seconds !== null ? { signal: AbortSignal.timeout(seconds * 1000) } : {}),
    });
    // Ping-pong: one datagram, wait for its echo, the next; until the capture has what it wanted.
    for (let seq = 0; cap.running; seq++) {
      const echo = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no echo of datagram ${seq} within ${ECHO_TIMEOUT_MS / 1000} s`)), ECHO_TIMEOUT_MS);
        echoed = (id) => {
          if (id !== (seq & 0xffff)) return;
          clearTimeout(timer);
          resolve();
        };
      });
      await front.write(requestFrame(seq, size, front.mac));
      await echo;
    }
    const s = await cap.done;
    if (o.json) console.log(JSON.stringify({ file: out, where: pair.where, direction, ...s }, null, 2));
    else console.log(`${s.frames} frames (${s.tx} sent, ${s.rx} received${s.dropped > 0 ? `, ${s.dropped} not captured: the file was too slow` : ""}) written to ${out}; ${pair.where}`);
  } finally {
    await cap?.stop().catch(() => {});
    await pair.close();
  }
  return 0;
}
