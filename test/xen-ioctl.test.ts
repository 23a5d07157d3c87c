/**
 * src/ffi/xen-ioctl.ts against the kernel's own headers, and src/ffi/libc.ts on this machine.
 *
 * test/c/uapi-check.c is compiled with gcc against <xen/evtchn.h>, <xen/gntalloc.h>,
 * <xen/gntdev.h> (linux-libc-dev) and <xen/grant_table.h> (libxen-dev): every sizeof,
 * offsetof, ioctl request number and constant it prints must equal ours, and each struct it
 * fills with given field values (extremes included) must have exactly the bytes our encoder
 * writes into a dirty buffer, and decode back to those values with our decoders.
 *
 * Without gcc or the headers the C half is skipped with a warning, except under CI (CI=true),
 * where that is a failure. The libc tests need no Xen: memfd stands in for a device.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { compiledC } from "./helpers/compile-c.ts";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as libc from "../src/ffi/libc.ts";
import { ErrnoError } from "../src/ffi/errno.ts";
import {
  EVTCHN_BIND_INTERDOMAIN,
  EVTCHN_BIND_UNBOUND_PORT,
  EVTCHN_NOTIFY,
  EVTCHN_UNBIND,
  GNTALLOC_ALLOC_GREF,
  GNTALLOC_DEALLOC_GREF,
  GNTALLOC_FLAG_WRITABLE,
  GNTCOPY_DEST_GREF,
  GNTCOPY_SOURCE_GREF,
  GNTDEV_GRANT_COPY,
  GNTDEV_GRANT_REF,
  GNTDEV_MAP_GRANT_REF,
  GNTDEV_UNMAP_GRANT_REF,
  GRANT_COPY_SEGMENT,
  IOCTL_EVTCHN_BIND_INTERDOMAIN,
  IOCTL_EVTCHN_BIND_UNBOUND_PORT,
  IOCTL_EVTCHN_NOTIFY,
  IOCTL_EVTCHN_RESET,
  IOCTL_EVTCHN_UNBIND,
  IOCTL_GNTALLOC_ALLOC_GREF,
  IOCTL_GNTALLOC_DEALLOC_GREF,
  IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
  IOCTL_GNTDEV_GRANT_COPY,
  IOCTL_GNTDEV_MAP_GRANT_REF,
  IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
  IOCTL_GNTDEV_UNMAP_GRANT_REF,
  IoctlBuffer,
  UNMAP_NOTIFY,
  UNMAP_NOTIFY_CLEAR_BYTE,
  UNMAP_NOTIFY_SEND_EVENT,
  copySegmentAt,
  copyStatus,
  decodeCopySegment,
  decodeEvtchnBindInterdomain,
  decodeEvtchnBindUnboundPort,
  decodeEvtchnPort,
  decodeGntallocAllocGref,
  decodeGntallocDeallocGref,
  decodeGntdevGrantCopy,
  decodeGntdevMapGrantRef,
  decodeGntdevUnmapGrantRef,
  decodeUnmapNotify,
  encodeCopySegment,
  encodeEvtchnBindInterdomain,
  encodeEvtchnBindUnboundPort,
  encodeEvtchnPort,
  encodeGntallocAllocGref,
  encodeGntallocDeallocGref,
  encodeGntdevGrantCopy,
  encodeGntdevMapGrantRef,
  encodeGntdevUnmapGrantRef,
  encodeUnmapNotify,
  gntallocAllocGrefSize,
  gntdevMapGrantRefSize,
  setU64,
  u64ToNumber,
  type CopySegmentSide,
} from "../src/ffi/xen-ioctl.ts";
import { GNTST, PAGE_SIZE, PlatformError } from "../src/platform/types.ts";
import { XenEventChannels } from "../src/platform/xen/event-channels.ts";
import { DEFAULT_XEN_DEVICES, XenPlatform, openXenPlatform } from "../src/platform/xen/platform.ts";

// ---------------------------------------------------------------------------------------
// Prerequisites and the C program
// ---------------------------------------------------------------------------------------

const C_SOURCE = join(import.meta.dir, "c", "uapi-check.c");
const HEADERS: readonly [string, string][] = [
  ["/usr/include/xen/evtchn.h", "linux-libc-dev"],
  ["/usr/include/xen/gntalloc.h", "linux-libc-dev"],
  ["/usr/include/xen/gntdev.h", "linux-libc-dev"],
  ["/usr/include/xen/grant_table.h", "libxen-dev"],
  ["/usr/include/xen/io/xs_wire.h", "libxen-dev"],
];
const GCC = Bun.which("gcc");
const missing = [
  GCC === null ? "gcc (not on PATH)" : "",
  ...HEADERS.map(([h, pkg]) => (existsSync(h) ? "" : `${h} (apt-get install ${pkg})`)),
].filter((m) => m !== "");
const available = missing.length === 0;
const IN_CI = process.env.CI === "true";

if (!available && !IN_CI) {
  console.warn(`xen-ioctl: C cross-check SKIPPED, missing ${missing.join(" and ")}; the ioctl structs were not checked against the kernel headers`);
}

let binary = "";

async function runC(mode: "layout", input: string): Promise<string[]> {
  const proc = Bun.spawn([binary, mode], { stdin: new TextEncoder().encode(input), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`uapi-check ${mode} exited with ${code}: ${err}`);
  const l = out.split("\n");
  if (l[l.length - 1] === "") l.pop();
  return l;
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += (b < 16 ? "0" : "") + b.toString(16);
  return s;
}

// ---------------------------------------------------------------------------------------
// Our layout, keyed as uapi-check prints it
// ---------------------------------------------------------------------------------------

function tsLayout(): Record<string, number> {
  const r: Record<string, number> = {};
  const struct = (name: string, layout: Record<string, number>, fields: Record<string, string>) => {
    r[`size.${name}`] = layout.size ?? -1;
    for (const [ts, c] of Object.entries(fields)) r[`off.${name}.${c}`] = layout[ts] ?? -1;
  };
  struct("ioctl_evtchn_bind_interdomain", EVTCHN_BIND_INTERDOMAIN, { remoteDomain: "remote_domain", remotePort: "remote_port" });
  struct("ioctl_evtchn_bind_unbound_port", EVTCHN_BIND_UNBOUND_PORT, { remoteDomain: "remote_domain" });
  struct("ioctl_evtchn_unbind", EVTCHN_UNBIND, { port: "port" });
  struct("ioctl_evtchn_notify", EVTCHN_NOTIFY, { port: "port" });
  struct("ioctl_gntalloc_alloc_gref", GNTALLOC_ALLOC_GREF, { domid: "domid", flags: "flags", count: "count", index: "index", grefIds: "gref_ids" });
  struct("ioctl_gntalloc_dealloc_gref", GNTALLOC_DEALLOC_GREF, { index: "index", count: "count" });
  struct("ioctl_gntalloc_unmap_notify", UNMAP_NOTIFY, { index: "index", action: "action", eventChannelPort: "event_channel_port" });
  struct("ioctl_gntdev_unmap_notify", UNMAP_NOTIFY, { index: "index", action: "action", eventChannelPort: "event_channel_port" });
  struct("ioctl_gntdev_grant_ref", GNTDEV_GRANT_REF, { domid: "domid", ref: "ref" });
  struct("ioctl_gntdev_map_grant_ref", GNTDEV_MAP_GRANT_REF, { count: "count", pad: "pad", index: "index", refs: "refs" });
  struct("ioctl_gntdev_unmap_grant_ref", GNTDEV_UNMAP_GRANT_REF, { index: "index", count: "count", pad: "pad" });
  struct("ioctl_gntdev_grant_copy", GNTDEV_GRANT_COPY, { count: "count", segments: "segments" });
  const S = GRANT_COPY_SEGMENT;
  struct("gntdev_grant_copy_segment", S, { source: "source", dest: "dest", len: "len", flags: "flags", status: "status" });
  for (const side of ["source", "dest"] as const) {
    r[`off.gntdev_grant_copy_segment.${side}.virt`] = S[side];
    r[`off.gntdev_grant_copy_segment.${side}.foreign.ref`] = S[side] + S.foreignRef;
    r[`off.gntdev_grant_copy_segment.${side}.foreign.offset`] = S[side] + S.foreignOffset;
    r[`off.gntdev_grant_copy_segment.${side}.foreign.domid`] = S[side] + S.foreignDomid;
  }
  Object.assign(r, {
    "ioctl.IOCTL_EVTCHN_BIND_INTERDOMAIN": IOCTL_EVTCHN_BIND_INTERDOMAIN,
    "ioctl.IOCTL_EVTCHN_BIND_UNBOUND_PORT": IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    "ioctl.IOCTL_EVTCHN_UNBIND": IOCTL_EVTCHN_UNBIND,
    "ioctl.IOCTL_EVTCHN_NOTIFY": IOCTL_EVTCHN_NOTIFY,
    "ioctl.IOCTL_EVTCHN_RESET": IOCTL_EVTCHN_RESET,
    "ioctl.IOCTL_GNTALLOC_ALLOC_GREF": IOCTL_GNTALLOC_ALLOC_GREF,
    "ioctl.IOCTL_GNTALLOC_DEALLOC_GREF": IOCTL_GNTALLOC_DEALLOC_GREF,
    "ioctl.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY": IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
    "ioctl.IOCTL_GNTDEV_MAP_GRANT_REF": IOCTL_GNTDEV_MAP_GRANT_REF,
    "ioctl.IOCTL_GNTDEV_UNMAP_GRANT_REF": IOCTL_GNTDEV_UNMAP_GRANT_REF,
    "ioctl.IOCTL_GNTDEV_SET_UNMAP_NOTIFY": IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
    "ioctl.IOCTL_GNTDEV_GRANT_COPY": IOCTL_GNTDEV_GRANT_COPY,
    "const.GNTALLOC_FLAG_WRITABLE": GNTALLOC_FLAG_WRITABLE,
    "const.UNMAP_NOTIFY_CLEAR_BYTE": UNMAP_NOTIFY_CLEAR_BYTE,
    "const.UNMAP_NOTIFY_SEND_EVENT": UNMAP_NOTIFY_SEND_EVENT,
    "const.GNTCOPY_source_gref": GNTCOPY_SOURCE_GREF,
    "const.GNTCOPY_dest_gref": GNTCOPY_DEST_GREF,
    "const.GNTST_okay": GNTST.okay,
    "const.GNTST_general_error": GNTST.generalError,
    "const.GNTST_bad_domain": GNTST.badDomain,
    "const.GNTST_bad_gntref": GNTST.badGntref,
    "const.GNTST_bad_handle": GNTST.badHandle,
    "const.GNTST_bad_virt_addr": GNTST.badVirtAddr,
    "const.GNTST_bad_dev_addr": GNTST.badDevAddr,
    "const.GNTST_no_device_space": GNTST.noDeviceSpace,
    "const.GNTST_permission_denied": GNTST.permissionDenied,
    "const.GNTST_bad_page": GNTST.badPage,
    "const.GNTST_bad_copy_arg": GNTST.badCopyArg,
  });
  return r;
}

// ---------------------------------------------------------------------------------------
// Vectors: every field of a struct (outputs included), in declaration order
// ---------------------------------------------------------------------------------------

type Side = { virt: bigint } | { ref: number; offset: number; domid: number };
type Vector =
  | { s: "evtchn_bind_interdomain"; remoteDomain: number; remotePort: number }
  | { s: "evtchn_bind_unbound_port"; remoteDomain: number }
  | { s: "evtchn_unbind" | "evtchn_notify"; port: number }
  | { s: "gntalloc_alloc_gref"; domid: number; flags: number; index: bigint; grefIds: number[] }
  | { s: "gntalloc_dealloc_gref"; index: bigint; count: number }
  | { s: "gntalloc_unmap_notify" | "gntdev_unmap_notify"; index: bigint; action: number; eventChannelPort: number }
  | { s: "gntdev_map_grant_ref"; pad: number; index: bigint; refs: { domid: number; ref: number }[] }
  | { s: "gntdev_unmap_grant_ref"; index: bigint; count: number; pad: number }
  | { s: "gntdev_grant_copy"; count: number; segments: bigint }
  | { s: "gntdev_grant_copy_segment"; source: Side; dest: Side; len: number; flags: number; status: number };

const U16 = 0xffff;
const U32 = 0xffff_ffff;
const U64 = 0xffff_ffff_ffff_ffffn;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

const VECTORS: Vector[] = [];
for (const [a, b] of [[0, 0], [U32, U32], [0x01020304, 0x05060708], [1, U32 - 1], [0x7fef, 1023]] as const) {
  VECTORS.push({ s: "evtchn_bind_interdomain", remoteDomain: a, remotePort: b });
  VECTORS.push({ s: "evtchn_bind_unbound_port", remoteDomain: a });
  VECTORS.push({ s: "evtchn_unbind", port: b });
  VECTORS.push({ s: "evtchn_notify", port: a });
}
const INDICES = [0n, U64, 0x0102030405060708n, SAFE, SAFE + 1n, 4096n * 12345n];
for (const index of INDICES) {
  VECTORS.push({ s: "gntalloc_dealloc_gref", index, count: Number(index & 0xffffffffn) });
  VECTORS.push({ s: "gntalloc_unmap_notify", index, action: UNMAP_NOTIFY_SEND_EVENT | UNMAP_NOTIFY_CLEAR_BYTE, eventChannelPort: 0x0a0b0c0d });
  VECTORS.push({ s: "gntdev_unmap_notify", index, action: U32, eventChannelPort: U32 });
  VECTORS.push({ s: "gntdev_unmap_grant_ref", index, count: 0x11223344, pad: U32 });
  VECTORS.push({ s: "gntdev_grant_copy", count: U32, segments: index });
}
for (const n of [0, 1, 2, 3, 32, 256]) {
  const grefIds = Array.from({ length: n }, (_, i) => (i === n - 1 ? U32 : (0x01000000 * (i + 1) + i) >>> 0));
  VECTORS.push({ s: "gntalloc_alloc_gref", domid: n % 2 === 0 ? U16 : 0x0102, flags: n % 2 === 0 ? GNTALLOC_FLAG_WRITABLE : U16, index: INDICES[n % INDICES.length] ?? 0n, grefIds });
  const refs = Array.from({ length: n }, (_, i) => ({ domid: i === 0 ? U32 : 0x0a000000 + i, ref: i === n - 1 ? U32 : (0x00b00000 + 7 * i) >>> 0 }));
  VECTORS.push({ s: "gntdev_map_grant_ref", pad: n === 3 ? U32 : 0, index: INDICES[(n + 1) % INDICES.length] ?? 0n, refs });
}
const SIDES: Side[] = [
  { virt: 0n },
  { virt: U64 },
  { virt: 0x00007f0102030405n },
  { virt: SAFE },
  { ref: 0, offset: 0, domid: 0 },
  { ref: U32, offset: U16, domid: U16 },
  { ref: 0x01020304, offset: 4095, domid: 0x7ff0 },
];
for (const source of SIDES) {
  for (const dest of SIDES) {
    VECTORS.push({ s: "gntdev_grant_copy_segment", source, dest, len: 4096, flags: 0, status: 0 });
  }
}
VECTORS.push({ s: "gntdev_grant_copy_segment", source: SIDES[6] as Side, dest: SIDES[2] as Side, len: U16, flags: U16, status: -32768 });
VECTORS.push({ s: "gntdev_grant_copy_segment", source: SIDES[1] as Side, dest: SIDES[5] as Side, len: 0, flags: 3, status: 32767 });
VECTORS.push({ s: "gntdev_grant_copy_segment", source: SIDES[1] as Side, dest: SIDES[5] as Side, len: 1, flags: 2, status: GNTST.badCopyArg });

function sideText(x: Side): string {
  return "virt" in x ? `v ${x.virt}` : `f ${x.ref} ${x.offset} ${x.domid}`;
}

/** The line uapi-check reads for a vector. */
function cLine(v: Vector): string {
  switch (v.s) {
    case "evtchn_bind_interdomain":
      return `${v.s} ${v.remoteDomain} ${v.remotePort}`;
    case "evtchn_bind_unbound_port":
      return `${v.s} ${v.remoteDomain}`;
    case "evtchn_unbind":
    case "evtchn_notify":
      return `${v.s} ${v.port}`;
    case "gntalloc_alloc_gref":
      return [v.s, v.domid, v.flags, v.grefIds.length, v.index, ...v.grefIds].join(" ");
    case "gntalloc_dealloc_gref":
      return `${v.s} ${v.index} ${v.count}`;
    case "gntalloc_unmap_notify":
    case "gntdev_unmap_notify":
      return `${v.s} ${v.index} ${v.action} ${v.eventChannelPort}`;
    case "gntdev_map_grant_ref":
      return [v.s, v.refs.length, v.pad, v.index, ...v.refs.flatMap((r) => [r.domid, r.ref])].join(" ");
    case "gntdev_unmap_grant_ref":
      return `${v.s} ${v.index} ${v.count} ${v.pad}`;
    case "gntdev_grant_copy":
      return `${v.s} ${v.count} ${v.segments}`;
    case "gntdev_grant_copy_segment":
      return `${v.s} ${sideText(v.source)} ${sideText(v.dest)} ${v.len} ${v.flags} ${v.status}`;
  }
}

