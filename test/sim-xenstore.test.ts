import { afterEach, describe, expect, test } from "bun:test";
import { rejects } from "./helpers/errors.ts";
import { PlatformError } from "../src/platform/types.ts";
import { SimXenStore } from "../src/platform/sim/xenstore.ts";
import { createXenStoreState, SharedXenStore, type XenStoreStateOptions } from "../src/platform/sim/xenstore-state.ts";
import type { XsWorkerMessage, XsWorkerRequest } from "./fixtures/xenstore-worker.ts";

// ---- helpers ---------------------------------------------------------------------------------

const opened: SimXenStore[] = [];

afterEach(() => {
  for (const xs of opened.splice(0)) xs.close();
});

/** A fresh store with dom0 and the given guests introduced; one connection per domain. */
function setup(guests: number[] = [], opts: XenStoreStateOptions = {}) {
  const store = new SharedXenStore(createXenStoreState(opts));
  for (const d of guests) store.introduceDomain(d);
  const conn = (domid: number) => {
    const xs = new SimXenStore(store, domid);
    opened.push(xs);
    return xs;
  };
  return { store, conn, dom0: conn(0) };
}

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Let pending watch deliveries run (they are due within a tick or two). */
const settle = () => new Promise((r) => setTimeout(r, 20));

function recorder() {
  const events: [string, string][] = [];
  const cb = (path: string, token: string) => {
    events.push([path, token]);
  };
  return { events, cb, paths: () => events.map((e) => e[0]) };
}

// ---- basic operations ------------------------------------------------------------------------

describe("simulated xenstore: nodes", () => {
  test("read of a missing node is null; write creates parents; directory lists children in creation order", async () => {
    const { dom0 } = setup();
    expect(await dom0.read("/a/b/c")).toBeNull();
    await dom0.write("/a/b/c", "hello");
    expect(await dom0.read("/a/b/c")).toBe("hello");
    expect(await dom0.read("/a/b")).toBe("");
    await dom0.write("/a/b/a", "2");
    expect(await dom0.directory("/a/b")).toEqual(["c", "a"]);
    expect(await dom0.directory("/")).toEqual(["local", "a"]);
    await dom0.write("/a/b/c", "again");
    expect(await dom0.read("/a/b/c")).toBe("again");
    expect(await dom0.directory("/a/b/c")).toEqual([]);
  });

  test("mkdir creates an empty node and parents; an existing node is left alone", async () => {
    const { dom0 } = setup();
    await dom0.mkdir("/m/n");
    expect(await dom0.read("/m/n")).toBe("");
    await dom0.write("/m/n", "v");
    await dom0.mkdir("/m/n");
    expect(await dom0.read("/m/n")).toBe("v");
  });

  test("directory of a missing node is ENOENT", async () => {
    const { dom0 } = setup();
    await rejects(dom0.directory("/nope"), "ENOENT", "/nope", "domain 0");
    await rejects(dom0.getPerms("/nope"), "ENOENT", "/nope");
  });

  test("rm removes the subtree and its entry in the parent; a missing node is fine; the root is EINVAL", async () => {
    const { dom0 } = setup();
    await dom0.write("/t/a/x", "1");
    await dom0.write("/t/a/y/z", "2");
    await dom0.write("/t/ab", "sibling");
    await dom0.rm("/t/a");
    expect(await dom0.read("/t/a")).toBeNull();
    expect(await dom0.read("/t/a/y/z")).toBeNull();
    expect(await dom0.read("/t/ab")).toBe("sibling");
    expect(await dom0.directory("/t")).toEqual(["ab"]);
    await dom0.rm("/t/a");
    await dom0.rm("/no/such/parent");
    await rejects(dom0.rm("/"), "EINVAL", "root");
    // Re-creating after removal starts empty.
    await dom0.write("/t/a/new", "n");
    expect(await dom0.directory("/t/a")).toEqual(["new"]);
  });

  test("paths are checked like xenstored: absolute, no empty component, no trailing '/', only [A-Za-z0-9-/_@]", async () => {
    const { dom0 } = setup();
    for (const p of ["", "relative/x", "/a/", "//a", "/a//b", "/a.b", "/a b", "/a\0b", "/ä"]) {
      await rejects(dom0.write(p, "v"), "EINVAL", JSON.stringify(p), "xenstore.write");
      await rejects(dom0.read(p), "EINVAL", "xenstore.read");
    }
    await rejects(dom0.read(42 as unknown as string), "EINVAL", "not a string");
    await dom0.write("/ok-_@/Az09", "v");
    expect(await dom0.read("/ok-_@/Az09")).toBe("v");
    expect(await dom0.read("/")).toBe("");
  });

  test("path length: 2048 chars below /local/domain/<id>/, E2BIG beyond", async () => {
    const { dom0 } = setup();
    const ok = `/local/domain/1/${"x".repeat(2048)}`;
    await dom0.mkdir(ok);
    await rejects(dom0.mkdir(`${ok}y`), "E2BIG", "too long");
    await rejects(dom0.write(`/${"x".repeat(2048)}`, ""), "E2BIG");
  });

  test("value limit: path, NUL and value must fit one 4096-byte payload (UTF-8 bytes)", async () => {
    const { dom0 } = setup();
    const path = "/v"; // 2 bytes + NUL
    await dom0.write(path, "x".repeat(4093));
    expect((await dom0.read(path))?.length).toBe(4093);
    await rejects(dom0.write(path, "x".repeat(4094)), "E2BIG", "/v", "4096");
    await rejects(dom0.write(path, "é".repeat(2047)), "E2BIG"); // 4094 bytes
    await rejects(dom0.write(path, 7 as unknown as string), "EINVAL", "not a string");
    expect((await dom0.read(path))?.length).toBe(4093);
  });
});

