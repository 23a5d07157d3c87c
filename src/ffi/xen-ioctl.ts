/**
 * The ioctl argument structs of Linux's Xen devices (include/uapi/xen/{evtchn,gntalloc,gntdev}.h)
 * and their request numbers. test/xen-ioctl.test.ts checks every size, offset, number and
 * byte here against the kernel headers, compiled with gcc.
 *
 * Encoders write the input fields into a caller's DataView (a reusable IoctlBuffer, so the
 * data path allocates nothing), zero the output fields and the padding, and return the byte
 * count the kernel will read. Decoders read every field back (outputs included).
 * Everything is little-endian, as the structs are on x86_64 and aarch64.
 *
 * u64 fields take a number (an integer below 2^53, written without allocating) or a bigint.
 */
import { PlatformError } from "./platform-error.ts";

// ---------------------------------------------------------------------------------------
// Request numbers: _IOC(_IOC_NONE, type, nr, sizeof(struct)) (asm-generic ioctl.h)
// ---------------------------------------------------------------------------------------

const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = 8;
const IOC_SIZESHIFT = 16;
const IOC_DIRSHIFT = 30;
const IOC_NONE = 0;

/** _IOC(dir, type, nr, size) as asm-generic/ioctl.h defines it (x86_64, aarch64). */
export function ioc(dir: number, type: string, nr: number, size: number): number {
  return ((dir << IOC_DIRSHIFT) | (size << IOC_SIZESHIFT) | (type.charCodeAt(0) << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT)) >>> 0;
}

// ---------------------------------------------------------------------------------------
// Layouts (offsets in bytes; `size` is sizeof(struct))
// ---------------------------------------------------------------------------------------

export const EVTCHN_BIND_INTERDOMAIN = { size: 8, remoteDomain: 0, remotePort: 4 } as const;
export const EVTCHN_BIND_UNBOUND_PORT = { size: 4, remoteDomain: 0 } as const;
export const EVTCHN_UNBIND = { size: 4, port: 0 } as const;
export const EVTCHN_NOTIFY = { size: 4, port: 0 } as const;

/** struct ioctl_gntalloc_alloc_gref; gref_ids[count] (u32 each) start at `grefIds`. */
export const GNTALLOC_ALLOC_GREF = { size: 24, domid: 0, flags: 2, count: 4, index: 8, grefIds: 16 } as const;
export const GNTALLOC_DEALLOC_GREF = { size: 16, index: 0, count: 8 } as const;
/** struct ioctl_gntalloc_unmap_notify (gntdev's ioctl_gntdev_unmap_notify is the same). */
export const UNMAP_NOTIFY = { size: 16, index: 0, action: 8, eventChannelPort: 12 } as const;

/** struct ioctl_gntdev_grant_ref, the elements of map_grant_ref.refs[]. */
export const GNTDEV_GRANT_REF = { size: 8, domid: 0, ref: 4 } as const;
/** struct ioctl_gntdev_map_grant_ref; refs[count] start at `refs`. */
export const GNTDEV_MAP_GRANT_REF = { size: 24, count: 0, pad: 4, index: 8, refs: 16 } as const;
export const GNTDEV_UNMAP_GRANT_REF = { size: 16, index: 0, count: 8, pad: 12 } as const;
/** struct ioctl_gntdev_grant_copy: { unsigned int count; struct gntdev_grant_copy_segment *segments; }. */
export const GNTDEV_GRANT_COPY = { size: 16, count: 0, segments: 8 } as const;
/**
 * struct gntdev_grant_copy_segment. `source` and `dest` are each a union of a local pointer
 * (`virt`, 8 bytes) and a foreign grant {ref u32 @0, offset u16 @4, domid u16 @6}.
 */
export const GRANT_COPY_SEGMENT = {
  size: 24,
  source: 0,
  dest: 8,
  len: 16,
  flags: 18,
  status: 20,
  foreignRef: 0,
  foreignOffset: 4,
  foreignDomid: 6,
} as const;

export const IOCTL_EVTCHN_BIND_INTERDOMAIN = ioc(IOC_NONE, "E", 1, EVTCHN_BIND_INTERDOMAIN.size);
export const IOCTL_EVTCHN_BIND_UNBOUND_PORT = ioc(IOC_NONE, "E", 2, EVTCHN_BIND_UNBOUND_PORT.size);
export const IOCTL_EVTCHN_UNBIND = ioc(IOC_NONE, "E", 3, EVTCHN_UNBIND.size);
export const IOCTL_EVTCHN_NOTIFY = ioc(IOC_NONE, "E", 4, EVTCHN_NOTIFY.size);
/** Clears the event buffer and its overflow error. No argument. */
export const IOCTL_EVTCHN_RESET = ioc(IOC_NONE, "E", 5, 0);

