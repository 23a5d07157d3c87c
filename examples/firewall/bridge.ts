/**
 * A learning bridge with a filter in front: each frame that comes in on a port is checked
 * (malformed: dropped), matched against the rules (drop: dropped), its source MAC learned for
 * that port, then sent to the port its destination MAC was learned on, or flooded to every
 * other port when the destination is broadcast, multicast or not known yet. Never back out of
 * the port it came in on. Counters per port say what happened to every frame.
 *
 * The frame path allocates nothing: MACs are keyed as numbers (48 bits fit a double exactly),
 * table entries are reused when a MAC is seen again, and the headers go into one reused object.
 * Frames are forwarded with tryWrite (it copies): a port whose send queue is full drops the
 * frame and counts it, as a switch with a full egress queue does, so one slow guest never
 * stalls the others.
 */
import type { FrameInfo, WriteOptions } from "bun-xen-net";
import { FrameHeaders, parseHeaders } from "./headers.ts";
import { firstMatch, type RuleSet } from "./rules.ts";

/** What a port sends through: a Netfront or a Netback (or anything with tryWrite). */
export interface PortDevice {
  tryWrite(frame: Uint8Array, opts?: WriteOptions): boolean;
}

export interface PortCounters {
  /** Frames received on this port. */
  in: number;
  /** Frames sent out of this port (unicast to it, or flooded). */
  out: number;
  /** Frames from this port sent on to the one port their destination was learned on. */
  forwarded: number;
  /** Frames from this port sent to every other port (broadcast, multicast, unknown destination). */
  flooded: number;
  /** Frames from this port a rule dropped. */
  droppedRule: number;
  /** Frames from this port too short or malformed to be looked at. */
  droppedMalformed: number;
  /** Frames from this port whose destination is on this same port (not sent back). */
  filtered: number;
  /** Frames from this port whose source MAC was not the vif's (anti-spoofing on). */
  droppedSpoofed: number;
  /** Frames for this port dropped because its send queue was full. */
  droppedFull: number;
  /** Frames for this port dropped because it was closing or gone. */
  droppedDown: number;
}

export function zeroCounters(): PortCounters {
  return { in: 0, out: 0, forwarded: 0, flooded: 0, droppedRule: 0, droppedMalformed: 0, filtered: 0, droppedSpoofed: 0, droppedFull: 0, droppedDown: 0 };
}

export class Port {
  readonly counters: PortCounters = zeroCounters();
  /** Set once removed: frames for it are counted as down. */
  removed = false;
  constructor(
    readonly name: string,
    readonly device: PortDevice,
    readonly uplink: boolean,
    /** The only source MAC this port may send from (a number key), or -1 for any. */
    readonly pinnedMac: number,
  ) {}
}

interface MacEntry {
  port: Port;
  seen: number;
}

export interface BridgeOptions {
  /** A learned MAC is forgotten after this long without a frame from it (ms, default 300 000 as Linux). */
  ageMs?: number;
  /** Called for each malformed frame with its reason (rate-limit it yourself). */
  onMalformed?: (port: Port, reason: string) => void;
  /** The clock (ms); tests pass their own. */
  now?: () => number;
}

export class Bridge {
  private ports: Port[] = [];
  private readonly table = new Map<number, MacEntry>();
  private readonly headers = new FrameHeaders();
  /** Hits per rule (same index as the rule set's), and of the default action. */
  readonly ruleHits: number[];
  defaultHits = 0;
  private readonly ageMs: number;
  private readonly now: () => number;

  constructor(
    private readonly rules: RuleSet,
    private readonly opts: BridgeOptions = {},
  ) {
    this.ruleHits = rules.rules.map(() => 0);
    this.ageMs = opts.ageMs ?? 300_000;
    this.now = opts.now ?? Date.now;
  }

  get portList(): readonly Port[] {
    return this.ports;
  }

