/**
 * Peers that do what mirage-net-xen 2.1.8 (and QEMU's xen_nic back end) do (../shared/PROTOCOL.md), played by the test on
 * a simulated vif, xenstore and rings both: the keys each writes and reads and in what order,
 * one event channel, the front end going Connected without Initialised and sending from
 * 2048-byte blocks (two per page), the back end removing its directory when it closes. Their
 * data paths are our protocol codecs driven from the test thread by a 1 ms timer, so each
 * frame crosses the rings exactly as the peer would put it there.
 */
import {
  BackRing,
  FrontRing,
  NETIF_RSP,
  NETRXF,
  NETTXF,
  RX_REQUEST_SIZE,
  TX_REQUEST_SIZE,
  decodeRxRequest,
  decodeRxResponse,
  decodeTxRequest,
  decodeTxResponse,
  encodeRxRequest,
  encodeRxResponse,
  encodeTxRequest,
  encodeTxResponse,
} from "../../src/protocol/index.ts";
import type { CopySegment, EventChannels, MappedPages, SharedPages } from "../../src/platform/types.ts";
import type { simVif } from "./vif.ts";
import { until } from "./until.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

const BLOCK = 2048;

export interface MiragePeer {
  /** Frames received, copied. */
  received: Uint8Array[];
  /** Queue a frame to send (up to two blocks for the front end, one page for the back end). */
  send(frame: Uint8Array): void;
  /** Everything queued has been answered (front) or delivered (back). */
  idle(): boolean;
  /** Stop the timer and let go of everything. */
  close(): Promise<void>;
}

/**
 * mirage-net-xen's front end: reads the back end's features, allocates both rings and one
 * event channel, writes its keys in one transaction and goes straight to Connected (4), then
 * waits for the back end's Connected.
 */
export async function mirageFrontend(vif: Vif, backDomid = 0): Promise<MiragePeer> {
  const g = vif.frontPlatform;
  const xs = g.xenstore;
  const f = vif.paths.frontPath;
  const backPath = (await xs.read(`${f}/backend`))!;
  for (const k of ["feature-sg", "feature-gso-tcpv4", "feature-rx-copy", "feature-rx-flip", "feature-rx-notify", "feature-smart-poll"]) await xs.read(`${backPath}/${k}`);
  await xs.read(`${f}/mac`);
  await xs.read(`${f}/mtu`);
  const txRingPage = g.gnttab.share(backDomid, 1, true);
  const rxRingPage = g.gnttab.share(backDomid, 1, true);
  const txData = g.gnttab.share(backDomid, 128, false); // 256 blocks of 2048 bytes
  const rxData = g.gnttab.share(backDomid, 256, true);
  const evtchn = g.openEventChannels();
  const port = evtchn.allocUnbound(backDomid);
  const tx = new FrontRing(txRingPage.pages[0]!, TX_REQUEST_SIZE);
  const rx = new FrontRing(rxRingPage.pages[0]!, RX_REQUEST_SIZE);
  tx.init();
  rx.init();
  // Every RX buffer posted once, a whole page each, id = page index.
  for (let i = 0; i < 256; i++) {
    encodeRxRequest(rx.view, rx.slotOffset(rx.reqProdPvt), { id: i, gref: rxData.refs[i]! });
    rx.reqProdPvt = (rx.reqProdPvt + 1) >>> 0;
  }
  rx.pushRequests();
  const keys: Record<string, string> = {
    "tx-ring-ref": String(txRingPage.refs[0]),
    "rx-ring-ref": String(rxRingPage.refs[0]),
    "event-channel": String(port),
    "feature-sg": "1",
    "feature-gso-tcpv4": "1",
    "request-rx-copy": "1",
    "feature-rx-flip": "0",
    "feature-rx-notify": "1",
    "feature-smart-poll": "0",
  };
  await xs.transaction(async (t) => {
    for (const [k, v] of Object.entries(keys)) await xs.write(`${f}/${k}`, v, t);
  });
  await xs.write(`${f}/state`, "4");
  await until(async () => (await xs.read(`${backPath}/state`)) === "4", 5000);

  const freeBlocks = Array.from({ length: 256 }, (_, i) => 255 - i);
  const inFlight = new Set<number>();
  const outbox: Uint8Array[] = [];
  const received: Uint8Array[] = [];
  let partial: Uint8Array[] = [];
  let want = 0;
  const txRsp = { id: 0, status: 0 };
  const rxRsp = { id: 0, offset: 0, flags: 0, status: 0 };

  const pump = () => {
    let notify = false;
    // TX: each frame in one or two 2048-byte blocks, at offset 0 or 2048 of its page.
    while (outbox.length > 0) {
      const frame = outbox[0]!;
      const blocks = Math.ceil(frame.length / BLOCK);
      if (freeBlocks.length < blocks || tx.freeRequests() < blocks) break;
      outbox.shift();
      for (let b = 0; b < blocks; b++) {
        const block = freeBlocks.pop()!;
        inFlight.add(block);
        const page = block >> 1;
        const offset = (block & 1) * BLOCK;
        const chunk = frame.subarray(b * BLOCK, Math.min(frame.length, (b + 1) * BLOCK));
        txData.pages[page]!.set(chunk, offset);
        encodeTxRequest(tx.view, tx.slotOffset(tx.reqProdPvt), {
          gref: txData.refs[page]!,
          offset,
          flags: b < blocks - 1 ? NETTXF.moreData : 0,
          id: block,
          size: b === 0 ? frame.length : chunk.length,
        });
        tx.reqProdPvt = (tx.reqProdPvt + 1) >>> 0;
      }
      notify = tx.pushRequests() || notify;
    }
    for (let n = tx.unconsumedResponses(); n > 0; n--) {
      decodeTxResponse(tx.view, tx.slotOffset(tx.rspCons), txRsp);
      tx.rspCons = (tx.rspCons + 1) >>> 0;
      if (txRsp.status === NETIF_RSP.null) continue;
      if (inFlight.delete(txRsp.id)) freeBlocks.push(txRsp.id);
    }
    // RX: fragments in order, more_data chaining them; each page posted again once read.
    let reposted = 0;
    for (let n = rx.unconsumedResponses(); n > 0; n--) {
      decodeRxResponse(rx.view, rx.slotOffset(rx.rspCons), rxRsp);
      rx.rspCons = (rx.rspCons + 1) >>> 0;
      const id = rxRsp.id;
      if (rxRsp.status > 0) partial.push(rxData.pages[id]!.slice(rxRsp.offset, rxRsp.offset + rxRsp.status));
      if (want === 0) want = rxRsp.status;
      if ((rxRsp.flags & NETRXF.moreData) === 0) {
        const total = partial.reduce((s, p) => s + p.length, 0);
        const out = new Uint8Array(total);
        let at = 0;
        for (const p of partial) {
          out.set(p, at);
          at += p.length;
        }
        received.push(out);
        partial = [];
        want = 0;
      }
      encodeRxRequest(rx.view, rx.slotOffset(rx.reqProdPvt), { id, gref: rxData.refs[id]! });
      rx.reqProdPvt = (rx.reqProdPvt + 1) >>> 0;
      reposted++;
    }
    if (reposted > 0) notify = rx.pushRequests() || notify;
    rx.finalCheckForResponses();
    tx.finalCheckForResponses();
    if (notify) evtchn.notify(port);
  };
  const timer = setInterval(pump, 1);
  return {
    received,
    send: (frame) => outbox.push(frame.slice()),
    idle: () => outbox.length === 0 && inFlight.size === 0,
    async close() {
      clearInterval(timer);
      await xs.write(`${f}/state`, "5");
      await until(async () => ["5", "6", null].includes(await xs.read(`${backPath}/state`)), 5000);
      await xs.write(`${f}/state`, "6");
      evtchn.close();
      for (const s of [txRingPage, rxRingPage, txData, rxData]) g.gnttab.unshare(s, { defer: true });
    },
  };
}

