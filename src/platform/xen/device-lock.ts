/**
 * Device claims on real Xen: an exclusive flock on a file named after the device's xenstore
 * directory, under /run/bun-xen-net (or the temp dir where /run cannot be written). Every
 * process of this domain that uses the package sees the same files, and the kernel lets go of
 * a lock when its holder dies, so a crashed process never leaves a device claimed.
 * Within a process, a second open of the same file conflicts with the first as well.
 */
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as libc from "../../ffi/libc.ts";
import type { DeviceClaim } from "../types.ts";

const DIRS = ["/run/bun-xen-net", join(tmpdir(), "bun-xen-net")];

/** Claimed in this process, for when no lock file can be made at all. */
const inProcess = new Set<string>();

function lockFile(dir: string): number | null {
  const name = `${dir.replace(/^\/+/, "").replace(/[^A-Za-z0-9._-]/g, "_")}.lock`;
  for (const d of DIRS) {
    try {
      mkdirSync(d, { recursive: true, mode: 0o755 });
      return libc.open(join(d, name), libc.O_RDWR | libc.O_CREAT | libc.O_CLOEXEC, "device-lock.open", 0o600);
    } catch {
      // Not writable here: try the next place.
    }
  }
  return null;
}

export function claimXenDevice(dir: string): DeviceClaim | null {
  if (inProcess.has(dir)) return null;
  const fd = lockFile(dir);
  if (fd !== null && !libc.tryLockExclusive(fd, "device-lock.flock")) {
    libc.close(fd);
    return null;
  }
  inProcess.add(dir);
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      inProcess.delete(dir);
      if (fd !== null) libc.close(fd, "device-lock.close");
    },
  };
}
