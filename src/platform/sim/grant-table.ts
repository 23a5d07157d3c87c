/**
 * Simulated grant tables: one per domain, all in one SharedArrayBuffer.
 *
 * An entry is four Int32 words. The first packs the state with the number of current users
 * (mappings and in-flight copies) so that "map if still active" and "end access if nobody
 * uses it" are each a single compareExchange: a grant can never be ended under a mapping,
 * and a mapping can never be made to a grant being ended, whatever threads race.
 */
import {
  GNTST,
  PAGE_SIZE,
  PlatformError,
  type CopySegment,
  type DomId,
  type GrantRef,
  type GrantStatus,
  type GrantTable,
  type MappedPages,
  type ReadonlyPage,
  type SharedPages,
} from "../types.ts";
import { ReadonlyPageView } from "../readonly-page.ts";
import { LastAddressed, copyBetweenUnchecked } from "../copy-bytes.ts";
import type { PagePool } from "./page-pool.ts";

/** Linux keeps the first 8 references for the toolstack; so do we, and ref 0 is never valid. */
export const FIRST_GRANT_REF = 8;

const F_WORD = 0; // state | users << 2
const F_PEER = 1;
const F_WRITABLE = 2;
const F_PAGE = 3;
const FIELDS = 4;

const FREE = 0;
const ACTIVE = 1;
const ENDING = 2;
/** The owner died while the grant was in use: no new users; the last user's release frees it. */
const ORPHANED = 3;
const STATE_MASK = 3;
const USER = 4;

export interface GrantTableState {
  entries: SharedArrayBuffer;
  /** Int32 per domain: mappings it holds now (leak check). */
  mapsHeld: SharedArrayBuffer;
  /**
   * Int32 pairs per domain: copy calls it made and segments they carried, from any thread
   * (how a test sees that the back end batches its copies; wraps at 2^32).
   */
  copies: SharedArrayBuffer;
  grantsPerDomain: number;
  maxDomains: number;
}

export function createGrantTableState(maxDomains: number, grantsPerDomain: number): GrantTableState {
  return {
    entries: new SharedArrayBuffer(maxDomains * grantsPerDomain * FIELDS * 4),
    mapsHeld: new SharedArrayBuffer(maxDomains * 4),
    copies: new SharedArrayBuffer(maxDomains * 8),
    grantsPerDomain,
    maxDomains,
  };
}

/** What the leak check reports for one grant still active. */
export interface GrantLeak {
  owner: DomId;
  ref: GrantRef;
  peer: DomId;
  users: number;
}

/** The hypervisor's side: shared by every domain's view. */
export class GrantTables {
  private readonly e: Int32Array;
  private readonly held: Int32Array;
  private readonly copies: Int32Array;
  readonly perDomain: number;
  readonly maxDomains: number;

  constructor(
    state: GrantTableState,
    readonly pool: PagePool,
    /** Int32 per domain, 1 while it exists (the hypervisor's domain list). */
    private readonly domains: Int32Array,
  ) {
    this.e = new Int32Array(state.entries);
    this.held = new Int32Array(state.mapsHeld);
    this.copies = new Int32Array(state.copies);
    this.perDomain = state.grantsPerDomain;
    this.maxDomains = state.maxDomains;
  }

  private base(owner: DomId, ref: GrantRef): number {
    return (owner * this.perDomain + (ref - FIRST_GRANT_REF)) * FIELDS;
  }

  validRef(ref: number): boolean {
    return Number.isInteger(ref) && ref >= FIRST_GRANT_REF && ref < FIRST_GRANT_REF + this.perDomain;
  }

  alive(d: DomId): boolean {
    return Atomics.load(this.domains, d) === 1;
  }

  validDomain(d: number): boolean {
    return Number.isInteger(d) && d >= 0 && d < this.maxDomains;
  }

