/** Poll `cond` every 2 ms until it holds; throw after `ms` (tests never hang on a missed event). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(2);
  }
}

/** Whether `p` has settled already (looked at after pending reactions have run). */
export async function hasSettled(p: Promise<unknown>): Promise<boolean> {
  const pending = Symbol("pending");
  const r = await Promise.race([p.then(() => true, () => true), Bun.sleep(0).then(() => pending)]);
  return r !== pending;
}