export const IOCTL_GNTALLOC_ALLOC_GREF = ioc(IOC_NONE, "G", 5, GNTALLOC_ALLOC_GREF.size);
export const IOCTL_GNTALLOC_DEALLOC_GREF = ioc(IOC_NONE, "G", 6, GNTALLOC_DEALLOC_GREF.size);
export const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY = ioc(IOC_NONE, "G", 7, UNMAP_NOTIFY.size);

export const IOCTL_GNTDEV_MAP_GRANT_REF = ioc(IOC_NONE, "G", 0, GNTDEV_MAP_GRANT_REF.size);
export const IOCTL_GNTDEV_UNMAP_GRANT_REF = ioc(IOC_NONE, "G", 1, GNTDEV_UNMAP_GRANT_REF.size);
export const IOCTL_GNTDEV_SET_UNMAP_NOTIFY = ioc(IOC_NONE, "G", 7, UNMAP_NOTIFY.size);
export const IOCTL_GNTDEV_GRANT_COPY = ioc(IOC_NONE, "G", 8, GNTDEV_GRANT_COPY.size);

export const GNTALLOC_FLAG_WRITABLE = 1;
export const UNMAP_NOTIFY_CLEAR_BYTE = 0x1;
export const UNMAP_NOTIFY_SEND_EVENT = 0x2;
/** GNTCOPY_* (xen/grant_table.h): which side of a copy segment is a foreign grant. */
export const GNTCOPY_SOURCE_GREF = 1;
export const GNTCOPY_DEST_GREF = 2;

// ---------------------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------------------

const TWO_32 = 0x1_0000_0000;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

function bad(field: string, value: unknown, range: string): PlatformError {
  return new PlatformError("EINVAL", "xen.ioctl", `${field} ${String(value)} is not ${range}`);
}

function u16(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw bad(field, v, "a u16");
  return v;
}

function u32(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw bad(field, v, "a u32");
  return v;
}

/** Write a u64 (number below 2^53 or bigint) without allocating for the number case. */
export function setU64(v: DataView, off: number, field: string, x: number | bigint): void {
  if (typeof x === "bigint") {
    if (x < 0n || x > U64_MAX) throw bad(field, x, "a u64");
    v.setBigUint64(off, x, true);
    return;
  }
  if (!Number.isSafeInteger(x) || x < 0) throw bad(field, x, "a u64 below 2^53 (pass a bigint beyond)");
  v.setUint32(off, x >>> 0, true);
  v.setUint32(off + 4, Math.floor(x / TWO_32), true);
}

export function getU64(v: DataView, off: number): bigint {
  return v.getBigUint64(off, true);
}

/** A u64 the kernel returned (an mmap index), as a number; EINVAL if it does not fit in 2^53. */
export function u64ToNumber(field: string, x: bigint): number {
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(field, `0x${x.toString(16)}`, "below 2^53");
  return Number(x);
}

function zero(v: DataView, from: number, to: number): void {
  new Uint8Array(v.buffer, v.byteOffset + from, to - from).fill(0);
}

function need(v: DataView, n: number, what: string): void {
  if (v.byteLength < n) throw new PlatformError("EINVAL", "xen.ioctl", `${what} needs ${n} bytes, the buffer has ${v.byteLength}`);
}

/**
 * A growable argument buffer, reused across calls: grows (allocates) only when a call needs
 * more than it has. Pass `bytes` to ioctl() after encoding into `view`.
 */
export class IoctlBuffer {
  bytes: Uint8Array;
  view: DataView;

  constructor(size = 64) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  /** A view of at least `n` bytes (the same one unless it had to grow). */
  reserve(n: number): DataView {
    if (n > this.bytes.byteLength) {
      let size = this.bytes.byteLength;
      while (size < n) size *= 2;
      this.bytes = new Uint8Array(size);
      this.view = new DataView(this.bytes.buffer);
    }
    return this.view;
  }
}

// ---------------------------------------------------------------------------------------
// /dev/xen/evtchn
// ---------------------------------------------------------------------------------------