/**
 * What our encoder writes for a vector: its input fields; outputs (index, gref_ids, status)
 * and named pads zero; a copy segment's flags computed from its sides.
 */
function asEncoded(v: Vector): Vector {
  switch (v.s) {
    case "gntalloc_alloc_gref":
      return { ...v, index: 0n, grefIds: v.grefIds.map(() => 0) };
    case "gntdev_map_grant_ref":
      return { ...v, pad: 0, index: 0n };
    case "gntdev_unmap_grant_ref":
      return { ...v, pad: 0 };
    case "gntdev_grant_copy_segment":
      return { ...v, status: 0, flags: ("virt" in v.source ? 0 : GNTCOPY_SOURCE_GREF) | ("virt" in v.dest ? 0 : GNTCOPY_DEST_GREF) };
    default:
      return v;
  }
}

/** u64 inputs as our callers pass them: a number when it is safe, else a bigint. */
function u64Arg(x: bigint): number | bigint {
  return x <= SAFE ? Number(x) : x;
}

function side(x: Side): CopySegmentSide {
  return "virt" in x ? { virt: u64Arg(x.virt) } : x;
}

/** Encode the vector's input fields with our encoders into a dirty buffer; the bytes they cover. */
function tsEncode(v: Vector): Uint8Array {
  const buf = new Uint8Array(4096).fill(0xa5);
  const dv = new DataView(buf.buffer);
  let n: number;
  switch (v.s) {
    case "evtchn_bind_interdomain":
      n = encodeEvtchnBindInterdomain(dv, v.remoteDomain, v.remotePort);
      break;
    case "evtchn_bind_unbound_port":
      n = encodeEvtchnBindUnboundPort(dv, v.remoteDomain);
      break;
    case "evtchn_unbind":
    case "evtchn_notify":
      n = encodeEvtchnPort(dv, v.port);
      break;
    case "gntalloc_alloc_gref":
      n = encodeGntallocAllocGref(dv, v.domid, v.flags, v.grefIds.length);
      break;
    case "gntalloc_dealloc_gref":
      n = encodeGntallocDeallocGref(dv, u64Arg(v.index), v.count);
      break;
    case "gntalloc_unmap_notify":
    case "gntdev_unmap_notify":
      n = encodeUnmapNotify(dv, u64Arg(v.index), v.action, v.eventChannelPort);
      break;
    case "gntdev_map_grant_ref": {
      const sameDomain = v.refs.every((r) => r.domid === v.refs[0]?.domid);
      const domids = sameDomain && v.refs.length > 0 ? (v.refs[0]?.domid ?? 0) : v.refs.map((r) => r.domid);
      n = encodeGntdevMapGrantRef(dv, domids, v.refs.map((r) => r.ref));
      break;
    }
    case "gntdev_unmap_grant_ref":
      n = encodeGntdevUnmapGrantRef(dv, u64Arg(v.index), v.count);
      break;
    case "gntdev_grant_copy":
      n = encodeGntdevGrantCopy(dv, v.count, u64Arg(v.segments));
      break;
    case "gntdev_grant_copy_segment":
      n = encodeCopySegment(dv, 0, side(v.source), side(v.dest), v.len);
      break;
  }
  return buf.subarray(0, n);
}

