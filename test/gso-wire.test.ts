/**
 * GSO on the wire, slot by slot, against peers played by the test: our Netfront's TX request
 * chain with its GSO extra slot (and the NULL answer to it), our Netback's RX responses with
 * the extra in the gap slot; and hostile GSO extras from the peer (bad type, size 0, GSO on a
 * frame that is not TCP of its type), each counted, never a crash.
 */
import { describe, expect, test } from "bun:test";
import { EXTRA_TYPE, GSO_TYPE, NETIF_RSP, NETRXF, NETTXF, decodeExtraInfo, encodeExtraInfo, encodeRxResponse, encodeTxRequest, setPartialTcpChecksum } from "../src/protocol/index.ts";
import { Counter } from "../src/workers/control.ts";
import { PeerBroken } from "../src/workers/back-tx.ts";
import { metaGso } from "../src/workers/frame-meta.ts";
import { packet } from "./helpers/packets.ts";
import { backTxHarness, drainQueue, frontRxHarness } from "./helpers/role-harness.ts";
import { scriptedBackend, scriptedFrontend } from "./helpers/scripted-peers.ts";
import { simVif } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

/** A TCP/IPv4 frame of 10054 bytes (three pages: 4096, 4096, 1862), its checksum field partial. */
function gsoFrame(): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(packet({ tcp: true, payload: 10000, seed: 9 }));
  setPartialTcpChecksum(f, 0, f.length);
  return f;
}