export function encodeEvtchnBindInterdomain(v: DataView, remoteDomain: number, remotePort: number): number {
  need(v, EVTCHN_BIND_INTERDOMAIN.size, "evtchn bind_interdomain");
  v.setUint32(EVTCHN_BIND_INTERDOMAIN.remoteDomain, u32("remote_domain", remoteDomain), true);
  v.setUint32(EVTCHN_BIND_INTERDOMAIN.remotePort, u32("remote_port", remotePort), true);
  return EVTCHN_BIND_INTERDOMAIN.size;
}

export function decodeEvtchnBindInterdomain(v: DataView): { remoteDomain: number; remotePort: number } {
  return {
    remoteDomain: v.getUint32(EVTCHN_BIND_INTERDOMAIN.remoteDomain, true),
    remotePort: v.getUint32(EVTCHN_BIND_INTERDOMAIN.remotePort, true),
  };
}

export function encodeEvtchnBindUnboundPort(v: DataView, remoteDomain: number): number {
  need(v, EVTCHN_BIND_UNBOUND_PORT.size, "evtchn bind_unbound_port");
  v.setUint32(EVTCHN_BIND_UNBOUND_PORT.remoteDomain, u32("remote_domain", remoteDomain), true);
  return EVTCHN_BIND_UNBOUND_PORT.size;
}

export function decodeEvtchnBindUnboundPort(v: DataView): { remoteDomain: number } {
  return { remoteDomain: v.getUint32(EVTCHN_BIND_UNBOUND_PORT.remoteDomain, true) };
}

/** UNBIND and NOTIFY share the layout {u32 port}. */
export function encodeEvtchnPort(v: DataView, port: number): number {
  need(v, EVTCHN_NOTIFY.size, "evtchn port");
  v.setUint32(EVTCHN_NOTIFY.port, u32("port", port), true);
  return EVTCHN_NOTIFY.size;
}

export function decodeEvtchnPort(v: DataView): { port: number } {
  return { port: v.getUint32(EVTCHN_NOTIFY.port, true) };
}

// ---------------------------------------------------------------------------------------
// /dev/xen/gntalloc
// ---------------------------------------------------------------------------------------

/** Bytes the ALLOC_GREF argument needs: the kernel reads sizeof(struct), writes count refs. */
export function gntallocAllocGrefSize(count: number): number {
  return Math.max(GNTALLOC_ALLOC_GREF.size, GNTALLOC_ALLOC_GREF.grefIds + 4 * count);
}

export function encodeGntallocAllocGref(v: DataView, domid: number, flags: number, count: number): number {
  const L = GNTALLOC_ALLOC_GREF;
  u32("count", count);
  const n = gntallocAllocGrefSize(count);
  need(v, n, `gntalloc alloc_gref of ${count}`);
  v.setUint16(L.domid, u16("domid", domid), true);
  v.setUint16(L.flags, u16("flags", flags), true);
  v.setUint32(L.count, count, true);
  zero(v, L.index, n); // index and gref_ids are outputs
  return n;
}

export interface GntallocAllocGref {
  domid: number;
  flags: number;
  count: number;
  index: bigint;
  grefIds: number[];
}

/** Every field; gref_ids as many as `count` says (bounded by the view). */
export function decodeGntallocAllocGref(v: DataView): GntallocAllocGref {
  const L = GNTALLOC_ALLOC_GREF;
  const count = v.getUint32(L.count, true);
  need(v, gntallocAllocGrefSize(count), `gntalloc alloc_gref of ${count}`);
  const grefIds: number[] = [];
  for (let i = 0; i < count; i++) grefIds.push(v.getUint32(L.grefIds + 4 * i, true));
  return { domid: v.getUint16(L.domid, true), flags: v.getUint16(L.flags, true), count, index: getU64(v, L.index), grefIds };
}

export function encodeGntallocDeallocGref(v: DataView, index: number | bigint, count: number): number {
  const L = GNTALLOC_DEALLOC_GREF;
  need(v, L.size, "gntalloc dealloc_gref");
  setU64(v, L.index, "index", index);
  v.setUint32(L.count, u32("count", count), true);
  zero(v, L.count + 4, L.size);
  return L.size;
}

export function decodeGntallocDeallocGref(v: DataView): { index: bigint; count: number } {
  return { index: getU64(v, GNTALLOC_DEALLOC_GREF.index), count: v.getUint32(GNTALLOC_DEALLOC_GREF.count, true) };
}

