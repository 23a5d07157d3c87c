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
  /**
   * Int32 per page: 0 free and never used (still zero, as the SharedArrayBuffer came),
   * FREED free and used before (zeroed when next allocated), else owner domid + 1.
   * Word 0 of `hint` is the allocation cursor.
   */
  owners: SharedArrayBuffer;
  hint: SharedArrayBuffer;
}

/** A free page that was used: it must be zeroed before it is handed out again. */
const FREED = -1;

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

  /**
   * Claim `n` zeroed pages for `owner`; all or nothing. A page never used is zero already and
   * is not touched (a thousand guests' pages cost memory only once they carry data).
   */
  alloc(owner: DomId, n: number, op: string): number[] {
    const got: number[] = [];
    const used: boolean[] = [];
    const start = Atomics.load(this.hint, 0);
    for (let i = 0; i < this.count && got.length < n; i++) {
      const p = (start + i) % this.count;
      for (const was of [0, FREED]) {
        if (Atomics.compareExchange(this.owners, p, was, owner + 1) === was) {
          got.push(p);
          used.push(was === FREED);
          break;
        }
      }
    }
    if (got.length < n) {
      got.forEach((p, i) => Atomics.store(this.owners, p, used[i] ? FREED : 0));
      throw new PlatformError("ENOSPC", op, `no ${n} free page(s) in the simulated machine (${this.count} pages)`);
    }
    Atomics.store(this.hint, 0, ((got[got.length - 1] ?? 0) + 1) % this.count);
    got.forEach((p, i) => {
      if (used[i]) this.bytes.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    });
    return got;
  }

  free(page: number): void {
    Atomics.store(this.owners, page, FREED);
  }

  owner(page: number): DomId | null {
    const o = Atomics.load(this.owners, page);
    return o <= 0 ? null : o - 1;
  }

  offset(page: number): number {
    return page * PAGE_SIZE;
  }

  view(page: number): Uint8Array {
    return new Uint8Array(this.memory, page * PAGE_SIZE, PAGE_SIZE);
  }
}
