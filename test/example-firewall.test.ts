/**
 * examples/firewall on the simulated hypervisor: a driver domain runs the firewall (a VifServer
 * for its guests' vifs, and its own uplink Netfront, whose back end the test plays with a
 * Netback in dom0). Frames between guests and to and from the uplink arrive byte-exact at the
 * right port only, broadcasts flood, rules drop what they say with counters to match,
 * malformed frames are counted and dropped, vifs come and go, and closing leaks nothing.
 */
import { describe, expect, test } from "bun:test";
import { Netback, Netfront, NetError, SimHypervisor, createVif, destroyVif } from "bun-xen-net";
import { Firewall } from "../examples/firewall/firewall.ts";
import { FrameHeaders, IPPROTO, parseHeaders } from "../examples/firewall/headers.ts";
import { BROADCAST, TCP_ACK, TCP_PSH, arpRequest, echoReply, ethernet, hopByHop, icmpEcho, inetChecksum, ipv4, ipv6, mac, tcp, udp } from "../examples/firewall/packets.ts";
import { compileRules } from "../examples/firewall/rules.ts";
import { silent } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";

const UPLINK_MAC = "00:16:3e:0f:00:01";
/** A host beyond the uplink (the test's Netback answers for it). */
const ROUTER_MAC = "02:00:00:00:00:fe";
const ROUTER_IP = [10, 0, 0, 254];
const guestMac = (i: number) => `00:16:3e:0a:00:${(i + 1).toString(16).padStart(2, "0")}`;
const guestIp = (i: number) => [10, 0, 0, i + 1];
const V6A = new Uint8Array(16).fill(0xaa);
const V6B = new Uint8Array(16).fill(0xbb);

/** Every frame a device receives, copied, in order. */
function collect(dev: Netfront | Netback): Uint8Array[] {
  const got: Uint8Array[] = [];
  dev.listen((f) => got.push(f.slice()));
  return got;
}

/**
 * A machine: dom0 (the upstream side: a Netback the test drives), the firewall's driver domain,
 * and `n` guests each with one vif served by the firewall.
 */
async function lab(n: number, rules: unknown, opts: { antiSpoof?: boolean } = {}) {
  const hv = SimHypervisor.create({ vifs: n + 4 });
  const dom0 = hv.platform(0);
  const fwDom = hv.createDomain();
  await createVif(dom0.xenstore, { frontDomid: fwDom, backDomid: 0, devid: 0, mac: UPLINK_MAC });
  const guestDoms: number[] = [];
  const addGuestVif = async (i: number) => {
    const g = hv.createDomain();
    guestDoms[i] = g;
    await createVif(dom0.xenstore, { frontDomid: g, backDomid: fwDom, devid: 0, mac: guestMac(i) });
    return g;
  };
  for (let i = 0; i < n; i++) await addGuestVif(i);
  const [upstream, fw] = await Promise.all([
    Netback.serve({ platform: dom0, frontendDomid: fwDom, devid: 0, logger: silent }),
    Firewall.start({ platform: hv.platform(fwDom), rules, logger: silent, ...opts }),
  ]);
  const connectGuest = (i: number) => Netfront.connect({ platform: hv.platform(guestDoms[i]!), logger: silent, timeoutMs: 5000 });
  const guests = await Promise.all(guestDoms.map((_, i) => connectGuest(i)));
  await until(() => fw.ports.size === n + 1);
  const port = (i: number) => fw.ports.get(`vif${guestDoms[i]}.0`)!;
  return {
    hv,
    dom0,
    fwDom,
    fw,
    upstream,
    guests,
    guestDoms,
    port,
    addGuestVif,
    connectGuest,
    /** Close everything (firewall first, as a driver domain shutting down would), then check for leaks. */
    async close(fronts: Netfront[] = guests) {
      await fw.close();
      await Promise.all([...fronts.map((g) => g.disconnect()), upstream.disconnect()]);
      hv.assertNoLeaks();
    },
  };
}

