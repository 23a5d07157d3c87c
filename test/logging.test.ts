/** The package's default logging, as a user's process sees it: quiet, on stderr, well-formed lines. */
import { expect, test } from "bun:test";
import { resolve } from "node:path";

const fixture = resolve(import.meta.dir, "fixtures/log-example.ts");

function run(env: Record<string, string | undefined>) {
  const e: Record<string, string | undefined> = { ...process.env, ...env };
  if (env.BUN_XEN_NET_LOG === undefined) delete e.BUN_XEN_NET_LOG;
  const p = Bun.spawnSync([process.execPath, fixture], { env: e, stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

/** The keys of a JSON object's top level, in order, duplicates kept (JSON.parse would hide them). */
function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(line.slice(i, j + 1)));
      expectKey = false;
      i = j;
    } else if (c === "{" || c === "[") {
      depth++;
      expectKey = c === "{" && depth === 1;
    } else if (c === "}" || c === "]") depth--;
    else if (c === "," && depth === 1) expectKey = true;
  }
  return keys;
}

test("by default a working vif prints nothing: stdout is the application's, and only warnings would go to stderr", () => {
  const r = run({ BUN_XEN_NET_LOG: undefined });
  expect(r.code, r.err).toBe(0);
  expect(r.out).toBe("done\n");
  expect(r.err).toBe("");
});

test("BUN_XEN_NET_LOG=info: connection events on stderr, one JSON object each, MACs as strings, no key twice", () => {
  const r = run({ BUN_XEN_NET_LOG: "info" });
  expect(r.code, r.err).toBe(0);
  expect(r.out).toBe("done\n");
  const lines = r.err.trim().split("\n");
  expect(lines.length).toBeGreaterThanOrEqual(4);
  const objs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(objs.filter((o) => o.msg === "connected").length).toBe(2);
  expect(objs.filter((o) => o.msg === "disconnected").length).toBe(2);
  for (const [i, o] of objs.entries()) {
    const keys = topLevelKeys(lines[i]!);
    expect(keys.length, lines[i]).toBe(new Set(keys).size);
    for (const v of Object.values(o)) if (typeof v === "object" && v !== null) expect(Object.keys(v)).not.toContain("0");
    for (const k of ["mac", "peerMac"]) if (k in o) expect(o[k]).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  }
  expect(objs.some((o) => "mac" in o || "peerMac" in o)).toBe(true);
});

test("a level that is not one falls back to the default instead of silencing warnings", () => {
  const r = run({ BUN_XEN_NET_LOG: "verbose!" });
  expect(r.code, r.err).toBe(0);
  expect(r.err).toBe("");
});
