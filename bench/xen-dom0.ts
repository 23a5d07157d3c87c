/**
 * Throughput over real Xen, ours against Linux's drivers, run inside dom0 by the rig
 * (`bun run bench:xen` = `test/xen/run.sh test/xen/bench-dom0.sh`). Xen and dom0 run under QEMU's
 * software emulation, so the absolute figures mean little; only the ratios between rows measured
 * in the same boot do.
 *
 * Every row is one end sending to the other over a vif of dom0 to itself, and counts the frames
 * ARRIVING at the other end in 5 fixed windows after a ramp:
 *   - Linux xen-netfront ↔ Linux xen-netback: the reference for every ratio;
 *   - Linux xen-netfront ↔ our Netback (back ends, same peer);
 *   - our Netfront ↔ Linux xen-netback (front ends, same peer);
 *   - our Netfront ↔ our Netback (for interest, in no ratio).
 * A Linux end sends kernel UDP out of its netdev (a Bun udpSocket blaster, the same program in
 * every row that uses it) and counts arrivals on its netdev's rx_packets; one of ours sends in a
 * tryWrite/writable loop (as src/cli/flow.ts does) and counts arrivals in its listener. The
 * netfront's netdev sits in a network namespace, so the kernel cannot short-cut the rings.
 * Each row sets up and tears down everything it uses, so one row cannot disturb the next. The
 * rows in the ratios run in ROUNDS rounds per size, each ours row beside its Linux reference;
 * each ratio is the median of its rounds' ratios.
 *
 * Arguments (from `test/xen/run.sh test/xen/bench-dom0.sh ARG...`): frame sizes (default 1514 64),
 * `rounds=N`, and/or row ids (e.g. LL-up OL-down) to run only those.
 */
import { readFileSync } from "node:fs";
import pino from "pino";
import { Netback, Netfront, createVif, formatMac, parseMac, type NetDevice } from "../src/main/index.ts";
import { destroyVif } from "../src/main/xenbus/toolstack.ts";
import { createXenPlatform } from "../src/platform/xen/platform.ts";
import { must, netdevOf, sh, unloadModule, until } from "../test/xen/dom0/shell.ts";

const WINDOWS = 5;
const WINDOW_MS = 1000;
/**
 * Rounds of the rows that make the ratios, per size. dom0 shares the host with whatever else
 * runs there, and the host's load moves within minutes; the order alternates between rounds and
 * each ratio is the median of its rounds' ratios, so a change of load does not land on one side.
 */
const ROUNDS = 3;
const RAMP_MS = 500;
/** How long we listen before a row sends anything: frames arriving then are not ours (noise). */
const QUIET_MS = 1000;
/** /proc/stat counts in USER_HZ, which is 100 on every Linux x86 kernel. */
const USER_HZ = 100;
const IP = "/usr/sbin/ip"; // iproute2: busybox's ip applet has no netns
const NS = "bx";
const logger = pino({ level: "warn" });

// Addresses inside dom0 (which has no NIC: nothing leaves the emulated machine). The front end's
// netdev is FRONT_IP, the back end's BACK_IP. Frames go to addresses nobody owns, through static
// neighbour entries, so the receiving kernel drops them without answering (no ICMP, no ARP):
//   up (front → back): to TO_BACK_IP, whose MAC is OTHER_MAC: the vif netdev drops it as not for its MAC;
//   down (back → front): to TO_FRONT_IP at the front end's MAC: not a local address and forwarding
//   is off, so the netns drops it silently.
const FRONT_IP = "10.99.7.2";
const BACK_IP = "10.99.7.1";
const TO_BACK_IP = "10.99.7.9";
const TO_FRONT_IP = "10.99.7.8";
const OTHER_MAC = "00:16:3e:00:09:99";

type Dir = "up" | "down";

/** A running sender; stop() ends it and waits until it has. */
interface Sender {
  stop(): Promise<void>;
}

/**
 * Undo steps, registered as a row's setup acquires each thing, run newest first: a setup that
 * fails halfway still undoes what it did. run() tries every step and throws the first error.
 */
