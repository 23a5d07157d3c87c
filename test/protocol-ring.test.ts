/**
 * The io/ring.h shared ring: sizes, init, push/notify, final checks, u32 wrap-around and the
 * guards against a peer that publishes impossible producer indices.
 *
 * Header words are read back with an independent little-endian DataView (never through the
 * ring's own getters) so a wrong word index or endianness in ring.ts shows up here.
 */
import { describe, expect, test } from "bun:test";
import { BackRing, FrontRing, PAGE_SIZE, ProtocolError, RING_HEADER, RING_HEADER_SIZE, ringSize } from "../src/protocol/index.ts";

const TX_SLOT = 12;
const RX_SLOT = 8;

function newPage(): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
}

/** The four shared header words, read little-endian straight from the bytes. */
function header(page: Uint8Array) {
  const v = new DataView(page.buffer, page.byteOffset, 16);
  return {
    reqProd: v.getUint32(0, true),
    reqEvent: v.getUint32(4, true),
    rspProd: v.getUint32(8, true),
    rspEvent: v.getUint32(12, true),
  };
}

/** What a peer does: write a shared index word directly into the page. */
function poke(page: Uint8Array, byteOffset: number, value: number): void {
  new DataView(page.buffer, page.byteOffset, 16).setUint32(byteOffset, value >>> 0, true);
}

/** A front end and a back end sharing one freshly initialised page. */
function pair(slotSize = TX_SLOT, start = 0) {
  const page = newPage();
  const front = new FrontRing(page, slotSize);
  front.init(start);
  const back = new BackRing(page, slotSize);
  back.attach();
  return { page, front, back };
}

/** Front end writes `n` requests (a u16 id each at slot offset 0) without publishing them. */
function writeRequests(front: FrontRing, n: number, firstId = 0): void {
  for (let i = 0; i < n; i++) {
    front.view.setUint16(front.nextRequestOffset(), (firstId + i) & 0xffff, true);
    front.reqProdPvt++;
  }
}