/** Decode C's bytes with our decoders, into the vector's shape. */
function tsDecode(s: Vector["s"], bytes: Uint8Array): Vector {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (s) {
    case "evtchn_bind_interdomain":
      return { s, ...decodeEvtchnBindInterdomain(dv) };
    case "evtchn_bind_unbound_port":
      return { s, ...decodeEvtchnBindUnboundPort(dv) };
    case "evtchn_unbind":
    case "evtchn_notify":
      return { s, ...decodeEvtchnPort(dv) };
    case "gntalloc_alloc_gref": {
      const d = decodeGntallocAllocGref(dv);
      return { s, domid: d.domid, flags: d.flags, index: d.index, grefIds: d.grefIds };
    }
    case "gntalloc_dealloc_gref":
      return { s, ...decodeGntallocDeallocGref(dv) };
    case "gntalloc_unmap_notify":
    case "gntdev_unmap_notify":
      return { s, ...decodeUnmapNotify(dv) };
    case "gntdev_map_grant_ref": {
      const d = decodeGntdevMapGrantRef(dv);
      return { s, pad: d.pad, index: d.index, refs: d.refs };
    }
    case "gntdev_unmap_grant_ref":
      return { s, ...decodeGntdevUnmapGrantRef(dv) };
    case "gntdev_grant_copy":
      return { s, ...decodeGntdevGrantCopy(dv) };
    case "gntdev_grant_copy_segment": {
      const d = decodeCopySegment(dv, 0);
      // The union is read both ways; the vector says which reading it wrote.
      return { s, source: d.source, dest: d.dest, len: d.len, flags: d.flags, status: d.status };
    }
  }
}

