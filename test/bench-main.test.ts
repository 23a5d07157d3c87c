/**
 * The main job (`bun run bench`, bench/main.ts) end to end at one size and one run: it exits
 * 0, prints the table with the goals, and its --json has a record for every mode of ours
 * (single and threads both ways, device, batch, floor), the postMessage baseline and, where
 * the C reference can be built, C's, each with a positive wall and CPU figure; bad arguments exit 2 with usage.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { missingPrerequisites } from "../bench/c-reference.ts";

const root = join(import.meta.dir, "..");

function bench(args: string[]) {
  const p = Bun.spawnSync([process.execPath, "run", "bench/main.ts", ...args], { cwd: root, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

describe("bun run bench (the main job)", () => {
  test("one size, one run: the table, the goals and one JSON record per mode", () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-main-"));
    try {
      const json = join(dir, "out.json");
      const r = bench(["--sizes", "64", "--runs", "1", "--no-wait", "--json", json]);
      expect(r.err).not.toContain("error");
      expect(r.code).toBe(0);
      expect(r.out).toContain("ns/frame");
      const doc = JSON.parse(readFileSync(json, "utf8")) as { records: { size: number; mode: string; impl: string; dir: string | null; ns_per_frame: number; runs: number }[] };
      const keys = doc.records.map((x) => `${x.impl} ${x.mode} ${x.dir ?? "-"}`).sort();
      const ours = ["ours single tx", "ours single rx", "ours threads tx", "ours threads rx", "ours device tx", "ours device rx", "ours batch tx", "ours batch rx", "ours floor -"];
      const c = missingPrerequisites().length === 0 ? ["c single tx", "c single rx", "c threads tx", "c threads rx", "c floor -"] : [];
      expect(keys).toEqual([...ours, ...c, "bun postMessage -"].sort());
      for (const x of doc.records) {
        expect(x.size).toBe(64);
        expect(x.runs).toBe(1);
        expect(x.ns_per_frame).toBeGreaterThan(0);
        // CPU time per frame for every mode (C's, ours, the postMessage baseline).
        expect((x as { cpu_ns_per_frame?: number }).cpu_ns_per_frame).toBeGreaterThan(0);
      }
      if (c.length > 0) {
        expect(r.out).toContain("Goals (issue 13)");
        expect(r.out).toMatch(/(met|NOT MET) +device path \(write → Netfront → Netback → listen\) within 4× of C's two-thread ring at 64 B, tx: [\d.]+× C/);
        expect(r.out).toMatch(/(met|NOT MET) +one-thread ring path within 2× of C at 64 B, rx: [\d.]+× C/);
        expect(r.out).toMatch(/(met|NOT MET) +device path with the batch API \(tryWriteMany → listenBatch\) within 4× of C's two-thread ring at 64 B, rx: [\d.]+× C \(bound 4\.00×; ours [\d.]+ \(CPU [\d.]+\)/);
        expect(r.out).not.toContain("postMessage's frame rate");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  test("bad arguments exit 2 with the usage", () => {
    const r = bench(["--runs", "0"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain("--runs 0: need a positive integer");
    expect(bench(["--frobnicate", "1"]).err).toContain("usage: bun run bench");
  });
});
