#!/usr/bin/env bun
/**
 * bun-xen-net: the command line. Exit codes: 0 done, 2 a command line we cannot run (one line
 * on stderr), 1 the command failed (its error's message on stderr).
 */
import { benchCommand } from "./bench.ts";
import { captureCommand } from "./capture.ts";
import { listCommand } from "./list.ts";
import { UsageError } from "./usage.ts";

const HELP = `usage: bun-xen-net <command> [options]

Commands:
  list      the vifs this domain fronts and serves (state, MAC, MTU, features)
  bench     throughput of a Netfront against a Netback in this process (64 and 1514 B, both ways)
  capture   write a pcap file of frames a device pair in this process exchanges

On Xen (/dev/xen/evtchn present) commands use this domain; elsewhere the simulated
hypervisor (BUN_XEN_NET_PLATFORM=sim|xen overrides). Logs go to stderr
(BUN_XEN_NET_LOG sets the level, default warn).

'bun-xen-net <command> --help' for a command's options.
Exit codes: 0 ok, 1 the command failed, 2 usage error.`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  list: listCommand,
  bench: benchCommand,
  capture: captureCommand,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) throw new UsageError("no command (list, bench, capture)");
  if (cmd === "--help" || cmd === "-h" || cmd === "help") {
    console.log(HELP);
    return 0;
  }
  const run = COMMANDS[cmd];
  if (run === undefined || !Object.hasOwn(COMMANDS, cmd)) {
    throw new UsageError(cmd.startsWith("-") ? `unknown option ${JSON.stringify(cmd)} (a command comes first: list, bench, capture)` : `unknown command ${JSON.stringify(cmd)} (list, bench, capture)`);
  }
  return run(rest);
}

let code: number;
try {
  code = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`bun-xen-net: ${e.message}; see --help`);
    code = 2;
  } else {
    console.error(`bun-xen-net: ${e instanceof Error ? e.message : String(e)}`);
    code = 1;
  }
}
// Pool threads and timers of closed devices must not keep the process alive.
process.exit(code);
