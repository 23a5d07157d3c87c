import { PlatformError } from "../../src/platform/types.ts";

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
