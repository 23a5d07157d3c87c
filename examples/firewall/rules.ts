/**
 * The firewall's rule set: parsed and checked once from plain data (a JSON file or a TS array),
 * then matched against each frame's headers, first match wins, else the default action.
 *
 * A rule names what it matches; a field left out matches anything:
 *   { "action": "drop", "proto": "tcp", "dport": 22, "name": "no ssh" }
 *   { "action": "allow", "ethertype": "arp" }
 *   { "action": "drop", "ethertype": "ipv6", "proto": "udp", "sport": "1-1023", "from": "guest" }
 * Rules are compiled to numbers (-1 = any) so matching allocates nothing.
 */
import { NetError } from "bun-xen-net";
import { ETHERTYPE, IPPROTO, type FrameHeaders } from "./headers.ts";

export type Action = "allow" | "drop";
/** Which ports' incoming frames a rule looks at. */
export type From = "any" | "uplink" | "guest";

/** A rule as written (JSON or TS). */
export interface RuleSpec {
  action: Action;
  /** Shown in errors and counters; default `rules[i]`. */
  name?: string;
  /** A number (0x0800), a hex string ("0x86dd") or a name: ipv4, ipv6, arp. */
  ethertype?: number | string;
  /** tcp, udp, icmp (ICMP for IPv4, ICMPv6 for IPv6), or an IP protocol number 0..255. */
  proto?: number | string;
  /** A port, "lo-hi", or [lo, hi] (TCP/UDP only). */
  sport?: number | string | [number, number];
  dport?: number | string | [number, number];
  /** Only frames coming in from the uplink, or from a guest vif (default any). */
  from?: From;
}

export interface RuleSetSpec {
  /** What a frame no rule matches gets (default allow). */
  default?: Action;
  rules: RuleSpec[];
}

/** One compiled rule: every field a number, -1 meaning any. */
export interface Rule {
  readonly name: string;
  readonly drop: boolean;
  readonly from: From;
  readonly ethertype: number;
  /** For IPv4 the protocol, for IPv6 the last next header; "icmp" is 1 on IPv4 and 58 on IPv6. */
  readonly proto4: number;
  readonly proto6: number;
  readonly sportLo: number;
  readonly sportHi: number;
  readonly dportLo: number;
  readonly dportHi: number;
}

export interface RuleSet {
  readonly rules: readonly Rule[];
  readonly defaultDrop: boolean;
}

const RULE_KEYS = new Set(["action", "name", "ethertype", "proto", "sport", "dport", "from"]);
const ETHERTYPE_NAMES: Record<string, number> = { ipv4: ETHERTYPE.IPV4, ipv6: ETHERTYPE.IPV6, arp: ETHERTYPE.ARP };
const PROTO_NAMES: Record<string, [number, number]> = {
  tcp: [IPPROTO.TCP, IPPROTO.TCP],
  udp: [IPPROTO.UDP, IPPROTO.UDP],
  icmp: [IPPROTO.ICMP, IPPROTO.ICMPV6],
};

/**
 * Check and compile a rule set: `{ default, rules: [...] }`, or a bare array of rules (then
 * `defaultAction` applies). Anything wrong is a NetError BAD_ARGUMENT naming the rule and field.
 */
export function compileRules(spec: unknown, defaultAction?: Action): RuleSet {
  let list: unknown;
  let def: unknown = defaultAction ?? "allow";
  if (Array.isArray(spec)) list = spec;
  else if (isObject(spec)) {
    for (const k of Object.keys(spec)) if (k !== "default" && k !== "rules") bad(`rule set: unknown key ${JSON.stringify(k)} (expected "default" and "rules")`);
    list = spec.rules;
    if (spec.default !== undefined) def = spec.default;
    if (defaultAction !== undefined) def = defaultAction; // the caller (--default) has the last word
  } else bad(`rule set: expected an array of rules or { default, rules }, got ${describe(spec)}`);
  if (!Array.isArray(list)) bad(`rule set: "rules" must be an array, got ${describe(list)}`);
  if (def !== "allow" && def !== "drop") bad(`rule set: "default" must be "allow" or "drop", got ${describe(def)}`);
  const rules = (list as unknown[]).map((r, i) => compileRule(r, i));
  return { rules, defaultDrop: def === "drop" };
}