class Teardown {
  private readonly steps: { what: string; fn: () => Promise<void> | void }[] = [];
  add(what: string, fn: () => Promise<void> | void): void {
    this.steps.push({ what, fn });
  }
  async run(): Promise<void> {
    let first: Error | undefined;
    for (const s of this.steps.splice(0).reverse()) {
      try {
        await s.fn();
      } catch (e) {
        first ??= new Error(`teardown (${s.what}): ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (first) throw first;
  }
}

/** What one row's setup gives the measurement (its teardown is in the row's Teardown). */
interface Ends {
  arrived(): number;
  /** The sending end's own count of frames sent (a netdev's tx_packets, or our stats()). */
  sent(): number;
  /** Arriving frames our listener saw that are not the row's UDP frames (only where we receive). */
  foreign(): number;
  startSender(): Promise<Sender>;
  /** What to print beside the row's figures, read after it ran (queues, worker sleeps). */
  describe: () => string;
}

interface Result {
  /** frames/s arriving in each window, ascending. */
  rates: number[];
  median: number;
  min: number;
  max: number;
  sentRate: number;
  cpuUsPerFrame: number;
  /** Of that, this process's (our drivers' threads, when the row is ours; the counting alone otherwise). */
  ownCpuUsPerFrame: number;
  frames: number;
  noise: number;
  foreign: number;
}

interface Row {
  id: string;
  what: string;
  setup(size: number, td: Teardown): Promise<Ends>;
}

// ---------------------------------------------------------------------------------------------
// Counters

/** A netdev's counters from /proc/<pid>/net/dev: it lists the netdevs of that process's netns. */
function netdevCounter(pid: number | "self", dev: string, which: "rx" | "tx"): () => number {
  const file = `/proc/${pid}/net/dev`;
  return () => {
    const line = readFileSync(file, "utf8")
      .split("\n")
      .find((l) => l.trimStart().startsWith(`${dev}:`));
    if (line === undefined) throw new Error(`${dev} not in ${file}`);
    const f = line.slice(line.indexOf(":") + 1).trim().split(/\s+/);
    // Fields: rx bytes, packets, errs, drop, fifo, frame, compressed, multicast; then tx bytes, packets, ...
    return Number(f[which === "rx" ? 1 : 9]);
  };
}

/** dom0's busy time so far, in USER_HZ ticks over all CPUs (steal is time Xen gave others: left out). */
function busyTicks(): number {
  const [user, nice, system, , , irq, softirq] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return user! + nice! + system! + irq! + softirq!;
}

// ---------------------------------------------------------------------------------------------
// Frames and senders

/** An Ethernet + IPv4 + UDP frame of `size` bytes, as the kernel would build it (DF set, UDP to port 9, checksum 0 = none). */
function udpFrame(size: number, dst: string, src: Uint8Array, srcIp: string, dstIp: string): Uint8Array {
  const f = new Uint8Array(size);
  const v = new DataView(f.buffer);
  // Ethernet: destination, source, type IPv4.
  f.set(parseMac(dst) as Uint8Array, 0);
  f.set(src, 6);
  v.setUint16(12, 0x0800);
  // IPv4 at 14: version 4 and 5 words of header, total length, DF, TTL 64, protocol UDP, addresses.
  f[14] = 0x45;
  v.setUint16(16, size - 14);
  v.setUint16(20, 0x4000);
  f[22] = 64;
  f[23] = 17;
  f.set(srcIp.split(".").map(Number), 26);
  f.set(dstIp.split(".").map(Number), 30);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(24, ~sum & 0xffff);
  // UDP at 34: source port, destination port 9 (discard), length; the payload stays zero.
  v.setUint16(34, 40000);
  v.setUint16(36, 9);
  v.setUint16(38, size - 34);
  return f;
}

/** A listener that counts arrivals, and how many of them are not UDP frames of the row's size to port 9. */
function counting(dev: NetDevice, size: number): { arrived(): number; foreign(): number } {
  let n = 0;
  let other = 0;
  dev.listen((f) => {
    n++;
    if (f.length !== size || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 17 || f[36] !== 0 || f[37] !== 9) other++;
  });
  return { arrived: () => n, foreign: () => other };
}

/** Our sender: tryWrite until the queue is full, then wait until it is writable, as src/cli/flow.ts does. */
function pump(dev: NetDevice, frame: Uint8Array): Sender {
  const ac = new AbortController();
  const done = (async () => {
    let since = 0;
    while (!ac.signal.aborted) {
      if (dev.tryWrite(frame)) {
        // A queue that never fills would starve the event loop (timers, our own listener): yield now and then.
        if (++since === 1024) {
          since = 0;
          await new Promise((r) => setImmediate(r));
        }
      } else {
        since = 0;
        await dev.writable(frame.length, { signal: ac.signal }).catch(() => {});
      }
    }
  })();
  return {
    async stop() {
      ac.abort();
      await done;
    },
  };
}

/**
 * The kernel's sender: a Bun process blasting UDP datagrams of `payload` bytes at `dstIp`, in
 * netns `ns` or dom0's own. sendMany (sendmmsg) to keep syscalls per frame low; when the socket's
 * buffer is full it waits for drain (and polls every 10 ms, should drain not come).
 */
async function blaster(ns: string | null, dstIp: string, payload: number): Promise<Sender> {
  const code = `
    const batch = Array(64).fill(new Uint8Array(${payload}));
    let waiting = false;
    const pump = () => { waiting = false; try { while (s.sendMany(batch) === batch.length); } catch {} waiting = true; };
    const s = await Bun.udpSocket({ connect: { hostname: "${dstIp}", port: 9 }, socket: { drain: pump } });
    setInterval(() => { if (waiting) pump(); }, 10);
    pump();`;
  const argv = [...(ns === null ? [] : [IP, "netns", "exec", ns]), process.execPath, "-e", code];
  const p = Bun.spawn(argv, { stdout: "ignore", stderr: "inherit" });
  return {
    async stop() {
      p.kill("SIGKILL");
      await p.exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Setting up and tearing down the ends

/** Quiet netdevs: no IPv6 (router solicitations, MLD, DAD would arrive with our frames). New netdevs take `default`. */
async function noIpv6(ns: string | null): Promise<void> {
  const pre = ns === null ? "" : `${IP} netns exec ${ns} `;
  await must(`${pre}sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'`);
}

/**
 * Unload Linux's netfront: xenbus holds a reference on the module while a vif is bound to it,
 * so rmmod alone fails (EAGAIN); unbinding runs netfront's remove (it closes the front end
 * against its back end) and drops the reference.
 */
async function unloadNetfront(): Promise<void> {
  await sh("for d in /sys/bus/xen/drivers/vif/vif-*; do [ -e \"$d\" ] && echo ${d##*/} > /sys/bus/xen/drivers/vif/unbind; done");
  await unloadModule("xen-netfront");
}

/** Before each row: nothing of an earlier row left (netns, modules, vifs). Says what it had to clean. */
async function cleanSlate(): Promise<void> {
  const left: string[] = [];
  if ((await sh(`${IP} netns list | grep -qw ${NS}`)).code === 0) {
    left.push(`netns ${NS}`);
    await sh(`for p in $(${IP} netns pids ${NS}); do kill -9 $p; done; ${IP} netns del ${NS}`);
  }
  for (const m of ["xen-netfront", "xen-netback"]) {
    if ((await sh(`[ -d /sys/module/${m.replace(/-/g, "_")} ]`)).code === 0) left.push(m);
    await (m === "xen-netfront" ? unloadNetfront() : unloadModule(m));
  }
  // With both drivers gone nobody serves a vif: remove what is left in xenstore, so the next
  // row's drivers find only their own.
  for (const kind of ["device/vif", "backend/vif/0"]) {
    const ids = (await sh(`xenstore-list /local/domain/0/${kind}`)).out.split(/\s+/).filter((d) => /^\d+$/.test(d));
    for (const d of ids) {
      left.push(`${kind}/${d}`);
      await must(`xenstore-rm /local/domain/0/${kind}/${d}`);
    }
  }
  if (left.length > 0) console.log(`  (cleaned up what an earlier row left: ${left.join(", ")})`);
}

/**
 * Linux netfront's netdev (found by the vif's MAC) moved into netns NS, with FRONT_IP and a
 * static neighbour for TO_BACK_IP; a sleeping process keeps a pid in the netns whose
 * /proc/<pid>/net/dev shows its counters without spawning anything per read.
 */
async function linuxFrontInNetns(mac: string, td: Teardown): Promise<{ rx: () => number; tx: () => number }> {
  const dev = await netdevOf(mac, 30_000, "Linux netfront's netdev");
  await must(`${IP} netns add ${NS}`);
  // Deleted after the processes in it are gone; a netdev still in it goes back to dom0's netns until its module is unloaded.
  td.add("netns", () => must(`${IP} netns del ${NS}`).then(() => {}));
  await noIpv6(NS);
  await must(`${IP} link set ${dev} netns ${NS}`);
  const ns = `${IP} -n ${NS}`;
  await must(`${ns} link set ${dev} mtu 1500 && ${ns} addr add ${FRONT_IP}/24 dev ${dev} && ${ns} neigh replace ${TO_BACK_IP} lladdr ${OTHER_MAC} nud permanent dev ${dev} && ${ns} link set ${dev} up`);
  const keeper = Bun.spawn([IP, "netns", "exec", NS, "sleep", "100000"], { stdout: "ignore", stderr: "inherit" });
  td.add("netns keeper", async () => {
    keeper.kill("SIGKILL");
    await keeper.exited;
  });
  // `ip netns exec` execs the command in place, so the keeper's pid is the sleeping process's.
  await until(() => { try { return readFileSync(`/proc/${keeper.pid}/net/dev`, "utf8").includes(`${dev}:`); } catch { return false; } }, 10_000, `${dev} in netns ${NS}`);
  return { rx: netdevCounter(keeper.pid, dev, "rx"), tx: netdevCounter(keeper.pid, dev, "tx") };
}

/** Linux netback's vif netdev in dom0's netns: BACK_IP and a static neighbour for TO_FRONT_IP at the front end's MAC. */
async function linuxBackNetdev(devid: number, frontMac: string): Promise<{ rx: () => number; tx: () => number }> {
  const vif = `vif0.${devid}`;
  await until(async () => (await sh(`[ -d /sys/class/net/${vif} ]`)).code === 0, 20_000, vif);
  await must(`${IP} link set ${vif} mtu 1500 && ${IP} addr add ${BACK_IP}/24 dev ${vif} && ${IP} neigh replace ${TO_FRONT_IP} lladdr ${frontMac} nud permanent dev ${vif} && ${IP} link set ${vif} up`);
  return { rx: netdevCounter("self", vif, "rx"), tx: netdevCounter("self", vif, "tx") };
}

/** A kernel module loaded for this row, unloaded at its end (unloadModule waits until it is gone). */
async function load(module: string, td: Teardown): Promise<void> {
  await must(`modprobe ${module}`);
  td.add(module, () => (module === "xen-netfront" ? unloadNetfront() : unloadModule(module)));
}

/** `xl network-attach` a self-loop vif (Linux netback serves it); its devid, found by MAC; detached at the row's end. */
async function attachLinuxVif(mac: string, td: Teardown): Promise<number> {
  await must(`xl network-attach 0 mac=${mac} script=/etc/xen/scripts/vif-selfloop`);
  const ids = (await must("xenstore-list /local/domain/0/device/vif")).split(/\s+/).filter(Boolean);
  for (const d of ids) {
    if ((await sh(`xenstore-read /local/domain/0/device/vif/${d}/mac`)).out.trim() === mac) {
      td.add("xl network-detach", () => must(`xl network-detach 0 ${d}`).then(() => {}));
      return Number(d);
    }
  }
  throw new Error(`no vif with MAC ${mac} after xl network-attach`);
}

/** A vif written the toolstack's way, for one of our back ends; removed at the row's end. */
async function ourVif(devid: number, mac: string, td: Teardown): Promise<Awaited<ReturnType<typeof createXenPlatform>>> {
  const platform = await xenPlatform(td);
  await createVif(platform.xenstore, { frontDomid: 0, backDomid: 0, devid, mac });
  td.add("destroyVif", () => destroyVif(platform.xenstore, 0, 0, devid));
  return platform;
}

async function xenPlatform(td: Teardown): Promise<Awaited<ReturnType<typeof createXenPlatform>>> {
  const p = await createXenPlatform({ domid: 0 });
  td.add("platform", () => p.close());
  return p;
}

async function bothConnected(devid: number): Promise<void> {
  const state = async (p: string) => (await sh(`xenstore-read ${p}/state`)).out.trim();
  await until(async () => (await state(`/local/domain/0/device/vif/${devid}`)) === "4" && (await state(`/local/domain/0/backend/vif/0/${devid}`)) === "4", 30_000, `vif ${devid} Connected on both ends`);
}

/** Linux netfront ↔ Linux netback: both kernel netdevs, both senders the blaster. */
async function linuxLinux(dir: Dir, size: number, mac: string, td: Teardown): Promise<Ends> {
  // Undone in reverse: the front end goes first (its remove closes it against the live back
  // end), then the vif, then the back end.
  await load("xen-netback", td);
  const devid = await attachLinuxVif(mac, td);
  await load("xen-netfront", td);
  await bothConnected(devid);
  const front = await linuxFrontInNetns(mac, td);
  const back = await linuxBackNetdev(devid, mac);
  return {
    arrived: dir === "up" ? back.rx : front.rx,
    sent: dir === "up" ? front.tx : back.tx,
    foreign: () => 0,
    startSender: () => (dir === "up" ? blaster(NS, TO_BACK_IP, size - 42) : blaster(null, TO_FRONT_IP, size - 42)),
    describe: () => "",
  };
}

/** Linux netfront ↔ our Netback (the vif written the toolstack's way, as test/xen/dom0/linux-netfront.xen.ts does). */
async function linuxOurs(dir: Dir, size: number, mac: string, devid: number, td: Teardown): Promise<Ends> {
  const platform = await ourVif(devid, mac, td);
  const serving = Netback.serve({ platform, frontendDomid: 0, devid, logger, timeoutMs: 60_000 });
  serving.catch(() => {}); // awaited below; a failed modprobe must not leave it unhandled
  await load("xen-netfront", td);
  const back = await serving;
  // Runs before the module's own step (registered after it): unbinding the kernel's netfront
  // closes the front end, our back end follows, then we disconnect it.
  td.add("our Netback", async () => {
    await unloadNetfront();
    await until(() => !back.connected, 15_000, "our Netback to see the front end go");
    await back.disconnect();
  });
  const got = counting(back, size);
  const front = await linuxFrontInNetns(mac, td);
  const frame = udpFrame(size, mac, back.mac, BACK_IP, TO_FRONT_IP);
  return {
    arrived: dir === "up" ? got.arrived : front.rx,
    sent: dir === "up" ? front.tx : () => back.stats().txPackets,
    foreign: dir === "up" ? got.foreign : () => 0,
    startSender: async () => (dir === "up" ? blaster(NS, TO_BACK_IP, size - 42) : pump(back, frame)),
    describe: () => `our Netback: ${back.queues} queue(s), ${sleepsPer1k(back)}`,
  };
}

/** Our Netfront ↔ Linux netback (`xl network-attach`, as test/xen/dom0/linux-netback.xen.ts does). */
async function oursLinux(dir: Dir, size: number, mac: string, td: Teardown): Promise<Ends> {
  await load("xen-netback", td);
  const devid = await attachLinuxVif(mac, td);
  const platform = await xenPlatform(td);
  const front = await Netfront.connect({ platform, devid, logger, timeoutMs: 60_000, ...frontOpts });
  td.add("our Netfront", () => front.disconnect());
  const got = counting(front, size);
  const back = await linuxBackNetdev(devid, mac);
  const frame = udpFrame(size, OTHER_MAC, front.mac, FRONT_IP, TO_BACK_IP);
  return {
    arrived: dir === "up" ? back.rx : got.arrived,
    sent: dir === "up" ? () => front.stats().txPackets : back.tx,
    foreign: dir === "up" ? () => 0 : got.foreign,
    startSender: async () => (dir === "up" ? pump(front, frame) : blaster(null, TO_FRONT_IP, size - 42)),
    describe: () => `our Netfront: ${front.queues} queue(s), ${sleepsPer1k(front)}`,
  };
}

/** Our Netfront ↔ our Netback: no kernel netdev at all; each end counts in its listener. */
async function oursOurs(dir: Dir, size: number, mac: string, devid: number, td: Teardown): Promise<Ends> {
  const pb = await ourVif(devid, mac, td);
  const pf = await xenPlatform(td);
  const [back, front] = await Promise.all([
    Netback.serve({ platform: pb, frontendDomid: 0, devid, logger, timeoutMs: 60_000 }),
    Netfront.connect({ platform: pf, devid, logger, timeoutMs: 60_000 }),
  ]);
  td.add("our Netback", () => back.disconnect());
  td.add("our Netfront", () => front.disconnect());
  const [from, to] = dir === "up" ? [front, back] : [back, front];
  const got = counting(to, size);
  const frame = dir === "up" ? udpFrame(size, OTHER_MAC, front.mac, FRONT_IP, TO_BACK_IP) : udpFrame(size, mac, back.mac, BACK_IP, TO_FRONT_IP);
  return {
    arrived: got.arrived,
    sent: () => from.stats().txPackets,
    foreign: got.foreign,
    startSender: async () => pump(from, frame),
    describe: () => `queues: front ${front.queues}, back ${back.queues}`,
  };
}

/**
 * How often our device's ring workers ran out of work and slept, per thousand frames it moved:
 * near 1000, a wake-up (an event, a syscall or two, a doorbell) per frame; near 0, batches.
 */
function sleepsPer1k(dev: Netfront | Netback): string {
  const s = dev.stats();
  const frames = s.rxPackets + s.txPackets;
  return frames === 0 ? "no frames" : `${(((s.rxSleeps + s.txSleeps) * 1000) / frames).toFixed(0)} worker sleeps per 1k frames`;
}

/** `pages=N` on the command line: our Netfront's dataPages (default: the driver's). */
let frontOpts: { dataPages?: number } = {};

// ---------------------------------------------------------------------------------------------
// Measuring

async function measure(ends: Ends): Promise<Result> {
  // Before sending: whatever arrives now is not ours, and would be counted with ours.
  const q0 = ends.arrived();
  await Bun.sleep(QUIET_MS);
  const noise = ends.arrived() - q0;
  const foreign0 = ends.foreign();
  const sender = await ends.startSender();
  try {
    // A Bun process takes seconds to start under emulation: the ramp starts with the first frame.
    const base = ends.arrived();
    await until(() => ends.arrived() > base, 60_000, "the first frames to arrive");
    await Bun.sleep(RAMP_MS);
    const rates: number[] = [];
    const cpu0 = busyTicks();
    const own0 = process.cpuUsage();
    const a0 = ends.arrived();
    const s0 = ends.sent();
    const t0 = performance.now();
    let [a, t] = [a0, t0];
    for (let i = 0; i < WINDOWS; i++) {
      await Bun.sleep(WINDOW_MS);
      const [a2, t2] = [ends.arrived(), performance.now()];
      rates.push(((a2 - a) * 1000) / (t2 - t));
      [a, t] = [a2, t2];
    }
    const cpu = busyTicks() - cpu0;
    const own = process.cpuUsage(own0);
    const frames = a - a0;
    rates.sort((x, y) => x - y);
    return {
      rates,
      median: rates[Math.floor(WINDOWS / 2)]!,
      min: rates[0]!,
      max: rates[WINDOWS - 1]!,
      sentRate: ((ends.sent() - s0) * 1000) / (performance.now() - t0),
      cpuUsPerFrame: frames > 0 ? ((cpu / USER_HZ) * 1e6) / frames : NaN,
      ownCpuUsPerFrame: frames > 0 ? (own.user + own.system) / frames : NaN,
      frames,
      noise,
      foreign: ends.foreign() - foreign0,
    };
  } finally {
    await sender.stop();
  }
}

const ROWS: Row[] = [
  { id: "LL-up", what: "Linux netfront → Linux netback", setup: (s, td) => linuxLinux("up", s, mac(1), td) },
  { id: "LO-up", what: "Linux netfront → our Netback", setup: (s, td) => linuxOurs("up", s, mac(3), 30, td) },
  { id: "OL-up", what: "our Netfront → Linux netback", setup: (s, td) => oursLinux("up", s, mac(5), td) },
  { id: "LL-down", what: "Linux netback → Linux netfront", setup: (s, td) => linuxLinux("down", s, mac(2), td) },
  { id: "LO-down", what: "our Netback → Linux netfront", setup: (s, td) => linuxOurs("down", s, mac(4), 31, td) },
  { id: "OL-down", what: "Linux netback → our Netfront", setup: (s, td) => oursLinux("down", s, mac(6), td) },
];
/** In no ratio: run once per size, after the first round. */
const EXTRA_ROWS: Row[] = [
  { id: "OO-up", what: "our Netfront → our Netback", setup: (s, td) => oursOurs("up", s, mac(7), 32, td) },
  { id: "OO-down", what: "our Netback → our Netfront", setup: (s, td) => oursOurs("down", s, mac(8), 33, td) },
];

/**
 * The four ratios ours / Linux, each over the same peer. Linux netfront ↔ Linux netback is the
 * reference of both pairs (the same configuration), measured once per round.
 */
const RATIOS = [
  { pair: "back ends (peer: Linux netfront)", dir: "front → back", ours: "LO-up", linux: "LL-up", sender: "same blaster in the netns" },
  { pair: "back ends (peer: Linux netfront)", dir: "back → front", ours: "LO-down", linux: "LL-down", sender: "ours: tryWrite loop; Linux: blaster out of the vif" },
  { pair: "front ends (peer: Linux netback)", dir: "front → back", ours: "OL-up", linux: "LL-up", sender: "ours: tryWrite loop; Linux: blaster in the netns" },
  { pair: "front ends (peer: Linux netback)", dir: "back → front", ours: "OL-down", linux: "LL-down", sender: "same blaster out of the vif" },
];

/** A fresh MAC per row, round and size, so no row can find an earlier row's netdev. */
let macBase = 0;
function mac(row: number): string {
  return formatMac(new Uint8Array([0x00, 0x16, 0x3e, 0x07, macBase, row]));
}

const n0 = (x: number) => Math.round(x).toLocaleString("en-US");

/**
 * One row: a clean slate, its setup, the measurement, its teardown (even when setup or the
 * measurement failed). Prints the row; the result, or null when anything failed (a figure
 * measured before a failed teardown is printed, but not used).
 */
async function runRow(row: Row, size: number): Promise<Result | null> {
  const td = new Teardown();
  let result: Result | null = null;
  let failure: unknown;
  try {
    await cleanSlate();
    const ends = await row.setup(size, td);
    result = await measure(ends);
    printRow(row, size, result, ends.describe());
  } catch (e) {
    failure = e;
  }
  try {
    await td.run();
  } catch (e) {
    failure ??= e;
  }
  if (failure === undefined) return result;
  console.log(`${row.id.padEnd(8)} ${row.what.padEnd(32)} ${String(size).padStart(4)} B FAILED: ${failure instanceof Error ? failure.message : String(failure)}`);
  return null;
}

function printRow(row: Row, size: number, r: Result, describe: string): void {
  const extra = [r.noise > 0 ? `${r.noise} frames arrived before sending` : "", r.foreign > 0 ? `${r.foreign} arriving frames not ours` : "", describe].filter(Boolean).join("; ");
  console.log(
    `${row.id.padEnd(8)} ${row.what.padEnd(32)} ${String(size).padStart(4)} B ${n0(r.median).padStart(7)} frames/s (${n0(r.min)}–${n0(r.max)})  sent ${n0(r.sentRate).padStart(7)}/s  ${r.cpuUsPerFrame.toFixed(0).padStart(5)} µs CPU/frame (${r.ownCpuUsPerFrame.toFixed(0)} in this process)  ${n0(r.frames)} frames${extra ? `  [${extra}]` : ""}`,
  );
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

/** Per row, over its rounds: the median of all its windows, min–max, and CPU per frame over all of them. */
function printRowTable(size: number, rows: Row[], results: Map<string, Result[]>): void {
  console.log(`\nRows, ${size}-byte frames, over all rounds: frames/s arriving, median of every window (min–max); each round's median; dom0 CPU per arriving frame (sender included)`);
  console.log("| row | path | frames/s | per round | µs CPU/frame |");
  console.log("|---|---|---|---|---|");
  for (const row of rows) {
    const rs = results.get(row.id) ?? [];
    if (rs.length === 0) {
      console.log(`| ${row.id} | ${row.what} | failed | – | – |`);
      continue;
    }
    const all = rs.flatMap((r) => r.rates);
    const frames = rs.reduce((n, r) => n + r.frames, 0);
    const cpu = rs.reduce((n, r) => n + r.cpuUsPerFrame * r.frames, 0) / frames;
    console.log(`| ${row.id} | ${row.what} | ${n0(median(all))} (${n0(Math.min(...all))}–${n0(Math.max(...all))}) | ${rs.map((r) => n0(r.median)).join(" / ")} | ${cpu.toFixed(0)} |`);
  }
}

/** The four ratios: each round's ours / Linux, and their median against the goal. */
function printSummary(size: number, results: Map<string, (Result | null)[]>): void {
  console.log(`\nSummary, ${size}-byte frames: ours / Linux, same peer, same boot (median of the rounds' ratios; goal: ≥ 1.0×)`);
  console.log("| pair | direction | ours, frames/s | Linux, frames/s | ours / Linux | per round | goal | senders |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (const q of RATIOS) {
    const [o, l] = [results.get(q.ours) ?? [], results.get(q.linux) ?? []];
    const perRound = o.flatMap((r, i) => (r && l[i] ? [r.median / l[i]!.median] : []));
    const ok = (rs: (Result | null)[]) => rs.filter((r): r is Result => r !== null).flatMap((r) => r.rates);
    const [oa, la] = [ok(o), ok(l)];
    const ratio = perRound.length > 0 ? median(perRound) : NaN;
    // Rows left out on the command line have no entry at all; rows that ran and failed have nulls.
    const ran = results.has(q.ours) && results.has(q.linux);
    const verdict = Number.isNaN(ratio) ? (ran ? "no figure (rows failed)" : "not run") : ratio >= 1 ? "met" : "NOT MET";
    const fig = (xs: number[]) => (xs.length > 0 ? n0(median(xs)) : "–");
    console.log(`| ${q.pair} | ${q.dir} | ${fig(oa)} | ${fig(la)} | ${Number.isNaN(ratio) ? "–" : `${ratio.toFixed(2)}×`} | ${perRound.map((x) => x.toFixed(2)).join(" / ")} | ${verdict} | ${q.sender} |`);
  }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const sizes = args.filter((a) => /^\d+$/.test(a)).map(Number);
  const rounds = Number(args.find((a) => a.startsWith("rounds="))?.slice(7) ?? ROUNDS);
  const pages = args.find((a) => a.startsWith("pages="))?.slice(6);
  if (pages !== undefined) frontOpts = { dataPages: Number(pages) };
  const only = args.filter((a) => !/^\d+$/.test(a) && !a.startsWith("rounds=") && !a.startsWith("pages="));
  const pick = (rs: Row[]) => (only.length > 0 ? rs.filter((r) => only.includes(r.id)) : rs);
  const [rows, extra] = [pick(ROWS), pick(EXTRA_ROWS)];
  const cpus = readFileSync("/proc/cpuinfo", "utf8").split("\n").filter((l) => l.startsWith("processor")).length;
  console.log(`bench:xen — dom0 ${cpus} vCPUs, kernel ${(await sh("uname -r")).out.trim()}; ${rounds} rounds per size; per row: ${QUIET_MS} ms quiet, ${RAMP_MS} ms ramp from the first frame, ${WINDOWS} windows of ${WINDOW_MS} ms`);
  console.log("frames/s arriving: median of the windows (min–max); sent: the sender's own count; CPU: dom0 busy time over all CPUs per arriving frame, sender included");
  console.log("[brackets]: frames that arrived in the quiet second before sending, arriving frames not the row's UDP frames (seen where we receive), queues; none = none seen");
  // dom0's own netdevs start without IPv6 too (vif netdevs are created here).
  await noIpv6(null);
  let failed = 0;
  for (const size of sizes.length > 0 ? sizes : [1514, 64]) {
    console.log(`\n${size}-byte frames (UDP payload ${size - 42})`);
    // Per row, one entry per round (null: that round's row failed), so ratios pair rows of the same round.
    const results = new Map<string, (Result | null)[]>();
    const record = (row: Row, r: Result | null) => {
      if (r === null) failed++;
      results.set(row.id, [...(results.get(row.id) ?? []), r]);
    };
    for (let round = 0; round < rounds; round++) {
      macBase++;
      console.log(`round ${round + 1} of ${rounds}`);
      // Reversed every other round: a load that rises or falls over the round lands on each side in turn.
      for (const row of round % 2 === 0 ? rows : [...rows].reverse()) record(row, await runRow(row, size));
      if (round === 0) for (const row of extra) record(row, await runRow(row, size));
    }
    const done = new Map([...results].map(([k, v]) => [k, v.filter((r): r is Result => r !== null)]));
    printRowTable(size, [...rows, ...extra], done);
    printSummary(size, results);
  }
  await cleanSlate().catch((e) => console.log(`final clean-up: ${String(e)}`));
  console.log("\nUnder QEMU software emulation only the ratios mean anything, not the absolute figures.");
  if (failed > 0) console.log(`${failed} row(s) failed`);
  return failed > 0 ? 1 : 0;
}

process.exit(await main());