type Lab = Awaited<ReturnType<typeof lab>>;

/** Each guest announces itself (a broadcast ARP), so the firewall learns where it is. */
async function announce(l: Lab, sinks: Uint8Array[][]): Promise<void> {
  for (const [i, g] of l.guests.entries()) await g.write(arpRequest(guestMac(i), guestIp(i), ROUTER_IP));
  await l.upstream.write(arpRequest(ROUTER_MAC, ROUTER_IP, guestIp(0)));
  const n = l.guests.length + 1;
  // Every announcement reaches every other port: n - 1 each.
  await until(() => sinks.every((s) => s.length >= n - 1));
  for (const s of sinks) s.length = 0;
}

function tcpFrame(dst: string, src: string, sip: number[], dip: number[], sport: number, dport: number, seq: number, data: Uint8Array): Uint8Array {
  return ethernet(dst, src, 0x0800, ipv4(sip, dip, IPPROTO.TCP, tcp(sport, dport, seq, TCP_ACK | TCP_PSH, data)));
}

describe("firewall example: bridging", () => {
  test("unicast after learning goes to the right port only, byte-exact; broadcast floods to every other port; counters match", async () => {
    const l = await lab(3, { default: "allow", rules: [] });
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks);
    expect(l.fw.bridge.lookup(mac(guestMac(1)))?.name).toBe(`vif${l.guestDoms[1]}.0`);
    expect(l.fw.bridge.lookup(mac(ROUTER_MAC))?.name).toBe("uplink");
    const before = l.fw.stats();

    // Guest 0 -> guest 1, guest 2 -> the router beyond the uplink, the router -> guest 0.
    const a = tcpFrame(guestMac(1), guestMac(0), guestIp(0), guestIp(1), 40000, 80, 1, new TextEncoder().encode("to guest 1"));
    const b = tcpFrame(ROUTER_MAC, guestMac(2), guestIp(2), ROUTER_IP, 40001, 443, 7, new Uint8Array(1000).fill(0x5a));
    const c = tcpFrame(guestMac(0), ROUTER_MAC, ROUTER_IP, guestIp(0), 443, 40000, 9, new Uint8Array(1400).map((_, i) => i));
    await l.guests[0]!.write(a);
    await l.guests[2]!.write(b);
    await l.upstream.write(c);
    await until(() => sinks[1]!.length === 1 && sinks[3]!.length === 1 && sinks[0]!.length === 1);
    await Bun.sleep(50); // anything misdirected would be here by now
    expect(sinks[1]).toEqual([a]);
    expect(sinks[3]).toEqual([b]);
    expect(sinks[0]).toEqual([c]);
    expect(sinks[2]).toEqual([]);

    // A broadcast from guest 1: everyone but guest 1.
    const bc = ethernet(BROADCAST, guestMac(1), 0x0800, ipv4(guestIp(1), [10, 0, 0, 255], IPPROTO.UDP, udp(68, 67, new Uint8Array(300).fill(1))));
    await l.guests[1]!.write(bc);
    await until(() => sinks[0]!.length === 2 && sinks[2]!.length === 1 && sinks[3]!.length === 2);
    await Bun.sleep(50);
    expect(sinks[0]![1]).toEqual(bc);
    expect(sinks[2]![0]).toEqual(bc);
    expect(sinks[3]![1]).toEqual(bc);
    expect(sinks[1]!.length).toBe(1);

    const after = l.fw.stats();
    const delta = (name: string, k: "in" | "out" | "forwarded" | "flooded") =>
      after.ports.find((p) => p.name === name)![k] - before.ports.find((p) => p.name === name)![k];
    const p = (i: number) => l.port(i).name;
    expect([delta(p(0), "in"), delta(p(0), "forwarded"), delta(p(0), "out")]).toEqual([1, 1, 2]); // out: c, and the broadcast
    expect([delta(p(1), "in"), delta(p(1), "flooded"), delta(p(1), "out")]).toEqual([1, 1, 1]);
    expect([delta(p(2), "in"), delta(p(2), "forwarded"), delta(p(2), "out")]).toEqual([1, 1, 1]);
    expect([delta("uplink", "in"), delta("uplink", "forwarded"), delta("uplink", "out")]).toEqual([1, 1, 2]); // out: b, and the broadcast
    expect(after.macs).toBe(4);
    await l.close();
  }, 30_000);

  test("an unknown destination floods; a destination on the sender's own port is not sent back", async () => {
    const l = await lab(2, []);
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks);
    const unknown = tcpFrame("02:99:99:99:99:99", guestMac(0), guestIp(0), [10, 0, 0, 99], 1, 2, 0, new Uint8Array(10));
    await l.guests[0]!.write(unknown);
    await until(() => sinks[1]!.length === 1 && sinks[2]!.length === 1);
    expect(sinks[1]![0]).toEqual(unknown);
    expect(l.port(0).counters.flooded).toBe(2); // its ARP and this
    // Guest 0 sends to its own MAC: the destination is learned on the port it came in on.
    const self = tcpFrame(guestMac(0), guestMac(0), guestIp(0), guestIp(0), 1, 2, 0, new Uint8Array(10));
    await l.guests[0]!.write(self);
    await until(() => l.port(0).counters.filtered === 1);
    await Bun.sleep(30);
    expect(sinks.map((s) => s.length)).toEqual([0, 1, 1]);
    await l.close();
  }, 30_000);

  test("an IPv4 ping between two guests, and to a host beyond the uplink: each reply arrives byte-exact", async () => {
    const l = await lab(2, { default: "drop", rules: [{ action: "allow", ethertype: "arp" }, { action: "allow", proto: "icmp" }] });
    const [g0, g1] = l.guests as [Netfront, Netfront];
    // Guest 1 and the router answer echo requests, as a host's stack would.
    g1.listen((f) => {
      const r = echoReply(f, mac(guestMac(1)));
      if (r !== null) void g1.write(r);
    });
    l.upstream.listen((f) => {
      const r = echoReply(f, mac(ROUTER_MAC));
      if (r !== null) void l.upstream.write(r);
    });
    const at0 = collect(g0);
    await g1.write(arpRequest(guestMac(1), guestIp(1), guestIp(0)));
    await l.upstream.write(arpRequest(ROUTER_MAC, ROUTER_IP, guestIp(0)));
    await until(() => at0.length === 2);
    at0.length = 0;
    const sent: Uint8Array[] = [];
    for (let seq = 1; seq <= 5; seq++) {
      for (const [dstMac, dstIp] of [[guestMac(1), guestIp(1)], [ROUTER_MAC, ROUTER_IP]] as const) {
        const req = ethernet(dstMac, guestMac(0), 0x0800, ipv4(guestIp(0), dstIp, IPPROTO.ICMP, icmpEcho(8, 0x1234, seq, new Uint8Array(56).fill(seq)), seq));
        sent.push(req);
        await g0.write(req);
      }
    }
    await until(() => at0.length === 10);
    const want = sent.map((r, i) => echoReply(r, mac(i % 2 === 0 ? guestMac(1) : ROUTER_MAC))!);
    // Replies from the two may interleave; each is exactly the reply to one request.
    const key = (f: Uint8Array) => Buffer.from(f).toString("hex");
    expect(at0.map(key).sort()).toEqual(want.map(key).sort());
    for (const r of at0) expect(inetChecksum(r.subarray(14, 34))).toBe(0); // IPv4 header checksum holds
    expect(l.port(0).counters.droppedRule).toBe(0);
    expect(l.fw.stats().rules.map((r) => r.hits)).toEqual([2, 20]);
    await l.close();
  }, 30_000);

  test("a TCP-like stream of 3000 frames from a guest to the uplink arrives complete and in order", async () => {
    const l = await lab(1, []);
    const sinks = [collect(l.guests[0]!), collect(l.upstream)];
    await announce(l, sinks);
    const N = 3000;
    const frames: Uint8Array[] = [];
    let seq = 0;
    for (let i = 0; i < N; i++) {
      const data = new Uint8Array(64 + ((i * 37) % 1380)).map((_, j) => (i + j) & 0xff);
      frames.push(tcpFrame(ROUTER_MAC, guestMac(0), guestIp(0), ROUTER_IP, 50000, 5001, seq, data));
      seq += data.length;
    }
    const got = sinks[1]!;
    // A sender paced as TCP's window paces it: at most 128 frames (about 90 KiB) beyond what arrived.
    const lost = (e: unknown) => {
      throw new Error(`${got.length} of ${N} arrived; counters ${JSON.stringify(l.fw.stats().ports)}`, { cause: e });
    };
    for (let i = 0; i < N; i++) {
      if (i - got.length >= 128) await until(() => i - got.length < 64).catch(lost);
      await l.guests[0]!.write(frames[i]!);
    }
    await until(() => got.length === N, 20_000).catch(lost);
    for (let i = 0; i < N; i++) if (!Buffer.from(got[i]!).equals(Buffer.from(frames[i]!))) throw new Error(`frame ${i} differs`);
    const c = l.port(0).counters;
    expect([c.in, c.forwarded]).toEqual([N + 1, N]);
    expect(l.fw.ports.get("uplink")!.counters.out).toBe(N + 1);
    expect(l.fw.ports.get("uplink")!.counters.droppedFull).toBe(0);
    await l.close();
  }, 60_000);
});

