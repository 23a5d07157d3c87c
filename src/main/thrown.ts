/**
 * Whatever a user's callback throws, described without running any of its code: a getter, a
 * Proxy trap or a toString that throws must not turn a report into a second exception (which
 * would escape the receive loop and stop receiving for good).
 */
export interface ThrownValue {
  /** "Error", "TypeError", …, or the value's typeof for a non-error. */
  type: string;
  message: string;
  stack?: string;
}

export function describeThrown(e: unknown): ThrownValue {
  try {
    if (e === null || (typeof e !== "object" && typeof e !== "function")) {
      return { type: e === null ? "null" : typeof e, message: typeof e === "symbol" ? e.toString() : String(e) };
    }
    // An object: read only own data properties (no getters run, no traps beyond these).
    const own = (k: string, of: object = e): string | undefined => {
      const d = Object.getOwnPropertyDescriptor(of, k);
      return d !== undefined && "value" in d && typeof d.value === "string" ? d.value : undefined;
    };
    const isError = Error.prototype.isPrototypeOf(e as object);
    // An Error's name lives on its prototype (TypeError.prototype.name, …).
    const name = own("name") ?? (isError ? (own("name", Object.getPrototypeOf(e) as object) ?? "Error") : "object");
    const out: ThrownValue = { type: name, message: own("message") ?? (isError ? "(no readable message)" : "(a non-Error object)") };
    const stack = own("stack");
    if (stack !== undefined) out.stack = stack;
    return out;
  } catch {
    return { type: "unknown", message: "(a value that cannot be inspected: its traps or accessors throw)" };
  }
}
