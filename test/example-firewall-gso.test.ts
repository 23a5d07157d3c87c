/**
 * examples/firewall passes GSO on: a guest's 64 KiB TCP frame (written with `gso`) reaches a
 * guest whose Netfront offered GSO whole, with info.gso as sent, and one whose Netfront did not
 * (gso: false) as valid segments cut by the firewall's Netback.
 */
import { expect, test } from "bun:test";
import { Netfront, SimHypervisor, createVif, type FrameInfo } from "bun-xen-net";
import { Firewall } from "../examples/firewall/firewall.ts";
import { setPartialTcpChecksum } from "../src/protocol/tcp-segment.ts";
import { packet, verifies } from "./helpers/packets.ts";
import { silent } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";

const macOf = (i: number) => Uint8Array.of(0x00, 0x16, 0x3e, 0x0b, 0x00, i + 1);
const macText = (i: number) => [...macOf(i)].map((b) => b.toString(16).padStart(2, "0")).join(":");

test("a GSO frame through the firewall: whole to a guest that offered GSO, in valid segments to one that did not", async () => {
  const hv = SimHypervisor.create({ vifs: 8 });
  const dom0 = hv.platform(0);
  const fwDom = hv.createDomain();
  const doms = [hv.createDomain(), hv.createDomain(), hv.createDomain()];
  for (let i = 0; i < 3; i++) await createVif(dom0.xenstore, { frontDomid: doms[i]!, backDomid: fwDom, devid: 0, mac: macText(i) });
  const fw = await Firewall.start({ platform: hv.platform(fwDom), rules: { default: "allow", rules: [] }, uplink: false, logger: silent });
  const guests = await Promise.all(doms.map((d, i) => Netfront.connect({ platform: hv.platform(d), logger: silent, timeoutMs: 5000, gso: i !== 2 })));
  await until(() => fw.ports.size === 3);
  const got: { frame: Uint8Array; info: FrameInfo }[][] = [[], [], []];
  guests.forEach((g, i) => g.listen((f, info) => got[i]!.push({ frame: f.slice(), info })));

  // Guest 0 to a destination not learned yet: flooded to guests 1 and 2.
  const frame = packet({ tcp: true, payload: 60000, seed: 11 });
  frame.set(macOf(9), 0);
  frame.set(macOf(0), 6);
  setPartialTcpChecksum(frame, 0, frame.length);
  await guests[0]!.write(frame, { gso: { type: "tcpv4", size: 1448 }, csumBlank: true });
  const segments = Math.ceil(60000 / 1448);
  await until(() => got[1]!.length === 1 && got[2]!.length === segments);
  expect(got[1]![0]!.frame).toEqual(frame);
  expect(got[1]![0]!.info).toEqual({ csumBlank: true, dataValidated: true, gso: { type: 1, size: 1448 } });
  const hdr = 14 + 20 + 20;
  const joined = new Uint8Array(60000);
  got[2]!.forEach((g, k) => {
    expect(verifies(g.frame)).toBe(true);
    expect(g.info.gso).toBeNull();
    joined.set(g.frame.subarray(hdr), k * 1448);
  });
  expect(joined).toEqual(frame.slice(hdr));
  const s = fw.stats();
  expect(s.ports.reduce((n, p) => n + p.droppedMalformed + p.droppedFull, 0)).toBe(0);
  await fw.close();
  await Promise.all(guests.map((g) => g.disconnect()));
  hv.assertNoLeaks();
});
