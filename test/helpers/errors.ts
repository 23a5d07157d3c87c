import { expect } from "bun:test";
import { PlatformError, type PlatformErrorCode } from "../../src/platform/types.ts";

/** The PlatformError code `f` throws, or "no error"; anything else it throws is rethrown. */
export function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof PlatformError) return e.code;
    throw e;
  }
  return "no error";
}

/** Await `p`, expect it to reject with a PlatformError of `code` whose message names each of `mentions`. */
export async function rejects(p: Promise<unknown>, code: PlatformErrorCode, ...mentions: string[]): Promise<PlatformError> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(PlatformError);
  const pe = err as PlatformError;
  expect(pe.code).toBe(code);
  for (const m of mentions) expect(pe.message).toContain(m);
  return pe;
}