/** ioctl_gntalloc_unmap_notify and ioctl_gntdev_unmap_notify (same layout). */
export function encodeUnmapNotify(v: DataView, index: number | bigint, action: number, eventChannelPort: number): number {
  need(v, UNMAP_NOTIFY.size, "unmap_notify");
  setU64(v, UNMAP_NOTIFY.index, "index", index);
  v.setUint32(UNMAP_NOTIFY.action, u32("action", action), true);
  v.setUint32(UNMAP_NOTIFY.eventChannelPort, u32("event_channel_port", eventChannelPort), true);
  return UNMAP_NOTIFY.size;
}

export function decodeUnmapNotify(v: DataView): { index: bigint; action: number; eventChannelPort: number } {
  return {
    index: getU64(v, UNMAP_NOTIFY.index),
    action: v.getUint32(UNMAP_NOTIFY.action, true),
    eventChannelPort: v.getUint32(UNMAP_NOTIFY.eventChannelPort, true),
  };
}

// ---------------------------------------------------------------------------------------
// /dev/xen/gntdev
// ---------------------------------------------------------------------------------------

/** Bytes the MAP_GRANT_REF argument needs: sizeof(struct) is read, then count refs. */
export function gntdevMapGrantRefSize(count: number): number {
  return Math.max(GNTDEV_MAP_GRANT_REF.size, GNTDEV_MAP_GRANT_REF.refs + GNTDEV_GRANT_REF.size * count);
}

/** Map `refs`, all from `domid` (a number) or each from its own domain (an array as long as refs). */
export function encodeGntdevMapGrantRef(v: DataView, domid: number | readonly number[], refs: readonly number[]): number {
  const L = GNTDEV_MAP_GRANT_REF;
  const count = refs.length;
  if (typeof domid !== "number" && domid.length !== count) {
    throw new PlatformError("EINVAL", "xen.ioctl", `gntdev map_grant_ref: ${domid.length} domids for ${count} refs`);
  }
  const n = gntdevMapGrantRefSize(count);
  need(v, n, `gntdev map_grant_ref of ${count}`);
  v.setUint32(L.count, count, true);
  v.setUint32(L.pad, 0, true);
  setU64(v, L.index, "index", 0); // output
  for (let i = 0; i < count; i++) {
    const at = L.refs + GNTDEV_GRANT_REF.size * i;
    const d = typeof domid === "number" ? domid : (domid[i] ?? -1);
    v.setUint32(at + GNTDEV_GRANT_REF.domid, u32("domid", d), true);
    v.setUint32(at + GNTDEV_GRANT_REF.ref, u32("ref", refs[i] ?? -1), true);
  }
  zero(v, L.refs + GNTDEV_GRANT_REF.size * count, n); // count 0: the unused refs[0]
  return n;
}

export interface GntdevMapGrantRef {
  count: number;
  pad: number;
  index: bigint;
  refs: { domid: number; ref: number }[];
}

export function decodeGntdevMapGrantRef(v: DataView): GntdevMapGrantRef {
  const L = GNTDEV_MAP_GRANT_REF;
  const count = v.getUint32(L.count, true);
  need(v, gntdevMapGrantRefSize(count), `gntdev map_grant_ref of ${count}`);
  const refs: { domid: number; ref: number }[] = [];
  for (let i = 0; i < count; i++) {
    const at = L.refs + GNTDEV_GRANT_REF.size * i;
    refs.push({ domid: v.getUint32(at + GNTDEV_GRANT_REF.domid, true), ref: v.getUint32(at + GNTDEV_GRANT_REF.ref, true) });
  }
  return { count, pad: v.getUint32(L.pad, true), index: getU64(v, L.index), refs };
}

export function encodeGntdevUnmapGrantRef(v: DataView, index: number | bigint, count: number): number {
  const L = GNTDEV_UNMAP_GRANT_REF;
  need(v, L.size, "gntdev unmap_grant_ref");
  setU64(v, L.index, "index", index);
  v.setUint32(L.count, u32("count", count), true);
  v.setUint32(L.pad, 0, true);
  return L.size;
}

export function decodeGntdevUnmapGrantRef(v: DataView): { index: bigint; count: number; pad: number } {
  const L = GNTDEV_UNMAP_GRANT_REF;
  return { index: getU64(v, L.index), count: v.getUint32(L.count, true), pad: v.getUint32(L.pad, true) };
}

