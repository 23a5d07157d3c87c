/**
 * The package as users get it: the tarball from `npm pack`, added with `bun add` to a new,
 * empty Bun project, typechecked there (types must be real: a wrong type must fail), and the
 * README's usage example run there.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(import.meta.dir, "..");
const work = mkdtempSync(join(tmpdir(), "bun-xen-net-install-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function sh(cmd: string[], cwd: string, env: Record<string, string> = {}) {
  const r = Bun.spawnSync(cmd, { cwd, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** The first ```ts block after "## Usage" in the README. */
function readmeExample(): string {
  const md = readFileSync(join(repo, "README.md"), "utf8");
  const m = /## Usage[\s\S]*?```ts\n([\s\S]*?)```/.exec(md);
  if (!m) throw new Error("README has no ```ts block under ## Usage");
  return m[1]!;
}

test(
  "npm pack → bun add in an empty project → typechecks → the README example runs",
  () => {
    const pack = sh(["npm", "pack", "--pack-destination", work, "--silent"], repo);
    expect(pack.code).toBe(0);
    const tarball = readdirSync(work).find((f) => f.endsWith(".tgz"));
    expect(tarball).toBeDefined();

    const app = join(work, "app");
    sh(["mkdir", "-p", app], work);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    const add = sh([process.execPath, "add", join(work, tarball!)], app);
    expect(add.code, add.err).toBe(0);
    const addTypes = sh([process.execPath, "add", "-d", "bun-types@1.4.5"], app);
    expect(addTypes.code, addTypes.err).toBe(0);

    writeFileSync(join(app, "example.ts"), readmeExample());
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ESNext",
          module: "ESNext",
          moduleResolution: "bundler",
          types: ["bun-types"],
          strict: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: true,
        },
        files: ["example.ts"],
      }),
    );
    const tsc = join(repo, "node_modules", "typescript", "bin", "tsc");
    const typed = sh(["node", tsc, "-p", app], app);
    expect(typed.code, typed.out + typed.err).toBe(0);

    // Types are real, not `any`: a misuse must not typecheck.
    writeFileSync(join(app, "wrong.ts"), 'import { Netfront } from "bun-xen-net";\nexport const n: string = (null as unknown as Netfront).mtu;\n');
    const wrongCfg = JSON.parse(readFileSync(join(app, "tsconfig.json"), "utf8"));
    wrongCfg.files = ["wrong.ts"];
    writeFileSync(join(app, "tsconfig.wrong.json"), JSON.stringify(wrongCfg));
    const wrong = sh(["node", tsc, "-p", join(app, "tsconfig.wrong.json")], app);
    expect(wrong.code).not.toBe(0);
    expect(wrong.out).toContain("Type 'number' is not assignable to type 'string'");

    const ran = sh([process.execPath, "example.ts"], app, { BUN_XEN_NET_LOG: "warn" });
    expect(ran.code, ran.err).toBe(0);
    expect(ran.out).toContain("backend got 60 bytes, checksum blank: true");
    expect(ran.out).toContain("frontend got 60 bytes");
    expect(ran.out).toContain("done");
  },
  180_000,
);