/** How a scripted back end behaves: mirage-net-xen 2.1.8's, or QEMU's xen_nic. */
interface BackendStyle {
  /** The keys it writes with state 2, in one transaction. */
  offer: Record<string, string>;
  /** Where in the posted page it puts a received frame (QEMU: 2, NET_IP_ALIGN). */
  rxOffset: number;
  /** It answers a TX request with more_data or extra_info with an error (QEMU: no SG, no extras). */
  singleSlot: boolean;
  /** Closing, it removes its directory (mirage-net-xen). */
  removesDir: boolean;
}

export interface ScriptedBackPeer extends MiragePeer {
  /** TX requests it refused (more_data or extra_info to a peer without SG; sizes out of range). */
  refused: number;
}

/**
 * mirage-net-xen's back end: offers feature-sg, feature-rx-copy and no GSO with state 2 in one
 * transaction (no split key), waits for the front end's 3 or 4, reads the ring refs and
 * `event-channel`, maps and binds, goes Connected. It sends each frame in one RX slot (frames
 * up to a page) and takes TX packets of any number of slots by grant copy. Closing, it writes
 * Closed, waits for the front end, and removes its directory.
 */
export function mirageBackend(vif: Vif): Promise<ScriptedBackPeer> {
  return scriptedBackPeer(vif, { offer: { "feature-sg": "1", "feature-rx-copy": "1", "feature-gso-tcpv4": "0" }, rxOffset: 0, singleSlot: false, removesDir: true });
}

/**
 * QEMU's userspace back end (hw/net/xen_nic.c): offers only feature-rx-copy=1 and
 * feature-rx-flip=0 (no SG, no split channels, no multi-queue, no MTU), reads one
 * `event-channel`, refuses a TX request with more_data or extra_info, or one that crosses its
 * page, with an error response, and puts each received frame at offset 2 of the posted page.
 */
export function qemuBackend(vif: Vif): Promise<ScriptedBackPeer> {
  return scriptedBackPeer(vif, { offer: { "feature-rx-copy": "1", "feature-rx-flip": "0" }, rxOffset: 2, singleSlot: true, removesDir: false });
}

