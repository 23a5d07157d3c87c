/**
 * Event channels on real Xen: one handle = one open /dev/xen/evtchn (non-blocking), plus an
 * eventfd for kick(). Ports are bound with ioctls; `read()` gives the pending ports (each
 * fired port is masked by the kernel until its number is written back: unmask).
 *
 * - Worker: wait() blocks in poll() on both descriptors.
 * - Main thread: waitAsync() reads both descriptors through `Bun.file(fd).stream()`, which
 *   watches a non-blocking fd without blocking the event loop. Once a handle has used
 *   waitAsync, its streams own the reads: pending() takes what they collected.
 * - Descriptors are process-wide: the postable descriptor carries the two fd numbers, and a
 *   worker rewraps them. Only the handle that opened them closes them; close the workers'
 *   views (stop their waits) first.
 */
import * as libc from "../../ffi/libc.ts";
import {
  IOCTL_EVTCHN_BIND_INTERDOMAIN,
  IOCTL_EVTCHN_BIND_UNBOUND_PORT,
  IOCTL_EVTCHN_NOTIFY,
  IOCTL_EVTCHN_UNBIND,
  IoctlBuffer,
  encodeEvtchnBindInterdomain,
  encodeEvtchnBindUnboundPort,
  encodeEvtchnPort,
} from "../../ffi/xen-ioctl.ts";
import { PlatformError, type DomId, type EventChannels, type EventWaiter, type Port } from "../types.ts";

export const EVTCHN_DEVICE = "/dev/xen/evtchn";

export interface XenEventChannelsDescriptor {
  kind: "xen-evtchn";
  domid: DomId;
  fd: number;
  kickFd: number;
  /** A view that binds through a waiter's descriptors (its close unbinds its own ports). */
  via?: boolean;
}

/**
 * Who closes what: the `owner` opened the descriptors and closes them (which unbinds every
 * port); a `view` (a worker's rewrap) closes nothing; a `via` view of a waiter's descriptors
 * unbinds the ports it bound and leaves the descriptors open.
 */
type Mode = "owner" | "view" | "via";

/** Pending ports one read() takes at most. */
const READ_PORTS = 1024;

interface AsyncReaders {
  ports: Port[];
  kicked: boolean;
  wakers: Set<() => void>;
  cancel(): void;
}

export class XenEventChannels implements EventChannels {
  private closed = false;
  private readonly bound = new Set<Port>();
  private readonly arg = new IoctlBuffer(16);
  private readonly readBuf = new Uint8Array(READ_PORTS * 4);
  private readonly readView = new DataView(this.readBuf.buffer);
  /** What wait() returns, reused: a worker waits thousands of times a second. */
  private readonly fired: Port[] = [];
  private readonly portBuf = new Uint8Array(4);
  private readonly portView = new DataView(this.portBuf.buffer);
  private readonly pollSet: libc.PollSet;
  private asyncReaders: AsyncReaders | null = null;