/** Back end consumes `n` requests and writes a response for each, without publishing. */
function answerRequests(back: BackRing, n: number): void {
  for (let i = 0; i < n; i++) {
    const id = back.view.getUint16(back.slotOffset(back.reqCons), true);
    back.reqCons++;
    back.view.setUint16(back.nextResponseOffset(), id, true);
    back.rspProdPvt++;
  }
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("ringSize", () => {
  test("TX (12-byte) and RX (8-byte) slots both give 256 slots", () => {
    // 4032/12 = 336 and 4032/8 = 504, both rounded down to 256.
    expect(ringSize(12)).toBe(256);
    expect(ringSize(8)).toBe(256);
  });

  test("rounds down to a power of two for every legal slot size", () => {
    for (let s = 1; s <= PAGE_SIZE - RING_HEADER_SIZE; s++) {
      const fit = Math.floor((PAGE_SIZE - RING_HEADER_SIZE) / s);
      let p = 1;
      while (p * 2 <= fit) p *= 2;
      if (ringSize(s) !== p) expect({ slot: s, size: ringSize(s) }).toEqual({ slot: s, size: p });
    }
    expect(ringSize(1)).toBe(2048);
    expect(ringSize(4032)).toBe(1);
  });

  test.each([0, -8, 12.5, 4033, NaN, Infinity])("slot size %p is a RangeError", (s) => {
    expect(() => ringSize(s)).toThrow(RangeError);
  });

  test("a ring with a bad slot size cannot be constructed", () => {
    expect(() => new FrontRing(newPage(), 0)).toThrow(RangeError);
    expect(() => new BackRing(newPage(), 5000)).toThrow(RangeError);
  });
});

describe("page checks", () => {
  test("a page shorter than 4096 bytes is a RangeError", () => {
    expect(() => new FrontRing(new Uint8Array(4095), TX_SLOT)).toThrow(RangeError);
    expect(() => new BackRing(new Uint8Array(new SharedArrayBuffer(4095)), RX_SLOT)).toThrow(RangeError);
  });

  test("a page not 4-byte aligned is a RangeError", () => {
    const buf = new SharedArrayBuffer(PAGE_SIZE + 8);
    for (const off of [1, 2, 3, 6]) {
      expect(() => new FrontRing(new Uint8Array(buf, off, PAGE_SIZE), TX_SLOT)).toThrow(RangeError);
      expect(() => new BackRing(new Uint8Array(buf, off, PAGE_SIZE), TX_SLOT)).toThrow(RangeError);
    }
    expect(() => new FrontRing(new Uint8Array(buf, 4, PAGE_SIZE), TX_SLOT)).not.toThrow();
  });

  test("a page inside a larger buffer uses its own bytes, not the buffer's start", () => {
    const buf = new SharedArrayBuffer(3 * PAGE_SIZE);
    const all = new Uint8Array(buf);
    all.fill(0xee);
    const page = new Uint8Array(buf, PAGE_SIZE, PAGE_SIZE);
    const front = new FrontRing(page, TX_SLOT);
    front.init(7);
    expect(header(page)).toEqual({ reqProd: 7, reqEvent: 8, rspProd: 7, rspEvent: 8 });
    // The bytes before and after the page are untouched.
    expect(all.subarray(0, PAGE_SIZE).every((b) => b === 0xee)).toBe(true);
    expect(all.subarray(2 * PAGE_SIZE).every((b) => b === 0xee)).toBe(true);
    // Slot 0 starts right after the 64-byte header of *this* page.
    expect(front.slotOffset(0)).toBe(64);
    expect(front.slotOffset(255)).toBe(64 + 255 * 12);
    expect(front.slotOffset(256)).toBe(64);
  });
});

describe("FrontRing.init / attach", () => {
  test("init writes prods 0 and events 1, little-endian, and clears the header padding", () => {
    const page = newPage();
    page.fill(0xff);
    const front = new FrontRing(page, TX_SLOT);
    front.init();
    expect(Array.from(page.subarray(0, 16))).toEqual([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    // pvt (smartpoll_active) and the 44-byte pad are zeroed, as SHARED_RING_INIT does.
    expect(page.subarray(RING_HEADER.pvt, RING_HEADER_SIZE).every((b) => b === 0)).toBe(true);
    expect(front.reqProdPvt).toBe(0);
    expect(front.rspCons).toBe(0);
    expect(front.freeRequests()).toBe(256);
    expect(front.unconsumedResponses()).toBe(0);
  });

  test("init(start) puts prods at start and events at start+1, wrapping", () => {
    const page = newPage();
    const front = new FrontRing(page, RX_SLOT);
    front.init(0x12345678);
    expect(Array.from(page.subarray(0, 16))).toEqual([
      0x78, 0x56, 0x34, 0x12, 0x79, 0x56, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 0x79, 0x56, 0x34, 0x12,
    ]);
    front.init(0xffffffff);
    expect(header(page)).toEqual({ reqProd: 0xffffffff, reqEvent: 0, rspProd: 0xffffffff, rspEvent: 0 });
  });

  test("the back end attaches without touching the page and adopts rsp_prod", () => {
    const page = newPage();
    poke(page, RING_HEADER.reqProd, 40);
    poke(page, RING_HEADER.reqEvent, 31);
    poke(page, RING_HEADER.rspProd, 30);
    poke(page, RING_HEADER.rspEvent, 33);
    const before = page.slice();
    const back = new BackRing(page, TX_SLOT);
    back.attach();
    expect(page).toEqual(before);
    expect(back.reqCons).toBe(30);
    expect(back.rspProdPvt).toBe(30);
    expect(back.unconsumedRequests()).toBe(10);
  });

  test("a front end reattaching adopts the shared producer indices", () => {
    const page = newPage();
    poke(page, RING_HEADER.reqProd, 10);
    poke(page, RING_HEADER.rspProd, 7);
    const front = new FrontRing(page, TX_SLOT);
    front.attach();
    expect(front.reqProdPvt).toBe(10);
    expect(front.rspCons).toBe(7);
    expect(front.freeRequests()).toBe(253);
  });
});

describe("push and notify", () => {
  test("back end asleep with req_event = req_cons+1: the first push notifies", () => {
    const { page, front } = pair();
    writeRequests(front, 1);
    expect(front.pushRequests()).toBe(true);
    expect(header(page).reqProd).toBe(1);
  });

  test("back end not asking (req_event already passed): no notify", () => {
    const { page, front } = pair();
    writeRequests(front, 1);
    expect(front.pushRequests()).toBe(true);
    // The back end is busy and has not re-armed req_event (still 1): more requests are silent.
    writeRequests(front, 2);
    expect(front.pushRequests()).toBe(false);
    expect(header(page)).toMatchObject({ reqProd: 3, reqEvent: 1 });
  });

  test("batch: notify exactly when req_event falls in (old, new]", () => {
    // old = 2, new = 6 after writing 4 more requests.
    const cases: [event: number, notify: boolean][] = [
      [2, false], // == old: the back end was already told about index 1
      [3, true], // first of the batch
      [5, true], // middle of the batch
      [6, true], // == new: last of the batch
      [7, false], // beyond the batch
      [0xffffffff, false], // "behind" in u32 terms
    ];
    for (const [event, notify] of cases) {
      const { page, front, back } = pair();
      writeRequests(front, 2);
      front.pushRequests();
      answerRequests(back, 2); // back end consumes 0 and 1
      poke(page, RING_HEADER.reqEvent, event);
      writeRequests(front, 4, 2);
      expect({ event, notify: front.pushRequests() }).toEqual({ event, notify });
      expect(header(page).reqProd).toBe(6);
    }
  });

  test("pushing with nothing new never notifies", () => {
    const { page, front } = pair();
    poke(page, RING_HEADER.reqEvent, 0);
    expect(front.pushRequests()).toBe(false);
  });

  test("responses: the same rule with rsp_event", () => {
    const { page, front, back } = pair();
    writeRequests(front, 8);
    front.pushRequests();
    // Front end asleep with rsp_event = rsp_cons + 1 = 1 (from init).
    answerRequests(back, 1);
    expect(back.pushResponses()).toBe(true);
    expect(header(page).rspProd).toBe(1);
    // Front end has not re-armed: silence.
    answerRequests(back, 3);
    expect(back.pushResponses()).toBe(false);
    // Front end consumes 1..4 and arms rsp_event = 5; a batch 4 -> 7 contains 5.
    front.rspCons = 4;
    expect(front.finalCheckForResponses()).toBe(false);
    expect(header(page).rspEvent).toBe(5);
    answerRequests(back, 3);
    expect(back.pushResponses()).toBe(true);
    expect(header(page).rspProd).toBe(7);
  });
});

describe("free and unconsumed counts", () => {
  test("counts follow a produce / consume / answer cycle", () => {
    const { front, back } = pair();
    expect(front.freeRequests()).toBe(256);
    expect(back.unconsumedRequests()).toBe(0);

    writeRequests(front, 10);
    expect(front.freeRequests()).toBe(246); // written slots are taken even before the push
    expect(back.unconsumedRequests()).toBe(0); // but the back end cannot see them yet
    front.pushRequests();
    expect(back.unconsumedRequests()).toBe(10);

    answerRequests(back, 4);
    expect(back.unconsumedRequests()).toBe(6);
    expect(front.unconsumedResponses()).toBe(0); // not pushed yet
    back.pushResponses();
    expect(front.unconsumedResponses()).toBe(4);
    expect(front.freeRequests()).toBe(246); // not consumed yet

    front.rspCons += 4;
    expect(front.unconsumedResponses()).toBe(0);
    expect(front.freeRequests()).toBe(250);
  });

  test("a full ring: 256 outstanding, none free", () => {
    const { front, back } = pair(RX_SLOT);
    writeRequests(front, 256);
    expect(front.freeRequests()).toBe(0);
    front.pushRequests();
    expect(back.unconsumedRequests()).toBe(256);
  });
});

describe("final checks", () => {
  test("back end: nothing to do → arms req_event = req_cons + 1 and returns false", () => {
    const { page, front, back } = pair();
    writeRequests(front, 5);
    front.pushRequests();
    answerRequests(back, 5);
    poke(page, RING_HEADER.reqEvent, 0xdead);
    expect(back.finalCheckForRequests()).toBe(false);
    expect(header(page).reqEvent).toBe(6);
  });

  test("back end: work pending → true, req_event left alone", () => {
    const { page, front, back } = pair();
    writeRequests(front, 3);
    front.pushRequests();
    answerRequests(back, 1);
    poke(page, RING_HEADER.reqEvent, 0xdead);
    expect(back.finalCheckForRequests()).toBe(true);
    expect(header(page).reqEvent).toBe(0xdead);
  });

  test("front end: nothing to do → arms rsp_event = rsp_cons + 1 and returns false", () => {
    const { page, front, back } = pair();
    writeRequests(front, 2);
    front.pushRequests();
    answerRequests(back, 2);
    back.pushResponses();
    front.rspCons += 2;
    poke(page, RING_HEADER.rspEvent, 0xdead);
    expect(front.finalCheckForResponses()).toBe(false);
    expect(header(page).rspEvent).toBe(3);
  });

  test("front end: responses pending → true, rsp_event left alone", () => {
    const { page, front, back } = pair();
    writeRequests(front, 2);
    front.pushRequests();
    answerRequests(back, 1);
    back.pushResponses();
    poke(page, RING_HEADER.rspEvent, 0xdead);
    expect(front.finalCheckForResponses()).toBe(true);
    expect(header(page).rspEvent).toBe(0xdead);
  });

  test("arming wraps at 2^32", () => {
    const { page, back } = pair(TX_SLOT, 0xffffffff);
    expect(back.finalCheckForRequests()).toBe(false);
    expect(header(page).reqEvent).toBe(0); // 0xffffffff + 1
  });
});

describe("wrap-around at 2^32", () => {
  const START = 0xfffffff0;

  test("32 requests one at a time: indices wrap, counts stay right, slots are idx & 255", () => {
    const { page, front, back } = pair(TX_SLOT, START);
    expect(header(page)).toEqual({ reqProd: START, reqEvent: START + 1, rspProd: START, rspEvent: START + 1 });
    for (let k = 0; k < 32; k++) {
      const idx = (START + k) >>> 0;
      // Placement computed independently: slot (idx mod 256) after the 64-byte header.
      const expectedOffset = 64 + ((0xf0 + k) % 256) * 12;
      expect(front.nextRequestOffset()).toBe(expectedOffset);
      front.view.setUint16(expectedOffset, 1000 + k, true);
      front.reqProdPvt++; // as documented; the ring must cope with the un-wrapped JS number
      expect(front.freeRequests()).toBe(255);
      expect(front.pushRequests()).toBe(true); // the back end re-armed after every round
      expect(header(page).reqProd).toBe((idx + 1) >>> 0);

      expect(back.unconsumedRequests()).toBe(1);
      expect(back.slotOffset(back.reqCons)).toBe(expectedOffset);
      expect(back.view.getUint16(back.slotOffset(back.reqCons), true)).toBe(1000 + k);
      answerRequests(back, 1);
      expect(back.unconsumedRequests()).toBe(0);
      expect(back.pushResponses()).toBe(true);
      expect(back.finalCheckForRequests()).toBe(false);
      expect(header(page).reqEvent).toBe((idx + 2) >>> 0);

      expect(front.unconsumedResponses()).toBe(1);
      expect(front.view.getUint16(front.slotOffset(front.rspCons), true)).toBe(1000 + k);
      front.rspCons++;
      expect(front.unconsumedResponses()).toBe(0);
      expect(front.freeRequests()).toBe(256);
      expect(front.finalCheckForResponses()).toBe(false);
      expect(header(page).rspEvent).toBe((idx + 2) >>> 0);
    }
    expect(header(page)).toEqual({ reqProd: 0x10, reqEvent: 0x11, rspProd: 0x10, rspEvent: 0x11 });
  });

  test("one batch of 32 across the wrap", () => {
    const { page, front, back } = pair(TX_SLOT, START);
    writeRequests(front, 32, 500);
    expect(front.freeRequests()).toBe(224);
    expect(front.pushRequests()).toBe(true); // req_event = START+1 lies inside the batch
    expect(header(page).reqProd).toBe(0x10);
    expect(back.unconsumedRequests()).toBe(32);
    // The 16 before the wrap sit in slots 240..255, the 16 after in slots 0..15.
    for (let k = 0; k < 32; k++) {
      expect(page[64 + ((0xf0 + k) & 255) * 12]).toBe((500 + k) & 0xff);
    }
    answerRequests(back, 20);
    expect(back.unconsumedRequests()).toBe(12);
    back.pushResponses();
    expect(front.unconsumedResponses()).toBe(20);
    front.rspCons += 20;
    expect(front.freeRequests()).toBe(244);
  });
});

describe("overflow guards", () => {
  test("back end: req_prod claiming more than 256 outstanding → RING_OVERFLOW on req_prod", () => {
    const { page, back } = pair();
    poke(page, RING_HEADER.reqProd, 256);
    expect(back.unconsumedRequests()).toBe(256); // exactly full is legal
    poke(page, RING_HEADER.reqProd, 257);
    const e = catchError(() => back.unconsumedRequests());
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e).toMatchObject({ code: "RING_OVERFLOW", field: "req_prod", value: 257 });
    // The final check must not swallow it either.
    expect(() => back.finalCheckForRequests()).toThrow(ProtocolError);
  });

  test("back end: req_prod behind the back end's indices reads as a huge claim", () => {
    const { page, back } = pair(TX_SLOT, 100);
    poke(page, RING_HEADER.reqProd, 99);
    expect(catchError(() => back.unconsumedRequests())).toMatchObject({ code: "RING_OVERFLOW", field: "req_prod", value: 99 });
  });

  test("back end: the limit counts from rsp_prod_pvt, across the wrap", () => {
    const { page, back } = pair(TX_SLOT, 0xffffff80);
    back.reqCons = 0xffffffa0;
    back.rspProdPvt = 0xffffff90;
    poke(page, RING_HEADER.reqProd, 0x90); // 0xffffff90 + 256
    expect(back.unconsumedRequests()).toBe(0xf0);
    poke(page, RING_HEADER.reqProd, 0x91);
    expect(catchError(() => back.unconsumedRequests())).toMatchObject({ code: "RING_OVERFLOW", field: "req_prod", value: 0x91 });
  });

  test("front end: rsp_prod beyond the outstanding requests → RING_OVERFLOW on rsp_prod", () => {
    const { page, front } = pair();
    writeRequests(front, 3);
    front.pushRequests();
    poke(page, RING_HEADER.rspProd, 3);
    expect(front.unconsumedResponses()).toBe(3);
    poke(page, RING_HEADER.rspProd, 4);
    const e = catchError(() => front.unconsumedResponses());
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e).toMatchObject({ code: "RING_OVERFLOW", field: "rsp_prod", value: 4 });
    expect(() => front.finalCheckForResponses()).toThrow(ProtocolError);
  });

  test("front end: rsp_prod behind rsp_cons, and overflow across the wrap", () => {
    const { page, front } = pair(RX_SLOT, 0xfffffffe);
    writeRequests(front, 4); // outstanding 0xfffffffe .. 0x1
    front.pushRequests();
    poke(page, RING_HEADER.rspProd, 2); // all 4 answered
    expect(front.unconsumedResponses()).toBe(4);
    poke(page, RING_HEADER.rspProd, 3);
    expect(catchError(() => front.unconsumedResponses())).toMatchObject({ code: "RING_OVERFLOW", field: "rsp_prod", value: 3 });
    poke(page, RING_HEADER.rspProd, 0xfffffffd);
    expect(catchError(() => front.unconsumedResponses())).toMatchObject({ code: "RING_OVERFLOW", field: "rsp_prod", value: 0xfffffffd });
  });
});

describe("finalCheckForRequestsAtLeast (a back end waiting for several buffers)", () => {
  test("arms req_event at req_cons + count, so the request that completes the count notifies", () => {
    const buf = new Uint8Array(new SharedArrayBuffer(4096));
    const front = new FrontRing(buf, 8);
    const back = new BackRing(buf, 8);
    front.init();
    back.attach();
    const pushOne = () => {
      front.reqProdPvt = (front.reqProdPvt + 1) >>> 0;
      return front.pushRequests();
    };
    expect(back.finalCheckForRequestsAtLeast(3)).toBe(false);
    expect(new DataView(buf.buffer).getUint32(4, true)).toBe(3); // req_event = 0 + 3
    expect(pushOne()).toBe(false);
    expect(back.finalCheckForRequestsAtLeast(3)).toBe(false);
    expect(pushOne()).toBe(false);
    expect(pushOne()).toBe(true); // the third request reaches req_event
    expect(back.finalCheckForRequestsAtLeast(3)).toBe(true);
  });
});
