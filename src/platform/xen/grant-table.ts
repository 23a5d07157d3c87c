/**
 * Grant tables on real Xen, through Linux's devices:
 * - share: /dev/xen/gntalloc ALLOC_GREF (zeroed pages granted to the peer), then mmap at the
 *   returned index, over a SharedArrayBuffer's own pages (libc.mapIntoShared), so the pages
 *   are postable to workers as they are in the simulation.
 * - map: /dev/xen/gntdev MAP_GRANT_REF, then mmap likewise (PROT_READ only for a read-only
 *   map: gntdev then maps with GNTMAP_readonly, and JS only gets ReadonlyPage accessors).
 * - unshare/unmap: anonymous memory back over the range (which drops the device mapping),
 *   then DEALLOC_GREF / UNMAP_GRANT_REF.
 * - copy: GRANT_COPY with the segments in a reused buffer; local sides by address.
 *
 * Differences from the simulation: gntalloc never refuses DEALLOC while the peer still maps
 * a page (the kernel defers freeing it), so unshare() does not throw EBUSY here.
 */
import { ErrnoError } from "../../ffi/errno.ts";
import * as libc from "../../ffi/libc.ts";
import {
  GNTALLOC_FLAG_WRITABLE,
  GNTCOPY_DEST_GREF,
  GNTCOPY_SOURCE_GREF,
  GRANT_COPY_SEGMENT,
  IOCTL_GNTALLOC_ALLOC_GREF,
  IOCTL_GNTALLOC_DEALLOC_GREF,
  IOCTL_GNTDEV_GRANT_COPY,
  IOCTL_GNTDEV_MAP_GRANT_REF,
  IOCTL_GNTDEV_UNMAP_GRANT_REF,
  IoctlBuffer,
  copySegmentAt,
  copyStatus,
  decodeGntallocAllocGref,
  decodeGntdevMapGrantRef,
  encodeGntallocAllocGref,
  encodeGntallocDeallocGref,
  encodeGntdevGrantCopy,
  encodeGntdevMapGrantRef,
  encodeGntdevUnmapGrantRef,
  gntallocAllocGrefSize,
  gntdevMapGrantRefSize,
  setCopySideForeign,
  setCopySideVirt,
  setCopyTail,
  u64ToNumber,
} from "../../ffi/xen-ioctl.ts";
import {
  GNTST,
  PAGE_SIZE,
  PlatformError,
  type CopySegment,
  type CopySide,
  type DomId,
  type GrantRef,
  type GrantStatus,
  type GrantTable,
  type MappedPages,
  type ReadonlyPage,
  type SharedPages,
} from "../types.ts";
import { ReadonlyPageView } from "../readonly-page.ts";

export const GNTALLOC_DEVICE = "/dev/xen/gntalloc";
export const GNTDEV_DEVICE = "/dev/xen/gntdev";

/** What a live share or map holds: its device index and its SharedArrayBuffer mapping. */
interface Held {
  readonly kind: "share" | "map";
  readonly index: number;
  readonly count: number;
  readonly mapping: libc.SharedMapping;
}

/** Segments one GRANT_COPY ioctl carries at most; longer lists go in several calls. */
const COPY_BATCH = 256;

export class XenGrantTable implements GrantTable {
  private gntallocFd = -1;
  private gntdevFd = -1;
  private readonly arg = new IoctlBuffer(64);
  private readonly copyArg = new IoctlBuffer(16);
  private readonly segs = new IoctlBuffer(COPY_BATCH * GRANT_COPY_SEGMENT.size);
  /** Which caller segment each encoded segment is, in the current batch. */
  private readonly batchIndex = new Int32Array(COPY_BATCH);
  private readonly held = new Map<SharedPages | MappedPages<Uint8Array> | MappedPages<ReadonlyPage>, Held>();
  private closed = false;

  constructor(
    readonly domid: DomId,
    private readonly devices: { gntalloc: string; gntdev: string } = { gntalloc: GNTALLOC_DEVICE, gntdev: GNTDEV_DEVICE },
  ) {}

  private live(op: string): void {
    if (this.closed) throw new PlatformError("ECLOSED", op, `the grant table of domain ${this.domid} is closed`);
  }

  private gntalloc(): number {
    if (this.gntallocFd < 0) this.gntallocFd = libc.open(this.devices.gntalloc, libc.O_RDWR | libc.O_CLOEXEC, "gnttab.open");
    return this.gntallocFd;
  }

  private gntdev(): number {
    if (this.gntdevFd < 0) this.gntdevFd = libc.open(this.devices.gntdev, libc.O_RDWR | libc.O_CLOEXEC, "gnttab.open");
    return this.gntdevFd;
  }

