/** Rebuild a domain's platform from a postable descriptor, in any thread. */
import { SimHypervisor, type SimHypervisorState } from "./sim/hypervisor.ts";
import { openXenPlatform } from "./xen/platform.ts";
import { PlatformError, type Platform, type PlatformDescriptor } from "./types.ts";

/**
 * An openPlatform for a thread that opens the views of many domains of few machines (a pool
 * worker): each simulated machine is attached once, and only the domain's view is new.
 */
export function platformOpener(): (d: PlatformDescriptor) => Platform {
  const machines = new Map<string, SimHypervisor>();
  return (d) => {
    if (d.kind !== "sim") return openPlatform(d);
    const state = d.params as SimHypervisorState;
    let hv = machines.get(state.id);
    if (hv === undefined) machines.set(state.id, (hv = SimHypervisor.attach(state)));
    return hv.platform(d.domid);
  };
}

export function openPlatform(d: PlatformDescriptor): Platform {
  switch (d.kind) {
    case "sim":
      return SimHypervisor.attach(d.params as SimHypervisorState).platform(d.domid);
    case "xen":
      return openXenPlatform(d);
    default:
      throw new PlatformError("EINVAL", "platform.open", `unknown platform kind ${String((d as { kind: unknown }).kind)}`);
  }
}
