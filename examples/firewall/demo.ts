/**
 * `main.ts --demo`: the firewall on the simulated hypervisor. A driver domain runs it; two
 * guests ("client" and "web") have vifs it serves; its uplink's back end is played in dom0 by
 * a Netback that answers pings for a "router". The demo sends ARP, pings, web and ssh traffic
 * and a malformed frame, takes the web guest's vif away, prints what went through and what was
 * dropped, then closes everything and checks that nothing leaked.
 */
import pino from "pino";
import { Netback, Netfront, SimHypervisor, createVif, destroyVif, type NetDevice } from "bun-xen-net";
import { Firewall, formatStats } from "./firewall.ts";
import { IPPROTO } from "./headers.ts";
import { TCP_SYN, arpRequest, echoReply, ethernet, icmpEcho, ipv4, mac, tcp } from "./packets.ts";
import { compileRules, type RuleSet } from "./rules.ts";

const DEMO_RULES = {
  default: "allow",
  rules: [
    { name: "no ssh", action: "drop", proto: "tcp", dport: 22 },
    { name: "arp", action: "allow", ethertype: "arp" },
    { name: "no telnet", action: "drop", proto: "tcp", dport: 23 },
  ],
};

const CLIENT = { mac: "00:16:3e:de:00:01", ip: [10, 0, 0, 1] };
const WEB = { mac: "00:16:3e:de:00:02", ip: [10, 0, 0, 2] };
const ROUTER = { mac: "02:00:00:00:00:fe", ip: [10, 0, 0, 254] };

/** The next frame `dev` receives that `pred` accepts, or null after `ms`. */
function nextFrame(dev: NetDevice, pred: (f: Uint8Array) => boolean, ms = 1000): Promise<Uint8Array | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      off();
      resolve(null);
    }, ms);
    const off = dev.listen((f) => {
      if (!pred(f)) return;
      clearTimeout(timer);
      off();
      resolve(f.slice());
    });
  });
}

/** Poll `cond` every 5 ms; throw naming `what` after `ms` (the demo never hangs). */
async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`demo: timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

const isTcpTo = (port: number) => (f: Uint8Array) => f[23] === IPPROTO.TCP && ((f[36]! << 8) | f[37]!) === port;
const isEchoReply = (f: Uint8Array) => f[12] === 0x08 && f[23] === IPPROTO.ICMP && f[34] === 0;

export async function runDemo(userRules: RuleSet, fromFile: boolean): Promise<void> {
  const rules = fromFile ? userRules : compileRules(DEMO_RULES);
  const logger = pino({ level: process.env.BUN_XEN_NET_LOG ?? "warn" });
  const hv = SimHypervisor.create({ vifs: 4 });
  const dom0 = hv.platform(0);
  const fwDom = hv.createDomain();
  const clientDom = hv.createDomain();
  const webDom = hv.createDomain();
  await createVif(dom0.xenstore, { frontDomid: fwDom, backDomid: 0, devid: 0, mac: "00:16:3e:de:00:ff" });
  await createVif(dom0.xenstore, { frontDomid: clientDom, backDomid: fwDom, devid: 0, mac: CLIENT.mac });
  await createVif(dom0.xenstore, { frontDomid: webDom, backDomid: fwDom, devid: 0, mac: WEB.mac });
  console.log(`simulated machine: dom0 (upstream, router ${ROUTER.mac}), firewall in domain ${fwDom}, client in ${clientDom}, web in ${webDom}`);
  console.log(`rules: ${rules.rules.map((r) => `${r.drop ? "drop" : "allow"} ${r.name}`).join("; ")}; default ${rules.defaultDrop ? "drop" : "allow"}`);

  {
    await using stack = new AsyncDisposableStack();
    const [upstream, fw] = await Promise.all([
      Netback.serve({ platform: dom0, frontendDomid: fwDom, devid: 0, logger }),
      Firewall.start({ platform: hv.platform(fwDom), rules, logger }),
    ]);
    stack.use(upstream);
    stack.use(fw);
    const client = stack.use(await Netfront.connect({ platform: hv.platform(clientDom), logger }));
    const web = await Netfront.connect({ platform: hv.platform(webDom), logger });
    await waitFor(() => fw.ports.size === 3, "the guests' vifs to be served");
    console.log(`ports: ${[...fw.ports.keys()].join(", ")}`);

    // The router and web answer pings, as a host would.
    upstream.listen((f) => {
      const r = echoReply(f, mac(ROUTER.mac));
      if (r !== null) void upstream.write(r);
    });
    web.listen((f) => {
      const r = echoReply(f, mac(WEB.mac));
      if (r !== null) void web.write(r);
    });

    // Everyone announces itself: ARP broadcasts, flooded to the other ports.
    const seen = nextFrame(client, (f) => f[12] === 0x08 && f[13] === 0x06);
    await web.write(arpRequest(WEB.mac, WEB.ip, CLIENT.ip));
    await upstream.write(arpRequest(ROUTER.mac, ROUTER.ip, CLIENT.ip));
    await client.write(arpRequest(CLIENT.mac, CLIENT.ip, WEB.ip));
    console.log(`ARP broadcast reached the client: ${(await seen) !== null}`);

    const ping = async (to: { mac: string; ip: number[] }, what: string, seq: number) => {
      const reply = nextFrame(client, isEchoReply);
      const req = ethernet(to.mac, CLIENT.mac, 0x0800, ipv4(CLIENT.ip, to.ip, IPPROTO.ICMP, icmpEcho(8, 0x77, seq, new Uint8Array(56).fill(seq))));
      const t0 = performance.now();
      await client.write(req);
      const r = await reply;
      console.log(`ping client -> ${what}: ${r === null ? "no reply" : `reply, ${r.length} bytes, ${(performance.now() - t0).toFixed(2)} ms`}`);
    };
    await ping(WEB, "web (a guest)", 1);
    await ping(ROUTER, "router (beyond the uplink)", 2);

    for (const [port, what] of [[80, "http"], [22, "ssh"], [23, "telnet"]] as const) {
      const got = nextFrame(web, isTcpTo(port), 300);
      await client.write(ethernet(WEB.mac, CLIENT.mac, 0x0800, ipv4(CLIENT.ip, WEB.ip, IPPROTO.TCP, tcp(40000 + port, port, 1, TCP_SYN))));
      console.log(`tcp client -> web port ${port} (${what}): ${(await got) !== null ? "delivered" : "dropped"}`);
    }

    // A frame whose IPv4 header claims more bytes than it carries.
    const bad = ethernet(WEB.mac, CLIENT.mac, 0x0800, ipv4(CLIENT.ip, WEB.ip, IPPROTO.UDP, new Uint8Array(8)));
    bad[16] = 0x05;
    await client.write(bad);
    await waitFor(() => fw.ports.get(`vif${clientDom}.0`)!.counters.droppedMalformed === 1, "the malformed frame to be counted");
    console.log("malformed frame from the client: dropped and counted");

    // The web guest's vif goes (xl network-detach): its MAC goes with it, the rest goes on.
    await web.disconnect();
    await destroyVif(dom0.xenstore, webDom, fwDom, 0);
    await waitFor(() => !fw.ports.has(`vif${webDom}.0`), "web's port to go");
    console.log(`web's vif removed: its MAC is ${fw.bridge.lookup(mac(WEB.mac)) === undefined ? "forgotten" : "still known"}`);
    await ping(ROUTER, "router, after web left", 3);

    console.log(`\n${formatStats(fw.stats())}\n`);
  }
  hv.assertNoLeaks();
  console.log("closed: no leaks");
}
