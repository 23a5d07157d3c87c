/**
 * The package as users get it: the tarball from `npm pack` (whose prepack builds the .d.ts
 * files), added with `bun add` to a project made by `bun init`, typechecked there under the
 * compiler options consumers use (types must be real: a wrong type must fail), and the README's
 * usage example run there.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(import.meta.dir, "..");
const work = mkdtempSync(join(tmpdir(), "bun-xen-net-install-"));
const app = join(work, "app");
/** The repo's TypeScript (6); `bun init` brings the app its own (7, a peer dependency); `bun check` is Bun's. */
const tsc6 = ["node", join(repo, "node_modules", "typescript", "bin", "tsc")];
const tsc7 = [join(app, "node_modules", ".bin", "tsc")];
const bunCheck = [process.execPath, "check", "--no-pretty"];
afterAll(() => rmSync(work, { recursive: true, force: true }));

function sh(cmd: string[], cwd: string, env: Record<string, string> = {}) {
  const r = Bun.spawnSync(cmd, { cwd, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** Typecheck (or build) the app with `tool` and tsconfig `cfg`; returns what it printed. */
function check(tool: string[], cfg: string, extra: string[] = []) {
  const r = sh([...tool, "-p", join(app, cfg), ...extra], app);
  return { ...r, all: r.out + r.err };
}

/** A tsconfig in the app that extends bun init's own with `options` and checks `files`. */
function writeConfig(name: string, files: string[], options: Record<string, unknown> = {}) {
  writeFileSync(join(app, name), JSON.stringify({ extends: "./tsconfig.json", compilerOptions: options, files }));
}

/** The first ```ts block after "## Usage" in the README. */
function readmeExample(): string {
  const md = readFileSync(join(repo, "README.md"), "utf8");
  const m = /## Usage[\s\S]*?```ts\n([\s\S]*?)```/.exec(md);
  if (!m) throw new Error("README has no ```ts block under ## Usage");
  return m[1]!;
}

/**
 * The public types a user touches, from every entry point. Each `@ts-expect-error` is a misuse
 * that must fail: were a type `any`, the directive would be unused, itself an error.
 * Everything is used or exported, so noUnusedLocals has nothing to say.
 */
const TYPES_TS = `
import {
  Netback, Netfront, NetDevice, NetError, SimHypervisor, VifServer, createVif,
  type FrameInfo, type NetErrorCode, type NetStats, type NetfrontOptions, type NetbackOptions,
  type ServeAllOptions, type VifEvent, type WriteOptions,
} from "bun-xen-net";
import { decodeTxRequest, type TxRequest } from "bun-xen-net/protocol";
import { SimHypervisor as SubpathSim, type SimOptions } from "bun-xen-net/platform/sim";
import { XenPlatform, createXenPlatform } from "bun-xen-net/platform/xen";

export async function use(hv: SimHypervisor, server: VifServer): Promise<NetStats> {
  const guest: number = hv.createDomain();
  await createVif(hv.platform(0).xenstore, { frontDomid: guest, backDomid: 0, devid: 0, mac: "00:16:3e:00:00:01" });
  const front: Netfront = await Netfront.connect({ platform: hv.platform(guest) });
  const back: Netback = await Netback.serve({ platform: hv.platform(0), frontendDomid: guest });
  const dev: NetDevice = back;
  dev.listen((frame: Uint8Array, info: FrameInfo) => void [frame.length, info.csumBlank]);
  const mtu: number = front.mtu;
  // @ts-expect-error the MTU is a number
  const mtuText: string = front.mtu;
  const served: ReadonlyMap<string, Netback> = server.vifs;
  for await (const e of server) {
    const ev: VifEvent = e;
    if (ev.type === "added") void ev.netback.mac;
    // @ts-expect-error no such event
    if (ev.type === "renamed") void 0;
  }
  void [mtu, mtuText, served];
  return front.stats();
}

export const code: NetErrorCode = new NetError("BAD_ARGUMENT", "timeoutMs").code;
// @ts-expect-error not a NetErrorCode
export const badCode: NetErrorCode = "NOT_A_CODE";
export const frontOpts: NetfrontOptions = { devid: 0, timeoutMs: 1000, reconnect: true };
// @ts-expect-error timeoutMs is a number of ms
export const badFrontOpts: NetfrontOptions = { timeoutMs: "1s" };
// @ts-expect-error a Netback needs its frontendDomid
export const badBackOpts: NetbackOptions = { devid: 0 };
export const serveAll: ServeAllOptions = {};
export const writeOpts: WriteOptions = { csumBlank: true };
// @ts-expect-error csumBlank is a boolean
export const badWriteOpts: WriteOptions = { csumBlank: 1 };
export const rxPackets = (s: NetStats): number => s.rxPackets;
// @ts-expect-error NetStats has no such counter
export const noCounter = (s: NetStats): number => s.rxPacketz;
export const simOpts: SimOptions = {};
export const sameSim: typeof SimHypervisor = SubpathSim;
export const tx = (v: DataView): TxRequest => decodeTxRequest(v, 0);
// @ts-expect-error decodeTxRequest wants a DataView
export const badTx = decodeTxRequest(new Uint8Array(12), 0);
export const xen: () => Promise<XenPlatform> = createXenPlatform;
`;

/** (b)'s consumer library: it re-exports types and classes of the package, and emits a .d.ts. */
const LIB_TS = `
import { Netfront } from "bun-xen-net";
export type { FrameInfo, NetStats, NetErrorCode } from "bun-xen-net";
export { Netfront, NetError } from "bun-xen-net";
export function mtuOf(dev: Netfront) {
  return dev.mtu;
}
`;

/** No error at all, in the package's files or the app's, whichever tool printed it. */
function expectClean(r: { code: number | null; all: string }) {
  expect(r.all).not.toMatch(/error TS\d+/);
  expect(r.code, r.all).toBe(0);
}

beforeAll(() => {
  const pack = sh(["npm", "pack", "--pack-destination", work, "--silent"], repo);
  expect(pack.code, pack.err).toBe(0);
  const tarball = readdirSync(work).find((f) => f.endsWith(".tgz"));
  expect(tarball).toBeDefined();

  mkdirSync(app);
  // The project `bun init` makes (tsconfig, @types/bun, typescript as a peer), as users start.
  const init = sh([process.execPath, "init", "-y"], app);
  expect(init.code, init.err).toBe(0);
  const add = sh([process.execPath, "add", join(work, tarball!)], app);
  expect(add.code, add.err).toBe(0);
  const addTypes = sh([process.execPath, "add", "-d", "bun-types@1.4.5"], app);
  expect(addTypes.code, addTypes.err).toBe(0);

  writeFileSync(join(app, "example.ts"), readmeExample());
  writeFileSync(join(app, "types.ts"), TYPES_TS);
  writeFileSync(join(app, "lib.ts"), LIB_TS);
}, 180_000);

test("the tarball carries a declaration file for each entry point", () => {
  const pkg = join(app, "node_modules", "bun-xen-net");
  for (const d of ["main/index", "protocol/index", "platform/sim/index", "platform/xen/platform"]) {
    expect(existsSync(join(pkg, "dist", "types", `${d}.d.ts`)), d).toBe(true);
  }
});

test("typechecks as before (bun-types, allowImportingTsExtensions), a wrong type fails, the README example runs", () => {
  const legacy = {
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
  };
  // Types are real, not `any`: a misuse must not typecheck, and it is the only error there is
  // (one run of tsc for both: it is the slow part of this file).
  writeFileSync(join(app, "wrong.ts"), 'import { Netfront } from "bun-xen-net";\nexport const n: string = (null as unknown as Netfront).mtu;\n');
  writeFileSync(join(app, "tsconfig.legacy.json"), JSON.stringify({ ...legacy, files: ["example.ts", "types.ts", "wrong.ts"] }));
  const r = check(tsc6, "tsconfig.legacy.json");
  expect(r.code).not.toBe(0);
  expect(r.all.trim()).toBe("wrong.ts(2,14): error TS2322: Type 'number' is not assignable to type 'string'.");

  const ran = sh([process.execPath, "example.ts"], app, { BUN_XEN_NET_LOG: "warn" });
  expect(ran.code, ran.err).toBe(0);
  expect(ran.out).toContain("backend got 60 bytes, checksum blank: true");
  expect(ran.out).toContain("frontend got 60 bytes");
  expect(ran.out).toContain("done");
}, 60_000);

test("(a) typechecks under the tsconfig bun init writes, with bun check and tsc", () => {
  const cfg = JSON.parse(
    readFileSync(join(app, "tsconfig.json"), "utf8").replace(/^\s*\/\/.*$/gm, ""),
  ) as { compilerOptions: Record<string, unknown> };
  // What makes it bun init's: bundler resolution, .ts imports allowed, no emit.
  expect(cfg.compilerOptions).toMatchObject({ moduleResolution: "bundler", allowImportingTsExtensions: true, noEmit: true });
  writeConfig("tsconfig.a.json", ["example.ts", "types.ts"]);
  expectClean(check(bunCheck, "tsconfig.a.json"));
  expectClean(check(tsc7, "tsconfig.a.json"));
}, 60_000);

test("(b) allowImportingTsExtensions off, declaration: true: a consumer library builds and its .d.ts re-exports ours", () => {
  writeConfig("tsconfig.b.json", ["example.ts", "types.ts", "lib.ts"], {
    allowImportingTsExtensions: false,
    noEmit: false,
    declaration: true,
  });
  for (const [tool, out] of [[tsc6, "out6"], [tsc7, "out7"]] as const) {
    expectClean(check(tool, "tsconfig.b.json", ["--outDir", join(app, out)]));
    const dts = readFileSync(join(app, out, "lib.d.ts"), "utf8");
    expect(dts).toContain('export type { FrameInfo, NetStats, NetErrorCode } from "bun-xen-net";');
    expect(dts).toContain("export declare function mtuOf(dev: Netfront): number;");
    expect(existsSync(join(app, out, "lib.js"))).toBe(true);
  }
}, 60_000);

test("(c) skipLibCheck off and the strict options on: our declarations are checked, our sources are not read", () => {
  writeConfig("tsconfig.c.json", ["example.ts", "types.ts", "lib.ts"], {
    skipLibCheck: false,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    // bun init's "stricter flags", which it writes switched off.
    noUnusedLocals: true,
    noUnusedParameters: true,
    noPropertyAccessFromIndexSignature: true,
  });
  // TypeScript 7 here: TypeScript 6 takes ~10 s of CPU to check every library without skipLibCheck.
  const r = check(tsc7, "tsconfig.c.json", ["--listFiles"]);
  expectClean(r);
  const ours = r.out.split("\n").filter((f) => f.includes("node_modules/bun-xen-net/"));
  expect(ours).toContain(join(app, "node_modules/bun-xen-net/dist/types/main/index.d.ts"));
  expect(ours).toContain(join(app, "node_modules/bun-xen-net/dist/types/platform/xen/platform.d.ts"));
  expect(ours.filter((f) => !f.endsWith(".d.ts"))).toEqual([]);
  expectClean(check(bunCheck, "tsconfig.c.json"));
}, 60_000);
