/**
 * The firewall's devices, wired to its bridge: every guest vif of this domain, served by the
 * package's VifServer (a Netback each, as vifs come and go), and one upstream Netfront (this
 * domain's own vif, its uplink). Each device's frames go through `Bridge.input`; a vif that
 * goes away takes its port and MAC entries with it, and the others go on.
 *
 *   await using fw = await Firewall.start({ platform, rules: [{ action: "drop", proto: "tcp", dport: 22 }] });
 *
 * Closing (`close()`, or the end of an `await using` scope) stops serving, disconnects every
 * device and leaves nothing behind.
 */
import type { Logger } from "pino";
import { Netback, NetError, Netfront, type NetfrontOptions, type Platform, type ServeAllOptions, type VifServer, type VifEvent } from "bun-xen-net";
import { Bridge, zeroCounters, type Port, type PortCounters } from "./bridge.ts";
import { compileRules, type Action, type RuleSet } from "./rules.ts";

export interface FirewallOptions {
  /** The rules: `{ default, rules }`, a bare array of rules, or a compiled RuleSet (see rules.ts). */
  rules: unknown;
  /** What a frame no rule matches gets; overrides the rule set's `default` (default allow). */
  defaultAction?: Action;
  /** This domain's view of the hypervisor (default: what the package picks, real Xen or simulated). */
  platform?: Platform;
  /** The uplink: this domain's vif `devid` (default 0) and any Netfront option; false for none. */
  uplink?: false | Omit<NetfrontOptions, "platform">;
  /**
   * Options for every guest vif's Netback (timeouts, queues, ...). `queueBytes` defaults to
   * FORWARD_QUEUE_BYTES here, for the uplink too.
   */
  serve?: Omit<ServeAllOptions, "platform" | "logger">;
  /** Drop frames a guest sends from a MAC other than its vif's (xenstore `mac`). Default false. */
  antiSpoof?: boolean;
  /** MAC ageing (ms, default 300 000). */
  ageMs?: number;
  logger?: Logger;
}

export interface PortStats extends PortCounters {
  name: string;
  uplink: boolean;
  /** MACs learned on this port now. */
  macs: number;
}

export interface FirewallStats {
  ports: PortStats[];
  /** Counters of ports that have gone (the last 64), so no frame goes uncounted. */
  gone: PortStats[];
  rules: { name: string; action: Action; hits: number }[];
  default: { action: Action; hits: number };
  macs: number;
}

const GONE_KEPT = 64;
/**
 * Each device's send queue. The package's default (64 KiB, about 44 full-size frames) suits an
 * endpoint that waits for writable(); a bridge forwards with tryWrite and drops when a queue is
 * full, so it wants room for a burst from every other port (Linux's txqueuelen is 1000 frames).
 * The queue's memory is committed only as it is used.
 */
const FORWARD_QUEUE_BYTES = 1 << 20;

export class Firewall implements AsyncDisposable {
  /** Live ports by name: "uplink", and "vif<domid>.<devid>" for each guest vif. */
  readonly ports = new Map<string, Port>();
  private readonly unlisten = new Map<Port, () => void>();
  private readonly gone: PortStats[] = [];
  private readonly stack = new AsyncDisposableStack();
  private eventLoop: Promise<void> = Promise.resolve();
  private closing: Promise<void> | null = null;
  private malformedSince = 0;
  private malformedLoggedAt = 0;

  private constructor(
    readonly bridge: Bridge,
    private readonly rules: RuleSet,
    private readonly log: Logger | undefined,
    private readonly antiSpoof: boolean,
  ) {}

  /** Check the rules, serve this domain's vifs and connect the uplink. */
  static async start(opts: FirewallOptions): Promise<Firewall> {
    if (typeof opts !== "object" || opts === null) throw new NetError("BAD_ARGUMENT", "Firewall.start takes an options object");
    const rules = isRuleSet(opts.rules) ? opts.rules : compileRules(opts.rules, opts.defaultAction);
    if (opts.ageMs !== undefined && !(Number.isFinite(opts.ageMs) && opts.ageMs > 0)) throw new NetError("BAD_ARGUMENT", `ageMs must be a positive number, got ${opts.ageMs}`);
    const log = opts.logger;
    let fw: Firewall | null = null;
    const bridge = new Bridge(rules, { ageMs: opts.ageMs ?? 300_000, onMalformed: (port, why) => fw?.malformed(port, why) });
    fw = new Firewall(bridge, rules, log, opts.antiSpoof ?? false);
    const platform = opts.platform;
    // Everything set up so far is undone if a later step fails.
    await using setup = new AsyncDisposableStack();
    const server = setup.use(await Netback.serveAll({ queueBytes: FORWARD_QUEUE_BYTES, ...opts.serve, ...(platform && { platform }), ...(log && { logger: log }) }));
    if (opts.uplink !== false) {
      const up = setup.use(await Netfront.connect({ queueBytes: opts.serve?.queueBytes ?? FORWARD_QUEUE_BYTES, ...opts.uplink, ...(platform && { platform }), ...(log && { logger: log }) }));
      fw.attach("uplink", up, true);
    }
    fw.eventLoop = fw.follow(server);
    // Disposed in reverse: the uplink goes, then the server (and every guest vif with it).
    fw.stack.use(setup.move());
    return fw;
  }