// ---- permissions -----------------------------------------------------------------------------

describe("simulated xenstore: permissions", () => {
  test("introduceDomain makes /local/domain/<id> owned by that domain, private", async () => {
    const { dom0 } = setup([5]);
    expect(await dom0.getPerms("/local/domain/5")).toEqual([{ domid: 5, access: "n" }]);
    expect(await dom0.getPerms("/")).toEqual([{ domid: 0, access: "n" }]);
  });

  test("a guest writes under its own home only", async () => {
    const { conn } = setup([5, 6]);
    const d5 = conn(5);
    await d5.write("/local/domain/5/device/vif/0/state", "1");
    expect(await d5.read("/local/domain/5/device/vif/0/state")).toBe("1");
    await rejects(d5.write("/local/domain/6/x", "1"), "EACCES", "domain 5", "xenstore.write", "/local/domain/6/x");
    await rejects(d5.write("/evil", "1"), "EACCES", "domain 5", "/evil");
    await rejects(d5.mkdir("/local/domain/7"), "EACCES", "/local/domain/7");
    await rejects(d5.rm("/local/domain/6"), "EACCES", "xenstore.rm", "/local/domain/6");
    await rejects(d5.rm("/local/domain/6/missing"), "EACCES", "/local/domain/6/missing");
  });

  test("reading needs r: other homes are unreadable, and so is whether a node exists there", async () => {
    const { dom0, conn } = setup([5, 6]);
    await dom0.write("/local/domain/6/secret", "s");
    const d5 = conn(5);
    await rejects(d5.read("/local/domain/6/secret"), "EACCES", "domain 5", "read", "/local/domain/6/secret");
    await rejects(d5.read("/local/domain/6/missing"), "EACCES");
    await rejects(d5.directory("/local/domain/6"), "EACCES", "xenstore.directory");
    await rejects(d5.getPerms("/local/domain/6"), "EACCES");
    await rejects(d5.directory("/local/domain"), "EACCES");
  });

  test("dom0 bypasses every check", async () => {
    const { dom0, conn } = setup([5]);
    await conn(5).setPerms("/local/domain/5", [{ domid: 5, access: "n" }]);
    await dom0.write("/local/domain/5/by-dom0", "x");
    expect(await dom0.read("/local/domain/5/by-dom0")).toBe("x");
    await dom0.setPerms("/local/domain/5/by-dom0", [{ domid: 9, access: "n" }]);
    await dom0.rm("/local/domain/5/by-dom0");
  });

  test("new nodes inherit the parent's perms; a guest owns what it creates, dom0 does not take ownership", async () => {
    const { dom0, conn } = setup([5, 6]);
    const d5 = conn(5);
    await dom0.setPerms("/local/domain/5", [{ domid: 5, access: "n" }, { domid: 6, access: "r" }]);
    await d5.write("/local/domain/5/a/b", "1");
    expect(await d5.getPerms("/local/domain/5/a")).toEqual([{ domid: 5, access: "n" }, { domid: 6, access: "r" }]);
    await dom0.write("/local/domain/5/by0/x", "1");
    expect(await d5.getPerms("/local/domain/5/by0/x")).toEqual([{ domid: 5, access: "n" }, { domid: 6, access: "r" }]);
    // Granted: a guest creating in a directory it may write owns the new nodes.
    await dom0.mkdir("/local/domain/6/shared");
    await dom0.setPerms("/local/domain/6/shared", [{ domid: 6, access: "n" }, { domid: 5, access: "b" }]);
    await d5.write("/local/domain/6/shared/from5/k", "v");
    expect(await d5.getPerms("/local/domain/6/shared/from5/k")).toEqual([{ domid: 5, access: "n" }, { domid: 5, access: "b" }]);
    // As in xenstored, owning the directory gives no right to what another domain created in it.
    await rejects(conn(6).read("/local/domain/6/shared/from5/k"), "EACCES", "domain 6");
  });

  test("per-domain entries grant read or write; the first entry is the default for others", async () => {
    const { dom0, conn } = setup([5, 6, 7]);
    const [d5, d7] = [conn(5), conn(7)];
    await dom0.write("/local/domain/6/ro", "r");
    await dom0.setPerms("/local/domain/6/ro", [{ domid: 6, access: "n" }, { domid: 5, access: "r" }]);
    expect(await d5.read("/local/domain/6/ro")).toBe("r");
    await rejects(d5.write("/local/domain/6/ro", "x"), "EACCES", "write");
    await rejects(d7.read("/local/domain/6/ro"), "EACCES");
    await dom0.setPerms("/local/domain/6/ro", [{ domid: 6, access: "r" }, { domid: 5, access: "w" }]);
    expect(await d7.read("/local/domain/6/ro")).toBe("r");
    await d5.write("/local/domain/6/ro", "w5");
    await rejects(d5.read("/local/domain/6/ro"), "EACCES");
    expect(await d7.read("/local/domain/6/ro")).toBe("w5");
  });

  test("setPerms: only the owner (or dom0); a guest cannot give a node away", async () => {
    const { dom0, conn } = setup([5, 6]);
    const d5 = conn(5);
    await dom0.write("/local/domain/6/w", "");
    await dom0.setPerms("/local/domain/6/w", [{ domid: 6, access: "n" }, { domid: 5, access: "b" }]);
    await rejects(d5.setPerms("/local/domain/6/w", [{ domid: 6, access: "b" }]), "EACCES", "permissions", "/local/domain/6/w");
    await d5.write("/local/domain/5/mine", "");
    await d5.setPerms("/local/domain/5/mine", [{ domid: 5, access: "r" }]);
    await rejects(d5.setPerms("/local/domain/5/mine", [{ domid: 6, access: "n" }]), "EPERM", "domain 5");
    await rejects(d5.setPerms("/local/domain/5/mine", []), "EINVAL");
    await rejects(d5.setPerms("/local/domain/5/mine", [{ domid: 5, access: "x" as "n" }]), "EINVAL", "access");
    await rejects(d5.setPerms("/local/domain/5/nope", [{ domid: 5, access: "n" }]), "ENOENT");
  });
});

