/**
 * The C reference peer of the performance comparison (bench/c/netif-ref.c via
 * bench/c-reference.ts): it builds, every mode moves frames through the rings with the data
 * check on every frame, its JSON is well formed, and a corrupted frame makes it fail.
 *
 * Without gcc or the Xen headers the suite is skipped with a warning, except under CI
 * (CI=true), where that is a failure.
 */
import { describe, expect, test } from "bun:test";
import { buildCReference, missingPrerequisites, parseResult, type CDir, type CMode, type CReference } from "../bench/c-reference.ts";

const missing = missingPrerequisites();
const available = missing.length === 0;
const IN_CI = process.env.CI === "true";
const FRAMES = 20_000;

if (!available && !IN_CI) {
  console.warn(`c-reference: SKIPPED, missing ${missing.join(" and ")}; the C performance reference was not built or checked`);
}

let built: Promise<CReference> | null = null;
const ref = () => (built ??= buildCReference());

if (!available && IN_CI) {
  describe("C performance reference (netif-ref)", () => {
    test("prerequisites", () => {
      throw new Error(`CI=true but the C reference cannot be built: missing ${missing.join(" and ")}. CI must install gcc and libxen-dev.`);
    });
  });
} else {
  const suite = available ? describe : describe.skip;
  suite("C performance reference (netif-ref)", () => {
    test("builds with gcc against Xen's ring.h and netif.h (cached)", async () => {
      const a = await ref();
      expect(await Bun.file(a.binary).exists()).toBe(true);
      expect(a.binary).toContain("/bench/.build/netif-ref-");
    });

    const cases: [CMode, CDir, number][] = [];
    for (const mode of ["single", "threads", "memcpy"] as const) {
      for (const dir of ["tx", "rx"] as const) {
        if (mode === "memcpy" && dir === "rx") continue; // the floor has no direction
        for (const size of [64, 9014]) cases.push([mode, dir, size]);
      }
    }

    test.each(cases)("%s %s %d-byte frames: every frame checked, JSON well formed", async (mode, dir, size) => {
      const r = await (await ref()).runC(mode, dir, size, FRAMES, { checkEvery: 1, timeoutMs: 30_000 });
      expect(r).toMatchObject({ mode, dir, size, frames: FRAMES, checked: true, compared: FRAMES });
      // Single and memcpy modes keep a 1024-frame warm-up off the clock.
      expect(r.timed_frames).toBe(mode === "threads" ? FRAMES : FRAMES - 1024);
      expect(r.ns_per_frame).toBeGreaterThan(0);
      // The printed figures agree with each other (to their printed precision).
      expect(Math.abs((r.frames_per_s * r.ns_per_frame) / 1e9 - 1)).toBeLessThan(1e-3);
      expect(Math.abs(r.gbit_s / ((r.frames_per_s * size * 8) / 1e9) - 1)).toBeLessThan(1e-3);
      expect(r.cpu_ns_per_frame).toBeGreaterThan(0);
      expect(r.front.timeouts + r.back.timeouts).toBe(0); // no lost wake-ups
      if (mode === "threads") {
        expect(r.spin_ns).toBeGreaterThan(0);
        // A side only wakes its peer when the ring's notify rule said so.
        expect(r.front.wakes).toBeLessThanOrEqual(r.front.kicks);
        expect(r.back.wakes).toBeLessThanOrEqual(r.back.kicks);
      } else if (mode === "single") {
        expect(r.batch).toBe(32);
        // One thread alternating both ends never sleeps.
        expect(r.front.sleeps + r.back.sleeps).toBe(0);
      }
    });

    test.each([["single", "tx"], ["single", "rx"], ["threads", "tx"], ["threads", "rx"], ["memcpy", "tx"]] as [CMode, CDir][])(
      "%s %s: a frame corrupted in flight fails the run",
      async (mode, dir) => {
        const { runC } = await ref();
        for (const size of [64, 9014]) {
          await expect(runC(mode, dir, size, FRAMES, { checkEvery: 1, fault: 5000, timeoutMs: 30_000 })).rejects.toThrow(
            /failed its data check: netif-ref: frame 5000: payload differs/,
          );
        }
      },
    );

    test("bad arguments are refused with usage", async () => {
      const { binary } = await ref();
      for (const args of [["single", "tx", "8", "100"], ["single", "up", "64", "100"], ["fast", "tx", "64", "100"], ["single", "tx", "70000", "100"], ["single", "tx", "64"]]) {
        const p = Bun.spawnSync([binary, ...args]);
        expect(p.exitCode).toBe(2);
        expect(p.stderr.toString()).toContain("usage: netif-ref");
      }
    });

    test("parseResult rejects malformed output", () => {
      expect(() => parseResult("")).toThrow(/not JSON/);
      expect(() => parseResult('{"mode":"single"}')).toThrow(/dir/);
      expect(() => parseResult("{}\n{}")).toThrow(/one JSON line/);
    });
  });
}
