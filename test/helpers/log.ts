/** A pino logger whose lines land in an array, parsed: what a test reads back of the logs. */
import pino, { type Logger } from "pino";

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export function captureLog(level = "info"): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level },
    {
      write(s: string) {
        for (const l of s.split("\n")) if (l) lines.push(JSON.parse(l) as LogLine);
      },
    },
  );
  return { logger, lines };
}