describe("wire format", () => {
  test("Netfront TX: first request csum_blank|data_validated|extra_info|more_data with the whole size, the GSO extra next, then the fragments; the extra's NULL answer is taken", async () => {
    const vif = await simVif();
    const be = await scriptedBackend(vif, { "feature-gso-tcpv4": "1" });
    const connecting = vif.connect({ timeoutMs: 3000 });
    await be.accept();
    const front = await connecting;
    const ring = new DataView(be.txRing.buffer, be.txRing.byteOffset, 4096);
    const frame = gsoFrame();
    await front.write(frame, { gso: { type: "tcpv4", size: 1448 }, csumBlank: true });
    await until(() => ring.getUint32(0, true) === 4); // req_prod: three data slots and the extra
    const req = (i: number) => {
      const at = 64 + i * 12;
      return { gref: ring.getUint32(at, true), offset: ring.getUint16(at + 4, true), flags: ring.getUint16(at + 6, true), id: ring.getUint16(at + 8, true), size: ring.getUint16(at + 10, true) };
    };
    expect(req(0).flags).toBe(NETTXF.csumBlank | NETTXF.dataValidated | NETTXF.extraInfo | NETTXF.moreData);
    expect(req(0).size).toBe(10054);
    expect(decodeExtraInfo(ring, 64 + 12)).toEqual({ extra: { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv4, features: 0 }, more: false });
    expect([req(2).flags, req(2).size, req(3).flags, req(3).size]).toEqual([NETTXF.moreData, 4096, 0, 1862]);
    // The bytes, read through the grants as a back end would.
    const data = new Uint8Array(10054);
    for (const [i, len, at] of [[0, 4096, 0], [2, 4096, 4096], [3, 1862, 8192]] as const) {
      const m = vif.dom0.gnttab.map(vif.guest, [req(i).gref], false);
      m.pages[0]!.copyTo(req(i).offset, len, data, at);
      vif.dom0.gnttab.unmap(m);
    }
    expect(data).toEqual(frame);
    // Answer every slot: OKAY per data request, NULL for the extra (its id field is whatever).
    const answer = (slot: number, id: number, status: number) => {
      ring.setUint16(64 + slot * 12, id, true);
      ring.setInt16(64 + slot * 12 + 2, status, true);
    };
    answer(0, req(0).id, NETIF_RSP.okay);
    answer(1, 0xffff, NETIF_RSP.null);
    answer(2, req(2).id, NETIF_RSP.okay);
    answer(3, req(3).id, NETIF_RSP.okay);
    ring.setUint32(8, 4, true);
    be.notifyTx();
    // A plain frame after it goes out on the next slot, alone.
    await front.write(packet({ payload: 100 }));
    await until(() => ring.getUint32(0, true) === 5);
    expect([req(4).flags, req(4).size]).toEqual([0, 142]);
    answer(4, req(4).id, NETIF_RSP.okay);
    ring.setUint32(8, 5, true);
    be.notifyTx();
    await until(() => front.depth().txUnsettledFrames === 0);
    expect(front.stats()).toMatchObject({ txPackets: 2, txDrops: 0, txErrors: 0 });
    be.release();
    await be.setState(6);
    await front.disconnect();
    closeAll(vif);
  });

  test("Netback RX: first response extra_info|more_data|csum_blank|data_validated, the GSO extra in the next slot (its request consumed, its buffer unused), each data response in its buffer's slot", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 3000 });
    const fe = await scriptedFrontend(vif, { "feature-gso-tcpv4": "1" });
    const back = await serving;
    const bufs = vif.frontPlatform.gnttab.share(0, 8, true);
    const ring = new DataView(fe.rxRing.buffer, fe.rxRing.byteOffset, 4096);
    for (let i = 0; i < 8; i++) {
      ring.setUint16(64 + i * 8, 100 + i, true); // id
      ring.setUint32(64 + i * 8 + 4, bufs.refs[i]!, true);
    }
    ring.setUint32(0, 8, true);
    fe.notifyRx();
    const frame = gsoFrame();
    await back.write(frame, { gso: { type: 1, size: 1448 }, csumBlank: true });
    await until(() => ring.getUint32(8, true) === 4); // rsp_prod
    const rsp = (i: number) => ({ id: ring.getUint16(64 + i * 8, true), offset: ring.getUint16(64 + i * 8 + 2, true), flags: ring.getUint16(64 + i * 8 + 4, true), status: ring.getInt16(64 + i * 8 + 6, true) });
    expect(rsp(0)).toEqual({ id: 100, offset: 0, flags: NETRXF.extraInfo | NETRXF.moreData | NETRXF.csumBlank | NETRXF.dataValidated, status: 4096 });
    expect(decodeExtraInfo(ring, 64 + 8)).toEqual({ extra: { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv4, features: 0 }, more: false });
    expect(rsp(2)).toEqual({ id: 102, offset: 0, flags: NETRXF.moreData, status: 4096 });
    expect(rsp(3)).toEqual({ id: 103, offset: 0, flags: 0, status: 1862 });
    const got = new Uint8Array(10054);
    got.set(bufs.pages[0]!, 0);
    got.set(bufs.pages[2]!, 4096);
    got.set(bufs.pages[3]!.subarray(0, 1862), 8192);
    expect(got).toEqual(frame);
    expect(bufs.pages[1]!.every((x) => x === 0)).toBe(true); // the gap slot's buffer: never written
    // The next frame takes the next buffer (slot 4).
    await back.write(packet({ payload: 100 }));
    await until(() => ring.getUint32(8, true) === 5);
    expect(rsp(4)).toEqual({ id: 104, offset: 0, flags: 0, status: 142 });
    await fe.setState(5);
    await until(() => !back.connected);
    await fe.setState(6);
    await back.disconnect();
    fe.release();
    vif.frontPlatform.gnttab.unshare(bufs);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});