describe("firewall example: rules", () => {
  const RULES = {
    default: "allow",
    rules: [
      { name: "no ssh", action: "drop", proto: "tcp", dport: 22 },
      { name: "arp", action: "allow", ethertype: "arp" },
      { name: "no ping", action: "drop", proto: "icmp" },
      { name: "no v6 udp 5000-5010", action: "drop", ethertype: "ipv6", proto: "udp", dport: "5000-5010" },
      { name: "no telnet from uplink", action: "drop", from: "uplink", proto: "tcp", dport: 23 },
      { name: "no ospf", action: "drop", ethertype: 0x0800, proto: 89 },
    ],
  };

  test("each rule drops what it says, first match wins, the rest goes through; counters and hits match", async () => {
    const l = await lab(2, RULES);
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks); // 3 ARP frames: rule "arp"
    const g0 = guestMac(0);
    const g1 = guestMac(1);
    const v6 = (nh: number, payload: Uint8Array) => ethernet(g1, g0, 0x86dd, ipv6(V6A, V6B, nh, payload));
    const cases: [string, Uint8Array, boolean][] = [
      ["tcp 22", tcpFrame(g1, g0, guestIp(0), guestIp(1), 40000, 22, 0, new Uint8Array(20)), false],
      ["tcp 80", tcpFrame(g1, g0, guestIp(0), guestIp(1), 40000, 80, 0, new Uint8Array(20)), true],
      ["icmp echo", ethernet(g1, g0, 0x0800, ipv4(guestIp(0), guestIp(1), IPPROTO.ICMP, icmpEcho(8, 1, 1, new Uint8Array(8)))), false],
      ["udp 5005 over v4", ethernet(g1, g0, 0x0800, ipv4(guestIp(0), guestIp(1), IPPROTO.UDP, udp(1, 5005, new Uint8Array(4)))), true],
      ["udp 5005 over v6", v6(IPPROTO.UDP, udp(1, 5005, new Uint8Array(4))), false],
      ["udp 53 over v6", v6(IPPROTO.UDP, udp(1, 53, new Uint8Array(4))), true],
      ["icmpv6 echo", v6(IPPROTO.ICMPV6, icmpEcho(128, 1, 1, new Uint8Array(8))), false],
      ["v6 tcp 22 behind a hop-by-hop header", v6(0, hopByHop(IPPROTO.TCP, tcp(1, 22, 0, TCP_ACK))), false],
      ["v6 tcp 2222 behind a hop-by-hop header", v6(0, hopByHop(IPPROTO.TCP, tcp(1, 2222, 0, TCP_ACK))), true],
      ["tcp 23 from a guest", tcpFrame(g1, g0, guestIp(0), guestIp(1), 40000, 23, 0, new Uint8Array(0)), true],
      ["ospf", ethernet(g1, g0, 0x0800, ipv4(guestIp(0), guestIp(1), 89, new Uint8Array(40))), false],
      ["an unknown ethertype", ethernet(g1, g0, 0x88b5, new Uint8Array(46)), true],
    ];
    for (const [, f] of cases) await l.guests[0]!.write(f);
    const pass = cases.filter((c) => c[2]).map((c) => c[1]);
    await until(() => sinks[1]!.length === pass.length);
    // The uplink's telnet is dropped, the same from a guest was not.
    await l.upstream.write(tcpFrame(g1, ROUTER_MAC, ROUTER_IP, guestIp(1), 40000, 23, 0, new Uint8Array(0)));
    await until(() => l.fw.ports.get("uplink")!.counters.droppedRule === 1);
    await Bun.sleep(50);
    expect(sinks[1]).toEqual(pass);
    expect(sinks[2]).toEqual([]); // all unicast to guest 1
    const c = l.port(0).counters;
    expect(c.droppedRule).toBe(cases.length - pass.length);
    expect(c.forwarded).toBe(pass.length);
    const s = l.fw.stats();
    expect(Object.fromEntries(s.rules.map((r) => [r.name, r.hits]))).toEqual({
      "no ssh": 2, // v4 and v6
      arp: 3,
      "no ping": 2, // ICMP and ICMPv6
      "no v6 udp 5000-5010": 1,
      "no telnet from uplink": 1,
      "no ospf": 1,
    });
    expect(s.default.hits).toBe(pass.length);
    // Every frame in is accounted for exactly once, on every port.
    for (const p of s.ports) expect(p.forwarded + p.flooded + p.filtered + p.droppedRule + p.droppedMalformed + p.droppedSpoofed).toBe(p.in);
    await l.close();
  }, 30_000);

  test("default drop: only what a rule allows goes through", async () => {
    const l = await lab(2, { default: "drop", rules: [{ action: "allow", ethertype: "arp" }, { action: "allow", proto: "tcp", dport: [8000, 8080] }] });
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks);
    const g0 = guestMac(0);
    const g1 = guestMac(1);
    const ok = tcpFrame(g1, g0, guestIp(0), guestIp(1), 1, 8080, 0, new Uint8Array(5));
    await l.guests[0]!.write(tcpFrame(g1, g0, guestIp(0), guestIp(1), 1, 8081, 0, new Uint8Array(5)));
    await l.guests[0]!.write(ethernet(g1, g0, 0x0800, ipv4(guestIp(0), guestIp(1), IPPROTO.UDP, udp(1, 8080, new Uint8Array(4)))));
    await l.guests[0]!.write(ok);
    await until(() => sinks[1]!.length === 1);
    await Bun.sleep(30);
    expect(sinks[1]).toEqual([ok]);
    expect(l.port(0).counters.droppedRule).toBe(2);
    await l.close();
  }, 30_000);

  test("bad rules are refused before anything is set up, naming the rule and the field", () => {
    const msg = (spec: unknown) => {
      try {
        compileRules(spec);
      } catch (e) {
        expect(e).toBeInstanceOf(NetError);
        expect((e as NetError).code).toBe("BAD_ARGUMENT");
        return (e as Error).message;
      }
      throw new Error("accepted");
    };
    expect(msg([{ action: "allow" }, { name: "web", action: "drop", proto: "tcp", dport: 70000 }])).toContain('rules[1] ("web"): "dport" must be a port');
    expect(msg([{ action: "deny" }])).toContain('rules[0]: "action" must be "allow" or "drop", got "deny"');
    expect(msg([{ action: "drop", dport: 22 }])).toContain('rules[0]: "sport"/"dport" need "proto": "tcp" or "udp"');
    expect(msg([{ action: "drop", proto: "icmp", dport: 22 }])).toContain("need \"proto\"");
    expect(msg([{ action: "drop", ethertype: "arp", proto: "tcp" }])).toContain('"proto" needs an IP ethertype');
    expect(msg([{ action: "drop", ethertype: "0x05dc" }])).toContain('"ethertype" must be 0x0600..0xffff');
    expect(msg([{ action: "drop", proto: "sctp" }])).toContain('"proto" must be tcp, udp, icmp or a protocol number');
    expect(msg([{ action: "drop", prot: "tcp" }])).toContain('rules[0]: unknown key "prot"');
    expect(msg([{ action: "drop", proto: "tcp", sport: "100-10" }])).toContain('"sport" must be a port');
    expect(msg([{ action: "drop", from: "outside" }])).toContain('"from" must be');
    expect(msg({ default: "reject", rules: [] })).toContain('"default" must be "allow" or "drop"');
    expect(msg({ rules: "none" })).toContain('"rules" must be an array');
    expect(msg("drop everything")).toContain("expected an array of rules");
    // And good ones compile to what they say.
    const rs = compileRules({ default: "drop", rules: [{ action: "allow", ethertype: "0x86DD", proto: 17, sport: "53", dport: [1024, 65535] }] });
    expect(rs.defaultDrop).toBe(true);
    expect(rs.rules[0]).toMatchObject({ ethertype: 0x86dd, proto4: 17, proto6: 17, sportLo: 53, sportHi: 53, dportLo: 1024, dportHi: 65535, drop: false });
  });

  test("Firewall.start with a bad rule rejects, and leaves nothing behind", async () => {
    const hv = SimHypervisor.create();
    const d = hv.createDomain();
    const e = await Firewall.start({ platform: hv.platform(d), rules: [{ action: "drop", proto: "tcp", dport: -1 }], logger: silent }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NetError);
    expect((e as Error).message).toContain('rules[0]: "dport"');
    hv.assertNoLeaks();
  });
});