  share(peer: DomId, count: number, writable: boolean): SharedPages {
    const op = "gnttab.share";
    this.live(op);
    if (!Number.isInteger(count) || count < 1) throw new PlatformError("EINVAL", op, `page count must be a positive integer, got ${count}`);
    const fd = this.gntalloc();
    const v = this.arg.reserve(gntallocAllocGrefSize(count));
    encodeGntallocAllocGref(v, peer, writable ? GNTALLOC_FLAG_WRITABLE : 0, count);
    libc.ioctl(fd, IOCTL_GNTALLOC_ALLOC_GREF, this.arg.bytes, op, () => `${count} pages for domain ${peer}`);
    const got = decodeGntallocAllocGref(v);
    const index = u64ToNumber("index", got.index);
    let mapping: libc.SharedMapping;
    try {
      mapping = libc.mmapShared(fd, index, count * PAGE_SIZE, libc.PROT_READ | libc.PROT_WRITE, op);
    } catch (e) {
      this.dealloc(index, count);
      throw e;
    }
    const offsets = mapping.pageOffsets();
    const shared: SharedPages = {
      peer,
      writable,
      refs: Object.freeze(got.grefIds),
      pages: offsets.map((o) => new Uint8Array(mapping.buffer, o, PAGE_SIZE)),
      descriptor: { buffer: mapping.buffer, offsets },
    };
    this.held.set(shared, { kind: "share", index, count, mapping });
    return shared;
  }

  unshare(pages: SharedPages): void {
    const op = "gnttab.unshare";
    const h = this.held.get(pages);
    if (h === undefined || h.kind !== "share") throw new PlatformError("EINVAL", op, `grants [${pages.refs.join(",")}] are not shared by this grant table`);
    this.held.delete(pages);
    h.mapping.release(op);
    this.dealloc(h.index, h.count);
  }

  private dealloc(index: number, count: number): void {
    encodeGntallocDeallocGref(this.arg.view, index, count);
    libc.ioctl(this.gntalloc(), IOCTL_GNTALLOC_DEALLOC_GREF, this.arg.bytes, "gnttab.unshare", () => `${count} grants at index ${index}`);
  }

  map(owner: DomId, refs: readonly GrantRef[], writable: true): MappedPages<Uint8Array>;
  map(owner: DomId, refs: readonly GrantRef[], writable: false): MappedPages<ReadonlyPage>;
  map(owner: DomId, refs: readonly GrantRef[], writable: boolean): MappedPages<Uint8Array> | MappedPages<ReadonlyPage> {
    const op = "gnttab.map";
    this.live(op);
    if (refs.length === 0) throw new PlatformError("EINVAL", op, "no grant references given");
    const fd = this.gntdev();
    const v = this.arg.reserve(gntdevMapGrantRefSize(refs.length));
    encodeGntdevMapGrantRef(v, owner, refs);
    const what = () => `grants [${refs.join(",")}] of domain ${owner} ${writable ? "writable" : "read-only"}`;
    libc.ioctl(fd, IOCTL_GNTDEV_MAP_GRANT_REF, this.arg.bytes, op, what);
    const index = u64ToNumber("index", decodeGntdevMapGrantRef(v).index);
    let mapping: libc.SharedMapping;
    try {
      // The hypervisor maps the grants here: a bad ref or a refused access fails the mmap.
      mapping = libc.mmapShared(fd, index, refs.length * PAGE_SIZE, writable ? libc.PROT_READ | libc.PROT_WRITE : libc.PROT_READ, op);
    } catch (e) {
      this.unmapIndex(index, refs.length);
      throw e instanceof PlatformError ? new PlatformError(e.code, op, `${what()}: ${e.message}`) : e;
    }
    const offsets = mapping.pageOffsets();
    const views = offsets.map((o) => new Uint8Array(mapping.buffer, o, PAGE_SIZE));
    const frozenRefs = Object.freeze([...refs]);
    const m: MappedPages<Uint8Array> | MappedPages<ReadonlyPage> = writable
      ? { owner, refs: frozenRefs, writable: true, pages: views, descriptor: { buffer: mapping.buffer, offsets } }
      : { owner, refs: frozenRefs, writable: false, pages: views.map((p) => new ReadonlyPageView(p)), descriptor: null };
    this.held.set(m, { kind: "map", index, count: refs.length, mapping });
    return m;
  }

  unmap(m: MappedPages<Uint8Array> | MappedPages<ReadonlyPage>): void {
    const op = "gnttab.unmap";
    const h = this.held.get(m);
    if (h === undefined || h.kind !== "map") {
      throw new PlatformError("EINVAL", op, `mapping of grants [${m.refs.join(",")}] of domain ${m.owner} is not live in this grant table`);
    }
    this.held.delete(m);
    h.mapping.release(op);
    this.unmapIndex(h.index, h.count);
  }

