/** Shell commands for the dom0 tests, run without blocking the event loop (our devices answer meanwhile). */

export async function sh(cmd: string): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out: out + err };
}

/** The command's output; throws with it when the command fails. */
export async function must(cmd: string): Promise<string> {
  const r = await sh(cmd);
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}: ${r.out}`);
  return r.out;
}

/** Poll `cond` until it holds; throw naming `what` after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/**
 * Unload a kernel module and wait until it is gone (busybox rmmod does not wait for its users to
 * let go): a test that needs the device for itself must not race the kernel's driver for it.
 */
export async function unloadModule(name: string, ms = 15_000): Promise<void> {
  const sys = `/sys/module/${name.replace(/-/g, "_")}`;
  await until(async () => (await sh(`rmmod ${name} 2>/dev/null; [ ! -d ${sys} ]`)).code === 0, ms, `module ${name} to unload`);
}

/** The kernel netdev whose address is `mac`, once it appears (a Linux netfront's, or netback's). */
export async function netdevOf(mac: string, ms = 20_000, what = `netdev ${mac}`): Promise<string> {
  let dev = "";
  await until(async () => (dev = (await sh(`for n in /sys/class/net/*; do [ "$(cat $n/address)" = "${mac}" ] && echo \${n##*/}; done`)).out.trim()) !== "", ms, what);
  return dev;
}
