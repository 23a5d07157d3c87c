#!/usr/bin/env bun
/**
 * The firewall's command line. On a Xen driver domain: serve every guest vif of this domain,
 * bridge them with this domain's own vif (the uplink), filter with the rules, print the
 * counters every few seconds and on Ctrl-C. `--demo`: the same on the simulated hypervisor,
 * with guests the demo brings up and traffic it sends, some of it dropped.
 */
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import pino from "pino";
import { NetError } from "bun-xen-net";
import { Firewall, formatStats } from "./firewall.ts";
import { compileRules, type Action } from "./rules.ts";
import { runDemo } from "./demo.ts";

const USAGE = `Usage: bun examples/firewall/main.ts [options]

A firewall/bridge for the Xen vifs of this domain (a driver domain): every guest vif is served
(Netback), this domain's own vif is the uplink (Netfront); frames are forwarded by destination
MAC and filtered by the rules, first match wins.

Options:
  --rules FILE        rules as JSON: { "default": "allow"|"drop", "rules": [ ... ] } or [ ... ]
                      (see examples/firewall/README.md); default: no rules
  --default ACTION    allow | drop: what a frame no rule matches gets (overrides the file's)
  --uplink-devid N    this domain's vif used as the uplink (default 0)
  --no-uplink         no uplink: bridge the guest vifs among themselves only
  --anti-spoof        drop frames a guest sends from a MAC other than its vif's
  --stats-every SEC   print the counters every SEC seconds (default 10; 0: only at exit)
  --demo              run a demo on the simulated hypervisor: guests, a ping, ssh dropped
  --log-level LEVEL   pino level (default info)
  -h, --help          this text
`;

class UsageError extends Error {}

function options(argv: string[]) {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        rules: { type: "string" },
        default: { type: "string" },
        "uplink-devid": { type: "string", default: "0" },
        "no-uplink": { type: "boolean", default: false },
        "anti-spoof": { type: "boolean", default: false },
        "stats-every": { type: "string", default: "10" },
        demo: { type: "boolean", default: false },
        "log-level": { type: "string", default: "info" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const def = v.default;
  if (def !== undefined && def !== "allow" && def !== "drop") throw new UsageError(`--default must be allow or drop, got ${JSON.stringify(def)}`);
  const devid = Number(v["uplink-devid"]);
  if (!Number.isInteger(devid) || devid < 0) throw new UsageError(`--uplink-devid must be a non-negative integer, got ${JSON.stringify(v["uplink-devid"])}`);
  const every = Number(v["stats-every"]);
  if (!Number.isFinite(every) || every < 0) throw new UsageError(`--stats-every must be a number of seconds >= 0, got ${JSON.stringify(v["stats-every"])}`);
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(v["log-level"])) throw new UsageError(`--log-level must be a pino level, got ${JSON.stringify(v["log-level"])}`);
  return { ...v, default: def as Action | undefined, devid, every };
}

function loadRules(path: string | undefined, def: Action | undefined) {
  if (path === undefined) return compileRules([], def);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`--rules: cannot read ${path}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--rules: ${path} is not JSON: ${(e as Error).message}`);
  }
  try {
    return compileRules(json, def);
  } catch (e) {
    throw new UsageError(`--rules ${path}: ${(e as Error).message}`);
  }
}

async function serve(o: ReturnType<typeof options>): Promise<void> {
  const logger = pino({ level: o["log-level"] });
  const rules = loadRules(o.rules, o.default);
  await using stack = new AsyncDisposableStack();
  // Without --demo this is a driver domain's firewall: real Xen only (the simulated machine
  // has no guests unless something brings them up, which is what --demo does).
  if (!existsSync("/dev/xen/evtchn")) throw new UsageError("no Xen here (/dev/xen/evtchn is missing): run in a Xen driver domain, or try --demo");
  const { createXenPlatform } = await import("bun-xen-net/platform/xen");
  const platform = await createXenPlatform();
  stack.defer(() => platform.close());
  const fw = stack.use(
    await Firewall.start({
      rules,
      platform,
      uplink: o["no-uplink"] ? false : { devid: o.devid },
      antiSpoof: o["anti-spoof"],
      logger,
    }),
  );
  logger.info({ rules: rules.rules.length, default: rules.defaultDrop ? "drop" : "allow" }, "firewall up");
  const timer = o.every > 0 ? setInterval(() => console.log(formatStats(fw.stats())), o.every * 1000) : null;
  stack.defer(() => {
    if (timer !== null) clearInterval(timer);
    console.log(formatStats(fw.stats()));
  });
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  logger.info("shutting down");
}

async function main(): Promise<number> {
  let o;
  try {
    o = options(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`${e.message}\n\n${USAGE}`);
    return 2;
  }
  if (o.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    if (o.demo) await runDemo(loadRules(o.rules, o.default), o.rules !== undefined);
    else await serve(o);
    return 0;
  } catch (e) {
    if (e instanceof UsageError || (e instanceof NetError && e.code === "BAD_ARGUMENT")) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }
}

process.exitCode = await main();