function compileRule(r: unknown, i: number): Rule {
  const where0 = `rules[${i}]`;
  if (!isObject(r)) bad(`${where0}: expected an object, got ${describe(r)}`);
  const name = r.name === undefined ? where0 : r.name;
  if (typeof name !== "string" || name === "") bad(`${where0}: "name" must be a non-empty string, got ${describe(r.name)}`);
  const where = name === where0 ? where0 : `${where0} (${JSON.stringify(name)})`;
  for (const k of Object.keys(r)) if (!RULE_KEYS.has(k)) bad(`${where}: unknown key ${JSON.stringify(k)} (known: ${[...RULE_KEYS].join(", ")})`);
  if (r.action !== "allow" && r.action !== "drop") bad(`${where}: "action" must be "allow" or "drop", got ${describe(r.action)}`);
  const from = r.from ?? "any";
  if (from !== "any" && from !== "uplink" && from !== "guest") bad(`${where}: "from" must be "any", "uplink" or "guest", got ${describe(r.from)}`);

  const ethertype = r.ethertype === undefined ? -1 : parseEthertype(r.ethertype, where);
  let proto4 = -1;
  let proto6 = -1;
  if (r.proto !== undefined) {
    [proto4, proto6] = parseProto(r.proto, where);
    if (ethertype !== -1 && ethertype !== ETHERTYPE.IPV4 && ethertype !== ETHERTYPE.IPV6) {
      bad(`${where}: "proto" needs an IP ethertype (ipv4 or ipv6), got ethertype 0x${hex4(ethertype)}`);
    }
  }
  const [sportLo, sportHi] = r.sport === undefined ? [-1, -1] : parsePorts(r.sport, `${where}: "sport"`);
  const [dportLo, dportHi] = r.dport === undefined ? [-1, -1] : parsePorts(r.dport, `${where}: "dport"`);
  if ((sportLo !== -1 || dportLo !== -1) && !isPortProto(proto4) && !isPortProto(proto6)) {
    bad(`${where}: "sport"/"dport" need "proto": "tcp" or "udp" (ports are TCP/UDP only)`);
  }
  return { name, drop: r.action === "drop", from, ethertype, proto4, proto6, sportLo, sportHi, dportLo, dportHi };
}

function isPortProto(p: number): boolean {
  return p === IPPROTO.TCP || p === IPPROTO.UDP;
}

function parseEthertype(v: unknown, where: string): number {
  let n: number = NaN;
  if (typeof v === "number") n = v;
  else if (typeof v === "string") {
    const named = ETHERTYPE_NAMES[v.toLowerCase()];
    if (named !== undefined) n = named;
    else if (/^0x[0-9a-f]{1,4}$/i.test(v)) n = Number.parseInt(v.slice(2), 16);
  }
  // Below 0x0600 the field is an 802.3 length, not a type: no rule can mean that.
  if (!Number.isInteger(n) || n < 0x0600 || n > 0xffff) {
    bad(`${where}: "ethertype" must be 0x0600..0xffff (a number, "0x86dd", or ipv4, ipv6, arp), got ${describe(v)}`);
  }
  return n;
}

function parseProto(v: unknown, where: string): [number, number] {
  if (typeof v === "string") {
    const named = PROTO_NAMES[v.toLowerCase()];
    if (named !== undefined) return named;
  } else if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 255) return [v, v];
  return bad(`${where}: "proto" must be tcp, udp, icmp or a protocol number 0..255, got ${describe(v)}`);
}

function parsePorts(v: unknown, where: string): [number, number] {
  let lo: unknown = v;
  let hi: unknown = v;
  if (Array.isArray(v) && v.length === 2) [lo, hi] = v;
  else if (typeof v === "string") {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(v.trim());
    if (m !== null) [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
  }
  if (!isPort(lo) || !isPort(hi) || lo > hi) bad(`${where} must be a port 0..65535, "lo-hi" or [lo, hi] with lo <= hi, got ${describe(v)}`);
  return [lo, hi];
}

function isPort(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xffff;
}

/**
 * The index of the rule that decides a frame: the first that matches, or -1 (the default
 * applies). `h` must be a well-formed frame's headers (parseHeaders returned null).
 */
export function firstMatch(set: RuleSet, h: FrameHeaders, fromUplink: boolean): number {
  const rules = set.rules;
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (r.from !== "any" && (r.from === "uplink") !== fromUplink) continue;
    if (r.ethertype !== -1 && r.ethertype !== h.ethertype) continue;
    if (r.proto4 !== -1) {
      // A protocol rule matches only IP frames (-2 never equals a parsed protocol).
      const want = h.ethertype === ETHERTYPE.IPV4 ? r.proto4 : h.ethertype === ETHERTYPE.IPV6 ? r.proto6 : -2;
      if (want !== h.proto) continue;
    }
    // Ports: a later fragment has none (-1), so it matches no port rule.
    if (r.sportLo !== -1 && !(h.sport >= r.sportLo && h.sport <= r.sportHi)) continue;
    if (r.dportLo !== -1 && !(h.dport >= r.dportLo && h.dport <= r.dportHi)) continue;
    return i;
  }
  return -1;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, "0");
}

function bad(msg: string): never {
  throw new NetError("BAD_ARGUMENT", msg);
}
