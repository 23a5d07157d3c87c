/**
 * The simulated hypervisor: grant tables, event channels, xenstore and the machine's pages,
 * every bit of state in SharedArrayBuffers. `SimHypervisor.attach(state)` in any thread sees
 * the same hypervisor, so the domains of a test, a benchmark or a laptop run (and their
 * workers) all live in one process and still cannot reach what they were not granted.
 */
import { PlatformError, type DeviceClaim, type DomId } from "../types.ts";
import { createEventChannelState, EventChannelTable, type EventChannelState, type PortLeak } from "./event-channels.ts";
import { createGrantTableState, GrantTables, type GrantLeak, type GrantTableState } from "./grant-table.ts";
import { createPagePoolState, PagePool, type PagePoolState } from "./page-pool.ts";
import { SimPlatform } from "./platform.ts";
import { createXenStoreState, SharedXenStore, type XenStoreState } from "./xenstore-state.ts";

export interface SimOptions {
  /** Domain ids 0 .. maxDomains-1 (default 16). */
  maxDomains?: number;
  /** 4 KiB pages in the simulated machine (default 16384 = 64 MiB, committed lazily by the OS). */
  pages?: number;
  /** Grant entries per domain (default 4096); small values simulate grant exhaustion. */
  grantsPerDomain?: number;
  /** Event-channel ports per domain, port 0 unused (default 256). */
  portsPerDomain?: number;
  /** Open event-channel handles, all domains together (default 256). */
  maxHandles?: number;
  /** Bytes of shared memory for the xenstore tree (default: the xenstore's own). */
  xenstoreBytes?: number;
  /**
   * Size the machine for this many vifs, each with its own guest (domains, pages, ports,
   * xenstore), where the sizes above are not given. Memory is committed only as it is used.
   */
  vifs?: number;
}

/** Defaults grown to hold `vifs` guests with one vif each (up to 8 queues). */
function sizedFor(vifs: number): Required<Omit<SimOptions, "vifs">> {
  if (!Number.isInteger(vifs) || vifs < 0 || vifs > 0x7fe0) throw new RangeError(`vifs must be an integer in 0..${0x7fe0}, got ${vifs}`);
  return {
    maxDomains: Math.max(16, vifs + 2),
    // A front end shares 2 ring pages and 512 data pages per queue.
    pages: Math.max(16384, vifs * 520 + 4096),
    grantsPerDomain: 4096,
    // The back end's domain binds two ports per queue of every vif.
    portsPerDomain: Math.min(1 << 16, Math.max(256, 2 ** Math.ceil(Math.log2(vifs * 16 + 64)))),
    maxHandles: 256,
    xenstoreBytes: Math.max(4 << 20, vifs * (16 << 10)),
  };
}

export interface SimHypervisorState {
  kind: "sim";
  /** Tells machines apart (threads cache their views of one machine by it). */
  id: string;
  pool: PagePoolState;
  grants: GrantTableState;
  evtchn: EventChannelState;
  xenstore: XenStoreState;
  /** Int32 per domain: 1 when the domain exists. */
  domains: SharedArrayBuffer;
}

export type Leak =
  | ({ kind: "grant" } & GrantLeak)
  | { kind: "mapping"; domid: DomId; count: number }
  | ({ kind: "port" } & PortLeak)
  | { kind: "page"; page: number; owner: DomId };

export class SimHypervisor {
  readonly pool: PagePool;
  readonly grants: GrantTables;
  readonly evtchn: EventChannelTable;
  readonly xenstore: SharedXenStore;
  private readonly domains: Int32Array;
  /** Device directories claimed by a Netfront or Netback (this thread's view of the machine). */
  private readonly claims = new Set<string>();

  private constructor(readonly state: SimHypervisorState) {
    this.domains = new Int32Array(state.domains);
    this.pool = new PagePool(state.pool);
    this.grants = new GrantTables(state.grants, this.pool, this.domains);
    this.evtchn = new EventChannelTable(state.evtchn);
    this.xenstore = new SharedXenStore(state.xenstore);
  }

  /** A new hypervisor with domain 0 (privileged, the toolstack's domain) already running. */
  static create(opts: SimOptions = {}): SimHypervisor {
    const d = sizedFor(opts.vifs ?? 0);
    const maxDomains = opts.maxDomains ?? d.maxDomains;
    const state: SimHypervisorState = {
      kind: "sim",
      id: crypto.randomUUID(),
      pool: createPagePoolState(opts.pages ?? d.pages),
      grants: createGrantTableState(maxDomains, opts.grantsPerDomain ?? d.grantsPerDomain),
      evtchn: createEventChannelState(maxDomains, opts.portsPerDomain ?? d.portsPerDomain, opts.maxHandles ?? d.maxHandles),
      xenstore: createXenStoreState({ bytes: opts.xenstoreBytes ?? d.xenstoreBytes }),
      domains: new SharedArrayBuffer(maxDomains * 4),
    };
    const hv = new SimHypervisor(state);
    Atomics.store(hv.domains, 0, 1);
    return hv;
  }

