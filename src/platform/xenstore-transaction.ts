/** What both xenstore implementations share: running a transaction with EAGAIN retries. */
import { PlatformError, type XenStore, type XsTransaction } from "./types.ts";

export function isEagain(e: unknown): boolean {
  return e instanceof PlatformError && e.code === "EAGAIN";
}

/**
 * Run `fn` in a transaction and commit, starting over on EAGAIN (from `fn` or from the commit)
 * up to `maxRetries` times; after that the EAGAIN propagates. A transaction `fn` failed in is
 * aborted if `stillOpen` says it is.
 */
export async function retryTransaction<T>(
  xs: Pick<XenStore, "transactionStart" | "transactionEnd">,
  fn: (tx: XsTransaction) => Promise<T>,
  maxRetries: number,
  stillOpen: (tx: XsTransaction) => boolean,
): Promise<T> {
  if (!Number.isInteger(maxRetries) || maxRetries < 0) {
    throw new PlatformError("EINVAL", "xenstore.transaction", `maxRetries must be a non-negative integer, got ${maxRetries}`);
  }
  for (let attempt = 0; ; attempt++) {
    const tx = await xs.transactionStart();
    let result: T;
    try {
      result = await fn(tx);
    } catch (e) {
      if (stillOpen(tx)) await xs.transactionEnd(tx, false).catch(() => {});
      if (isEagain(e) && attempt < maxRetries) continue;
      throw e;
    }
    try {
      await xs.transactionEnd(tx, true);
      return result;
    } catch (e) {
      if (isEagain(e) && attempt < maxRetries) continue;
      throw e;
    }
  }
}