  /** Open a new handle (`owner`: this object closes the descriptors). */
  static open(domid: DomId, device: string = EVTCHN_DEVICE): XenEventChannels {
    const fd = libc.open(device, libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC, "evtchn.open");
    let kickFd: number;
    try {
      kickFd = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK, "evtchn.open");
    } catch (e) {
      libc.close(fd);
      throw e;
    }
    return new XenEventChannels(domid, fd, kickFd, "owner");
  }

  /** Rewrap a handle another thread opened (same process: the descriptors are shared). */
  static fromDescriptor(domid: DomId, descriptor: unknown): XenEventChannels {
    const d = descriptor as Partial<XenEventChannelsDescriptor> | null;
    if (d?.kind !== "xen-evtchn" || d.domid !== domid || typeof d.fd !== "number" || typeof d.kickFd !== "number") {
      throw new PlatformError("EINVAL", "evtchn.open", `not an event-channel handle of domain ${domid}`);
    }
    return new XenEventChannels(domid, d.fd, d.kickFd, d.via === true ? "via" : "view");
  }

  /**
   * `fd` behaves as /dev/xen/evtchn (read gives u32 ports, write unmasks), `kickFd` as an
   * eventfd; both non-blocking. Tests pass a socketpair end for `fd`.
   */
  constructor(
    readonly domid: DomId,
    readonly fd: number,
    readonly kickFd: number,
    private readonly mode: Mode,
  ) {
    this.pollSet = new libc.PollSet([fd, kickFd], libc.POLLIN);
  }

  get descriptor(): XenEventChannelsDescriptor {
    return { kind: "xen-evtchn", domid: this.domid, fd: this.fd, kickFd: this.kickFd, via: this.mode === "via" };
  }

  /** A view binding through the same descriptors, whose close unbinds only its own ports. */
  via(): XenEventChannels {
    return new XenEventChannels(this.domid, this.fd, this.kickFd, "via");
  }

  private live(op: string): void {
    if (this.closed) throw new PlatformError("ECLOSED", op, `event-channel handle (fd ${this.fd}) of domain ${this.domid} is closed`);
  }

  allocUnbound(peer: DomId): Port {
    const op = "evtchn.allocUnbound";
    this.live(op);
    encodeEvtchnBindUnboundPort(this.arg.view, peer);
    const port = libc.ioctl(this.fd, IOCTL_EVTCHN_BIND_UNBOUND_PORT, this.arg.bytes, op, () => `a port for domain ${peer}`);
    this.bound.add(port);
    return port;
  }

  bindInterdomain(peer: DomId, remotePort: Port): Port {
    const op = "evtchn.bindInterdomain";
    this.live(op);
    encodeEvtchnBindInterdomain(this.arg.view, peer, remotePort);
    const port = libc.ioctl(this.fd, IOCTL_EVTCHN_BIND_INTERDOMAIN, this.arg.bytes, op, () => `port ${remotePort} of domain ${peer}`);
    this.bound.add(port);
    return port;
  }

  /** The data path: no allocation. */
  notify(port: Port): void {
    this.live("evtchn.notify");
    encodeEvtchnPort(this.arg.view, port);
    libc.ioctl(this.fd, IOCTL_EVTCHN_NOTIFY, this.arg.bytes, "evtchn.notify", () => `port ${port}`);
  }

  unmask(port: Port): void {
    const op = "evtchn.unmask";
    this.live(op);
    if (!Number.isInteger(port) || port < 0 || port > 0xffff_ffff) throw new PlatformError("EINVAL", op, `port ${port}`);
    this.portView.setUint32(0, port, true);
    for (;;) {
      const n = libc.writeFd(this.fd, this.portBuf, 4, op);
      if (n === 4) return;
      if (n >= 0) throw new PlatformError("EINVAL", op, `short write (${n} bytes) unmasking port ${port}`);
      // EAGAIN/EINTR: the device takes the write at once; retry.
    }
  }

  unbind(port: Port): void {
    const op = "evtchn.unbind";
    this.live(op);
    encodeEvtchnPort(this.arg.view, port);
    libc.ioctl(this.fd, IOCTL_EVTCHN_UNBIND, this.arg.bytes, op, () => `port ${port}`);
    this.bound.delete(port);
  }

  pending(): Port[] {
    this.live("evtchn.pending");
    if (this.asyncReaders !== null) return this.takeAsync();
    libc.eventfdDrain(this.kickFd, "evtchn.pending");
    return this.readPorts([]);
  }

  wait(timeoutMs = Infinity): Port[] {
    const op = "evtchn.wait";
    this.live(op);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const kicked = libc.eventfdDrain(this.kickFd, op);
      const ports = this.readPorts(this.fired);
      if (ports.length > 0 || kicked) return ports;
      const left = deadline - performance.now();
      if (left <= 0) return ports;
      this.pollSet.poll(left === Infinity ? -1 : Math.max(1, Math.ceil(left)), op);
      if (this.closed) {
        ports.length = 0;
        return ports;
      }
    }
  }

  async waitAsync(timeoutMs = Infinity): Promise<Port[]> {
    this.live("evtchn.waitAsync");
    const a = this.startAsync();
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (a.ports.length > 0 || a.kicked) return this.takeAsync();
      const left = deadline - performance.now();
      if (left <= 0 || this.closed) return [];
      await new Promise<void>((resolve) => {
        const timer = left === Infinity ? null : setTimeout(done, left);
        function done() {
          if (timer !== null) clearTimeout(timer);
          a.wakers.delete(done);
          resolve();
        }
        a.wakers.add(done);
      });
    }
  }

  kick(): void {
    this.live("evtchn.kick");
    libc.eventfdSignal(this.kickFd, "evtchn.kick");
  }

  /** Unbind this handle's ports (the owner closes the descriptors, which unbinds the rest). */
  close(): void {
    if (this.closed) return;
    if (this.mode !== "view") {
      for (const p of this.bound) {
        try {
          this.unbind(p);
        } catch {
          // Closing the descriptor below unbinds it anyway.
        }
      }
    }
    this.closed = true;
    const a = this.asyncReaders;
    this.asyncReaders = null;
    if (a !== null) {
      for (const w of [...a.wakers]) w();
      a.cancel();
    }
    if (this.mode === "via") return;
    if (this.mode === "owner") {
      // The streams let go of the descriptors asynchronously; close them after.
      const closeFds = () => {
        libc.close(this.fd, "evtchn.close");
        libc.close(this.kickFd, "evtchn.close");
      };
      if (a === null) closeFds();
      else setTimeout(closeFds, 0);
    } else {
      // Wake the owner's thread, if it waits on these descriptors, so it sees the close.
      libc.eventfdSignal(this.kickFd, "evtchn.close");
    }
  }

  // -------------------------------------------------------------------------------------

  /** Non-blocking read of the pending ports into `ports` (emptied first). */
  private readPorts(ports: Port[]): Port[] {
    ports.length = 0;
    const n = libc.readFd(this.fd, this.readBuf, this.readBuf.byteLength, "evtchn.read");
    for (let i = 0; i + 4 <= n; i += 4) ports.push(this.readView.getUint32(i, true));
    return ports;
  }

  private takeAsync(): Port[] {
    const a = this.asyncReaders;
    if (a === null) return [];
    a.kicked = false;
    return a.ports.splice(0);
  }

  private startAsync(): AsyncReaders {
    if (this.asyncReaders !== null) return this.asyncReaders;
    const evReader = Bun.file(this.fd).stream().getReader();
    const kickReader = Bun.file(this.kickFd).stream().getReader();
    const a: AsyncReaders = {
      ports: [],
      kicked: false,
      wakers: new Set(),
      cancel: () => {
        evReader.cancel().catch(() => {});
        kickReader.cancel().catch(() => {});
      },
    };
    const wake = () => {
      for (const w of [...a.wakers]) w();
    };
    let rest = new Uint8Array(0);
    (async () => {
      for (;;) {
        const r = await evReader.read();
        if (r.done) break;
        let bytes = r.value;
        if (rest.byteLength > 0) {
          const joined = new Uint8Array(rest.byteLength + bytes.byteLength);
          joined.set(rest);
          joined.set(bytes, rest.byteLength);
          bytes = joined;
        }
        const whole = bytes.byteLength & ~3;
        const v = new DataView(bytes.buffer, bytes.byteOffset, whole);
        for (let i = 0; i < whole; i += 4) a.ports.push(v.getUint32(i, true));
        rest = bytes.slice(whole);
        wake();
      }
    })().catch(() => {});
    (async () => {
      for (;;) {
        const r = await kickReader.read();
        if (r.done) break;
        a.kicked = true;
        wake();
      }
    })().catch(() => {});
    this.asyncReaders = a;
    return a;
  }
}