  /** Create `pages.length` grants of `owner` to `peer`; all or nothing. */
  grant(owner: DomId, peer: DomId, pages: number[], writable: boolean): GrantRef[] {
    const refs: GrantRef[] = [];
    for (let i = 0; i < this.perDomain && refs.length < pages.length; i++) {
      const b = (owner * this.perDomain + i) * FIELDS;
      // Claim with ENDING so no mapper sees a half-written entry, publish with ACTIVE.
      if (Atomics.compareExchange(this.e, b + F_WORD, FREE, ENDING) !== FREE) continue;
      const page = pages[refs.length]!;
      Atomics.store(this.e, b + F_PEER, peer);
      Atomics.store(this.e, b + F_WRITABLE, writable ? 1 : 0);
      Atomics.store(this.e, b + F_PAGE, page);
      refs.push(FIRST_GRANT_REF + i);
    }
    if (refs.length < pages.length) {
      for (const r of refs) Atomics.store(this.e, this.base(owner, r) + F_WORD, FREE);
      throw new PlatformError(
        "ENOSPC",
        "gnttab.share",
        `domain ${owner} has no ${pages.length} free grant entries (table of ${this.perDomain})`,
      );
    }
    for (const r of refs) Atomics.store(this.e, this.base(owner, r) + F_WORD, ACTIVE);
    return refs;
  }

  /** End access to `refs` of `owner`: refused (EBUSY) while any is mapped or being copied. */
  endAccess(owner: DomId, refs: readonly GrantRef[]): number[] {
    const ended: GrantRef[] = [];
    for (const r of refs) {
      const b = this.base(owner, r);
      const prev = Atomics.compareExchange(this.e, b + F_WORD, ACTIVE, ENDING);
      if (prev !== ACTIVE) {
        for (const x of ended) Atomics.store(this.e, this.base(owner, x) + F_WORD, ACTIVE);
        if ((prev & STATE_MASK) === ACTIVE) {
          throw new PlatformError(
            "EBUSY",
            "gnttab.unshare",
            `grant ${r} of domain ${owner} is still in use by domain ${Atomics.load(this.e, b + F_PEER)} (${prev >> 2} user(s))`,
          );
        }
        throw new PlatformError("ENOENT", "gnttab.unshare", `grant ${r} of domain ${owner} is not active`);
      }
      ended.push(r);
    }
    const pages = ended.map((r) => Atomics.load(this.e, this.base(owner, r) + F_PAGE));
    for (const r of ended) Atomics.store(this.e, this.base(owner, r) + F_WORD, FREE);
    return pages;
  }

  /**
   * End access to `refs` of `owner` now where nobody uses them (their pages are returned, for
   * the caller to free), and where a grant is still mapped or being copied, once its last user
   * lets go (it is orphaned: no new users, and release() frees its page).
   */
  endAccessDeferred(owner: DomId, refs: readonly GrantRef[]): number[] {
    const free: number[] = [];
    for (const r of refs) {
      const b = this.base(owner, r);
      for (;;) {
        const w = Atomics.load(this.e, b + F_WORD);
        if ((w & STATE_MASK) !== ACTIVE) throw new PlatformError("ENOENT", "gnttab.unshare", `grant ${r} of domain ${owner} is not active`);
        if (w === ACTIVE) {
          if (Atomics.compareExchange(this.e, b + F_WORD, ACTIVE, ENDING) !== ACTIVE) continue;
          free.push(Atomics.load(this.e, b + F_PAGE));
          Atomics.store(this.e, b + F_WORD, FREE);
          break;
        }
        if (Atomics.compareExchange(this.e, b + F_WORD, w, (w & ~STATE_MASK) | ORPHANED) === w) break;
      }
    }
    return free;
  }