/** A decoded segment side, narrowed to the union member the vector used. */
function narrow(v: Vector, d: Vector): Vector {
  if (v.s !== "gntdev_grant_copy_segment" || d.s !== "gntdev_grant_copy_segment") return d;
  const pick = (want: Side, got: Side): Side => {
    const g = got as { virt: bigint; ref: number; offset: number; domid: number };
    return "virt" in want ? { virt: g.virt } : { ref: g.ref, offset: g.offset, domid: g.domid };
  };
  return { ...d, source: pick(v.source, d.source), dest: pick(v.dest, d.dest) };
}

// ---------------------------------------------------------------------------------------
// The C cross-check
// ---------------------------------------------------------------------------------------

if (!available && IN_CI) {
  describe("C cross-check (xen/evtchn.h, gntalloc.h, gntdev.h)", () => {
    test("prerequisites", () => {
      throw new Error(`CI=true but the uapi cross-check cannot run: missing ${missing.join(" and ")}. CI must install gcc, linux-libc-dev and libxen-dev.`);
    });
  });
} else {
  const suite = available ? describe : describe.skip;
  suite("C cross-check (xen/evtchn.h, gntalloc.h, gntdev.h)", () => {
    if (available && GCC !== null) {
      const gcc = GCC;
      const program = compiledC(gcc, C_SOURCE, "uapi-check", []);
      beforeAll(() => {
        program.build();
        binary = program.binary;
      });
      afterAll(() => program.clean());
    }

    test("every struct size, field offset, ioctl number and constant matches the headers", async () => {
      const c: Record<string, number> = {};
      for (const line of await runC("layout", "")) {
        const [key, value] = line.split(" ");
        if (key === undefined || value === undefined) throw new Error(`bad layout line: ${line}`);
        c[key] = Number(value);
      }
      expect(c).toEqual(tsLayout());
    });

    test("our encoders write exactly the bytes C does (dirty buffer, extremes), and decode C's bytes to every field", async () => {
      const encodedView = VECTORS.map(asEncoded);
      const input = [...VECTORS, ...encodedView].map(cLine);
      const out = (await runC("layout", `${input.join("\n")}\n`)).filter((l) => l.startsWith("bytes "));
      expect(out.length).toBe(input.length);
      const cBytes = out.map((l) => l.slice("bytes ".length));
      const full = cBytes.slice(0, VECTORS.length);
      const asOurs = cBytes.slice(VECTORS.length);

      // Encoding: our input fields into a 0xa5-filled buffer give C's struct with those
      // fields set and the outputs zero: pads and outputs are written, nothing spills over.
      expect(VECTORS.map((v) => `${cLine(v)} => ${hex(tsEncode(v))}`)).toEqual(VECTORS.map((v, i) => `${cLine(v)} => ${asOurs[i]}`));

      // Decoding: C's struct with every field set (outputs at extremes) reads back whole.
      const decoded = full.map((h, i) => {
        const v = VECTORS[i] as Vector;
        return narrow(v, tsDecode(v.s, Uint8Array.from(Buffer.from(h, "hex"))));
      });
      expect(decoded).toEqual(VECTORS);
      console.log(`xen-ioctl: ${VECTORS.length} struct vectors, encoded and decoded byte-exact against gcc`);
    });
  });
}