  /** The same hypervisor, seen from another thread (the state came by postMessage). */
  static attach(state: SimHypervisorState): SimHypervisor {
    return new SimHypervisor(state);
  }

  get maxDomains(): number {
    return this.domains.length;
  }

  /** Create a domain, as a toolstack does: it gets an id and its /local/domain/<id> in xenstore. */
  createDomain(domid?: DomId): DomId {
    const op = "sim.createDomain";
    const id = domid ?? this.freeDomid(op);
    if (!Number.isInteger(id) || id < 1 || id >= this.maxDomains) {
      throw new PlatformError("EINVAL", op, `domain id must be in 1..${this.maxDomains - 1}, got ${id}`);
    }
    if (Atomics.compareExchange(this.domains, id, 0, 1) !== 0) throw new PlatformError("EEXIST", op, `domain ${id} exists`);
    this.xenstore.introduceDomain(id);
    return id;
  }

  private freeDomid(op: string): DomId {
    for (let d = 1; d < this.maxDomains; d++) if (Atomics.load(this.domains, d) === 0) return d;
    throw new PlatformError("ENOSPC", op, `all ${this.maxDomains} domain ids are in use`);
  }

  /**
   * Destroy a domain, as `xl destroy` does: the mappings it held are dropped, its grants end
   * (pages another domain still maps stay until unmapped), its event channels close (their
   * remote ends go unbound), its pages are freed, and its xenstore home is removed. Its JS objects in this process live on, but
   * every hypervisor call they make now fails or finds nothing.
   */
  destroyDomain(domid: DomId): void {
    const op = "sim.destroyDomain";
    if (domid === 0) throw new PlatformError("EINVAL", op, "domain 0 cannot be destroyed");
    if (!this.exists(domid)) throw new PlatformError("ENOENT", op, `no domain ${domid}`);
    Atomics.store(this.domains, domid, 0);
    this.evtchn.closeDomain(domid);
    this.grants.dropUsersOf(domid);
    const held = new Set(this.grants.revokeAll(domid));
    for (let page = 0; page < this.pool.count; page++) {
      if (this.pool.owner(page) === domid && !held.has(page)) this.pool.free(page);
    }
    this.xenstore.releaseDomain(domid);
  }

  /** Claim a device directory (Platform.claimDevice); null when it is claimed already. */
  claimDevice(dir: string): DeviceClaim | null {
    if (this.claims.has(dir)) return null;
    this.claims.add(dir);
    let held = true;
    return {
      release: () => {
        if (held) this.claims.delete(dir);
        held = false;
      },
    };
  }

  exists(domid: DomId): boolean {
    return Number.isInteger(domid) && domid >= 0 && domid < this.maxDomains && Atomics.load(this.domains, domid) === 1;
  }

  /** One domain's view: its grant table, event channels and xenstore connection. */
  platform(domid: DomId): SimPlatform {
    if (!this.exists(domid)) throw new PlatformError("ENOENT", "sim.platform", `no domain ${domid}`);
    return new SimPlatform(this, domid);
  }

  /**
   * What is still held: active grants, mappings, bound ports, pages. Tests call it after both
   * ends have closed; anything listed is a leak. `domids` narrows it to some domains.
   */
  leaks(domids?: readonly DomId[]): Leak[] {
    const want = (d: DomId) => domids === undefined || domids.includes(d);
    const out: Leak[] = [];
    for (const g of this.grants.activeGrants()) if (want(g.owner) || want(g.peer)) out.push({ kind: "grant", ...g });
    for (let d = 0; d < this.maxDomains; d++) {
      const n = this.grants.mapsHeld(d);
      if (n !== 0 && want(d)) out.push({ kind: "mapping", domid: d, count: n });
    }
    for (const p of this.evtchn.boundPorts()) if (want(p.domid)) out.push({ kind: "port", ...p });
    for (let page = 0; page < this.pool.count; page++) {
      const owner = this.pool.owner(page);
      if (owner !== null && want(owner)) out.push({ kind: "page", page, owner });
    }
    return out;
  }

  /** Throw, listing every leak, unless nothing is held. */
  assertNoLeaks(domids?: readonly DomId[]): void {
    const l = this.leaks(domids);
    if (l.length > 0) {
      throw new Error(`simulated hypervisor leak check: ${l.length} leak(s): ${l.slice(0, 20).map(describeLeak).join("; ")}`);
    }
  }
}

export function describeLeak(l: Leak): string {
  switch (l.kind) {
    case "grant":
      return `grant ${l.ref} of domain ${l.owner} to domain ${l.peer} still active (${l.users} user(s))`;
    case "mapping":
      return `domain ${l.domid} still maps ${l.count} grant(s)`;
    case "port":
      return `port ${l.port} of domain ${l.domid} still ${l.state} (remote domain ${l.remoteDomid})`;
    case "page":
      return `page ${l.page} still owned by domain ${l.owner}`;
  }
}