describe("firewall example: malformed frames", () => {
  test("header parsing: what holds together and what does not", () => {
    const h = new FrameHeaders();
    const g = guestMac(0);
    expect(parseHeaders(new Uint8Array(13), h)).toBe("shorter than an Ethernet header");
    expect(parseHeaders(tcpFrame(g, g, [1, 1, 1, 1], [2, 2, 2, 2], 1234, 22, 0, new Uint8Array(0)), h)).toBeNull();
    expect([h.ethertype, h.proto, h.sport, h.dport]).toEqual([0x0800, 6, 1234, 22]);
    // A later fragment: the protocol is known, the ports are not.
    const frag = tcpFrame(g, g, [1, 1, 1, 1], [2, 2, 2, 2], 1234, 22, 0, new Uint8Array(0));
    frag[20] = 0x00;
    frag[21] = 0x10; // offset 16 * 8
    expect(parseHeaders(frag, h)).toBeNull();
    expect([h.proto, h.sport, h.dport]).toEqual([6, -1, -1]);
  });

  test("short and malformed frames are dropped and counted, never forwarded; the firewall goes on", async () => {
    const l = await lab(2, []);
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks);
    const g0 = guestMac(0);
    const g1 = guestMac(1);
    const good = tcpFrame(g1, g0, guestIp(0), guestIp(1), 1, 2, 0, new Uint8Array(30));
    const bad: [string, Uint8Array][] = [];
    const mutate = (why: string, f: (b: Uint8Array) => void, base = good) => {
      const b = base.slice();
      f(b);
      bad.push([why, b]);
    };
    bad.push(["IPv4 header truncated", good.slice(0, 14)]); // an Ethernet header with nothing after it
    bad.push(["IPv4 header truncated", good.slice(0, 30)]);
    mutate("IPv4 version is not 4", (b) => (b[14] = 0x65));
    mutate("IPv4 header length below 20", (b) => (b[14] = 0x44));
    mutate("IPv4 total length does not fit the frame", (b) => (b[16] = 0x10));
    mutate("TCP header truncated", (b) => ((b[16] = 0), (b[17] = 30)));
    mutate("TCP data offset out of range", (b) => (b[14 + 20 + 12] = 0xf0));
    bad.push(["UDP header truncated", ethernet(g1, g0, 0x0800, ipv4(guestIp(0), guestIp(1), IPPROTO.UDP, new Uint8Array(6)))]);
    bad.push(["ARP shorter than 28 bytes", arpRequest(g0, guestIp(0), guestIp(1)).slice(0, 14 + 27)]);
    bad.push(["IPv6 header truncated", ethernet(g1, g0, 0x86dd, new Uint8Array(39).fill(0x60))]);
    const v6 = ethernet(g1, g0, 0x86dd, ipv6(V6A, V6B, 0, hopByHop(IPPROTO.TCP, tcp(1, 22, 0, 0))));
    mutate("IPv6 payload length does not fit the frame", (b) => (b[14 + 4] = 0x40), v6);
    mutate("IPv6 extension header truncated", (b) => (b[14 + 40 + 1] = 9), v6);
    mutate("TCP header truncated", (b) => (b[14 + 5] = 8 + 10), v6);
    // Hop-by-hop headers chained past the walk's bound.
    let chain = tcp(1, 22, 0, 0);
    for (let i = 0; i < 9; i++) chain = hopByHop(i === 0 ? IPPROTO.TCP : 0, chain);
    bad.push(["too many IPv6 extension headers", ethernet(g1, g0, 0x86dd, ipv6(V6A, V6B, 0, chain))]);

    const h = new FrameHeaders();
    for (const [why, f] of bad) expect([why, parseHeaders(f, h)]).toEqual([why, why]);
    for (const [, f] of bad) await l.guests[0]!.write(f);
    await l.guests[0]!.write(good);
    await until(() => sinks[1]!.length === 1);
    await Bun.sleep(30);
    expect(sinks[1]).toEqual([good]);
    expect(sinks[0]!.length + sinks[2]!.length).toBe(0);
    const c = l.port(0).counters;
    expect([c.in, c.droppedMalformed, c.forwarded]).toEqual([1 + bad.length + 1, bad.length, 1]);
    // A malformed frame's source is not learned: the table still has the three it had.
    expect(l.fw.stats().macs).toBe(3);
    await l.close();
  }, 30_000);

  test("anti-spoofing: a guest sending from a MAC not its vif's is dropped and counted", async () => {
    const l = await lab(2, [], { antiSpoof: true });
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks);
    await l.guests[0]!.write(tcpFrame(guestMac(1), "00:16:3e:66:66:66", guestIp(0), guestIp(1), 1, 2, 0, new Uint8Array(8)));
    await until(() => l.port(0).counters.droppedSpoofed === 1);
    expect(l.fw.bridge.lookup(mac("00:16:3e:66:66:66"))).toBeUndefined();
    await l.close();
  }, 30_000);
});

