/**
 * Runs inside dom0 under real Xen (test/xen/run.sh test/xen/bun-test.sh ./test/xen/dom0/rig.xen.ts).
 * The name does not match bun's test patterns, so the host's `bun test` never picks it up.
 *
 * Checks, with its own few bun:ffi calls (independent of src/), what the real-Xen platform relies
 * on in a lone dom0: an unbound event channel for domain 0 binds interdomain to itself and a
 * notify arrives; a page shared through /dev/xen/gntalloc to domain 0 maps back through
 * /dev/xen/gntdev and both mappings see each other's writes.
 */
import { describe, expect, test } from "bun:test";
import { dlopen, FFIType, ptr, toArrayBuffer } from "bun:ffi";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";

const inDom0 = existsSync("/proc/xen/capabilities") && readFileSync("/proc/xen/capabilities", "utf8").includes("control_d");

const libc = inDom0
  ? dlopen("libc.so.6", {
      ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
      mmap: { args: ["u64", "u64", "i32", "i32", "i32", "i64"], returns: FFIType.u64_fast },
      munmap: { args: ["u64", "u64"], returns: "i32" },
      read: { args: ["i32", "ptr", "u64"], returns: FFIType.i64_fast },
      write: { args: ["i32", "ptr", "u64"], returns: FFIType.i64_fast },
    }).symbols
  : null!;

function ioctl(fd: number, req: number, buf: Uint8Array, what: string): number {
  const rc = libc.ioctl(fd, req, ptr(buf));
  if (rc < 0) throw new Error(`${what}: ioctl failed (${rc})`);
  return rc;
}

function mapShared(fd: number, offset: number): number {
  const addr = libc.mmap(0, 4096, 3 /* PROT_READ|PROT_WRITE */, 1 /* MAP_SHARED */, fd, offset);
  if (typeof addr !== "number") throw new Error(`mmap(fd ${fd}, offset ${offset}) failed`);
  return addr;
}

describe.skipIf(!inDom0)("real Xen dom0", () => {
  test("event channel: unbound port for dom0 binds interdomain to itself; notify arrives", () => {
    const fd = openSync("/dev/xen/evtchn", "r+");
    try {
      const arg = new Uint8Array(8);
      const dv = new DataView(arg.buffer);
      dv.setUint32(0, 0, true); // remote_domain 0
      const p1 = ioctl(fd, 0x00044502, arg, "BIND_UNBOUND_PORT");
      dv.setUint32(0, 0, true);
      dv.setUint32(4, p1, true);
      const p2 = ioctl(fd, 0x00084501, arg, "BIND_INTERDOMAIN");
      expect(p2).not.toBe(p1);
      dv.setUint32(0, p2, true);
      ioctl(fd, 0x00044504, arg, "NOTIFY"); // from p2: fires p1
      const seen = new Set<number>();
      const buf = new Uint32Array(16);
      for (let i = 0; i < 4 && !seen.has(p1); i++) {
        const n = Number(libc.read(fd, ptr(buf), 64));
        expect(n).toBeGreaterThan(0);
        for (let k = 0; k < n / 4; k++) seen.add(buf[k]!);
        libc.write(fd, ptr(buf), n); // unmask
      }
      expect(seen.has(p1)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  test("grant: a page shared to dom0 via gntalloc maps back via gntdev", () => {
    const fa = openSync("/dev/xen/gntalloc", "r+");
    const fd = openSync("/dev/xen/gntdev", "r+");
    try {
      const alloc = new Uint8Array(24);
      const av = new DataView(alloc.buffer);
      av.setUint16(0, 0, true); // domid
      av.setUint16(2, 1, true); // GNTALLOC_FLAG_WRITABLE
      av.setUint32(4, 1, true); // count
      ioctl(fa, 0x00184705, alloc, "GNTALLOC_ALLOC_GREF");
      const aIndex = Number(av.getBigUint64(8, true));
      const gref = av.getUint32(16, true);

      const map = new Uint8Array(24);
      const mv = new DataView(map.buffer);
      mv.setUint32(0, 1, true); // count
      mv.setUint32(16, 0, true); // domid
      mv.setUint32(20, gref, true); // ref
      ioctl(fd, 0x00184700, map, "GNTDEV_MAP_GRANT_REF");
      const dIndex = Number(mv.getBigUint64(8, true));

      const a = mapShared(fa, aIndex);
      const d = mapShared(fd, dIndex);
      const pa = new Uint8Array(toArrayBuffer(a, 0, 4096));
      const pd = new Uint8Array(toArrayBuffer(d, 0, 4096));
      for (let i = 0; i < 4096; i++) pa[i] = (i * 7 + 3) & 0xff;
      expect(pd[0]).toBe(3);
      expect(pd[4095]).toBe((4095 * 7 + 3) & 0xff);
      pd[100] = 0xee;
      expect(pa[100]).toBe(0xee);

      expect(libc.munmap(d, 4096)).toBe(0);
      expect(libc.munmap(a, 4096)).toBe(0);
      const unmap = new Uint8Array(16);
      const uv = new DataView(unmap.buffer);
      uv.setBigUint64(0, BigInt(dIndex), true);
      uv.setUint32(8, 1, true);
      ioctl(fd, 0x00104701, unmap, "GNTDEV_UNMAP_GRANT_REF");
      const dealloc = new Uint8Array(16);
      const dv = new DataView(dealloc.buffer);
      dv.setBigUint64(0, BigInt(aIndex), true);
      dv.setUint32(8, 1, true);
      ioctl(fa, 0x00104706, dealloc, "GNTALLOC_DEALLOC_GREF");
    } finally {
      closeSync(fd);
      closeSync(fa);
    }
  });
});