// ---------------------------------------------------------------------------------------
// Pure TS: what holds without a compiler
// ---------------------------------------------------------------------------------------

describe("xen-ioctl without C", () => {
  test("request numbers are the ones PROTOCOL.md lists", () => {
    expect(IOCTL_EVTCHN_BIND_INTERDOMAIN).toBe(0x00084501);
    expect(IOCTL_EVTCHN_BIND_UNBOUND_PORT).toBe(0x00044502);
    expect(IOCTL_EVTCHN_UNBIND).toBe(0x00044503);
    expect(IOCTL_EVTCHN_NOTIFY).toBe(0x00044504);
    expect(IOCTL_GNTALLOC_ALLOC_GREF).toBe(0x00184705);
    expect(IOCTL_GNTALLOC_DEALLOC_GREF).toBe(0x00104706);
    expect(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY).toBe(0x00104707);
    expect(IOCTL_GNTDEV_MAP_GRANT_REF).toBe(0x00184700);
    expect(IOCTL_GNTDEV_UNMAP_GRANT_REF).toBe(0x00104701);
    expect(IOCTL_GNTDEV_GRANT_COPY).toBe(0x00104708);
  });

  test("variable-length arguments: the kernel reads sizeof(struct) at least, then count elements", () => {
    expect(gntallocAllocGrefSize(0)).toBe(24);
    expect(gntallocAllocGrefSize(2)).toBe(24);
    expect(gntallocAllocGrefSize(3)).toBe(28);
    expect(gntallocAllocGrefSize(256)).toBe(16 + 1024);
    expect(gntdevMapGrantRefSize(1)).toBe(24);
    expect(gntdevMapGrantRefSize(2)).toBe(32);
    // The kernel's gref_ids land where decode looks for them.
    const dv = new DataView(new ArrayBuffer(gntallocAllocGrefSize(3)));
    encodeGntallocAllocGref(dv, 7, GNTALLOC_FLAG_WRITABLE, 3);
    dv.setBigUint64(GNTALLOC_ALLOC_GREF.index, 0x5000n, true);
    [11, 12, 13].forEach((g, i) => dv.setUint32(GNTALLOC_ALLOC_GREF.grefIds + 4 * i, g, true));
    expect(decodeGntallocAllocGref(dv)).toEqual({ domid: 7, flags: 1, count: 3, index: 0x5000n, grefIds: [11, 12, 13] });
  });

  test("u64 fields: numbers below 2^53 and bigints give the same bytes; beyond is refused", () => {
    for (const x of [0n, 1n, 0xffffffffn, 0x100000000n, 0x0102030405060708n & SAFE, SAFE]) {
      const a = new DataView(new ArrayBuffer(8));
      const b = new DataView(new ArrayBuffer(8));
      setU64(a, 0, "x", Number(x));
      setU64(b, 0, "x", x);
      expect(hex(new Uint8Array(a.buffer))).toBe(hex(new Uint8Array(b.buffer)));
      expect(a.getBigUint64(0, true)).toBe(x);
    }
    const dv = new DataView(new ArrayBuffer(8));
    expect(() => setU64(dv, 0, "index", 2 ** 53)).toThrow(PlatformError);
    expect(() => setU64(dv, 0, "index", -1)).toThrow(/index -1 is not a u64/);
    expect(() => setU64(dv, 0, "index", 1.5)).toThrow(PlatformError);
    expect(() => setU64(dv, 0, "index", U64 + 1n)).toThrow(PlatformError);
    expect(() => setU64(dv, 0, "index", -1n)).toThrow(PlatformError);
    expect(u64ToNumber("index", SAFE)).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => u64ToNumber("index", SAFE + 1n)).toThrow(/index 0x20000000000000 is not below 2\^53/);
  });

  test("out-of-range fields and short buffers are EINVAL naming the field", () => {
    const dv = new DataView(new ArrayBuffer(64));
    const cases: [() => unknown, RegExp][] = [
      [() => encodeEvtchnPort(dv, -1), /port -1 is not a u32/],
      [() => encodeEvtchnPort(dv, 2 ** 32), /port 4294967296 is not a u32/],
      [() => encodeEvtchnBindInterdomain(dv, 0, 1.5), /remote_port 1.5/],
      [() => encodeGntallocAllocGref(dv, 0x10000, 1, 1), /domid 65536 is not a u16/],
      [() => encodeGntallocAllocGref(dv, 1, 1, 100), /needs 416 bytes, the buffer has 64/],
      [() => encodeGntdevMapGrantRef(dv, [1, 2], [1]), /2 domids for 1 refs/],
      [() => encodeGntdevMapGrantRef(dv, 1, [2 ** 32]), /ref 4294967296 is not a u32/],
      [() => encodeCopySegment(dv, 48, { virt: 0 }, { virt: 0 }, 1), /needs 72 bytes/],
      [() => encodeCopySegment(dv, 0, { ref: 1, offset: 65536, domid: 0 }, { virt: 0 }, 1), /offset 65536 is not a u16/],
      [() => encodeCopySegment(dv, 0, { virt: 0 }, { virt: 0 }, 65536), /len 65536 is not a u16/],
      [() => encodeEvtchnPort(new DataView(new ArrayBuffer(2)), 1), /needs 4 bytes, the buffer has 2/],
    ];
    for (const [f, msg] of cases) {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PlatformError);
      expect((err as PlatformError).code).toBe("EINVAL");
      expect((err as Error).message).toMatch(msg);
    }
  });

  test("segments in an array: each at its own offset; the status the kernel writes reads back signed", () => {
    const buf = new IoctlBuffer(16);
    const dv = buf.reserve(copySegmentAt(3));
    expect(buf.bytes.byteLength).toBeGreaterThanOrEqual(72);
    for (let i = 0; i < 3; i++) encodeCopySegment(dv, copySegmentAt(i), { ref: 100 + i, offset: i, domid: 5 }, { virt: 0x1000 * (i + 1) }, 10 + i);
    dv.setInt16(copySegmentAt(1) + GRANT_COPY_SEGMENT.status, GNTST.badGntref, true);
    expect([0, 1, 2].map((i) => copyStatus(dv, copySegmentAt(i)))).toEqual([0, GNTST.badGntref, 0]);
    const d = decodeCopySegment(dv, copySegmentAt(2));
    expect([d.source.ref, d.source.offset, d.source.domid, d.dest.virt, d.len, d.flags]).toEqual([102, 2, 5, 0x3000n, 12, GNTCOPY_SOURCE_GREF]);
  });

  test("IoctlBuffer is reused: no new buffer while the size fits, growth only when needed", () => {
    const buf = new IoctlBuffer(32);
    const first = buf.reserve(16);
    const bytes = buf.bytes;
    for (let port = 0; port < 1000; port++) {
      expect(buf.reserve(EVTCHN_NOTIFY.size)).toBe(first);
      encodeEvtchnPort(buf.view, port);
    }
    expect(buf.bytes).toBe(bytes);
    const grown = buf.reserve(gntdevMapGrantRefSize(64));
    expect(grown).not.toBe(first);
    expect(grown.byteLength).toBeGreaterThanOrEqual(16 + 8 * 64);
    expect(buf.reserve(100)).toBe(grown);
  });
});