  private unmapIndex(index: number, count: number): void {
    encodeGntdevUnmapGrantRef(this.arg.view, index, count);
    libc.ioctl(this.gntdev(), IOCTL_GNTDEV_UNMAP_GRANT_REF, this.arg.bytes, "gnttab.unmap", () => `${count} grants at index ${index}`);
  }

  /**
   * GNTTABOP_copy through gntdev. Segments the kernel would refuse as a whole (a page
   * crossed, two local sides, a local range outside its buffer) get GNTST_bad_copy_arg and
   * are not sent; the rest go in batches, each segment's status from the hypervisor.
   */
  copy(segments: CopySegment[]): void {
    const op = "gnttab.copy";
    this.live(op);
    const fd = this.gntdev();
    const v = this.segs.view;
    let n = 0;
    const flush = () => {
      if (n === 0) return;
      encodeGntdevGrantCopy(this.copyArg.view, n, libc.addressOf(this.segs.bytes));
      try {
        libc.ioctl(fd, IOCTL_GNTDEV_GRANT_COPY, this.copyArg.bytes, op, () => `${n} segments`);
        for (let i = 0; i < n; i++) {
          const s = segments[this.batchIndex[i] ?? -1];
          if (s !== undefined) s.status = copyStatus(v, copySegmentAt(i)) as GrantStatus;
        }
      } catch (e) {
        // EFAULT/EINVAL: the kernel refused the batch and the statuses are undefined; report
        // every segment of it failed. Anything else (EBADF, ENOTTY...) is not the segments' fault.
        if (!(e instanceof ErrnoError) || (e.errnoName !== "EINVAL" && e.errnoName !== "EFAULT")) throw e;
        for (let i = 0; i < n; i++) {
          const s = segments[this.batchIndex[i] ?? -1];
          if (s !== undefined) s.status = GNTST.generalError;
        }
      }
      n = 0;
    };
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i] as CopySegment;
      const at = copySegmentAt(n);
      if (!this.encodeSegment(v, at, s)) {
        s.status = GNTST.badCopyArg;
        continue;
      }
      this.batchIndex[n++] = i;
      if (n === COPY_BATCH) flush();
    }
    flush();
  }

  /** Encode one segment at `at`; false if the kernel would refuse it (bad argument). */
  private encodeSegment(v: DataView, at: number, s: CopySegment): boolean {
    const len = s.len;
    if (!Number.isInteger(len) || len < 0 || len > PAGE_SIZE) return false;
    if ("buf" in s.source && "buf" in s.dest) return false;
    const a = this.encodeSide(v, at, GRANT_COPY_SEGMENT.source, s.source, len, GNTCOPY_SOURCE_GREF);
    const b = a < 0 ? -1 : this.encodeSide(v, at, GRANT_COPY_SEGMENT.dest, s.dest, len, GNTCOPY_DEST_GREF);
    if (b < 0) return false;
    setCopyTail(v, at, len, a | b);
    return true;
  }

  /** One side of a segment; returns its GNTCOPY flag (0 for a local buffer), or -1 if invalid. */
  private encodeSide(v: DataView, at: number, where: number, c: CopySide, len: number, flag: number): number {
    if (!Number.isInteger(c.offset) || c.offset < 0) return -1;
    if ("buf" in c) {
      if (c.offset + len > c.buf.byteLength) return -1;
      setCopySideVirt(v, at, where, libc.addressOf(c.buf) + c.offset);
      return 0;
    }
    if (c.offset + len > PAGE_SIZE) return -1;
    if (!Number.isInteger(c.ref) || c.ref < 0 || c.ref > 0xffff_ffff || !Number.isInteger(c.domid) || c.domid < 0 || c.domid > 0xffff) return -1;
    setCopySideForeign(v, at, where, c.ref, c.offset, c.domid);
    return flag;
  }

  /** Release every live share and mapping (anonymous memory back), then close the devices. */
  close(): void {
    if (this.closed) return;
    for (const [obj, h] of [...this.held]) {
      try {
        if (h.kind === "share") this.unshare(obj as SharedPages);
        else this.unmap(obj as MappedPages<Uint8Array>);
      } catch {
        // Closing the device below drops what is left.
      }
    }
    this.closed = true;
    if (this.gntallocFd >= 0) libc.close(this.gntallocFd, "gnttab.close");
    if (this.gntdevFd >= 0) libc.close(this.gntdevFd, "gnttab.close");
    this.gntallocFd = -1;
    this.gntdevFd = -1;
  }
}
