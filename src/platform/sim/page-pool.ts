/**
 * The simulated machine's memory: one SharedArrayBuffer of 4 KiB pages that every domain's
 * shared pages come from, so a grant, a mapping and a grant copy are all views of the same
 * bytes in any thread. Each page records its owner (domid + 1; 0 = free) so the leak check
 * can say whose page was never given back.
 */
import { AddressedBytes } from "../copy-bytes.ts";
import { PAGE_SIZE, PlatformError, type DomId } from "../types.ts";

export interface PagePoolState {
  memory: SharedArrayBuffer;
  /** Int32 per page: 0 free, else owner domid + 1. Word 0 of `hint` is the allocation cursor. */
  owners: SharedArrayBuffer;
  hint: SharedArrayBuffer;
}

export function createPagePoolState(pages: number): PagePoolState {
  if (!Number.isInteger(pages) || pages < 1) throw new RangeError(`page pool size must be a positive integer, got ${pages}`);
  return {
    memory: new SharedArrayBuffer(pages * PAGE_SIZE),
    owners: new SharedArrayBuffer(pages * 4),
    hint: new SharedArrayBuffer(4),
  };
}

export class PagePool {
  readonly memory: SharedArrayBuffer;
  readonly bytes: Uint8Array;
  /** `bytes` with its address, for the grant copy's native copies. */
  readonly addressed: AddressedBytes;
  readonly count: number;
  private readonly owners: Int32Array;
  private readonly hint: Int32Array;

  constructor(state: PagePoolState) {
    this.memory = state.memory;
    this.bytes = new Uint8Array(state.memory);
    this.addressed = new AddressedBytes(this.bytes);
    this.owners = new Int32Array(state.owners);
    this.hint = new Int32Array(state.hint);
    this.count = this.owners.length;
  }

  /** Claim `n` zeroed pages for `owner`; all or nothing. */
  alloc(owner: DomId, n: number, op: string): number[] {
    const got: number[] = [];
    const start = Atomics.load(this.hint, 0);
    for (let i = 0; i < this.count && got.length < n; i++) {
      const p = (start + i) % this.count;
      if (Atomics.compareExchange(this.owners, p, 0, owner + 1) === 0) got.push(p);
    }
    if (got.length < n) {
      for (const p of got) Atomics.store(this.owners, p, 0);
      throw new PlatformError("ENOSPC", op, `no ${n} free page(s) in the simulated machine (${this.count} pages)`);
    }
    Atomics.store(this.hint, 0, ((got[got.length - 1] ?? 0) + 1) % this.count);
    for (const p of got) this.bytes.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    return got;
  }

  free(page: number): void {
    Atomics.store(this.owners, page, 0);
  }

  owner(page: number): DomId | null {
    const o = Atomics.load(this.owners, page);
    return o === 0 ? null : o - 1;
  }

  offset(page: number): number {
    return page * PAGE_SIZE;
  }

  view(page: number): Uint8Array {
    return new Uint8Array(this.memory, page * PAGE_SIZE, PAGE_SIZE);
  }
}
