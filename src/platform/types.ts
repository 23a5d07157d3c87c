/**
 * The hypervisor interface both platforms provide: the simulated one (sim/) and real Xen
 * (xen/, over /dev/xen/* through bun:ffi). It mirrors what Linux gives userspace: gntalloc
 * (share pages), gntdev (map foreign grants, grant copy), evtchn (one handle = one open
 * /dev/xen/evtchn) and xenstore.
 *
 * Everything a worker needs crosses postMessage as a *descriptor* (plain data and
 * SharedArrayBuffers), never as an object: a worker calls `openPlatform(descriptor)` and gets
 * its own view of the same hypervisor.
 */

export type DomId = number;
export type GrantRef = number;
export type Port = number;

export { PAGE_SIZE } from "../protocol/ring.ts";
import { PAGE_SIZE } from "../protocol/ring.ts";
export { PlatformError, type PlatformErrorCode } from "../ffi/platform-error.ts";

/** Postable description of pages in shared memory: page i is `buffer[offsets[i] .. +4096]`. */
export interface PagesDescriptor {
  buffer: SharedArrayBuffer;
  offsets: number[];
}

/** Wrap a PagesDescriptor as one 4096-byte view per page (in any thread). */
export function pageViews(d: PagesDescriptor): Uint8Array[] {
  return d.offsets.map((o) => new Uint8Array(d.buffer, o, PAGE_SIZE));
}

/** Pages this domain shares with a peer (gntalloc side). */
export interface SharedPages {
  readonly peer: DomId;
  readonly writable: boolean;
  readonly refs: readonly GrantRef[];
  readonly pages: readonly Uint8Array[];
  readonly descriptor: PagesDescriptor;
}

/** Read access to a page mapped read-only: no way to write through it. */
export interface ReadonlyPage {
  readonly byteLength: number;
  at(index: number): number;
  /** Copy `len` bytes at `offset` into `dst` at `dstOffset`. */
  copyTo(offset: number, len: number, dst: Uint8Array, dstOffset: number): void;
}

/** Foreign grants mapped into this domain (gntdev side). */
export interface MappedPages<P = Uint8Array> {
  readonly owner: DomId;
  readonly refs: readonly GrantRef[];
  readonly writable: boolean;
  readonly pages: readonly P[];
  /** Postable view of the mapping for a worker; only writable maps have one. */
  readonly descriptor: PagesDescriptor | null;
}

/**
 * One grant-copy segment (GNTTABOP_copy): each side is a foreign grant `{domid, ref, offset}`
 * or a local buffer `{buf, offset}`. A segment must not cross a page. `status` is set by copy().
 */
export type CopySide = { domid: DomId; ref: GrantRef; offset: number } | { buf: Uint8Array; offset: number };
export interface CopySegment {
  source: CopySide;
  dest: CopySide;
  len: number;
  status?: GrantStatus;
}

/** GNTST_* results of a grant operation, per segment. */
export const GNTST = {
  okay: 0,
  generalError: -1,
  badDomain: -2,
  badGntref: -3,
  badHandle: -4,
  badVirtAddr: -5,
  badDevAddr: -6,
  noDeviceSpace: -7,
  permissionDenied: -8,
  badPage: -9,
  badCopyArg: -10,
} as const;
export type GrantStatus = (typeof GNTST)[keyof typeof GNTST];

export interface GrantTable {
  /** Grant `count` zeroed pages of this domain to `peer`. */
  share(peer: DomId, count: number, writable: boolean): SharedPages;
  /**
   * End foreign access and free the pages. While the peer still maps one of them: EBUSY, or
   * with `defer`, that page is freed by the hypervisor once the peer lets go (never reused
   * before), as Linux's gnttab_end_foreign_access does. Real Xen always defers.
   */
  unshare(pages: SharedPages, opts?: { defer?: boolean }): void;
  /** Map grants that domain `owner` gave this domain. */
  map(owner: DomId, refs: readonly GrantRef[], writable: true): MappedPages<Uint8Array>;
  map(owner: DomId, refs: readonly GrantRef[], writable: false): MappedPages<ReadonlyPage>;
  unmap(m: MappedPages<Uint8Array> | MappedPages<ReadonlyPage>): void;
  /** Grant copy, the back end's data path. Sets each segment's status; never throws for a bad segment. */
  copy(segments: CopySegment[]): void;
}

export interface EventChannels {
  /** Allocate a port that `peer` may bind to. */
  allocUnbound(peer: DomId): Port;
  /** Bind to `remotePort` of domain `peer` (allocated unbound for us). */
  bindInterdomain(peer: DomId, remotePort: Port): Port;
  /** Signal the other end of a bound port. */
  notify(port: Port): void;
  /** Re-arm a port that fired (a fired port is masked until unmasked, as /dev/xen/evtchn does). */
  unmask(port: Port): void;
  unbind(port: Port): void;
  /** Take the pending ports (and mask them) without waiting. */
  pending(): Port[];
  /**
   * Block the calling thread (a worker) until a port fires, a kick, or the timeout (ms) passes.
   * The array is the handle's own, reused by the next wait (a worker waits thousands of times
   * a second and must not make garbage doing it): read it before waiting again.
   */
  wait(timeoutMs?: number): Port[];
  /**
   * Wake whoever waits on this handle, with no port (an empty result). A worker sleeps on its
   * event channel and on its queue from the main thread at once: on real Xen an eventfd
   * polled beside the evtchn fd, in the simulation the handle's own wake word.
   */
  kick(): void;
  /** Wait without blocking the event loop (the main thread). */
  waitAsync(timeoutMs?: number): Promise<Port[]>;
  /** Postable description; `openEventChannels` in a worker gives a handle on the same ports. */
  readonly descriptor: unknown;
  /** Unbind every port of this handle. */
  close(): void;
}

