/** Counters and gauges for exporters: totals only go up, Prometheus text, OpenTelemetry instruments. */
import { expect, test } from "bun:test";
import { observeDevices, prometheusText, type OtelMeter, type OtelObservable } from "../src/main/index.ts";
import { simVif } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";

/** Parse the exposition text, checking each line's form; returns series → value. */
function parseProm(text: string): Map<string, number> {
  const m = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.trimEnd().split("\n")) {
    const t = /^# TYPE (\w+) (counter|gauge)$/.exec(line);
    if (t) {
      expect(typed.has(t[1]!)).toBe(false);
      typed.add(t[1]!);
      continue;
    }
    if (/^# HELP \w+ .+$/.test(line)) continue;
    const s = /^(\w+)\{((?:\w+="[^"]*",?)+)\} (\d+)$/.exec(line);
    expect(s, line).not.toBeNull();
    expect(typed.has(s![1]!), `${s![1]} has a TYPE line before its samples`).toBe(true);
    m.set(`${s![1]}{${s![2]}}`, Number(s![3]));
  }
  return m;
}

test("totals only go up (resetStats is a view), and the Prometheus text says what the devices counted", async () => {
  const vif = await simVif();
  const { front, back } = await vif.pair();
  let got = 0;
  back.listen(() => got++);
  for (let i = 0; i < 10; i++) await front.write(new Uint8Array(100));
  await until(() => got === 10);
  front.resetStats();
  expect(front.stats().txPackets).toBe(0);
  expect(front.totals().txPackets).toBe(10);
  expect(front.totals().txBytes).toBe(1000);
  const prom = parseProm(prometheusText([front, back]));
  const fl = `role="netfront",domid="${vif.guest}",peer="0",devid="0"`;
  const bl = `role="netback",domid="0",peer="${vif.guest}",devid="0"`;
  expect(prom.get(`bun_xen_net_tx_packets_total{${fl}}`)).toBe(10);
  expect(prom.get(`bun_xen_net_tx_bytes_total{${fl}}`)).toBe(1000);
  expect(prom.get(`bun_xen_net_rx_packets_total{${bl}}`)).toBe(10);
  expect(prom.get(`bun_xen_net_rx_bytes_total{${bl}}`)).toBe(1000);
  expect(prom.get(`bun_xen_net_link_state{${fl},state="up"}`)).toBe(1);
  expect(prom.get(`bun_xen_net_link_state{${fl},state="closed"}`)).toBe(0);
  expect(prom.get(`bun_xen_net_queues{${bl}}`)).toBe(1);
  expect(prom.get(`bun_xen_net_tx_unsettled_frames{${fl}}`)).toBe(0);
  await front.disconnect();
  await back.disconnect();
  const after = parseProm(prometheusText([front]));
  expect(after.get(`bun_xen_net_link_state{${fl},state="closed"}`)).toBe(1);
  expect(after.get(`bun_xen_net_tx_packets_total{${fl}}`)).toBe(10);
  expect(vif.hv.leaks()).toEqual([]);
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
});

test("gauges: frames waiting for a reader show as rx_queued_bytes; OpenTelemetry observable instruments report the same figures", async () => {
  const vif = await simVif();
  const { front, back } = await vif.pair();
  // Nobody listens at the front end: what the back end sends waits in the front end's queue.
  for (let i = 0; i < 5; i++) await back.write(new Uint8Array(200));
  await until(() => front.depth().rxQueuedBytes > 0);
  const callbacks = new Map<string, Parameters<OtelObservable["addCallback"]>[0][]>();
  const inst = (name: string): OtelObservable => ({
    addCallback: (cb) => callbacks.set(name, [...(callbacks.get(name) ?? []), cb]),
    removeCallback: (cb) => callbacks.set(name, (callbacks.get(name) ?? []).filter((c) => c !== cb)),
  });
  const meter: OtelMeter = { createObservableCounter: inst, createObservableGauge: inst };
  const stop = observeDevices(meter, () => [front, back]);
  const collect = (name: string) => {
    const seen: { v: number; a: Record<string, string | number> | undefined }[] = [];
    for (const cb of callbacks.get(name) ?? []) cb({ observe: (v, a) => seen.push({ v, a }) });
    return seen;
  };
  const rxq = collect("bun_xen_net.rx_queued_bytes");
  expect(rxq.find((s) => s.a?.role === "netfront")!.v).toBe(front.depth().rxQueuedBytes);
  expect(rxq.find((s) => s.a?.role === "netfront")!.v).toBeGreaterThan(0);
  const tx = collect("bun_xen_net.tx_packets");
  expect(tx.find((s) => s.a?.role === "netback")).toEqual({ v: 5, a: { role: "netback", domid: 0, peer: vif.guest, devid: 0 } });
  expect(collect("bun_xen_net.link_up").map((s) => s.v)).toEqual([1, 1]);
  stop();
  expect(collect("bun_xen_net.tx_packets")).toEqual([]);
  front.listen(() => {});
  await until(() => front.depth().rxQueuedBytes === 0);
  await front.disconnect();
  await back.disconnect();
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
});