  /**
   * Take one user of `owner`'s grant `ref` on behalf of `peer`. Returns the page, or a GNTST
   * status saying why not (a negative number).
   *
   * The user is taken first and the peer and access checked after: a grant cannot be ended or
   * re-granted while it has a user, so the fields read then are the ones the grant was made
   * with. (Checking first and pinning after would let an end and a re-grant slip in between.)
   * This is the back end's per-frame path: one compareExchange, the rest plain reads.
   */
  acquire(owner: DomId, ref: GrantRef, peer: DomId, write: boolean): number {
    if (!this.validDomain(owner)) return GNTST.badDomain;
    if (!this.validRef(ref)) return GNTST.badGntref;
    const e = this.e;
    const b = this.base(owner, ref);
    // A stale plain read only makes the compareExchange fail once; a "not active" one is confirmed.
    let w = e[b + F_WORD]!;
    for (;;) {
      if ((w & STATE_MASK) !== ACTIVE) {
        w = Atomics.load(e, b + F_WORD);
        if ((w & STATE_MASK) !== ACTIVE) return GNTST.badGntref;
      }
      const seen = Atomics.compareExchange(e, b + F_WORD, w, w + USER);
      if (seen === w) break;
      w = seen;
    }
    // Ordered after the grant's own Atomics.store of ACTIVE by the compareExchange above.
    if (e[b + F_PEER] !== peer || (write && e[b + F_WRITABLE] === 0)) {
      this.release(owner, ref);
      return GNTST.permissionDenied;
    }
    return e[b + F_PAGE]!;
  }

  release(owner: DomId, ref: GrantRef): void {
    const b = this.base(owner, ref);
    const left = Atomics.sub(this.e, b + F_WORD, USER) - USER;
    if (left === ORPHANED && Atomics.compareExchange(this.e, b + F_WORD, ORPHANED, FREE) === ORPHANED) {
      this.pool.free(Atomics.load(this.e, b + F_PAGE));
    }
  }

  /**
   * The peer domain is gone: only a grant's peer can map or copy it, so every user of a grant
   * to `peer` was that domain, and Xen drops its mappings with it. Its owner can end access now.
   */
  dropUsersOf(peer: DomId): void {
    for (let b = 0; b < this.e.length; b += FIELDS) {
      for (;;) {
        const w = Atomics.load(this.e, b + F_WORD);
        if (w >> 2 === 0 || Atomics.load(this.e, b + F_PEER) !== peer) break;
        const state = w & STATE_MASK;
        // An orphaned grant whose last user was the dead domain ends with it.
        if (Atomics.compareExchange(this.e, b + F_WORD, w, state === ORPHANED ? FREE : state) !== w) continue;
        if (state === ORPHANED) this.pool.free(Atomics.load(this.e, b + F_PAGE));
        break;
      }
    }
    Atomics.store(this.held, peer, 0);
  }

  /**
   * The owner domain is gone: its unused grants end now; a grant still mapped or being copied
   * keeps its page until the last user lets go, as Xen keeps a dead domain's mapped pages.
   * Returns the pages still held by other domains.
   */
  revokeAll(owner: DomId): number[] {
    const held: number[] = [];
    for (let i = 0; i < this.perDomain; i++) {
      const b = (owner * this.perDomain + i) * FIELDS;
      for (;;) {
        const w = Atomics.load(this.e, b + F_WORD);
        if ((w & STATE_MASK) !== ACTIVE) break;
        if (w === ACTIVE) {
          if (Atomics.compareExchange(this.e, b + F_WORD, ACTIVE, FREE) === ACTIVE) break;
        } else if (Atomics.compareExchange(this.e, b + F_WORD, w, (w & ~STATE_MASK) | ORPHANED) === w) {
          held.push(Atomics.load(this.e, b + F_PAGE));
          break;
        }
      }
    }
    return held;
  }

  addMapsHeld(domid: DomId, n: number): void {
    Atomics.add(this.held, domid, n);
  }

  /** One copy call of `segments` segments by `domid`. */
  countCopy(domid: DomId, segments: number): void {
    Atomics.add(this.copies, domid * 2, 1);
    Atomics.add(this.copies, domid * 2 + 1, segments);
  }

  /** Copy calls `domid` made and the segments they carried, since the machine was made. */
  copyCounts(domid: DomId): { calls: number; segments: number } {
    return { calls: Atomics.load(this.copies, domid * 2) >>> 0, segments: Atomics.load(this.copies, domid * 2 + 1) >>> 0 };
  }

