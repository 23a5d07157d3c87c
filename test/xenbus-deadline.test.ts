/** A handshake step's Deadline: what is left of the longest budget is always a valid budget for the next step. */
import { expect, spyOn, test } from "bun:test";
import { Deadline } from "../src/main/xenbus/wait.ts";

test("remaining() of a 0x7fffffff ms budget never exceeds it (rounding at 2^31), so the next step's Deadline accepts it", () => {
  // At this clock, now + 0x7fffffff rounds up and end − now is 0x7fffffff plus a fraction.
  const clock = spyOn(performance, "now").mockReturnValue(41351.123);
  try {
    const d = new Deadline({ timeoutMs: 0x7fff_ffff });
    expect(d.remaining()).toBe(0x7fff_ffff);
    expect(() => new Deadline(d.opts())).not.toThrow();
  } finally {
    clock.mockRestore();
  }
});
