/** `bun-xen-net list`: the vifs this domain fronts and serves, from xenstore. */
import { createXenPlatform } from "../platform/xen/platform.ts";
import { DEMO_MAX, startDemo } from "./demo.ts";
import { cliLogger, hostKind } from "./host.ts";
import { formatTable } from "./table.ts";
import { intOption, parse, UsageError } from "./usage.ts";
import { featureText, listVifs, type VifInfo } from "./vifs.ts";

export const LIST_HELP = `usage: bun-xen-net list [--json] [--demo N] [--domid D]

The vifs this domain fronts (device/vif/* under its xenstore home) and serves
(backend/vif/<domid>/<devid>): role, peer domain, device id, this end's and the
peer's state, MAC, MTU, queues and features (sg, split event channels, mq=asked/offered,
csum4/csum6 offload, gso4/gso6, rx-notify), read from xenstore.

On Xen this is the domain the command runs in. Without Xen there is nothing to list (a
process's simulated hypervisor starts empty): --demo N brings up N vif pairs on a simulated
hypervisor in this process (domain 0 serving guests 1..N; odd ones MTU 9000, two queues)
and lists them through the same xenstore-reading code.

  --json       one JSON array of vifs instead of the table
  --demo N     simulated: bring up N vif pairs (1..${DEMO_MAX}) first
  --domid D    list as domain D (default: this domain; with --demo, 0, the back end)
  -h, --help   this text`;

export async function listCommand(argv: string[]): Promise<number> {
  const o = parse("list", argv, { json: { type: "boolean" }, demo: { type: "string" }, domid: { type: "string" } });
  if (o.help) {
    console.log(LIST_HELP);
    return 0;
  }
  const demoN = o.demo === undefined ? 0 : intOption("list", "demo", o.demo as string, 0, 1, DEMO_MAX);
  const domidArg = o.domid === undefined ? null : intOption("list", "domid", o.domid as string, 0, 0, 0x7fef);
  if (demoN > 0 && domidArg !== null && domidArg > demoN) throw new UsageError(`list: --domid ${domidArg}: the demo has domains 0..${demoN}`);
  const log = cliLogger();
  let vifs: VifInfo[];
  if (demoN > 0) {
    const demo = await startDemo(demoN, log);
    try {
      const domid = domidArg ?? 0;
      vifs = await listVifs(demo.hv.platform(domid).xenstore, domid);
    } finally {
      await demo.close();
    }
  } else if (hostKind() === "xen") {
    const p = await createXenPlatform();
    try {
      vifs = await listVifs(p.xenstore, domidArg ?? p.domid);
    } finally {
      p.close();
    }
  } else {
    // No Xen and no demo: the simulated hypervisor of a fresh process has no vifs.
    vifs = [];
    if (!o.json) console.error("no Xen here (/dev/xen/evtchn is missing): nothing to list; --demo N lists N simulated vif pairs");
  }
  if (o.json) console.log(JSON.stringify(vifs, null, 2));
  else if (vifs.length === 0) console.log("no vifs");
  else {
    console.log(
      formatTable(
        ["ROLE", "PEER", "DEVID", "STATE", "PEER-STATE", "MAC", "MTU", "QUEUES", "FEATURES"],
        vifs.map((v) => [v.role, String(v.peer ?? "?"), String(v.devid), v.state, v.peerState, v.mac ?? "?", String(v.mtu ?? "?"), String(v.features.queues), featureText(v.features)]),
      ),
    );
  }
  return 0;
}
