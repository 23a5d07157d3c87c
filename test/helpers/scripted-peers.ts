/**
 * Peers played by the test, key by key and byte by byte, on a simulated vif. The back end
 * writes an offer, reads the front end's keys, maps its rings and binds its ports; the front
 * end shares rings and publishes keys. Then each does whatever the test wants to the rings (a
 * hostile peer), or nothing at all (a dead one).
 */
import type { EventChannels, MappedPages } from "../../src/platform/types.ts";
import type { simVif } from "./vif.ts";
import { until } from "./until.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

export const OFFER: Record<string, string> = {
  "feature-rx-copy": "1",
  "feature-sg": "1",
  "feature-split-event-channels": "1",
};

export interface ScriptedBackend {
  /** Wait for the front end's Connected, map its rings, bind its ports, go Connected. */
  accept(): Promise<void>;
  txRing: Uint8Array;
  rxRing: Uint8Array;
  /** Notify the front end on its TX / RX channel. */
  notifyTx(): void;
  notifyRx(): void;
  setState(s: number): Promise<void>;
  /** Let go of the mappings and ports (as a back end does before Closing). */
  release(): void;
}

/** Write the offer (`keys` override or add to OFFER; a null value removes a key) and InitWait. */
export async function scriptedBackend(vif: Vif, keys: Record<string, string | null> = {}): Promise<ScriptedBackend> {
  const xs = vif.dom0.xenstore;
  const b = vif.paths.backPath;
  const f = vif.paths.frontPath;
  for (const [k, v] of Object.entries({ ...OFFER, ...keys })) {
    if (v === null) await xs.rm(`${b}/${k}`);
    else await xs.write(`${b}/${k}`, v);
  }
  await xs.write(`${b}/state`, "2");
  const maps: MappedPages[] = [];
  let h: EventChannels | null = null;
  let txPort = 0;
  let rxPort = 0;
  const self: ScriptedBackend = {
    txRing: new Uint8Array(0),
    rxRing: new Uint8Array(0),
    async accept() {
      await until(async () => (await xs.read(`${f}/state`)) === "4", 5000);
      const read = async (k: string) => Number(await xs.read(`${f}/${k}`));
      const tx = vif.dom0.gnttab.map(vif.guest, [await read("tx-ring-ref")], true);
      const rx = vif.dom0.gnttab.map(vif.guest, [await read("rx-ring-ref")], true);
      maps.push(tx, rx);
      self.txRing = tx.pages[0]!;
      self.rxRing = rx.pages[0]!;
      h = vif.dom0.openEventChannels();
      const split = (await xs.read(`${f}/event-channel-tx`)) !== null;
      txPort = h.bindInterdomain(vif.guest, await read(split ? "event-channel-tx" : "event-channel"));
      rxPort = split ? h.bindInterdomain(vif.guest, await read("event-channel-rx")) : txPort;
      await xs.write(`${b}/state`, "4");
    },
    notifyTx: () => h!.notify(txPort),
    notifyRx: () => h!.notify(rxPort),
    setState: (s) => xs.write(`${b}/state`, String(s)),
    release() {
      for (const m of maps.splice(0)) vif.dom0.gnttab.unmap(m);
      h?.close();
      h = null;
    },
  };
  return self;
}

export interface ScriptedFrontend {
  txRing: Uint8Array;
  rxRing: Uint8Array;
  /** Notify the back end on the RX channel. */
  notifyRx(): void;
  setState(s: number): Promise<void>;
  /** End access to the ring pages and close the ports. */
  release(): void;
}

/**
 * A front end played by the test: it shares two ring pages (initialised, no RX buffer posted),
 * allocates split ports and publishes its keys (`keys` override or add; null removes), then
 * goes Connected and does nothing more.
 */
export async function scriptedFrontend(vif: Vif, overrides: Record<string, string | null> = {}): Promise<ScriptedFrontend> {
  const g = vif.frontPlatform;
  const xs = g.xenstore;
  const f = vif.paths.frontPath;
  const tx = g.gnttab.share(0, 1, true);
  const rx = g.gnttab.share(0, 1, true);
  for (const r of [tx, rx]) {
    const w = new Uint32Array(r.pages[0]!.buffer, r.pages[0]!.byteOffset, 4);
    w[1] = 1; // req_event
    w[3] = 1; // rsp_event
  }
  const h = g.openEventChannels();
  const txPort = h.allocUnbound(0);
  const rxPort = h.allocUnbound(0);
  const keys: Record<string, string> = {
    "tx-ring-ref": String(tx.refs[0]),
    "rx-ring-ref": String(rx.refs[0]),
    "event-channel-tx": String(txPort),
    "event-channel-rx": String(rxPort),
    "request-rx-copy": "1",
    "feature-sg": "1",
    "feature-rx-notify": "1",
  };
  for (const [k, v] of Object.entries({ ...keys, ...overrides })) {
    if (v === null) await xs.rm(`${f}/${k}`);
    else await xs.write(`${f}/${k}`, v);
  }
  await xs.write(`${f}/state`, "4");
  return {
    txRing: tx.pages[0]!,
    rxRing: rx.pages[0]!,
    notifyRx: () => h.notify(rxPort),
    setState: (s) => xs.write(`${f}/state`, String(s)),
    release() {
      h.close();
      g.gnttab.unshare(tx);
      g.gnttab.unshare(rx);
    },
  };
}
