/**
 * Byte transports to xenstored for XenStoreClient:
 * - its unix socket (`/run/xenstored/socket`, or `/var/run/xenstored/socket`), in the domain
 *   that runs xenstored (dom0), through Bun.connect({ unix });
 * - /dev/xen/xenbus (any domain; in dom0 through xenfs), an O_NONBLOCK descriptor watched
 *   with `Bun.file(fd).stream()` (the measured way to watch a non-blocking fd on the main
 *   thread) and written with libc write().
 * fdTransport() serves any non-blocking stream descriptor (a socketpair in the tests).
 */
import { existsSync } from "node:fs";
import { ErrnoError } from "../../ffi/errno.ts";
import * as libc from "../../ffi/libc.ts";
import { PlatformError } from "../types.ts";
import type { XsTransport } from "./xenstore-client.ts";

export const XENSTORED_SOCKETS = ["/run/xenstored/socket", "/var/run/xenstored/socket"] as const;
export const XENBUS_DEVICE = "/dev/xen/xenbus";

type DataCb = (chunk: Uint8Array) => void;
type CloseCb = (reason?: unknown) => void;

/** Callbacks registered before or after the transport starts delivering. */
class Listeners {
  private data: DataCb | null = null;
  private readonly early: Uint8Array[] = [];
  private readonly closers: CloseCb[] = [];
  private closedWith: { reason?: unknown } | null = null;

  setData(cb: DataCb): void {
    this.data = cb;
    for (const c of this.early.splice(0)) cb(c);
  }

  deliver(chunk: Uint8Array): void {
    if (this.data === null) this.early.push(chunk);
    else this.data(chunk);
  }

  addClose(cb: CloseCb): void {
    if (this.closedWith !== null) cb(this.closedWith.reason);
    else this.closers.push(cb);
  }

  closed(reason?: unknown): void {
    if (this.closedWith !== null) return;
    this.closedWith = reason === undefined ? {} : { reason };
    for (const cb of this.closers.splice(0)) cb(reason);
  }
}

/** Connect to xenstored's unix socket (the first of XENSTORED_SOCKETS that exists, unless `path`). */
export async function connectXenstoredSocket(path?: string): Promise<XsTransport> {
  const op = "xenstore.connect";
  const target = path ?? XENSTORED_SOCKETS.find((p) => existsSync(p));
  if (target === undefined) throw new PlatformError("ENOENT", op, `no xenstored socket at ${XENSTORED_SOCKETS.join(" or ")}`);
  const l = new Listeners();
  let queue: Uint8Array[] = [];
  let ended = false;
  const flush = (s: { write(b: Uint8Array): number }) => {
    while (queue.length > 0) {
      const head = queue[0] as Uint8Array;
      const n = Math.max(0, s.write(head));
      if (n < head.byteLength) {
        queue[0] = head.subarray(n);
        return;
      }
      queue.shift();
    }
  };
  let socket;
  try {
    socket = await Bun.connect({
      unix: target,
      socket: {
        data: (_s, chunk) => l.deliver(chunk),
        drain: (s) => flush(s),
        close: () => l.closed(),
        error: (_s, e) => l.closed(e),
        end: () => l.closed("xenstored ended the connection"),
      },
    });
  } catch (e) {
    const code = (e as { code?: unknown })?.code;
    if (typeof code === "string" && /^E[A-Z]+$/.test(code)) throw new ErrnoError(op, code, target);
    throw new PlatformError("ECLOSED", op, `${target}: ${String(e)}`);
  }
  const s = socket;
  return {
    write(bytes) {
      if (ended) throw new PlatformError("ECLOSED", "xenstore.send", `${target}: closed`);
      queue.push(bytes);
      if (queue.length === 1) flush(s);
    },
    onData: (cb) => l.setData(cb),
    onClose: (cb) => l.addClose(cb),
    close() {
      if (ended) return;
      ended = true;
      queue = [];
      s.end();
      l.closed();
    },
  };
}

/** Open /dev/xen/xenbus (non-blocking) as a transport. */
export function openXenbusDevice(path: string = XENBUS_DEVICE): XsTransport {
  const fd = libc.open(path, libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC, "xenstore.open");
  return fdTransport(fd, path);
}

/**
 * A transport over a non-blocking stream descriptor, which it owns (close() closes it).
 * Reads: Bun.file(fd).stream(). Writes: libc write(), the rest retried on EAGAIN.
 */
export function fdTransport(fd: number, name = `fd ${fd}`): XsTransport {
  const l = new Listeners();
  const reader = Bun.file(fd).stream().getReader();
  let ended = false;
  let queue: Uint8Array[] = [];
  let retry: ReturnType<typeof setTimeout> | null = null;

  const finish = (reason?: unknown) => {
    if (ended) return;
    ended = true;
    queue = [];
    if (retry !== null) clearTimeout(retry);
    // The descriptor closes once the reader has let go of it.
    reader.cancel().then(
      () => libc.close(fd),
      () => libc.close(fd),
    );
    l.closed(reason);
  };

  (async () => {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      l.deliver(r.value);
    }
    finish(ended ? undefined : `${name}: end of stream`);
  })().catch((e: unknown) => finish(e));

  const flush = () => {
    retry = null;
    try {
      while (queue.length > 0 && !ended) {
        const head = queue[0] as Uint8Array;
        const n = libc.writeFd(fd, head, head.byteLength, "xenstore.send");
        if (n < 0) {
          retry = setTimeout(flush, 1);
          return;
        }
        if (n < head.byteLength) queue[0] = head.subarray(n);
        else queue.shift();
      }
    } catch (e) {
      finish(e);
    }
  };

  return {
    write(bytes) {
      if (ended) throw new PlatformError("ECLOSED", "xenstore.send", `${name}: closed`);
      queue.push(bytes);
      if (queue.length === 1 && retry === null) flush();
    },
    onData: (cb) => l.setData(cb),
    onClose: (cb) => l.addClose(cb),
    close: () => finish(),
  };
}

/** The first transport that works: xenstored's socket if present, else /dev/xen/xenbus. */
export async function openXenStoreTransport(): Promise<XsTransport> {
  if (XENSTORED_SOCKETS.some((p) => existsSync(p))) return connectXenstoredSocket();
  return openXenbusDevice();
}

/**
 * A transport usable at once over one that is still connecting (Bun.connect is async, the
 * XenStore interface is not): writes queue until it is up. If connecting fails, the close
 * callbacks get the reason, so a XenStoreClient rejects what it sent with ECLOSED naming it.
 */
export function deferredTransport(connecting: Promise<XsTransport>): XsTransport {
  const l = new Listeners();
  let queue: Uint8Array[] | null = [];
  let inner: XsTransport | null = null;
  let ended = false;
  connecting.then(
    (t) => {
      if (ended) {
        t.close();
        return;
      }
      inner = t;
      t.onData((c) => l.deliver(c));
      t.onClose?.((reason) => l.closed(reason));
      for (const b of queue ?? []) t.write(b);
      queue = null;
    },
    (e: unknown) => {
      ended = true;
      queue = null;
      l.closed(e instanceof Error ? e.message : e);
    },
  );
  return {
    write(bytes) {
      if (ended) throw new PlatformError("ECLOSED", "xenstore.send", "the connection to xenstored is closed");
      if (inner !== null) inner.write(bytes);
      else queue?.push(bytes);
    },
    onData: (cb) => l.setData(cb),
    onClose: (cb) => l.addClose(cb),
    close() {
      if (ended) return;
      ended = true;
      queue = null;
      inner?.close();
      l.closed();
    },
  };
}