// ---- watches ---------------------------------------------------------------------------------

describe("simulated xenstore: watches", () => {
  test("fires once on registration, asynchronously, with the token", async () => {
    const { dom0 } = setup();
    const r = recorder();
    await dom0.watch("/w", "tok", r.cb);
    expect(r.events).toEqual([]);
    await until(() => r.events.length === 1, "initial event");
    expect(r.events).toEqual([["/w", "tok"]]);
    await settle();
    expect(r.events.length).toBe(1);
  });

  test("fires on changes at and below the path, not on siblings", async () => {
    const { dom0 } = setup();
    const r = recorder();
    await dom0.watch("/w/a", "t", r.cb);
    await until(() => r.events.length === 1, "initial event");
    await dom0.write("/w/a", "1");
    await dom0.write("/w/a/deep/er", "2");
    await dom0.write("/w/ab", "sibling with a common prefix");
    await dom0.write("/w/b", "sibling");
    await dom0.write("/w", "parent");
    await dom0.mkdir("/w/a/m");
    await dom0.setPerms("/w/a", [{ domid: 0, access: "r" }]);
    await dom0.rm("/w/a/deep");
    await until(() => r.events.length === 6, "events");
    await settle();
    expect(r.paths()).toEqual(["/w/a", "/w/a", "/w/a/deep/er", "/w/a/m", "/w/a", "/w/a/deep"]);
  });

  test("fires with the watched path when an ancestor is removed", async () => {
    const { dom0 } = setup();
    await dom0.write("/anc/x/y", "1");
    const r = recorder();
    await dom0.watch("/anc/x/y", "t", r.cb);
    await dom0.watch("/anc/x/not-yet", "u", r.cb);
    await until(() => r.events.length === 2, "initial events");
    await dom0.rm("/anc");
    await until(() => r.events.length === 4, "rm events");
    expect(r.events.slice(2).sort()).toEqual([
      ["/anc/x/not-yet", "u"],
      ["/anc/x/y", "t"],
    ]);
  });

  test("unwatch stops events; close stops them all; a duplicate path+token is EEXIST", async () => {
    const { dom0, conn } = setup();
    const other = conn(0);
    const r = recorder();
    const w = await other.watch("/u", "a", r.cb);
    await other.watch("/u", "b", r.cb);
    await rejects(other.watch("/u", "a", r.cb), "EEXIST", "/u");
    await until(() => r.events.length === 2, "initial events");
    w.unwatch();
    w.unwatch();
    await dom0.write("/u", "1");
    await until(() => r.events.length === 3, "event for b");
    expect(r.events[2]).toEqual(["/u", "b"]);
    other.close();
    await dom0.write("/u", "2");
    await settle();
    expect(r.events.length).toBe(3);
    await rejects(other.read("/u"), "ECLOSED");
  });

  test("after the last unwatch the loop stops; a new watch starts it again", async () => {
    const { dom0 } = setup();
    const r = recorder();
    (await dom0.watch("/again", "1", r.cb)).unwatch();
    await dom0.write("/again", "ignored");
    const w2 = await dom0.watch("/again", "2", r.cb); // in the same tick as the old loop's wake-up
    await dom0.write("/again", "seen");
    await until(() => r.events.length === 2, "events of the second watch");
    await settle();
    expect(r.events).toEqual([
      ["/again", "2"],
      ["/again", "2"],
    ]);
    w2.unwatch();
  });

  test("an event queued but not yet delivered is dropped by unwatch", async () => {
    const { dom0 } = setup();
    const r = recorder();
    const w = await dom0.watch("/q", "t", r.cb);
    w.unwatch();
    await settle();
    expect(r.events).toEqual([]);
  });

  test("events from the domain's own writes are delivered; writes of a transaction fire on commit", async () => {
    const { dom0 } = setup();
    const r = recorder();
    await dom0.watch("/own", "t", r.cb);
    await until(() => r.events.length === 1, "initial");
    const tx = await dom0.transactionStart();
    await dom0.write("/own/a", "1", tx);
    await dom0.write("/own/b", "2", tx);
    await settle();
    expect(r.events.length).toBe(1);
    await dom0.transactionEnd(tx, true);
    await until(() => r.events.length === 3, "commit events");
    expect(r.paths().slice(1)).toEqual(["/own/a", "/own/b"]);
  });

  test("a domain gets no events for nodes it may not read, but hears when it loses access", async () => {
    const { dom0, conn } = setup([5, 6]);
    const d5 = conn(5);
    const r = recorder();
    await d5.watch("/local/domain", "t", r.cb);
    await until(() => r.events.length === 1, "initial");
    await dom0.write("/local/domain/6/private", "x");
    await dom0.write("/local/domain/5/mine", "y");
    await until(() => r.events.length === 2, "own event");
    await settle();
    expect(r.paths()).toEqual(["/local/domain", "/local/domain/5/mine"]);
    await dom0.write("/local/domain/6/open", "z");
    await dom0.setPerms("/local/domain/6/open", [{ domid: 6, access: "r" }]);
    await dom0.setPerms("/local/domain/6/open", [{ domid: 6, access: "n" }]); // 5 loses access: still told
    await dom0.write("/local/domain/6/open", "zz");
    await until(() => r.events.length === 4, "perm events");
    await settle();
    expect(r.paths().slice(2)).toEqual(["/local/domain/6/open", "/local/domain/6/open"]);
  });

  test("a watcher that fell behind the change ring fires each watch once", async () => {
    const { dom0, conn } = setup([], { logBytes: 16384 });
    const lagging = conn(0);
    const r = recorder();
    await lagging.watch("/lag/a", "ta", r.cb);
    await lagging.watch("/lag/b", "tb", r.cb);
    await lagging.watch("/elsewhere", "tc", r.cb);
    expect(lagging.processWatchEvents()).toBe(3); // initial events, synchronously
    // Each write is done by the time write() returns its promise: issued in one synchronous run,
    // they overflow the 16 KiB ring before the lagging connection's loop gets a turn.
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 1000; i++) writes.push(dom0.write(`/lag/a/n${i % 10}`, String(i)));
    expect(lagging.processWatchEvents()).toBe(3);
    await Promise.all(writes);
    expect(r.events.slice(3).sort()).toEqual([
      ["/elsewhere", "tc"],
      ["/lag/a", "ta"],
      ["/lag/b", "tb"],
    ]);
    await dom0.write("/lag/b/x", "after");
    await until(() => r.events.length === 7, "back in step");
    expect(r.events[6]).toEqual(["/lag/b/x", "tb"]);
  });

  test("special watches: @introduceDomain and @releaseDomain", async () => {
    const { store, dom0 } = setup();
    const r = recorder();
    await dom0.watch("@introduceDomain", "i", r.cb);
    await dom0.watch("@releaseDomain", "r", r.cb);
    await until(() => r.events.length === 2, "initial");
    store.introduceDomain(3);
    store.releaseDomain(3);
    await until(() => r.events.length === 4, "events");
    expect(r.events.slice(2)).toEqual([
      ["@introduceDomain", "i"],
      ["@releaseDomain", "r"],
    ]);
    expect(await dom0.read("/local/domain/3")).toBeNull();
    await rejects(dom0.write("@introduceDomain", "x"), "EINVAL");
  });

  test("a throwing callback does not stop delivery", async () => {
    const store = new SharedXenStore(createXenStoreState());
    const errors: unknown[] = [];
    const xs = new SimXenStore(store, 0, { onWatchError: (e) => errors.push(e) });
    opened.push(xs);
    const r = recorder();
    await xs.watch("/e", "bad", () => {
      throw new Error("callback bug");
    });
    await xs.watch("/e", "good", r.cb);
    await xs.write("/e", "1");
    await until(() => r.events.length === 2 && errors.length === 2, "events");
    expect(String(errors[0])).toContain("callback bug");
  });
});

