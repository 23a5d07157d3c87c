/**
 * The platform a device uses when none is given: real Xen where the Xen devices exist, else
 * the embedded simulated hypervisor (one per process). BUN_XEN_NET_PLATFORM=sim|xen overrides.
 */
import { existsSync } from "node:fs";
import { SimHypervisor } from "../platform/sim/index.ts";
import { createXenPlatform } from "../platform/xen/platform.ts";
import type { DomId, Platform } from "../platform/types.ts";
import { NetError } from "./errors.ts";

let shared: SimHypervisor | null = null;

/** The process-wide simulated hypervisor that devices use by default. */
export function defaultSimHypervisor(): SimHypervisor {
  shared ??= SimHypervisor.create();
  return shared;
}

export function xenPresent(): boolean {
  return existsSync("/dev/xen/evtchn") && existsSync("/proc/xen/capabilities");
}

/**
 * Real Xen: this domain, through /dev/xen/* and xenstore. Simulated: `domid` is this domain's id
 * on the process's simulated hypervisor (created there if missing).
 */
export async function defaultPlatform(domid: DomId): Promise<Platform> {
  const want = process.env.BUN_XEN_NET_PLATFORM ?? (xenPresent() ? "xen" : "sim");
  if (want === "xen") return createXenPlatform();
  if (want !== "sim") throw new NetError("BAD_ARGUMENT", `BUN_XEN_NET_PLATFORM must be "sim" or "xen", got "${want}"`);
  const hv = defaultSimHypervisor();
  if (!hv.exists(domid)) hv.createDomain(domid);
  return hv.platform(domid);
}
