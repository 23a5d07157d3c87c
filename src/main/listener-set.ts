/**
 * A set of callbacks that is also kept as an array: adding the same one twice changes nothing
 * (as addEventListener), and the per-frame loop walks the array (iterating a Set allocates).
 */
export class ListenerSet<T> {
  private readonly set = new Set<T>();
  /** The callbacks in the order they were added; replaced, never changed in place, so a loop over it is safe while callbacks come and go. */
  list: T[] = [];

  get size(): number {
    return this.set.size;
  }

  add(cb: T): void {
    this.set.add(cb);
    this.list = [...this.set];
  }

  delete(cb: T): void {
    this.set.delete(cb);
    this.list = [...this.set];
  }
}
