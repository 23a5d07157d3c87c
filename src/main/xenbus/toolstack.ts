/**
 * What the toolstack (`xl network-attach`, libxl_device_generic_add) writes to xenstore for a
 * vif: the simulated hypervisor has no toolstack, so tests and laptop runs call this with
 * dom0's connection. Layout and permissions follow libxl: the frontend directory belongs to the
 * frontend domain and the backend may read it; the backend directory belongs to the backend
 * domain (dom0 or a driver domain) and the frontend may read it.
 */
import { PlatformError, type DomId, type XenStore } from "../../platform/types.ts";
import { BACK_KEYS, backendDir, formatMac, FRONT_KEYS, frontendDir, parseMac, XenbusState } from "../../protocol/xenbus.ts";

export interface VifSpec {
  frontDomid: DomId;
  backDomid: DomId;
  /** The vif's device id (`handle`), e.g. 0 for eth0. */
  devid: number;
  /** "aa:bb:cc:dd:ee:ff". */
  mac: string;
  mtu?: number;
}

export interface VifPaths {
  frontPath: string;
  backPath: string;
}

/**
 * Create both directories in one dom0 transaction (a half-created vif is never visible).
 * Both domains must exist (their /local/domain/<id> is theirs): the directories created under
 * them are then owned by the right domain, so each end can write its own keys. Stale
 * directories of the same vif are replaced.
 */
export async function createVif(xs0: XenStore, spec: VifSpec): Promise<VifPaths> {
  const { frontDomid, backDomid, devid, mac, mtu } = spec;
  const op = "toolstack.createVif";
  if (!Number.isInteger(devid) || devid < 0) throw new PlatformError("EINVAL", op, `devid must be a non-negative integer, got ${devid}`);
  if (parseMac(mac) instanceof Error) throw new PlatformError("EINVAL", op, `not a MAC address: ${JSON.stringify(mac)}`);
  if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= 68 && mtu <= 65535)) throw new PlatformError("EINVAL", op, `mtu must be in 68..65535, got ${mtu}`);
  const frontPath = frontendDir(frontDomid, devid);
  const backPath = backendDir(backDomid, frontDomid, devid);
  const macText = formatMac(parseMac(mac) as Uint8Array);

  await xs0.transaction(async (tx) => {
    for (const d of new Set([frontDomid, backDomid])) {
      // dom0's own home may be absent in the simulation; dom0 can create anything anyway.
      if (d !== 0 && (await xs0.read(`/local/domain/${d}`, tx)) === null) {
        throw new PlatformError("ENOENT", op, `domain ${d} has no /local/domain/${d} (create the domain first)`);
      }
    }
    await xs0.rm(frontPath, tx);
    await xs0.rm(backPath, tx);
    // Nodes dom0 creates inherit the parent's perms unchanged: set the directory's first, then
    // every key written below it gets the same owner and reader.
    await xs0.mkdir(frontPath, tx);
    await xs0.setPerms(frontPath, [{ domid: frontDomid, access: "n" }, { domid: backDomid, access: "r" }], tx);
    await xs0.mkdir(backPath, tx);
    await xs0.setPerms(backPath, [{ domid: backDomid, access: "n" }, { domid: frontDomid, access: "r" }], tx);

    const front: [string, string][] = [
      [FRONT_KEYS.backend, backPath],
      [FRONT_KEYS.backendId, String(backDomid)],
      [FRONT_KEYS.handle, String(devid)],
      [FRONT_KEYS.mac, macText],
      [FRONT_KEYS.state, String(XenbusState.Initialising)],
    ];
    if (mtu !== undefined) front.push([FRONT_KEYS.mtu, String(mtu)]);
    const back: [string, string][] = [
      [BACK_KEYS.frontend, frontPath],
      [BACK_KEYS.frontendId, String(frontDomid)],
      [BACK_KEYS.handle, String(devid)],
      [BACK_KEYS.mac, macText],
      [BACK_KEYS.online, "1"],
      [BACK_KEYS.state, String(XenbusState.Initialising)],
      // Written by xl's hotplug script once the host side is plumbed; we have no script.
      [BACK_KEYS.hotplugStatus, "connected"],
    ];
    for (const [k, v] of front) await xs0.write(`${frontPath}/${k}`, v, tx);
    for (const [k, v] of back) await xs0.write(`${backPath}/${k}`, v, tx);
  });
  return { frontPath, backPath };
}

/** Remove both directories (xl network-detach, after the ends have closed). */
export async function destroyVif(xs0: XenStore, frontDomid: DomId, backDomid: DomId, devid: number): Promise<void> {
  await xs0.transaction(async (tx) => {
    await xs0.rm(frontendDir(frontDomid, devid), tx);
    await xs0.rm(backendDir(backDomid, frontDomid, devid), tx);
  });
}
