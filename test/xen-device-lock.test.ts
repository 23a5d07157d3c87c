/** Device claims on real Xen are flocks: exclusive within a process and across processes, and gone with their process. */
import { expect, test } from "bun:test";
import { claimXenDevice } from "../src/platform/xen/device-lock.ts";

// A name no real vif has (each claimed name leaves a small lock file behind, as flock files do).
const dir = "/local/domain/0/device/vif/bun-xen-net-lock-test";

test("a claim is exclusive in this process, and free again once released", () => {
  const a = claimXenDevice(dir);
  expect(a).not.toBeNull();
  expect(claimXenDevice(dir)).toBeNull();
  expect(claimXenDevice(`${dir}0`)).not.toBeNull(); // another device
  a!.release();
  a!.release(); // idempotent
  const b = claimXenDevice(dir);
  expect(b).not.toBeNull();
  b!.release();
});

test("a claim held by another process refuses ours, and dies with that process", async () => {
  const child = Bun.spawn([process.execPath, "run", `${import.meta.dir}/fixtures/hold-device-claim.ts`, dir], { stdout: "pipe" });
  const reader = child.stdout.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  expect(first.trim()).toBe("held");
  expect(claimXenDevice(dir)).toBeNull();
  child.kill(9);
  await child.exited;
  const c = claimXenDevice(dir);
  expect(c).not.toBeNull();
  c!.release();
});
