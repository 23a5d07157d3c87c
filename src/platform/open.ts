/** Rebuild a domain's platform from a postable descriptor, in any thread. */
import { SimHypervisor, type SimHypervisorState } from "./sim/hypervisor.ts";
import { openXenPlatform } from "./xen/platform.ts";
import { PlatformError, type Platform, type PlatformDescriptor } from "./types.ts";

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