// ---- transactions ----------------------------------------------------------------------------

describe("simulated xenstore: transactions", () => {
  test("reads see the transaction's own writes; others see nothing until commit, then everything", async () => {
    const { dom0, conn } = setup();
    const other = conn(0);
    await dom0.write("/tx/old", "o");
    const tx = await dom0.transactionStart();
    await dom0.write("/tx/a", "1", tx);
    await dom0.write("/tx/b/c", "2", tx);
    await dom0.rm("/tx/old", tx);
    expect(await dom0.read("/tx/a", tx)).toBe("1");
    expect(await dom0.directory("/tx", tx)).toEqual(["a", "b"]);
    expect(await dom0.read("/tx/old", tx)).toBeNull();
    expect(await other.read("/tx/a")).toBeNull();
    expect(await other.read("/tx/old")).toBe("o");
    await dom0.transactionEnd(tx, true);
    expect(await other.read("/tx/a")).toBe("1");
    expect(await other.read("/tx/b/c")).toBe("2");
    expect(await other.read("/tx/old")).toBeNull();
    expect(await other.directory("/tx")).toEqual(["a", "b"]);
  });

  test("abort discards", async () => {
    const { dom0 } = setup();
    const tx = await dom0.transactionStart();
    await dom0.write("/ab/x", "1", tx);
    await dom0.transactionEnd(tx, false);
    expect(await dom0.read("/ab/x")).toBeNull();
    expect(await dom0.read("/ab")).toBeNull();
  });

  test("a node read in the transaction and changed by someone else: commit fails with EAGAIN, nothing applied", async () => {
    const { dom0, conn } = setup();
    const other = conn(0);
    await dom0.write("/c/x", "0");
    const tx = await dom0.transactionStart();
    expect(await dom0.read("/c/x", tx)).toBe("0");
    await dom0.write("/c/y", "from tx", tx);
    await other.write("/c/x", "changed");
    await rejects(dom0.transactionEnd(tx, true), "EAGAIN", "/c/x", "xenstore.transactionEnd");
    expect(await dom0.read("/c/y")).toBeNull();
    await rejects(dom0.transactionEnd(tx, true), "ENOENT");
  });

  test("conflicts: a listed directory gaining a child, a removed node, a node read as missing; none for unrelated nodes", async () => {
    const { dom0, conn } = setup();
    const other = conn(0);
    await dom0.write("/d/k", "1");

    let tx = await dom0.transactionStart();
    await dom0.directory("/d", tx);
    await other.write("/d/new", "x");
    await rejects(dom0.transactionEnd(tx, true), "EAGAIN");

    tx = await dom0.transactionStart();
    await dom0.read("/d/k", tx);
    await other.rm("/d/k");
    await rejects(dom0.transactionEnd(tx, true), "EAGAIN");

    tx = await dom0.transactionStart();
    expect(await dom0.read("/d/ghost", tx)).toBeNull();
    await other.write("/d/ghost", "boo");
    await rejects(dom0.transactionEnd(tx, true), "EAGAIN");

    tx = await dom0.transactionStart();
    await dom0.read("/d/new", tx);
    await dom0.write("/d/new", "tx", tx);
    await other.write("/unrelated", "u");
    await dom0.transactionEnd(tx, true);
    expect(await dom0.read("/d/new")).toBe("tx");
  });

  test("transaction() retries on EAGAIN and succeeds", async () => {
    const { dom0, conn } = setup();
    const other = conn(0);
    await dom0.write("/r/n", "0");
    let attempts = 0;
    const result = await dom0.transaction(async (tx) => {
      attempts++;
      const n = Number(await dom0.read("/r/n", tx));
      if (attempts <= 2) await other.write("/r/n", String(n + 100)); // interfere twice
      await dom0.write("/r/n", String(n + 1), tx);
      return n + 1;
    });
    expect(attempts).toBe(3);
    expect(result).toBe(201);
    expect(await dom0.read("/r/n")).toBe("201");
  });

  test("commits that keep failing: transaction() throws EAGAIN after maxRetries", async () => {
    const { store, dom0 } = setup();
    store.failNextCommits(1000);
    let attempts = 0;
    await rejects(
      dom0.transaction(async (tx) => {
        attempts++;
        await dom0.write("/f", "x", tx);
      }, 4),
      "EAGAIN",
      "injected",
    );
    expect(attempts).toBe(5);
    expect(await dom0.read("/f")).toBeNull();
    attempts = 0;
    await rejects(dom0.transaction(async () => void attempts++), "EAGAIN");
    expect(attempts).toBe(17); // default: 16 retries
    store.failNextCommits(0);
  });

  test("failNextCommits: counts down, and can target one domain", async () => {
    const { store, dom0, conn } = setup([5]);
    const d5 = conn(5);
    store.failNextCommits(2, { domid: 5 });
    await dom0.transaction(async (tx) => dom0.write("/dom0-unaffected", "1", tx), 0);
    let attempts = 0;
    await d5.transaction(async (tx) => {
      attempts++;
      await d5.write("/local/domain/5/k", "v", tx);
    });
    expect(attempts).toBe(3);
    expect(await d5.read("/local/domain/5/k")).toBe("v");
  });

  test("errors from fn abort the transaction and are not retried unless EAGAIN", async () => {
    const { dom0 } = setup();
    let attempts = 0;
    const boom = new Error("boom");
    let caught: unknown;
    try {
      await dom0.transaction(async (tx) => {
        attempts++;
        await dom0.write("/boom", "1", tx);
        throw boom;
      });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBe(boom);
    expect(attempts).toBe(1);
    expect(await dom0.read("/boom")).toBeNull();
  });

  test("permissions apply inside transactions, and a refused operation leaves the transaction intact", async () => {
    const { conn } = setup([5, 6]);
    const d5 = conn(5);
    const tx = await d5.transactionStart();
    await d5.write("/local/domain/5/ok", "1", tx);
    await rejects(d5.write("/local/domain/6/no", "1", tx), "EACCES", "/local/domain/6/no");
    await rejects(d5.read("/local/domain/6", tx), "EACCES");
    await d5.transactionEnd(tx, true);
    expect(await d5.read("/local/domain/5/ok")).toBe("1");
    expect(await conn(6).read("/local/domain/6/no")).toBeNull();
  });

  test("unknown, foreign or ended transactions are ENOENT; close aborts open ones", async () => {
    const { dom0, conn } = setup();
    const other = conn(0);
    await rejects(dom0.read("/x", { id: 999 }), "ENOENT", "999");
    const foreign = await other.transactionStart();
    await rejects(dom0.write("/x", "1", foreign), "ENOENT");
    const tx = await dom0.transactionStart();
    await dom0.write("/closing", "1", tx);
    dom0.close();
    await rejects(dom0.transactionEnd(tx, true), "ECLOSED");
    expect(await other.read("/closing")).toBeNull();
    await rejects(dom0.transaction(async () => 1), "ECLOSED");
  });
});

// ---- capacity --------------------------------------------------------------------------------

describe("simulated xenstore: capacity", () => {
  test("a write that does not fit is ENOSPC and leaves the store consistent, in every thread's view", async () => {
    const { store, dom0 } = setup([], { bytes: 16384 });
    let i = 0;
    let err: unknown;
    try {
      for (; i < 1000; i++) await dom0.write(`/fill/n${i}`, "v".repeat(100));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PlatformError);
    expect((err as PlatformError).code).toBe("ENOSPC");
    expect((err as PlatformError).message).toContain("xenstore.write");
    expect(i).toBeGreaterThan(10);
    expect(await dom0.read(`/fill/n${i}`)).toBeNull();
    expect(await dom0.read(`/fill/n${i - 1}`)).toBe("v".repeat(100));
    expect((await dom0.directory("/fill")).length).toBe(i);
    // A transaction that does not fit fails the same way, and applies nothing.
    const tx = await dom0.transactionStart();
    await dom0.write("/fill/big", "b".repeat(4000), tx);
    await dom0.write("/fill/n0", "changed", tx);
    await rejects(dom0.transactionEnd(tx, true), "ENOSPC");
    expect(await dom0.read("/fill/n0")).toBe("v".repeat(100));
    // A fresh view decoding the shared buffer agrees with ours.
    const fresh = new SharedXenStore(store.state).dump();
    expect(fresh).toEqual(store.dump());
    expect(fresh.has("/fill/big")).toBe(false);
    // Space freed is usable again.
    await dom0.rm("/fill");
    await dom0.write("/after", "ok");
    expect(await dom0.read("/after")).toBe("ok");
  });

  test("bad sizes and states are EINVAL", () => {
    expect(() => createXenStoreState({ logBytes: 20000 })).toThrow(PlatformError);
    expect(() => createXenStoreState({ bytes: 10 })).toThrow(PlatformError);
    expect(() => new SharedXenStore({} as never)).toThrow(PlatformError);
    expect(() => new SimXenStore(createXenStoreState(), -1)).toThrow(PlatformError);
  });
});

// ---- threads ---------------------------------------------------------------------------------

class WorkerDomain {
  readonly worker = new Worker(new URL("./fixtures/xenstore-worker.ts", import.meta.url).href);
  readonly events: { path: string; token: string; value: string | null }[] = [];
  private nextId = 1;
  private readonly waiting = new Map<number, (m: XsWorkerMessage) => void>();

  constructor() {
    this.worker.onmessage = (e: MessageEvent<XsWorkerMessage>) => {
      const m = e.data;
      if ("event" in m) this.events.push(m.event);
      else this.waiting.get(m.id)?.(m);
    };
  }

  async send(c: XsWorkerRequest): Promise<void> {
    const id = this.nextId++;
    const reply = await new Promise<XsWorkerMessage>((resolve) => {
      this.waiting.set(id, resolve);
      this.worker.postMessage({ ...c, id });
    });
    this.waiting.delete(id);
    if ("ok" in reply && !reply.ok) throw new Error(`worker: ${reply.code}: ${reply.message}`);
  }

  async stop(): Promise<void> {
    await this.send({ cmd: "close" });
    const closed = new Promise((r) => {
      this.worker.addEventListener("close", r);
      setTimeout(r, 2000).unref();
    });
    this.worker.terminate();
    await closed;
  }
}

describe("simulated xenstore: across threads", () => {
  const workers: WorkerDomain[] = [];
  afterEach(async () => {
    for (const w of workers.splice(0)) await w.stop();
  });

  test("a domain in a worker writes; the main thread's watch fires and reads the value", async () => {
    const { store, conn } = setup([7]);
    const w = new WorkerDomain();
    workers.push(w);
    await w.send({ cmd: "open", state: store.state, domid: 7 });
    const dom0 = conn(0);
    const seen: (string | null)[] = [];
    await dom0.watch("/local/domain/7/data", "main", (path) => {
      if (path === "/local/domain/7/data/key") void dom0.read(path).then((v) => seen.push(v));
    });
    await w.send({ cmd: "write", path: "/local/domain/7/data/key", value: "from worker" });
    await until(() => seen.length === 1, "main-thread event");
    expect(seen).toEqual(["from worker"]);
    // The worker is domain 7 for real: outside its home it is refused.
    const refused = await w.send({ cmd: "write", path: "/local/domain/8/x", value: "1" }).then(() => null, (e: unknown) => e);
    expect(String(refused)).toContain("EACCES");
  });

  test("a domain in a worker watches; the main thread writes; the worker's watch fires and reads the value", async () => {
    const { store, dom0 } = setup([7]);
    const w = new WorkerDomain();
    workers.push(w);
    await w.send({ cmd: "open", state: store.state, domid: 7 });
    await w.send({ cmd: "watch", path: "/local/domain/7/in", token: "wk" });
    await until(() => w.events.length === 1, "worker initial event");
    await dom0.write("/local/domain/7/in/cmd", "go");
    await until(() => w.events.length === 2, "worker event");
    expect(w.events[1]).toEqual({ path: "/local/domain/7/in/cmd", token: "wk", value: "go" });
    // Transactions committed in one thread are atomic for the other.
    await dom0.transaction(async (tx) => {
      await dom0.write("/local/domain/7/in/a", "1", tx);
      await dom0.write("/local/domain/7/in/b", "2", tx);
    });
    await until(() => w.events.length === 4, "worker tx events");
    expect(w.events.slice(2).map((e) => [e.path, e.value])).toEqual([
      ["/local/domain/7/in/a", "1"],
      ["/local/domain/7/in/b", "2"],
    ]);
  });

  test("many writers in two threads: no update lost under the lock", async () => {
    const { store, dom0 } = setup([7]);
    const w = new WorkerDomain();
    workers.push(w);
    await w.send({ cmd: "open", state: store.state, domid: 7 });
    const n = 200;
    const fromWorker = (async () => {
      for (let i = 0; i < n; i++) await w.send({ cmd: "write", path: `/local/domain/7/w/${i}`, value: String(i) });
    })();
    for (let i = 0; i < n; i++) await dom0.write(`/local/domain/7/m/${i}`, String(i));
    await fromWorker;
    expect((await dom0.directory("/local/domain/7/w")).length).toBe(n);
    expect((await dom0.directory("/local/domain/7/m")).length).toBe(n);
  });
});

// ---- process lifetime ------------------------------------------------------------------------

describe("simulated xenstore: process lifetime", () => {
  for (const mode of ["close", "unwatch"]) {
    test(`after ${mode}(), nothing keeps the process alive`, async () => {
      const proc = Bun.spawn([process.execPath, new URL("./fixtures/xenstore-exit.ts", import.meta.url).pathname, mode], {
        stdout: "pipe",
        stderr: "pipe",
      });
      const timer = setTimeout(() => proc.kill(), 10000);
      const code = await proc.exited;
      clearTimeout(timer);
      const out = await new Response(proc.stdout).text();
      expect(out.trim()).toBe("events=3");
      expect(code).toBe(0);
    });
  }
});
