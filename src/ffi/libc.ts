/**
 * bun:ffi bindings to the few libc calls the real-Xen platform needs, with thin wrappers that
 * turn a failure (-1 and errno, or MAP_FAILED) into an ErrnoError (a PlatformError) naming
 * the operation, its argument and the errno.
 *
 * libc is opened on first use, so importing this module costs nothing on a machine (or in a
 * thread) that never touches a device.
 *
 * errno: `__errno_location()` is called once per thread and cached (the address is fixed for
 * the thread's life); after a failing call its int is read with `read.i32`, a plain memory read
 * that runs no code that could overwrite errno in between.
 */
import { dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";
import { PAGE_SIZE } from "../protocol/ring.ts";
import { PlatformError } from "./platform-error.ts";
import { ERRNO, ErrnoError } from "./errno.ts";

// Linux (asm-generic; x86_64 and aarch64 agree) flag values.
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;

export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;

export const EFD_SEMAPHORE = 1;
export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;
export const MFD_CLOEXEC = 1;

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;

/** mmap's MAP_FAILED, ((void *)-1): bun:ffi hands it back as a BigInt. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

const SYMBOLS = {
  open: { args: ["ptr", "i32", "u32"], returns: "i32" },
  close: { args: ["i32"], returns: "i32" },
  read: { args: ["i32", "ptr", "u64"], returns: FFIType.i64_fast },
  write: { args: ["i32", "ptr", "u64"], returns: FFIType.i64_fast },
  // Variadic in C (int ioctl(int, unsigned long, ...)); every request we make passes one pointer.
  ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
  mmap: { args: ["u64", "u64", "i32", "i32", "i32", "i64"], returns: FFIType.u64_fast },
  munmap: { args: ["u64", "u64"], returns: "i32" },
  poll: { args: ["ptr", "u64", "i32"], returns: "i32" },
  eventfd: { args: ["u32", "i32"], returns: "i32" },
  memfd_create: { args: ["ptr", "u32"], returns: "i32" },
  ftruncate: { args: ["i32", "i64"], returns: "i32" },
  socketpair: { args: ["i32", "i32", "i32", "ptr"], returns: "i32" },
  __errno_location: { args: [], returns: "ptr" },
  memmove: { args: ["ptr", "ptr", "u64"], returns: "void" },
  flock: { args: ["i32", "i32"], returns: "i32" },
  mincore: { args: ["u64", "u64", "ptr"], returns: "i32" },
} as const;

const LOCK_EX = 2;
const LOCK_NB = 4;

type Libc = ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"];

let libc: Libc | null = null;
let errnoAddr = 0;

function lib(): Libc {
  if (libc === null) {
    let l: Libc;
    try {
      l = dlopen("libc.so.6", SYMBOLS).symbols;
    } catch (e) {
      throw new PlatformError("ENOENT", "libc.dlopen", `cannot load libc.so.6 (glibc): ${String(e)}`);
    }
    const a = l.__errno_location();
    if (typeof a !== "number" || a === 0) throw new PlatformError("EINVAL", "libc.dlopen", "__errno_location() gave no address");
    errnoAddr = a;
    libc = l;
  }
  return libc;
}

/**
 * libc's memmove, or null where libc.so.6 cannot be loaded (not glibc): the copy path then
 * stays on Buffer's copy. A raw copy checks nothing: its callers check every bound first.
 */
export function libcMemmove(): ((dst: Pointer, src: Pointer, len: number) => unknown) | null {
  try {
    return lib().memmove;
  } catch {
    return null;
  }
}

/** The calling thread's errno, as the last failing libc call left it. */
export function errno(): number {
  lib();
  return read.i32(errnoAddr);
}

/** An ErrnoError for the errno the last call left. */
function fail(op: string, detail: string): ErrnoError {
  return new ErrnoError(op, errno(), detail);
}

const utf8 = new TextEncoder();

/** A NUL-terminated copy of a string, for a `const char *` argument. */
export function cString(s: string): Uint8Array {
  if (s.includes("\0")) throw new PlatformError("EINVAL", "libc", `string contains NUL: ${JSON.stringify(s)}`);
  const b = utf8.encode(s);
  const z = new Uint8Array(b.length + 1);
  z.set(b);
  return z;
}

/** Address of a typed array's first byte (plus `byteOffset`). */
export function addressOf(view: NodeJS.TypedArray | DataView, byteOffset = 0): number {
  return ptr(view, byteOffset);
}

/**
 * Bytes of `buf`'s pages that are resident now (mincore(2)): what of a SharedArrayBuffer has
 * ever been touched, for measuring who owns a process's memory. Pages partly covered count whole.
 */
export function residentBytes(buf: ArrayBufferLike): number {
  if (buf.byteLength === 0) return 0;
  const start = ptr(new Uint8Array(buf));
  const first = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
  const pages = Math.ceil((start + buf.byteLength - first) / PAGE_SIZE);
  const vec = new Uint8Array(pages);
  if (lib().mincore(first, pages * PAGE_SIZE, vec) !== 0) throw fail("mincore", `${pages} pages at 0x${first.toString(16)}`);
  let n = 0;
  for (let i = 0; i < pages; i++) n += vec[i]! & 1;
  return n * PAGE_SIZE;
}

// ---------------------------------------------------------------------------------------
// File descriptors
// ---------------------------------------------------------------------------------------

/** open(2). `op` names the caller's operation in the error, e.g. "evtchn.open". */
export function open(path: string, flags: number, op = "open", mode = 0): number {
  const fd = lib().open(cString(path), flags, mode);
  if (fd < 0) throw fail(op, path);
  return fd;
}

/**
 * Take an exclusive flock on `fd` without waiting; false when another open file holds it. The
 * kernel lets go when the descriptor closes, even when the process dies.
 */
export function tryLockExclusive(fd: number, op = "flock"): boolean {
  if (lib().flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  if (errno() === ERRNO.EAGAIN) return false; // EWOULDBLOCK is EAGAIN on Linux
  throw fail(op, `fd ${fd}`);
}

export function close(fd: number, op = "close"): void {
  if (lib().close(fd) !== 0) {
    // Linux releases the descriptor even when close reports EINTR: nothing to retry.
    if (errno() === ERRNO.EINTR) return;
    throw fail(op, `fd ${fd}`);
  }
}

/**
 * read(2) into `buf` (up to `len` bytes). Returns the count (0 at end of file), or -1 when a
 * non-blocking fd has nothing (EAGAIN) or a signal interrupted (EINTR). Anything else throws.
 */
export function readFd(fd: number, buf: Uint8Array, len = buf.byteLength, op = "read"): number {
  if (len > buf.byteLength) throw new PlatformError("EINVAL", op, `read of ${len} bytes into a ${buf.byteLength}-byte buffer`);
  const n = Number(lib().read(fd, buf, len));
  if (n >= 0) return n;
  const e = errno();
  if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return -1;
  throw new ErrnoError(op, e, `fd ${fd}`);
}

/** write(2) of `buf[0..len)`. Returns the count written, or -1 on EAGAIN/EINTR. Anything else throws. */
export function writeFd(fd: number, buf: Uint8Array, len = buf.byteLength, op = "write"): number {
  if (len > buf.byteLength) throw new PlatformError("EINVAL", op, `write of ${len} bytes from a ${buf.byteLength}-byte buffer`);
  const n = Number(lib().write(fd, buf, len));
  if (n >= 0) return n;
  const e = errno();
  if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return -1;
  throw new ErrnoError(op, e, `fd ${fd}`);
}

/**
 * ioctl(2) with a pointer argument. Returns ioctl's (non-negative) result, e.g. the port an
 * evtchn bind gives. EINTR is retried (every request we make is safe to repeat before it ran).
 * `detail` (or a function making it, so the data path builds no string) goes in the error.
 */
export function ioctl(fd: number, request: number, arg: Uint8Array, op: string, detail?: string | (() => string)): number {
  const l = lib();
  for (;;) {
    const r = l.ioctl(fd, request, arg);
    if (r >= 0) return r;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    const d = typeof detail === "function" ? detail() : detail;
    throw new ErrnoError(op, e, d === undefined || d === "" ? `ioctl 0x${(request >>> 0).toString(16).padStart(8, "0")} on fd ${fd}` : d);
  }
}

export function ftruncate(fd: number, length: number, op = "ftruncate"): void {
  if (lib().ftruncate(fd, length) !== 0) throw fail(op, `fd ${fd} to ${length} bytes`);
}

export function eventfd(initval = 0, flags = EFD_CLOEXEC | EFD_NONBLOCK, op = "eventfd"): number {
  const fd = lib().eventfd(initval, flags);
  if (fd < 0) throw fail(op, `flags 0x${flags.toString(16)}`);
  return fd;
}

const eventfdOne = new BigUint64Array([1n]);
const eventfdOneBytes = new Uint8Array(eventfdOne.buffer);
const eventfdScratch = new Uint8Array(8);

/** Add 1 to an eventfd's counter (wakes whoever polls it). */
export function eventfdSignal(fd: number, op = "eventfd.signal"): void {
  // EAGAIN only when the counter would overflow 2^64-2: then it is signalled already.
  writeFd(fd, eventfdOneBytes, 8, op);
}

/** Reset a non-blocking eventfd's counter; true if it was signalled. */
export function eventfdDrain(fd: number, op = "eventfd.drain"): boolean {
  return readFd(fd, eventfdScratch, 8, op) === 8;
}

export function memfdCreate(name: string, flags = MFD_CLOEXEC, op = "memfd_create"): number {
  const fd = lib().memfd_create(cString(name), flags);
  if (fd < 0) throw fail(op, name);
  return fd;
}

/** socketpair(2): two connected descriptors. */
export function socketpair(
  domain = AF_UNIX,
  type = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
  op = "socketpair",
): [number, number] {
  const fds = new Int32Array(2);
  if (lib().socketpair(domain, type, 0, fds) !== 0) throw fail(op, `domain ${domain} type 0x${type.toString(16)}`);
  return [fds[0] ?? -1, fds[1] ?? -1];
}

// ---------------------------------------------------------------------------------------
// poll
// ---------------------------------------------------------------------------------------

const POLLFD_SIZE = 8; // struct pollfd { int fd; short events; short revents; }

/** A fixed set of descriptors to poll, in a buffer reused by every call. */
export class PollSet {
  private readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(
    readonly fds: readonly number[],
    events: number | readonly number[] = POLLIN,
  ) {
    this.bytes = new Uint8Array(Math.max(1, fds.length) * POLLFD_SIZE);
    this.view = new DataView(this.bytes.buffer);
    fds.forEach((fd, i) => {
      this.view.setInt32(i * POLLFD_SIZE, fd, true);
      this.view.setInt16(i * POLLFD_SIZE + 4, typeof events === "number" ? events : (events[i] ?? POLLIN), true);
    });
  }

  /**
   * poll(2); returns how many descriptors have events (0: timeout, or a signal interrupted).
   * timeoutMs < 0 waits forever. Blocks the calling thread: for workers.
   */
  poll(timeoutMs: number, op = "poll"): number {
    const n = lib().poll(this.bytes, this.fds.length, Math.trunc(timeoutMs));
    if (n >= 0) return n;
    if (errno() === ERRNO.EINTR) return 0;
    throw fail(op, `fds ${this.fds.join(",")}`);
  }

  /** The revents of descriptor `i` from the last poll. */
  revents(i: number): number {
    return this.view.getInt16(i * POLLFD_SIZE + 6, true) & 0xffff;
  }
}

// ---------------------------------------------------------------------------------------
// mmap
// ---------------------------------------------------------------------------------------

function mmapResult(r: number | bigint, op: string, detail: string): number {
  if (typeof r === "bigint") {
    if (r === MAP_FAILED) throw fail(op, detail);
    if (r > BigInt(Number.MAX_SAFE_INTEGER)) throw new PlatformError("EINVAL", op, `${detail}: address 0x${r.toString(16)} is beyond 2^53`);
    return Number(r);
  }
  return r;
}

/** mmap(2). Returns the address; MAP_FAILED (a BigInt) becomes an ErrnoError. */
export function mmap(addr: number, length: number, prot: number, flags: number, fd: number, offset: number, op = "mmap"): number {
  const r = lib().mmap(addr, length, prot, flags, fd, offset);
  return mmapResult(r, op, `${length} bytes of fd ${fd} at offset ${offset}`);
}

export function munmap(addr: number, length: number, op = "munmap"): void {
  if (lib().munmap(addr, length) !== 0) throw fail(op, `${length} bytes at 0x${addr.toString(16)}`);
}

/**
 * A page-aligned range inside a SharedArrayBuffer: the buffer is one page larger than asked,
 * and the range starts at its first 4096-aligned address. Its pages can then be replaced by a
 * device mapping (mapIntoShared) and the buffer still posted to workers, shared.
 */
export interface SharedRegion {
  readonly buffer: SharedArrayBuffer;
  /** Byte offset of the aligned range in `buffer`. */
  readonly offset: number;
  readonly length: number;
  /** Address of the range (4096-aligned). */
  readonly address: number;
}

export function allocSharedRegion(length: number, op = "mmap.alloc"): SharedRegion {
  if (!Number.isInteger(length) || length <= 0 || length % PAGE_SIZE !== 0) {
    throw new PlatformError("EINVAL", op, `length ${length} is not a positive multiple of ${PAGE_SIZE}`);
  }
  const buffer = new SharedArrayBuffer(length + PAGE_SIZE);
  const base = ptr(new Uint8Array(buffer));
  const offset = (PAGE_SIZE - (base % PAGE_SIZE)) % PAGE_SIZE;
  return { buffer, offset, length, address: base + offset };
}

/** A device's pages mapped over a SharedArrayBuffer's own pages. */
export class SharedMapping implements SharedRegion {
  private live = true;

  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly offset: number,
    readonly length: number,
    readonly address: number,
  ) {}

  get mapped(): boolean {
    return this.live;
  }

  /** One view per page, at `offsets` of `buffer` (the PagesDescriptor form). */
  pageOffsets(): number[] {
    const o: number[] = [];
    for (let i = 0; i < this.length / PAGE_SIZE; i++) o.push(this.offset + i * PAGE_SIZE);
    return o;
  }

  /**
   * Put private anonymous (zeroed) memory back in place of the device pages, which drops the
   * device mapping. Must run before the SharedArrayBuffer may be collected, or the JS heap
   * would reuse (or free) pages that belong to the device. Idempotent.
   */
  release(op = "mmap.release"): void {
    if (!this.live) return;
    restoreAnonymous(this.address, this.length, op);
    this.live = false;
  }
}

function restoreAnonymous(address: number, length: number, op: string): void {
  const r = lib().mmap(address, length, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  const got = mmapResult(r, op, `anonymous memory back over ${length} bytes at 0x${address.toString(16)}`);
  if (got !== address) throw new PlatformError("EINVAL", op, `MAP_FIXED at 0x${address.toString(16)} landed at 0x${got.toString(16)}`);
}

/**
 * mmap `region.length` bytes of `fd` at `fileOffset` over the region's own pages
 * (MAP_SHARED|MAP_FIXED). If the mmap fails, anonymous memory is put back first: on kernels
 * older than 6.12 a failed MAP_FIXED may already have unmapped the old pages, leaving a hole
 * in the JS heap.
 */
export function mapIntoShared(
  region: SharedRegion,
  fd: number,
  fileOffset: number,
  prot = PROT_READ | PROT_WRITE,
  op = "mmap",
): SharedMapping {
  const r = lib().mmap(region.address, region.length, prot, MAP_SHARED | MAP_FIXED, fd, fileOffset);
  if (typeof r === "bigint" && r === MAP_FAILED) {
    const e = fail(op, `${region.length} bytes of fd ${fd} at offset ${fileOffset}`);
    restoreAnonymous(region.address, region.length, op);
    throw e;
  }
  const got = mmapResult(r, op, `fd ${fd}`);
  if (got !== region.address) {
    throw new PlatformError("EINVAL", op, `MAP_FIXED at 0x${region.address.toString(16)} landed at 0x${got.toString(16)}`);
  }
  return new SharedMapping(region.buffer, region.offset, region.length, region.address);
}

/** allocSharedRegion + mapIntoShared: `length` bytes of `fd` at `fileOffset`, as shared memory. */
export function mmapShared(fd: number, fileOffset: number, length: number, prot = PROT_READ | PROT_WRITE, op = "mmap"): SharedMapping {
  return mapIntoShared(allocSharedRegion(length, op), fd, fileOffset, prot, op);
}