/**
 * What one thread blocks on to hear many rings at once (a pool worker): an event-channel handle
 * that ports of this machine's domains are bound through (`Platform.eventChannelsVia`), and
 * that other threads kick. On real Xen it is one open /dev/xen/evtchn (every port of the
 * process belongs to its one domain) plus an eventfd; in the simulation, where domains share
 * a process, one handle holds the ports of several domains.
 */
export interface EventWaiter {
  /**
   * Block until a port bound through this waiter fires, a kick, or the timeout (ms; 0: do not
   * block). `out` is emptied and filled with [domid, port] pairs; each fired port is masked
   * until unmasked. Returns `out`.
   */
  wait(timeoutMs: number, out: number[]): number[];
  unmask(domid: DomId, port: Port): void;
  /** Wake whoever waits, with no port. */
  kick(): void;
  /** Postable; `Platform.openEventWaiter(descriptor)` in a worker gives a view of the same handle. */
  readonly descriptor: unknown;
  /** Unbind every port still bound through it and close it (the view that opened it only). */
  close(): void;
}

/** Xenstore permissions: the first entry names the owner and everyone's default access. */
export type PermAccess = "n" | "r" | "w" | "b";
export interface Perm {
  domid: DomId;
  access: PermAccess;
}

export interface XsTransaction {
  readonly id: number;
}

export interface XenStore {
  /** The node's value, or null if it does not exist. */
  read(path: string, tx?: XsTransaction): Promise<string | null>;
  /** Creates missing parents, as xenstored does. */
  write(path: string, value: string, tx?: XsTransaction): Promise<void>;
  mkdir(path: string, tx?: XsTransaction): Promise<void>;
  /** Children's names; ENOENT when the node does not exist. */
  directory(path: string, tx?: XsTransaction): Promise<string[]>;
  /** Remove a node and everything below it; removing a missing node is not an error. */
  rm(path: string, tx?: XsTransaction): Promise<void>;
  getPerms(path: string, tx?: XsTransaction): Promise<Perm[]>;
  setPerms(path: string, perms: Perm[], tx?: XsTransaction): Promise<void>;
  /**
   * Watch `path` and everything below it. Fires once on registration, then on every change
   * (with the path that changed). Spurious events are allowed: re-read, never count events.
   */
  watch(path: string, token: string, onEvent: (path: string, token: string) => void): Promise<XsWatch>;
  transactionStart(): Promise<XsTransaction>;
  /** Commit (true) or abort (false). A commit that conflicts throws EAGAIN. */
  transactionEnd(tx: XsTransaction, commit: boolean): Promise<void>;
  /** Run `fn` in a transaction, retrying on EAGAIN up to `maxRetries` times. */
  transaction<T>(fn: (tx: XsTransaction) => Promise<T>, maxRetries?: number): Promise<T>;
  /** Unwatch everything, abort open transactions. */
  close(): void;
}

export interface XsWatch {
  readonly path: string;
  readonly token: string;
  unwatch(): void;
}

/** A device end held by its user until released (see Platform.claimDevice). */
export interface DeviceClaim {
  release(): void;
}

/** One domain's view of a hypervisor. */
export interface Platform {
  readonly kind: "sim" | "xen";
  readonly domid: DomId;
  readonly gnttab: GrantTable;
  /** Open an event-channel handle (like opening /dev/xen/evtchn). */
  openEventChannels(): EventChannels;
  /** Rewrap a handle another thread opened, from its descriptor. */
  openEventChannels(descriptor: unknown): EventChannels;
  /** Open a waiter (see EventWaiter); it belongs to the machine, not to this domain's devices. */
  openEventWaiter(): EventWaiter;
  /** Rewrap a waiter another thread opened, from its descriptor. */
  openEventWaiter(descriptor: unknown): EventWaiter;
  /**
   * This domain's event channels, bound through `waiter`: the ports it allocates or binds fire
   * into the waiter. Closing the view unbinds only its own ports; the waiter stays open.
   */
  eventChannelsVia(waiter: EventWaiter): EventChannels;
  readonly xenstore: XenStore;
  /**
   * Claim the device end whose xenstore directory is `dir`, so two users on this machine never
   * drive one end at once; null when it is claimed already. A claim dies with its holder:
   * released, or (real Xen) the process gone.
   */
  claimDevice(dir: string): DeviceClaim | null;
  /** Postable description: `openPlatform(descriptor)` in a worker gives the same domain's view. */
  readonly descriptor: PlatformDescriptor;
  close(): void;
}

export interface PlatformDescriptor {
  kind: "sim" | "xen";
  domid: DomId;
  /** Implementation data: SharedArrayBuffers for sim, device paths for xen. */
  params: unknown;
}