describe("firewall example: vifs coming and going", () => {
  test("a guest vif removed mid-traffic: its MACs go, the others keep working; a guest added later is served", async () => {
    const l = await lab(3, []);
    const sinks = [...l.guests.map(collect), collect(l.upstream)];
    await announce(l, sinks);
    const [g0, g1, g2] = l.guests as [Netfront, Netfront, Netfront];
    const gone = l.port(2).name;
    // Guest 0 streams to guest 1 while guest 2's vif is taken away (xl network-detach).
    const N = 600;
    let sent = 0;
    const streaming = (async () => {
      for (; sent < N; sent++) {
        if (sent - sinks[1]!.length >= 128) await until(() => sent - sinks[1]!.length < 64);
        await g0.write(tcpFrame(guestMac(1), guestMac(0), guestIp(0), guestIp(1), 1000, 2000, sent, new Uint8Array(4).fill(sent & 0xff)));
      }
    })();
    // Guest 2 talks to guest 0 too until it goes.
    const toZero = tcpFrame(guestMac(0), guestMac(2), guestIp(2), guestIp(0), 3, 4, 0, new Uint8Array(10));
    for (let i = 0; i < 20; i++) await g2.write(toZero);
    await until(() => sent > N / 3);
    await g2.disconnect();
    await destroyVif(l.dom0.xenstore, l.guestDoms[2]!, l.fwDom, 0);
    await until(() => !l.fw.ports.has(gone));
    expect(l.fw.bridge.lookup(mac(guestMac(2)))).toBeUndefined();
    expect(l.fw.stats().gone.map((p) => [p.name, p.in])).toEqual([[gone, 21]]);
    await streaming;
    await until(() => sinks[1]!.length === N);
    for (let i = 0; i < N; i++) expect(sinks[1]![i]![14 + 20 + 20]).toBe(i & 0xff);
    expect(sinks[0]!.filter((f) => f[6 + 5] === 0x03).length).toBe(20);

    // A new guest comes: served, learned, reachable.
    await l.addGuestVif(3);
    const g3 = await l.connectGuest(3);
    await until(() => l.fw.ports.has(`vif${l.guestDoms[3]}.0`));
    const at3 = collect(g3);
    await g3.write(arpRequest(guestMac(3), guestIp(3), guestIp(0)));
    await until(() => l.fw.bridge.lookup(mac(guestMac(3))) !== undefined);
    const hello = tcpFrame(guestMac(3), guestMac(1), guestIp(1), guestIp(3), 5, 6, 0, new TextEncoder().encode("welcome"));
    await g1.write(hello);
    await until(() => at3.length === 1);
    expect(at3[0]).toEqual(hello);
    await l.close([g0, g1, g3]);
  }, 60_000);

  test("await using: the firewall closes at the end of its scope and nothing is left", async () => {
    const hv = SimHypervisor.create({ vifs: 4 });
    const fwDom = hv.createDomain();
    const g = hv.createDomain();
    await createVif(hv.platform(0).xenstore, { frontDomid: g, backDomid: fwDom, devid: 0, mac: guestMac(0) });
    let front: Netfront;
    {
      await using fw = await Firewall.start({ platform: hv.platform(fwDom), rules: [], uplink: false, logger: silent });
      front = await Netfront.connect({ platform: hv.platform(g), logger: silent, reconnect: false });
      await until(() => fw.ports.size === 1);
      await front.write(arpRequest(guestMac(0), guestIp(0), guestIp(1)));
      await until(() => fw.stats().macs === 1);
    }
    // The guest's back end went away with the firewall.
    await front.closed;
    await front.disconnect();
    hv.assertNoLeaks();
  }, 30_000);
});

describe("firewall example: the command line", () => {
  const run = (...args: string[]) => Bun.spawnSync([process.execPath, "examples/firewall/main.ts", ...args], { cwd: `${import.meta.dir}/..`, env: { ...process.env, BUN_XEN_NET_LOG: "silent" } });

  test("--help prints the usage; a bad option is refused naming it", () => {
    const h = run("--help");
    expect(h.exitCode).toBe(0);
    expect(h.stdout.toString()).toContain("--rules");
    const b = run("--default", "maybe");
    expect(b.exitCode).toBe(2);
    expect(b.stderr.toString()).toContain("--default");
  });

  test("--demo brings up guests on the simulated hypervisor and shows traffic through and dropped", () => {
    const d = run("--demo");
    const out = d.stdout.toString();
    expect(d.exitCode).toBe(0);
    expect(out).toMatch(/ping .* reply/);
    expect(out).toContain("no ssh");
    expect(out).toContain("no leaks");
  }, 60_000);
});