  mapsHeld(domid: DomId): number {
    return Atomics.load(this.held, domid);
  }

  /** Every grant still active, in every domain. */
  activeGrants(): GrantLeak[] {
    const out: GrantLeak[] = [];
    for (let d = 0; d < this.maxDomains; d++) {
      for (let i = 0; i < this.perDomain; i++) {
        const b = (d * this.perDomain + i) * FIELDS;
        const w = Atomics.load(this.e, b + F_WORD);
        if ((w & STATE_MASK) === FREE) continue;
        out.push({ owner: d, ref: FIRST_GRANT_REF + i, peer: Atomics.load(this.e, b + F_PEER), users: w >> 2 });
      }
    }
    return out;
  }

  /** Grants `owner` has active now. */
  activeCount(owner: DomId): number {
    let n = 0;
    for (let i = 0; i < this.perDomain; i++) {
      if ((Atomics.load(this.e, (owner * this.perDomain + i) * FIELDS + F_WORD) & STATE_MASK) !== FREE) n++;
    }
    return n;
  }
}

function statusName(s: number): string {
  return Object.entries(GNTST).find(([, v]) => v === s)?.[0] ?? String(s);
}

/** One domain's grant operations (gntalloc + gntdev + GNTTABOP_copy). */
export class SimGrantTable implements GrantTable {
  constructor(
    private readonly t: GrantTables,
    readonly domid: DomId,
  ) {}

  share(peer: DomId, count: number, writable: boolean): SharedPages {
    if (!Number.isInteger(count) || count < 1) throw new PlatformError("EINVAL", "gnttab.share", `page count must be a positive integer, got ${count}`);
    if (!this.t.validDomain(peer)) throw new PlatformError("EINVAL", "gnttab.share", `no domain ${peer}`);
    const pool = this.t.pool;
    const pages = pool.alloc(this.domid, count, "gnttab.share");
    let refs: GrantRef[];
    try {
      refs = this.t.grant(this.domid, peer, pages, writable);
    } catch (e) {
      for (const p of pages) pool.free(p);
      throw e;
    }
    // A page's view is made when asked for: a front end shares hundreds of pages that only
    // its workers touch (through the descriptor), and a view each would be garbage to scan.
    let views: Uint8Array[] | null = null;
    return {
      peer,
      writable,
      refs,
      get pages() {
        views ??= pages.map((p) => pool.view(p));
        return views;
      },
      descriptor: { buffer: pool.memory, offsets: pages.map((p) => pool.offset(p)) },
    };
  }

  unshare(shared: SharedPages, opts: { defer?: boolean } = {}): void {
    const pages = opts.defer === true ? this.t.endAccessDeferred(this.domid, shared.refs) : this.t.endAccess(this.domid, shared.refs);
    for (const p of pages) this.t.pool.free(p);
  }

  map(owner: DomId, refs: readonly GrantRef[], writable: true): MappedPages<Uint8Array>;
  map(owner: DomId, refs: readonly GrantRef[], writable: false): MappedPages<ReadonlyPage>;
  map(owner: DomId, refs: readonly GrantRef[], writable: boolean): MappedPages<Uint8Array> | MappedPages<ReadonlyPage> {
    if (refs.length === 0) throw new PlatformError("EINVAL", "gnttab.map", "no grant references given");
    const pages: number[] = [];
    for (const ref of refs) {
      const p = this.t.acquire(owner, ref, this.domid, writable);
      if (p < 0) {
        refs.slice(0, pages.length).forEach((r) => this.t.release(owner, r));
        throw new PlatformError(
          p === GNTST.permissionDenied ? "EPERM" : "ENOENT",
          "gnttab.map",
          `domain ${this.domid} cannot map grant ${ref} of domain ${owner} ${writable ? "writable" : "read-only"}: ${statusName(p)}`,
        );
      }
      pages.push(p);
    }
    this.t.addMapsHeld(this.domid, refs.length);
    const pool = this.t.pool;
    const views = pages.map((p) => pool.view(p));
    const frozenRefs = Object.freeze([...refs]);
    if (writable) {
      return { owner, refs: frozenRefs, writable: true, pages: views, descriptor: { buffer: pool.memory, offsets: pages.map((p) => pool.offset(p)) } };
    }
    return { owner, refs: frozenRefs, writable: false, pages: views.map((v) => new ReadonlyPageView(v)), descriptor: null };
  }

