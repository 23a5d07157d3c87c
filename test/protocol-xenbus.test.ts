/** XenbusState parsing and the vif xenstore layout: values a peer writes are parsed, never trusted. */
import { describe, expect, test } from "bun:test";
import {
  backendDir,
  BACK_KEYS,
  formatMac,
  FRONT_KEYS,
  frontendDir,
  parseFeature,
  parseMac,
  parseUint,
  parseXenbusState,
  ProtocolError,
  queueDir,
  XenbusState,
  xenbusStateName,
} from "../src/protocol/index.ts";

describe("XenbusState", () => {
  test("numbers match io/xenbus.h", () => {
    expect(XenbusState).toEqual({
      Unknown: 0,
      Initialising: 1,
      InitWait: 2,
      Initialised: 3,
      Connected: 4,
      Closing: 5,
      Closed: 6,
      Reconfiguring: 7,
      Reconfigured: 8,
    });
  });

  test("a missing node reads as Unknown", () => {
    expect(parseXenbusState(null)).toBe(XenbusState.Unknown);
  });

  test.each([
    ["0", 0],
    ["1", 1],
    ["2", 2],
    ["3", 3],
    ["4", 4],
    ["5", 5],
    ["6", 6],
    ["7", 7],
    ["8", 8],
    [" 4\n", 4], // surrounding whitespace is tolerated
  ])("%p → %p", (value, state) => {
    expect(parseXenbusState(value)).toBe(state as XenbusState);
  });

  test.each(["", "9", "10", "-1", "04", "4.0", "Connected", "0x4", "4 5", "\u0664"])("%p → BAD_STATE naming path and value", (value) => {
    const r = parseXenbusState(value, "/local/domain/5/device/vif/0/state");
    expect(r).toBeInstanceOf(ProtocolError);
    expect(r).toMatchObject({ code: "BAD_STATE", field: "/local/domain/5/device/vif/0/state", value });
  });

  test("the default path is 'state'", () => {
    expect(parseXenbusState("x")).toMatchObject({ code: "BAD_STATE", field: "state", value: "x" });
  });

  test("xenbusStateName", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map(xenbusStateName)).toEqual([
      "Unknown",
      "Initialising",
      "InitWait",
      "Initialised",
      "Connected",
      "Closing",
      "Closed",
      "Reconfiguring",
      "Reconfigured",
    ]);
    expect(xenbusStateName(9)).toBe("Invalid(9)");
    expect(xenbusStateName(-1)).toBe("Invalid(-1)");
  });
});

describe("xenstore paths and keys", () => {
  test("frontend and backend directories", () => {
    expect(frontendDir(5, 0)).toBe("/local/domain/5/device/vif/0");
    expect(backendDir(0, 5, 1)).toBe("/local/domain/0/backend/vif/5/1");
    expect(queueDir(frontendDir(5, 0), 3)).toBe("/local/domain/5/device/vif/0/queue-3");
  });

  test("key spellings", () => {
    expect(FRONT_KEYS).toMatchObject({
      backendId: "backend-id",
      txRingRef: "tx-ring-ref",
      rxRingRef: "rx-ring-ref",
      eventChannel: "event-channel",
      eventChannelTx: "event-channel-tx",
      eventChannelRx: "event-channel-rx",
      requestRxCopy: "request-rx-copy",
      featureRxNotify: "feature-rx-notify",
      featureGsoTcpv4: "feature-gso-tcpv4",
      featureNoCsumOffload: "feature-no-csum-offload",
      multiQueueNumQueues: "multi-queue-num-queues",
    });
    expect(BACK_KEYS).toMatchObject({
      frontendId: "frontend-id",
      hotplugStatus: "hotplug-status",
      featureRxCopy: "feature-rx-copy",
      featureRxFlip: "feature-rx-flip",
      featureSplitEventChannels: "feature-split-event-channels",
      multiQueueMaxQueues: "multi-queue-max-queues",
      featureCtrlRing: "feature-ctrl-ring",
    });
  });
});

describe("parseFeature", () => {
  test.each([
    ["1", true],
    [" 1\n", true],
    ["0", false],
    [null, false],
    ["", false],
    ["2", false],
    ["true", false],
    ["01", false],
  ] as const)("%p → %p", (value, on) => {
    expect(parseFeature(value)).toBe(on);
  });
});

describe("parseUint", () => {
  test("decimal values in range", () => {
    expect(parseUint("0", "p", 10)).toBe(0);
    expect(parseUint("10", "p", 10)).toBe(10);
    expect(parseUint(" 42\n", "p", 100)).toBe(42);
    expect(parseUint("4294967295", "p", 0xffffffff)).toBe(0xffffffff);
    expect(parseUint("007", "p", 10)).toBe(7);
  });

  test.each(["11", "4294967296", "-1", "1.5", "0x10", "1e3", "", " ", "abc", "12345678901", "+1"])("%p → BAD_KEY with path and value", (value) => {
    const max = value === "4294967296" ? 0xffffffff : 10;
    const r = parseUint(value, "/local/domain/5/device/vif/0/mtu", max);
    expect(r).toBeInstanceOf(ProtocolError);
    expect(r).toMatchObject({ code: "BAD_KEY", field: "/local/domain/5/device/vif/0/mtu", value });
  });

  test("a missing key is BAD_KEY", () => {
    expect(parseUint(null, "backend-id", 0x7fef)).toMatchObject({ code: "BAD_KEY", field: "backend-id", value: "(missing)" });
  });
});

describe("parseMac / formatMac", () => {
  test("parses to six bytes, either case", () => {
    expect(parseMac("00:16:3e:0a:bb:ff")).toEqual(Uint8Array.from([0x00, 0x16, 0x3e, 0x0a, 0xbb, 0xff]));
    expect(parseMac("00:16:3E:0A:BB:FF\n")).toEqual(Uint8Array.from([0x00, 0x16, 0x3e, 0x0a, 0xbb, 0xff]));
  });

  test("formats lowercase, zero-padded", () => {
    expect(formatMac(Uint8Array.from([0x00, 0x16, 0x3e, 0x0a, 0xbb, 0xff]))).toBe("00:16:3e:0a:bb:ff");
    expect(formatMac(new Uint8Array(6))).toBe("00:00:00:00:00:00");
  });

  test("round trip", () => {
    for (const mac of ["00:16:3e:12:34:56", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb"]) {
      const bytes = parseMac(mac);
      if (bytes instanceof ProtocolError) throw bytes;
      expect(formatMac(bytes)).toBe(mac);
    }
  });

  test.each(["", "00:16:3e:12:34", "00:16:3e:12:34:56:78", "00-16-3e-12-34-56", "0:16:3e:12:34:56", "00:16:3e:12:34:5g", "00163e123456", "000:16:3e:12:34:56"])(
    "%p → BAD_KEY",
    (value) => {
      const r = parseMac(value, "/local/domain/5/device/vif/0/mac");
      expect(r).toBeInstanceOf(ProtocolError);
      expect(r).toMatchObject({ code: "BAD_KEY", field: "/local/domain/5/device/vif/0/mac", value });
    },
  );

  test("missing → BAD_KEY, default path 'mac'", () => {
    expect(parseMac(null)).toMatchObject({ code: "BAD_KEY", field: "mac", value: "(missing)" });
  });
});