describe("hostile GSO extras", () => {
  const tcp = () => packet({ tcp: true, payload: 3000, seed: 4 });
  const udp = () => packet({ payload: 3000, seed: 5 });

  describe("back-tx (from a front end)", () => {
    function send(h: ReturnType<typeof backTxHarness>, frame: Uint8Array, gso: { type: number; size: number } | null, id: number, page: number) {
      const f = h.peer;
      h.pages[page]!.set(frame);
      encodeTxRequest(f.view, f.slotOffset(f.reqProdPvt++), { gref: h.refs[page]!, offset: 0, flags: (gso ? NETTXF.extraInfo : 0) | NETTXF.csumBlank, id, size: frame.length });
      if (gso) encodeExtraInfo(f.view, f.slotOffset(f.reqProdPvt++), { type: EXTRA_TYPE.gso, size: gso.size, gsoType: gso.type, features: 0 }, false);
      f.pushRequests();
    }
    const answers = (h: ReturnType<typeof backTxHarness>) => {
      const out: number[] = [];
      for (let n = h.peer.unconsumedResponses(); n > 0; n--) {
        out.push(h.peer.view.getInt16(h.peer.slotOffset(h.peer.rspCons) + 2, true));
        h.peer.rspCons++;
      }
      return out;
    };

    test("GSO on a frame that is not TCP of its type: taken (answered OKAY, NULL), dropped and counted; the next frame delivered", () => {
      const h = backTxHarness();
      send(h, udp(), { type: GSO_TYPE.tcpv4, size: 1448 }, 1, 0);
      send(h, tcp(), { type: GSO_TYPE.tcpv6, size: 1448 }, 2, 1); // IPv4 frame, tcpv6 type
      send(h, tcp(), { type: GSO_TYPE.tcpv4, size: 1448 }, 3, 2);
      h.role.poll();
      const got = drainQueue(h.q);
      expect(got.length).toBe(1);
      expect(got[0]!.bytes).toEqual(tcp());
      expect(metaGso(got[0]!.meta)).toEqual({ type: 1, size: 1448 });
      expect(answers(h)).toEqual([NETIF_RSP.okay, NETIF_RSP.null, NETIF_RSP.okay, NETIF_RSP.null, NETIF_RSP.okay, NETIF_RSP.null]);
      expect(h.ctl.get(Counter.drops)).toBe(2);
      expect(h.errors.map((e) => [e.code, e.field, e.value])).toEqual([
        ["BAD_GSO", "tx_extra_info.gso", "NOT_TCP"],
        ["BAD_GSO", "tx_extra_info.gso", "WRONG_FAMILY"],
      ]);
      h.close();
    });

    for (const [what, gso] of [
      ["type 3", { type: 3, size: 1448 }],
      ["size 0", { type: GSO_TYPE.tcpv4, size: 0 }],
    ] as const) {
      test(`a GSO extra with ${what}: the ring is broken (fatal, as Linux netback's xenvif_fatal_tx_err), a typed error`, () => {
        const h = backTxHarness();
        send(h, tcp(), gso, 1, 0);
        let thrown: unknown;
        try {
          h.role.poll();
        } catch (e) {
          thrown = e;
        }
        expect(thrown).toBeInstanceOf(PeerBroken);
        expect((thrown as PeerBroken).cause.code).toBe("BAD_GSO");
        expect(drainQueue(h.q)).toEqual([]);
        h.close();
      });
    }
  });

  describe("front-rx (from a back end)", () => {
    function deliver(h: ReturnType<typeof frontRxHarness>, frame: Uint8Array, gso: { type: number; size: number } | null) {
      const r = h.peer;
      const req = { id: r.view.getUint16(r.slotOffset(r.reqCons), true) };
      h.dataPages[req.id]!.set(frame);
      encodeRxResponse(r.view, r.slotOffset(r.rspProdPvt++), { id: req.id, offset: 0, flags: (gso ? NETRXF.extraInfo : 0) | NETRXF.csumBlank, status: frame.length });
      r.reqCons++;
      if (gso) {
        encodeExtraInfo(r.view, r.slotOffset(r.rspProdPvt++), { type: EXTRA_TYPE.gso, size: gso.size, gsoType: gso.type, features: 0 }, false);
        r.reqCons++;
      }
      r.pushResponses();
    }

    test("bad type, size 0, a UDP frame, the wrong family: each dropped and counted (as Linux netfront), the ring goes on, good frames delivered", () => {
      const h = frontRxHarness();
      deliver(h, tcp(), { type: 3, size: 1448 });
      deliver(h, tcp(), { type: GSO_TYPE.tcpv4, size: 0 });
      deliver(h, udp(), { type: GSO_TYPE.tcpv4, size: 1448 });
      deliver(h, tcp(), { type: GSO_TYPE.tcpv6, size: 1448 });
      deliver(h, tcp(), { type: GSO_TYPE.tcpv4, size: 1448 });
      deliver(h, udp(), null);
      h.role.poll();
      const got = drainQueue(h.q);
      expect(got.map((g) => [g.bytes.length, metaGso(g.meta)])).toEqual([
        [3054, { type: 1, size: 1448 }],
        [3042, null],
      ]);
      expect(got[0]!.bytes).toEqual(tcp());
      expect(h.ctl.get(Counter.drops)).toBe(4);
      expect(h.errors.map((e) => e.code)).toEqual(["BAD_GSO", "BAD_GSO", "BAD_GSO", "BAD_GSO"]);
      // Every consumed slot (the extras' too) was posted again.
      expect(h.peer.unconsumedRequests()).toBe(256);
      h.close();
    });
  });
});