async function scriptedBackPeer(vif: Vif, style: BackendStyle): Promise<ScriptedBackPeer> {
  const d0 = vif.dom0;
  const xs = d0.xenstore;
  const b = vif.paths.backPath;
  const f = vif.paths.frontPath;
  const guest = vif.guest;
  await xs.transaction(async (t) => {
    for (const [k, v] of Object.entries(style.offer)) await xs.write(`${b}/${k}`, v, t);
    await xs.write(`${b}/state`, "2", t);
  });
  await until(async () => ["3", "4"].includes((await xs.read(`${f}/state`)) ?? ""), 5000);
  const read = async (k: string) => Number(await xs.read(`${f}/${k}`));
  const maps: MappedPages[] = [d0.gnttab.map(guest, [await read("tx-ring-ref")], true), d0.gnttab.map(guest, [await read("rx-ring-ref")], true)];
  const evtchn: EventChannels = d0.openEventChannels();
  const port = evtchn.bindInterdomain(guest, await read("event-channel"));
  const tx = new BackRing(maps[0]!.pages[0]!, TX_REQUEST_SIZE);
  const rx = new BackRing(maps[1]!.pages[0]!, RX_REQUEST_SIZE);
  tx.attach();
  rx.attach();
  await xs.write(`${b}/state`, "4");

  const outbox: Uint8Array[] = [];
  const received: Uint8Array[] = [];
  const txReq = { gref: 0, offset: 0, flags: 0, id: 0, size: 0 };
  const rxReq = { id: 0, gref: 0 };
  let packet: { total: number; parts: Uint8Array[] } | null = null;

  const pump = () => {
    let notify = false;
    for (let n = tx.unconsumedRequests(); n > 0; n--) {
      decodeTxRequest(tx.view, tx.slotOffset(tx.reqCons), txReq);
      tx.reqCons = (tx.reqCons + 1) >>> 0;
      if (style.singleSlot && ((txReq.flags & (NETTXF.moreData | NETTXF.extraInfo)) !== 0 || txReq.size < 14 || txReq.offset + txReq.size > 4096)) {
        self.refused++;
        encodeTxResponse(tx.view, tx.slotOffset(tx.rspProdPvt), { id: txReq.id, status: NETIF_RSP.error });
        tx.rspProdPvt = (tx.rspProdPvt + 1) >>> 0;
        continue;
      }
      const first = packet === null;
      packet ??= { total: txReq.size, parts: [] };
      const len = first ? Math.min(txReq.size, 4096 - txReq.offset) : txReq.size;
      const buf = new Uint8Array(len);
      const seg: CopySegment = { source: { domid: guest, ref: txReq.gref, offset: txReq.offset }, dest: { buf, offset: 0 }, len };
      d0.gnttab.copy([seg]);
      packet.parts.push(buf);
      encodeTxResponse(tx.view, tx.slotOffset(tx.rspProdPvt), { id: txReq.id, status: seg.status === 0 ? NETIF_RSP.okay : NETIF_RSP.error });
      tx.rspProdPvt = (tx.rspProdPvt + 1) >>> 0;
      if ((txReq.flags & NETTXF.moreData) === 0) {
        const out = new Uint8Array(packet.total);
        let at = 0;
        for (const p of packet.parts) {
          out.set(p.subarray(0, Math.min(p.length, out.length - at)), at);
          at += p.length;
        }
        received.push(out);
        packet = null;
      }
    }
    notify = tx.pushResponses() || notify;
    while (outbox.length > 0 && rx.unconsumedRequests() > 0) {
      const frame = outbox.shift()!;
      decodeRxRequest(rx.view, rx.slotOffset(rx.reqCons), rxReq);
      rx.reqCons = (rx.reqCons + 1) >>> 0;
      const seg: CopySegment = { source: { buf: frame, offset: 0 }, dest: { domid: guest, ref: rxReq.gref, offset: style.rxOffset }, len: frame.length };
      d0.gnttab.copy([seg]);
      encodeRxResponse(rx.view, rx.slotOffset(rx.rspProdPvt), { id: rxReq.id, offset: style.rxOffset, flags: 0, status: seg.status === 0 ? frame.length : NETIF_RSP.error });
      rx.rspProdPvt = (rx.rspProdPvt + 1) >>> 0;
    }
    notify = rx.pushResponses() || notify;
    tx.finalCheckForRequests();
    if (outbox.length > 0) rx.finalCheckForRequests();
    if (notify) evtchn.notify(port);
  };
  const timer = setInterval(pump, 1);
  const self: ScriptedBackPeer = {
    received,
    refused: 0,
    send: (frame) => outbox.push(frame.slice()),
    idle: () => outbox.length === 0,
    async close() {
      clearInterval(timer);
      await xs.write(`${b}/state`, "6");
      await until(async () => ["6", null].includes(await xs.read(`${f}/state`)), 5000).catch(() => {});
      evtchn.close();
      for (const m of maps) d0.gnttab.unmap(m);
      if (style.removesDir) await xs.rm(b);
    },
  };
  return self;
}

export type { SharedPages };
