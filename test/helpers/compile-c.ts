/** Build a C check program with gcc into a temp dir for one test file, and remove it after. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface CompiledC {
  /** The binary's path (valid after build()). */
  binary: string;
  build(): void;
  clean(): void;
}

export function compiledC(gcc: string, source: string, name: string, flags: readonly string[]): CompiledC {
  let dir = "";
  const c: CompiledC = {
    binary: "",
    build() {
      dir = mkdtempSync(join(tmpdir(), `${name}-`));
      c.binary = join(dir, name);
      const cc = Bun.spawnSync([gcc, "-std=gnu11", "-O2", "-Wall", "-Wextra", ...flags, "-o", c.binary, source]);
      const diagnostics = cc.stderr.toString();
      if (cc.exitCode !== 0) throw new Error(`gcc failed on ${source}:\n${diagnostics}`);
      if (diagnostics.trim() !== "") console.warn(`${name}: gcc warnings:\n${diagnostics}`);
    },
    clean() {
      if (dir !== "") rmSync(dir, { recursive: true, force: true });
    },
  };
  return c;
}