  /** Counters of every port, rule hits, and the MAC table's size. */
  stats(): FirewallStats {
    const table = this.bridge.macTable();
    const perPort = new Map<string, number>();
    for (const name of table.values()) perPort.set(name, (perPort.get(name) ?? 0) + 1);
    return {
      ports: [...this.ports.values()].map((p) => portStats(p, perPort.get(p.name) ?? 0)),
      gone: [...this.gone],
      rules: this.rules.rules.map((r, i) => ({ name: r.name, action: r.drop ? "drop" : "allow", hits: this.bridge.ruleHits[i]! })),
      default: { action: this.rules.defaultDrop ? "drop" : "allow", hits: this.bridge.defaultHits },
      macs: table.size,
    };
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Stop serving, disconnect every device (each within its timeoutMs). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const off of this.unlisten.values()) off();
      this.unlisten.clear();
      await this.stack.disposeAsync();
      await this.eventLoop;
      for (const p of this.ports.values()) this.bridge.removePort(p);
      this.ports.clear();
    })();
    return this.closing;
  }

  /** Guest vifs as the VifServer tells of them, until it closes. */
  private async follow(server: VifServer): Promise<void> {
    for await (const e of server) this.onVifEvent(e);
  }

  private onVifEvent(e: VifEvent): void {
    const name = `vif${e.frontendDomid}.${e.devid}`;
    if (e.type === "added") {
      if (this.closing !== null) return;
      this.detach(name); // a stale port of the same vif (not expected: removed comes first)
      this.attach(name, e.netback, false, this.antiSpoof ? e.netback.peerMac : undefined);
      this.log?.info({ port: name }, "guest vif up");
    } else if (e.type === "removed") {
      this.detach(name);
      this.log?.info({ port: name, reason: e.reason }, "guest vif gone");
    } else {
      this.log?.warn({ port: name, err: e.error }, "serving a guest vif failed (tried again)");
    }
  }

  private attach(name: string, dev: Netback | Netfront, uplink: boolean, pinnedMac?: Uint8Array): void {
    const port = this.bridge.addPort(name, dev, { uplink, ...(pinnedMac && { pinnedMac }) });
    this.ports.set(name, port);
    this.unlisten.set(port, dev.listen((frame, info) => this.bridge.input(port, frame, info)));
  }

  private detach(name: string): void {
    const port = this.ports.get(name);
    if (port === undefined) return;
    this.unlisten.get(port)?.();
    this.unlisten.delete(port);
    this.ports.delete(name);
    this.bridge.removePort(port);
    this.gone.push(portStats(port, 0));
    if (this.gone.length > GONE_KEPT) this.gone.shift();
  }

  /** Malformed frames are logged at most once a second, with how many since. */
  private malformed(port: Port, why: string): void {
    this.malformedSince++;
    const now = Date.now();
    if (this.log === undefined || now - this.malformedLoggedAt < 1000) return;
    this.log.warn({ port: port.name, reason: why, count: this.malformedSince }, "malformed frames dropped");
    this.malformedLoggedAt = now;
    this.malformedSince = 0;
  }
}

function portStats(p: Port, macs: number): PortStats {
  return { name: p.name, uplink: p.uplink, ...p.counters, macs };
}

function isRuleSet(v: unknown): v is RuleSet {
  return typeof v === "object" && v !== null && "defaultDrop" in v && Array.isArray((v as RuleSet).rules);
}

/** The counters as a table, one line per port (and the rules' hits), for printing. */
export function formatStats(s: FirewallStats): string {
  const cols = Object.keys(zeroCounters()) as (keyof PortCounters)[];
  const rows = [...s.ports, ...s.gone.map((p) => ({ ...p, name: `${p.name} (gone)` }))];
  const nameW = Math.max(6, ...rows.map((r) => r.name.length));
  const head = ["port".padEnd(nameW), ...cols.map((c) => c.padStart(Math.max(6, c.length))), "macs".padStart(5)].join(" ");
  const lines = [head];
  for (const r of rows) lines.push([r.name.padEnd(nameW), ...cols.map((c) => String(r[c]).padStart(Math.max(6, c.length))), String(r.macs).padStart(5)].join(" "));
  lines.push("rules (first match wins):");
  for (const r of s.rules) lines.push(`  ${r.action.padEnd(5)} ${r.name}: ${r.hits}`);
  lines.push(`  ${s.default.action.padEnd(5)} (default): ${s.default.hits}`);
  return lines.join("\n");
}