// ---------------------------------------------------------------------------------------
// libc over bun:ffi, on this machine (memfd, eventfd and pipes stand in for the devices)
// ---------------------------------------------------------------------------------------

describe("libc", () => {
  test("a failed open is an ErrnoError naming the op, path and errno", () => {
    let err: unknown;
    try {
      libc.open("/nonexistent/xen-net-test", libc.O_RDONLY, "test.open");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ErrnoError);
    expect(err).toBeInstanceOf(PlatformError);
    const e = err as ErrnoError;
    expect([e.code, e.errno, e.errnoName, e.op]).toEqual(["ENOENT", 2, "ENOENT", "test.open"]);
    expect(e.message).toBe("test.open: ENOENT: /nonexistent/xen-net-test");
    expect(() => libc.open("/dev/null\0x", libc.O_RDONLY)).toThrow(/contains NUL/);
  });

  test("errno survives the failing call: EBADF from close, ENOTTY from an ioctl on a memfd", () => {
    expect(() => libc.close(987654, "test.close")).toThrow("test.close: ECLOSED: fd 987654 (EBADF)");
    const fd = libc.memfdCreate("ioctl-test");
    try {
      const buf = new IoctlBuffer();
      encodeEvtchnPort(buf.view, 1);
      let err: unknown;
      try {
        libc.ioctl(fd, IOCTL_EVTCHN_NOTIFY, buf.bytes, "evtchn.notify", "port 1");
      } catch (e) {
        err = e;
      }
      expect((err as ErrnoError).errnoName).toBe("ENOTTY");
      expect((err as ErrnoError).message).toBe("evtchn.notify: EINVAL: port 1 (ENOTTY)");
    } finally {
      libc.close(fd);
    }
  });

  test("mmap: a failure (MAP_FAILED, a BigInt from bun:ffi) is an ErrnoError, never an address", () => {
    expect(() => libc.mmap(0, PAGE_SIZE, libc.PROT_READ, libc.MAP_SHARED, 987654, 0, "test.mmap")).toThrow(/test\.mmap: ECLOSED: .*\(EBADF\)/);
    const fd = libc.memfdCreate("mmap-test");
    try {
      expect(() => libc.mmap(0, PAGE_SIZE, libc.PROT_READ, libc.MAP_SHARED, fd, 123, "test.mmap")).toThrow(/EINVAL/);
      libc.ftruncate(fd, PAGE_SIZE);
      const addr = libc.mmap(0, PAGE_SIZE, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
      expect(typeof addr).toBe("number");
      expect(addr % PAGE_SIZE).toBe(0);
      libc.munmap(addr, PAGE_SIZE);
    } finally {
      libc.close(fd);
    }
  });

  test("a memfd mapped over a SharedArrayBuffer's own pages: shared with the fd and a worker; released back to anonymous memory", async () => {
    const fd = libc.memfdCreate("sab-test");
    const pages = 3;
    libc.ftruncate(fd, 4 * PAGE_SIZE);
    const m = libc.mmapShared(fd, PAGE_SIZE, pages * PAGE_SIZE); // file pages 1..3
    try {
      expect(m.buffer.byteLength).toBe((pages + 1) * PAGE_SIZE);
      expect(m.address % PAGE_SIZE).toBe(0);
      expect(m.pageOffsets()).toEqual([0, 1, 2].map((i) => m.offset + i * PAGE_SIZE));
      const view = new Uint8Array(m.buffer, m.offset, m.length);
      // Written through the SAB, read through the fd (file offset 4096 + i).
      view[0] = 0x11;
      view[PAGE_SIZE + 5] = 0x22;
      view[m.length - 1] = 0x33;
      const back = new Uint8Array(4 * PAGE_SIZE);
      const rfd = libc.open(`/proc/self/fd/${fd}`, libc.O_RDONLY);
      try {
        expect(libc.readFd(rfd, back)).toBe(4 * PAGE_SIZE);
      } finally {
        libc.close(rfd);
      }
      expect([back[PAGE_SIZE], back[2 * PAGE_SIZE + 5], back[4 * PAGE_SIZE - 1]]).toEqual([0x11, 0x22, 0x33]);
      // Atomics work on it, and a worker given the SAB by postMessage sees the same pages.
      const words = new Int32Array(m.buffer, m.offset, 4);
      Atomics.store(words, 1, 41);
      const worker = new Worker(
        URL.createObjectURL(
          new Blob([
            `onmessage = (e) => { const w = new Int32Array(e.data.buffer, e.data.offset, 4); Atomics.add(w, 1, 1); postMessage(new Uint8Array(e.data.buffer, e.data.offset, e.data.length)[e.data.length - 1]); };`,
          ]),
        ),
      );
      const seen = await new Promise<number>((resolve) => {
        worker.onmessage = (e) => resolve(e.data as number);
        worker.postMessage({ buffer: m.buffer, offset: m.offset, length: m.length });
      });
      worker.terminate();
      expect(seen).toBe(0x33);
      expect(Atomics.load(words, 1)).toBe(42);
    } finally {
      m.release();
    }
    expect(m.mapped).toBe(false);
    m.release(); // idempotent
    // Anonymous zeroed memory again; the file keeps what was written.
    const view = new Uint8Array(m.buffer, m.offset, m.length);
    expect(view.every((b) => b === 0)).toBe(true);
    view[0] = 9;
    const one = new Uint8Array(1);
    const rfd = libc.open(`/proc/self/fd/${fd}`, libc.O_RDONLY);
    try {
      libc.readFd(rfd, new Uint8Array(PAGE_SIZE));
      libc.readFd(rfd, one);
    } finally {
      libc.close(rfd);
    }
    expect(one[0]).toBe(0x11);
    libc.close(fd);
  });

  test("a failed MAP_FIXED leaves usable anonymous memory in the region", () => {
    const region = libc.allocSharedRegion(2 * PAGE_SIZE);
    const view = new Uint8Array(region.buffer, region.offset, region.length);
    view[5] = 1;
    expect(() => libc.mapIntoShared(region, 987654, 0)).toThrow(/EBADF/);
    view[6] = 2; // still mapped, no fault
    expect(view[6]).toBe(2);
    expect(() => libc.allocSharedRegion(100)).toThrow(/not a positive multiple of 4096/);
  });

  test("eventfd + poll: a signal wakes the poller, drain resets it; poll times out; EAGAIN reads give -1", () => {
    const efd = libc.eventfd();
    const [a, b] = libc.socketpair();
    try {
      const set = new libc.PollSet([a, efd]);
      expect(set.poll(0)).toBe(0);
      libc.eventfdSignal(efd);
      libc.eventfdSignal(efd);
      expect(set.poll(1000)).toBe(1);
      expect([set.revents(0), set.revents(1)]).toEqual([0, libc.POLLIN]);
      expect(libc.eventfdDrain(efd)).toBe(true);
      expect(libc.eventfdDrain(efd)).toBe(false);
      expect(set.poll(0)).toBe(0);
      expect(libc.writeFd(b, new Uint8Array([1, 2, 3]))).toBe(3);
      expect(set.poll(1000)).toBe(1);
      expect(set.revents(0)).toBe(libc.POLLIN);
      const got = new Uint8Array(8);
      expect(libc.readFd(a, got)).toBe(3);
      expect(libc.readFd(a, got)).toBe(-1); // EAGAIN on an empty non-blocking socket
      const t0 = performance.now();
      expect(set.poll(30)).toBe(0);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
    } finally {
      libc.close(efd);
      libc.close(a);
      libc.close(b);
    }
  });
});

// ---------------------------------------------------------------------------------------
// The real-Xen platform's pieces that run without Xen: event channels over a stand-in fd,
// and the errors of a machine without the devices
// ---------------------------------------------------------------------------------------

describe("XenEventChannels over a socketpair standing in for /dev/xen/evtchn", () => {
  /** A handle whose evtchn fd is one end of a socketpair; the test plays the kernel on the other. */
  function standIn() {
    const [fd, kernel] = libc.socketpair();
    const kickFd = libc.eventfd();
    const h = new XenEventChannels(3, fd, kickFd, "owner");
    const fire = (...ports: number[]) => {
      const b = new Uint8Array(4 * ports.length);
      const v = new DataView(b.buffer);
      ports.forEach((p, i) => v.setUint32(4 * i, p, true));
      expect(libc.writeFd(kernel, b)).toBe(b.length);
    };
    const unmasked = (): number[] => {
      const b = new Uint8Array(64);
      const n = libc.readFd(kernel, b);
      const v = new DataView(b.buffer);
      return n <= 0 ? [] : Array.from({ length: n / 4 }, (_, i) => v.getUint32(4 * i, true));
    };
    return { h, fd, kickFd, kernel, fire, unmasked };
  }

  test("pending() reads u32 ports, wait() returns them, times out, or returns [] on a kick; unmask writes the port back", () => {
    const { h, kernel, fire, unmasked } = standIn();
    try {
      expect(h.pending()).toEqual([]);
      fire(5, 0xffffffff, 7);
      expect(h.pending()).toEqual([5, 0xffffffff, 7]);
      fire(9);
      expect(h.wait(1000)).toEqual([9]);
      const t0 = performance.now();
      expect(h.wait(30)).toEqual([]);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
      h.kick();
      const t1 = performance.now();
      expect(h.wait(5000)).toEqual([]);
      expect(performance.now() - t1).toBeLessThan(1000);
      h.unmask(5);
      h.unmask(0x01020304);
      expect(unmasked()).toEqual([5, 0x01020304]);
      // ioctls on something that is not the device: ENOTTY, naming the op and the port.
      expect(() => h.notify(5)).toThrow("evtchn.notify: EINVAL: port 5 (ENOTTY)");
      expect(() => h.bindInterdomain(0, 12)).toThrow("evtchn.bindInterdomain: EINVAL: port 12 of domain 0 (ENOTTY)");
    } finally {
      h.close();
      libc.close(kernel);
    }
    expect(() => h.pending()).toThrow("evtchn.pending: ECLOSED");
  });

  test("a worker blocked in wait() (poll) is woken by a port and by a kick from the main thread", async () => {
    const { h, kernel, fire } = standIn();
    const modulePath = join(import.meta.dir, "..", "src", "platform", "xen", "event-channels.ts");
    const worker = new Worker(
      URL.createObjectURL(
        new Blob([
          `const { XenEventChannels } = await import(${JSON.stringify(modulePath)});
           onmessage = (e) => {
             const h = XenEventChannels.fromDescriptor(3, e.data);
             postMessage("waiting");
             const t0 = performance.now();
             const a = [...h.wait(5000)]; // a copy: the next wait reuses the array
             const t1 = performance.now();
             postMessage("waiting");
             const b = h.wait(5000);
             postMessage({ a, b, ms: [t1 - t0, performance.now() - t1] });
             h.close();
           };
           postMessage("ready");`,
        ]),
      ),
    );
    const messages: unknown[] = [];
    const result = new Promise<{ a: number[]; b: number[]; ms: number[] }>((resolve) => {
      worker.onmessage = (e) => {
        messages.push(e.data);
        if (typeof e.data === "object") resolve(e.data);
      };
    });
    try {
      await until(() => messages.length === 1); // the worker's module is loaded
      worker.postMessage(h.descriptor);
      await until(() => messages.length === 2);
      await Bun.sleep(30);
      fire(42);
      await until(() => messages.length === 3);
      await Bun.sleep(30);
      h.kick();
      const r = await result;
      expect(r.a).toEqual([42]);
      expect(r.b).toEqual([]);
      for (const ms of r.ms) expect(ms).toBeLessThan(2000);
    } finally {
      worker.terminate();
      h.close();
      libc.close(kernel);
    }
  });

  test("waitAsync() on the main thread: ports through Bun.file(fd).stream(), kicks, timeouts; the event loop keeps running", async () => {
    const { h, kernel, fire } = standIn();
    try {
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 1);
      setTimeout(() => fire(11, 12), 20);
      expect(await h.waitAsync(5000)).toEqual([11, 12]);
      setTimeout(() => h.kick(), 20);
      expect(await h.waitAsync(5000)).toEqual([]);
      const t0 = performance.now();
      expect(await h.waitAsync(40)).toEqual([]);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(35);
      clearInterval(ticker);
      expect(ticks).toBeGreaterThan(5);
      // After waitAsync, the streams own the reads; pending() takes what they collected.
      fire(13);
      await until(() => true);
      await Bun.sleep(20);
      expect(h.pending()).toEqual([13]);
    } finally {
      h.close();
      libc.close(kernel);
    }
  });
});

