/**
 * Free-running ring indices are u32 and wrap at 2^32; every sum, difference and comparison
 * must wrap the way C's unsigned arithmetic does, or a long-lived ring breaks after 4G entries.
 */

/** (a - b) mod 2^32 */
export function u32sub(a: number, b: number): number {
  return (a - b) >>> 0;
}

/** (a + b) mod 2^32 */
export function u32add(a: number, b: number): number {
  return (a + b) >>> 0;
}