  addPort(name: string, device: PortDevice, o: { uplink?: boolean; pinnedMac?: Uint8Array } = {}): Port {
    if (this.ports.some((p) => p.name === name)) throw new Error(`bridge: a port named ${name} exists already`);
    const port = new Port(name, device, o.uplink ?? false, o.pinnedMac === undefined ? -1 : macKey(o.pinnedMac, 0));
    this.ports = [...this.ports, port];
    return port;
  }

  /** The port goes, and every MAC learned on it (frames for them are flooded until relearned). */
  removePort(port: Port): void {
    port.removed = true;
    this.ports = this.ports.filter((p) => p !== port);
    for (const [k, e] of this.table) if (e.port === port) this.table.delete(k);
  }

  /** The port `mac` was learned on (and not aged out), if any. */
  lookup(mac: Uint8Array): Port | undefined {
    const e = this.table.get(macKey(mac, 0));
    return e !== undefined && this.now() - e.seen <= this.ageMs ? e.port : undefined;
  }

  /** The MAC table: "aa:bb:cc:dd:ee:ff" → port name. */
  macTable(): Map<string, string> {
    const t = this.now();
    const m = new Map<string, string>();
    for (const [k, e] of this.table) if (t - e.seen <= this.ageMs) m.set(keyToMac(k), e.port.name);
    return m;
  }

  /** One frame in from `port` (a view valid during the call: everything it needs is done now). */
  input(port: Port, frame: Uint8Array, info: FrameInfo): void {
    const c = port.counters;
    c.in++;
    const why = parseHeaders(frame, this.headers);
    if (why !== null) {
      c.droppedMalformed++;
      this.opts.onMalformed?.(port, why);
      return;
    }
    const src = macKey(frame, 6);
    if (port.pinnedMac !== -1 && src !== port.pinnedMac) {
      c.droppedSpoofed++;
      return;
    }
    const rule = firstMatch(this.rules, this.headers, port.uplink);
    const drop = rule === -1 ? this.rules.defaultDrop : this.rules.rules[rule]!.drop;
    if (rule === -1) this.defaultHits++;
    else this.ruleHits[rule]!++;
    if (drop) {
      c.droppedRule++;
      return;
    }
    const now = this.now();
    // Learn the source: a unicast, non-zero MAC (a multicast source is bogus, never learned).
    if ((frame[6]! & 1) === 0 && src !== 0) {
      const e = this.table.get(src);
      if (e === undefined) this.table.set(src, { port, seen: now });
      else {
        e.port = port; // a station that moved is found on its new port
        e.seen = now;
      }
    }
    if ((frame[0]! & 1) === 0) {
      const e = this.table.get(macKey(frame, 0));
      if (e !== undefined && now - e.seen <= this.ageMs) {
        if (e.port === port) c.filtered++;
        else {
          c.forwarded++;
          send(e.port, frame, info);
        }
        return;
      }
    }
    c.flooded++;
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) if (ports[i] !== port) send(ports[i]!, frame, info);
  }
}

function send(p: Port, frame: Uint8Array, info: FrameInfo): void {
  if (p.removed) {
    p.counters.droppedDown++;
    return;
  }
  try {
    // The frame's info goes on as its write options: the checksum flags, and info.gso (a GSO
    // frame from one peer is sent whole to a port whose peer offered GSO, in segments to others).
    if (p.device.tryWrite(frame, info)) p.counters.out++;
    else p.counters.droppedFull++;
  } catch {
    // The device closed under us (its vif is going): the removal follows.
    p.counters.droppedDown++;
  }
}

/** A MAC at `off` as a number: 48 bits, exact in a double. */
export function macKey(b: Uint8Array, off: number): number {
  return ((b[off]! << 8) | b[off + 1]!) * 0x1_0000_0000 + (((b[off + 2]! << 24) | (b[off + 3]! << 16) | (b[off + 4]! << 8) | b[off + 5]!) >>> 0);
}

function keyToMac(k: number): string {
  return k.toString(16).padStart(12, "0").replace(/(..)(?!$)/g, "$1:");
}