  unmap(m: MappedPages<Uint8Array> | MappedPages<ReadonlyPage>): void {
    if (unmapped.has(m)) throw new PlatformError("EINVAL", "gnttab.unmap", `mapping of grants [${m.refs.join(",")}] of domain ${m.owner} already unmapped`);
    unmapped.add(m);
    // Our domain was destroyed: the hypervisor already dropped every mapping it had.
    if (!this.t.alive(this.domid)) return;
    for (const r of m.refs) this.t.release(m.owner, r);
    this.t.addMapsHeld(this.domid, -m.refs.length);
  }

  copy(segments: CopySegment[]): void {
    this.t.countCopy(this.domid, segments.length);
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i]!;
      s.status = this.copyOne(s);
    }
  }

  /** Copy calls this domain made (from any thread) and the segments they carried: GNTTABOP_copy hypercalls, on real Xen. */
  copyCounts(): { calls: number; segments: number } {
    return this.t.copyCounts(this.domid);
  }

  /** The local buffers last copied from and to, with their addresses. */
  private readonly srcLocal = new LastAddressed();
  private readonly dstLocal = new LastAddressed();

  /**
   * One GNTTABOP_copy segment. Each foreign side is pinned (a user taken) for the copy, so the
   * owner cannot end access and reuse the page underneath it. Nothing is allocated and every
   * bound is checked once, here, before the unchecked native copy: this is the back end's
   * per-frame path.
   */
  private copyOne(s: CopySegment): GrantStatus {
    const len = s.len;
    if (!(Number.isInteger(len) && len >= 0 && len <= PAGE_SIZE)) return GNTST.badCopyArg;
    const t = this.t;
    const src = s.source;
    const dst = s.dest;
    const srcOffset = src.offset;
    const dstOffset = dst.offset;
    if (!(Number.isInteger(srcOffset) && srcOffset >= 0 && Number.isInteger(dstOffset) && dstOffset >= 0)) return GNTST.badCopyArg;
    let from = t.pool.addressed;
    let srcAt = srcOffset;
    let srcPage = -1;
    if ("buf" in src) {
      if (srcOffset + len > src.buf.byteLength) return GNTST.badCopyArg;
      from = this.srcLocal.of(src.buf);
    } else {
      if (srcOffset + len > PAGE_SIZE) return GNTST.badCopyArg;
      srcPage = t.acquire(src.domid, src.ref, this.domid, false);
      if (srcPage < 0) return srcPage as GrantStatus;
      srcAt += srcPage * PAGE_SIZE;
    }
    let status: GrantStatus = GNTST.okay;
    if ("buf" in dst) {
      if (dstOffset + len > dst.buf.byteLength) status = GNTST.badCopyArg;
      else if (len > 0) copyBetweenUnchecked(this.dstLocal.of(dst.buf), dstOffset, from, srcAt, len);
    } else if (dstOffset + len > PAGE_SIZE) {
      status = GNTST.badCopyArg;
    } else {
      const dstPage = t.acquire(dst.domid, dst.ref, this.domid, true);
      if (dstPage < 0) status = dstPage as GrantStatus;
      else {
        if (len > 0) copyBetweenUnchecked(t.pool.addressed, dstPage * PAGE_SIZE + dstOffset, from, srcAt, len);
        t.release(dst.domid, dst.ref);
      }
    }
    if (srcPage >= 0) t.release((src as { domid: DomId; ref: GrantRef }).domid, (src as { domid: DomId; ref: GrantRef }).ref);
    return status;
  }
}

/** Mappings already unmapped, so a double unmap is an error and not a second release. */
const unmapped = new WeakSet<object>();