/** The GRANT_COPY argument: `count` segments at address `segments`. */
export function encodeGntdevGrantCopy(v: DataView, count: number, segments: number | bigint): number {
  const L = GNTDEV_GRANT_COPY;
  need(v, L.size, "gntdev grant_copy");
  v.setUint32(L.count, u32("count", count), true);
  v.setUint32(L.count + 4, 0, true);
  setU64(v, L.segments, "segments", segments);
  return L.size;
}

export function decodeGntdevGrantCopy(v: DataView): { count: number; segments: bigint } {
  return { count: v.getUint32(GNTDEV_GRANT_COPY.count, true), segments: getU64(v, GNTDEV_GRANT_COPY.segments) };
}

/** One side of a copy segment: a local address, or a foreign grant. */
export type CopySegmentSide = { virt: number | bigint } | { ref: number; offset: number; domid: number };

/** Segment `i`'s byte offset in an array of segments. */
export function copySegmentAt(i: number): number {
  return i * GRANT_COPY_SEGMENT.size;
}

/** Write the local-address form of side `side` (GRANT_COPY_SEGMENT.source or .dest) of the segment at `at`. */
export function setCopySideVirt(v: DataView, at: number, side: number, virt: number | bigint): void {
  setU64(v, at + side, "virt", virt);
}

/** Write the foreign-grant form of side `side` (GRANT_COPY_SEGMENT.source or .dest) of the segment at `at`. */
export function setCopySideForeign(v: DataView, at: number, side: number, ref: number, offset: number, domid: number): void {
  const S = GRANT_COPY_SEGMENT;
  v.setUint32(at + side + S.foreignRef, u32("ref", ref), true);
  v.setUint16(at + side + S.foreignOffset, u16("offset", offset), true);
  v.setUint16(at + side + S.foreignDomid, u16("domid", domid), true);
}

/** len and flags of the segment at `at`; status (an output) and the tail padding zeroed. */
export function setCopyTail(v: DataView, at: number, len: number, flags: number): void {
  const S = GRANT_COPY_SEGMENT;
  v.setUint16(at + S.len, u16("len", len), true);
  v.setUint16(at + S.flags, u16("flags", flags), true);
  v.setUint32(at + S.status, 0, true); // status i16 + 2 bytes of padding
}

/** The GNTST_* status the kernel left in the segment at `at`. */
export function copyStatus(v: DataView, at: number): number {
  return v.getInt16(at + GRANT_COPY_SEGMENT.status, true);
}

/**
 * Encode a whole segment at byte `at` (flags computed from which sides are foreign).
 * The data path may call setCopySideVirt, setCopySideForeign and setCopyTail directly instead.
 */
export function encodeCopySegment(v: DataView, at: number, source: CopySegmentSide, dest: CopySegmentSide, len: number): number {
  const S = GRANT_COPY_SEGMENT;
  need(v, at + S.size, "grant copy segment");
  let flags = 0;
  if ("virt" in source) setCopySideVirt(v, at, S.source, source.virt);
  else {
    setCopySideForeign(v, at, S.source, source.ref, source.offset, source.domid);
    flags |= GNTCOPY_SOURCE_GREF;
  }
  if ("virt" in dest) setCopySideVirt(v, at, S.dest, dest.virt);
  else {
    setCopySideForeign(v, at, S.dest, dest.ref, dest.offset, dest.domid);
    flags |= GNTCOPY_DEST_GREF;
  }
  setCopyTail(v, at, len, flags);
  return S.size;
}

export interface DecodedCopySegment {
  /** Each side in both readings of the union; `flags` says which one applies. */
  source: { virt: bigint; ref: number; offset: number; domid: number };
  dest: { virt: bigint; ref: number; offset: number; domid: number };
  len: number;
  flags: number;
  status: number;
}

export function decodeCopySegment(v: DataView, at: number): DecodedCopySegment {
  const S = GRANT_COPY_SEGMENT;
  const side = (o: number) => ({
    virt: getU64(v, at + o),
    ref: v.getUint32(at + o + S.foreignRef, true),
    offset: v.getUint16(at + o + S.foreignOffset, true),
    domid: v.getUint16(at + o + S.foreignDomid, true),
  });
  return {
    source: side(S.source),
    dest: side(S.dest),
    len: v.getUint16(at + S.len, true),
    flags: v.getUint16(at + S.flags, true),
    status: v.getInt16(at + S.status, true),
  };
}