/**
 * A pool worker's handle on real Xen: one /dev/xen/evtchn and its kick eventfd. Every port of
 * the process belongs to its one domain, so the pairs `wait` gives all carry that domain.
 */
export class XenEventWaiter implements EventWaiter {
  private constructor(private readonly h: XenEventChannels) {}

  static open(domid: DomId, device: string = EVTCHN_DEVICE): XenEventWaiter {
    return new XenEventWaiter(XenEventChannels.open(domid, device));
  }

  static fromDescriptor(domid: DomId, descriptor: unknown): XenEventWaiter {
    return new XenEventWaiter(XenEventChannels.fromDescriptor(domid, descriptor));
  }

  get descriptor(): XenEventChannelsDescriptor {
    return this.h.descriptor;
  }

  /** This domain's event channels bound through this waiter. */
  view(): XenEventChannels {
    return this.h.via();
  }

  wait(timeoutMs: number, out: number[]): number[] {
    out.length = 0;
    for (const port of this.h.wait(timeoutMs)) out.push(this.h.domid, port);
    return out;
  }

  unmask(domid: DomId, port: Port): void {
    if (domid !== this.h.domid) throw new PlatformError("EINVAL", "evtchn.unmask", `port ${port} of domain ${domid} is not bound in this domain (${this.h.domid})`);
    this.h.unmask(port);
  }

  kick(): void {
    this.h.kick();
  }

  close(): void {
    this.h.close();
  }
}
