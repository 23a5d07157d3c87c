/**
 * What every command shares: strict option parsing with util.parseArgs, and the usage error
 * that main.ts turns into exit code 2 and one line on stderr.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A command line we cannot run: exit 2, the message on one line. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** util.parseArgs, strict, no positionals; its errors become UsageError naming the command. */
export function parse<O extends Options>(command: string, argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, options: { help: { type: "boolean", short: "h" }, ...options }, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message.split("\n")[0]}`);
  }
}

/** An option's integer value in [min, max], or the default when absent. */
export function intOption(command: string, name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${command}: --${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** A positive number of seconds (fractions allowed), or the default when absent. */
export function secondsOption(command: string, name: string, v: string | undefined, dflt: number, max = 3600): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!/^[0-9]*\.?[0-9]+$/.test(v) || !(n > 0) || n > max) throw new UsageError(`${command}: --${name} must be a number of seconds in (0, ${max}], got ${JSON.stringify(v)}`);
  return n;
}

/** A comma-separated list of integers in [min, max]. */
export function intListOption(command: string, name: string, v: string | undefined, dflt: number[], min: number, max: number): number[] {
  if (v === undefined) return dflt;
  const parts = v.split(",");
  if (parts.some((p) => !/^[0-9]+$/.test(p) || Number(p) < min || Number(p) > max)) {
    throw new UsageError(`${command}: --${name} must be a comma-separated list of integers in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return parts.map(Number);
}
