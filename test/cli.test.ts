/**
 * The bun-xen-net CLI, each command run as its own process: help and exit codes, list --demo
 * (table and JSON), bench --json, and capture, whose pcap file tcpdump reads back byte for byte.
 *
 * The tcpdump check needs tcpdump (apt-get install tcpdump); without it that test is skipped
 * with a warning, except under CI (CI=true), where it fails.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodePcapFile } from "../src/main/pcap.ts";
import { parseMac } from "../src/protocol/xenbus.ts";
import { echoFrame, requestFrame } from "../src/cli/traffic.ts";

// Each test starts CLI processes (a second or more each on a busy 2-vCPU machine); bench runs three.
setDefaultTimeout(60_000);

const MAIN = join(import.meta.dir, "..", "src", "cli", "main.ts");
const TCPDUMP = Bun.which("tcpdump");
const IN_CI = process.env.CI === "true";
const dir = mkdtempSync(join(tmpdir(), "cli-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

if (TCPDUMP === null && !IN_CI) console.warn("cli: the tcpdump read-back is SKIPPED: tcpdump is not installed (apt-get install tcpdump)");

/** Run the CLI with `args`; the simulated hypervisor whatever the machine has. */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([process.execPath, MAIN, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, BUN_XEN_NET_PLATFORM: "sim" } });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** A usage error: exit 2 and exactly one line on stderr, containing `msg`; nothing on stdout. */
async function usageError(args: string[], msg: string): Promise<void> {
  const r = await cli(...args);
  expect({ args, code: r.code }).toEqual({ args, code: 2 });
  expect(r.err.trimEnd().split("\n")).toHaveLength(1);
  expect(r.err).toContain(msg);
  expect(r.out).toBe("");
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const FRONT_MAC = parseMac("00:16:3e:00:00:01") as Uint8Array;

/** The frames of `tcpdump -r file -nn -xx`: each packet's hex dump, joined. */
async function tcpdumpFrames(file: string): Promise<string[]> {
  const p = Bun.spawn([TCPDUMP!, "-r", file, "-nn", "-xx"], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`tcpdump exited with ${code}: ${err}`);
  const frames: string[] = [];
  for (const line of out.split("\n")) {
    const m = /^\s+0x[0-9a-f]{4}:\s+((?:[0-9a-f]{2,4}\s?)+)/.exec(line);
    if (m) frames[frames.length - 1] += m[1]!.replace(/\s+/g, "");
    else if (line.trim() !== "") frames.push("");
  }
  return frames;
}

describe("bun-xen-net CLI", () => {
  test("--help, and --help of each command, exit 0 with their usage", async () => {
    const top = await cli("--help");
    expect(top.code).toBe(0);
    expect(top.out).toContain("usage: bun-xen-net <command>");
    for (const c of ["list", "bench", "capture"]) expect(top.out).toContain(`  ${c} `);
    for (const c of ["list", "bench", "capture"]) {
      const r = await cli(c, "--help");
      expect({ c, code: r.code }).toEqual({ c, code: 0 });
      expect(r.out).toStartWith(`usage: bun-xen-net ${c}`);
    }
  });

  test("usage errors exit 2 with one line naming the problem", async () => {
    await usageError([], "no command");
    await usageError(["frob"], 'unknown command "frob"');
    await usageError(["--frob"], 'unknown option "--frob"');
    await usageError(["list", "--frob"], "list: Unknown option '--frob'");
    await usageError(["list", "extra"], "list: Unexpected argument 'extra'");
    await usageError(["list", "--demo", "0"], "--demo must be an integer in 1..32");
    await usageError(["list", "--demo", "2", "--domid", "5"], "the demo has domains 0..2");
    await usageError(["bench", "--sizes", "64,10"], "--sizes must be a comma-separated list of integers in 60..1514");
    await usageError(["bench", "--duration", "0"], "--duration must be a number of seconds");
    await usageError(["capture"], "--out FILE is required");
    await usageError(["capture", "--out", "x.pcap", "--direction", "up"], "--direction must be tx, rx or both");
    await usageError(["capture", "--out", "x.pcap", "--count", "1.5"], "--count must be an integer");
  });

  test("a command that fails exits 1 with the error's message", async () => {
    const r = await cli("capture", "--out", join(dir, "no", "such", "dir.pcap"));
    expect(r.code).toBe(1);
    expect(r.err).toContain("ENOENT");
  });

  test("list without Xen and without --demo: no vifs, and a hint on stderr", async () => {
    const r = await cli("list");
    expect(r).toMatchObject({ code: 0, out: "no vifs\n" });
    expect(r.err).toContain("--demo N");
    const j = await cli("list", "--json");
    expect(j.code).toBe(0);
    expect(JSON.parse(j.out)).toEqual([]);
  });

  test("list --demo 3: a table of three served vifs, Connected, their MACs and MTUs", async () => {
    const r = await cli("list", "--demo", "3");
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]!.split(/\s+/)).toEqual(["ROLE", "PEER", "DEVID", "STATE", "PEER-STATE", "MAC", "MTU", "QUEUES", "FEATURES"]);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 8))).toEqual([
      ["back", "1", "0", "Connected", "Connected", "00:16:3e:00:01:01", "1500", "1"],
      ["back", "2", "0", "Connected", "Connected", "00:16:3e:00:01:02", "9000", "2"],
      ["back", "3", "0", "Connected", "Connected", "00:16:3e:00:01:03", "1500", "1"],
    ]);
    expect(lines[2]).toContain("mq=2/2");
  });

  test("list --demo --json, as the back end and as a guest", async () => {
    const r = await cli("list", "--demo", "3", "--json");
    expect(r.code).toBe(0);
    const vifs = JSON.parse(r.out) as { role: string; peer: number; devid: number; state: string; peerState: string; mac: string; mtu: number; features: Record<string, unknown> }[];
    expect(vifs.map((v) => [v.role, v.peer, v.devid, v.state, v.peerState, v.mac, v.mtu])).toEqual([
      ["back", 1, 0, "Connected", "Connected", "00:16:3e:00:01:01", 1500],
      ["back", 2, 0, "Connected", "Connected", "00:16:3e:00:01:02", 9000],
      ["back", 3, 0, "Connected", "Connected", "00:16:3e:00:01:03", 1500],
    ]);
    expect(vifs[1]!.features).toEqual({ sg: true, splitEventChannels: true, queues: 2, maxQueues: 2, csumIpv4: true, csumIpv6: true, gsoTcpv4: true, gsoTcpv6: true, rxNotify: true });
    expect(vifs[0]!.features.queues).toBe(1);

    const most = await cli("list", "--demo", "32", "--json");
    expect(most.code).toBe(0);
    const all = JSON.parse(most.out) as { state: string; mac: string }[];
    expect(all.map((v) => `${v.state} ${v.mac}`)).toEqual(Array.from({ length: 32 }, (_, i) => `Connected 00:16:3e:00:01:${(i + 1).toString(16).padStart(2, "0")}`));

    const guest = await cli("list", "--demo", "2", "--domid", "2", "--json");
    expect(guest.code).toBe(0);
    expect(JSON.parse(guest.out)).toMatchObject([{ role: "front", domid: 2, peer: 0, devid: 0, state: "Connected", peerState: "Connected", mac: "00:16:3e:00:01:02", mtu: 9000, path: "/local/domain/2/device/vif/0", peerPath: "/local/domain/0/backend/vif/2/0" }]);
  });

  test("bench --json: frames/s, ns/frame and MB/s for 64 and 1514 B both ways", async () => {
    const r = await cli("bench", "--duration", "0.1", "--json");
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out) as { host: string; rows: { direction: string; size: number; framesPerSec: number; nsPerFrame: number; mbPerSec: number; samples: number }[] };
    expect(doc.host).toBe("sim");
    expect(doc.rows.map((x) => `${x.direction} ${x.size}`).sort()).toEqual(["back->front 1514", "back->front 64", "front->back 1514", "front->back 64"]);
    for (const row of doc.rows) {
      expect(row.framesPerSec).toBeGreaterThan(0);
      expect(row.nsPerFrame).toBeGreaterThan(0);
      expect(row.samples).toBeGreaterThan(0);
      expect(row.framesPerSec * row.nsPerFrame).toBeCloseTo(1e9, -3);
      expect(row.mbPerSec).toBeCloseTo((row.framesPerSec * row.size) / 1e6, 3);
    }
    // --capture: the front end's frames of the whole run, both ways, in a pcap file.
    const file = join(dir, "bench.pcap");
    const c = await cli("bench", "--duration", "0.05", "--sizes", "64", "--capture", file, "--json");
    expect(c.code).toBe(0);
    const capture = (JSON.parse(c.out) as { capture: { file: string; frames: number; tx: number; rx: number; dropped: number } }).capture;
    expect(capture.file).toBe(file);
    expect(capture.tx).toBeGreaterThan(0);
    expect(capture.rx).toBeGreaterThan(0);
    const records = decodePcapFile(readFileSync(file)).records;
    expect(records).toHaveLength(capture.frames);
    expect(records.every((r) => r.origLen === 64 && r.inclLen === 64)).toBe(true);
    const table = await cli("bench", "--duration", "0.05", "--sizes", "128");
    expect(table.code).toBe(0);
    expect(table.out).toContain("DIRECTION");
    expect(table.out.trimEnd().split("\n")).toHaveLength(4); // the setting, the header, two rows
  });

  test("capture --count: the pcap file holds the datagrams and their echoes, in order", async () => {
    const file = join(dir, "both.pcap");
    const r = await cli("capture", "--out", file, "--count", "10", "--size", "200", "--json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ file, frames: 10, tx: 5, rx: 5, dropped: 0 });
    const want = [0, 1, 2, 3, 4].flatMap((seq) => {
      const req = requestFrame(seq, 200, FRONT_MAC);
      return [hex(req), hex(echoFrame(req))];
    });
    const { header, records } = decodePcapFile(readFileSync(file));
    expect(header).toMatchObject({ versionMajor: 2, versionMinor: 4, snaplen: 65535, linktype: 1 });
    expect(records.map((x) => hex(x.data))).toEqual(want);

    const txOnly = join(dir, "tx.pcap");
    const t = await cli("capture", "--out", txOnly, "--count", "3", "--direction", "tx");
    expect(t.code).toBe(0);
    expect(t.out).toContain("3 frames (3 sent, 0 received)");
    expect(decodePcapFile(readFileSync(txOnly)).records.map((x) => hex(x.data))).toEqual([0, 1, 2].map((s) => hex(requestFrame(s, 98, FRONT_MAC))));
  });

  if (TCPDUMP === null && IN_CI) {
    test("tcpdump reads the capture", () => {
      throw new Error("CI=true but tcpdump is not installed: CI must install it (.ci/run) so the pcap file is checked by a real reader");
    });
  } else {
    test.skipIf(TCPDUMP === null)("tcpdump reads the capture: every frame's bytes as written", async () => {
      const file = join(dir, "tcpdump.pcap");
      const r = await cli("capture", "--out", file, "--count", "8", "--size", "1514");
      expect(r.code).toBe(0);
      const want = [0, 1, 2, 3].flatMap((seq) => {
        const req = requestFrame(seq, 1514, FRONT_MAC);
        return [hex(req), hex(echoFrame(req))];
      });
      expect(await tcpdumpFrames(file)).toEqual(want);
      // And tcpdump understood them as what they are.
      const p = Bun.spawn([TCPDUMP!, "-r", file, "-nn"], { stdout: "pipe", stderr: "pipe" });
      const text = await new Response(p.stdout).text();
      await p.exited;
      expect(text.trimEnd().split("\n")[0]).toContain("IP 10.0.0.1.40000 > 10.0.0.2.7: UDP, length 1472");
      expect(text.trimEnd().split("\n")[1]).toContain("IP 10.0.0.2.7 > 10.0.0.1.40000: UDP, length 1472");
    });
  }
});