describe("the real-Xen platform on a machine without Xen", () => {
  const noXen = !existsSync("/dev/xen/evtchn") && !existsSync("/dev/xen/gntalloc") && !existsSync("/dev/xen/gntdev");

  test.skipIf(!noXen)("every device operation fails ENOENT naming its device; the descriptor round-trips", async () => {
    const p = new XenPlatform(1, { devices: { ...DEFAULT_XEN_DEVICES }, xenstoreSocket: "/nonexistent/xenstored/socket", xenstoreTimeoutMs: 1000 });
    try {
      expect(() => p.openEventChannels()).toThrow("evtchn.open: ENOENT: /dev/xen/evtchn");
      expect(() => p.gnttab.share(0, 1, true)).toThrow("gnttab.open: ENOENT: /dev/xen/gntalloc");
      expect(() => p.gnttab.map(0, [8], true)).toThrow("gnttab.open: ENOENT: /dev/xen/gntdev");
      expect(() => p.gnttab.copy([{ source: { domid: 0, ref: 8, offset: 0 }, dest: { buf: new Uint8Array(8), offset: 0 }, len: 8 }])).toThrow(
        "gnttab.open: ENOENT: /dev/xen/gntdev",
      );
      // xenstore: the socket connection fails; the request says why.
      let err: unknown;
      try {
        await p.xenstore.read("/local/domain/1/name");
      } catch (e) {
        err = e;
      }
      expect((err as PlatformError).code).toBe("ECLOSED");
      expect((err as Error).message).toContain("/nonexistent/xenstored/socket");
      const q = openXenPlatform(structuredClone(p.descriptor));
      expect(q.descriptor).toEqual(p.descriptor);
      q.close();
      expect(() => openXenPlatform({ kind: "xen", domid: 1, params: { devices: {} } })).toThrow("platform.open: EINVAL");
      expect(() => new XenPlatform(0x7ff0, p.params)).toThrow(PlatformError);
    } finally {
      p.close();
    }
  });
});

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await Bun.sleep(1);
  }
}
