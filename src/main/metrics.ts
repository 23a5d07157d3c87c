/**
 * Counters and gauges of devices in the forms exporters take without glue: the Prometheus text
 * exposition format (serve `prometheusText(...)` on /metrics), and OpenTelemetry observable
 * instruments (`observeDevices(meter, ...)`, typed structurally so the package does not depend
 * on @opentelemetry/api). Counters are the devices' totals, which only go up (resetStats does
 * not touch them); gauges are read when scraped.
 */
import type { NetStats } from "./device.ts";
import type { LinkState } from "./link.ts";

/** What a device shows an exporter (Netfront and Netback both are one). */
export interface MetricsSource {
  readonly metricLabels: MetricLabels;
  totals(): NetStats;
  depth(): { txUnsettledFrames: number; rxQueuedBytes: number };
  readonly linkState: LinkState;
  readonly queues: number;
}

export interface MetricLabels {
  role: "netfront" | "netback";
  /** Our domain. */
  domid: number;
  /** The other end's domain. */
  peer: number;
  devid: number;
}

interface CounterDef {
  stat: keyof NetStats;
  name: string;
  help: string;
}

/** Each NetStats counter, as an exporter names it. */
const COUNTERS: CounterDef[] = [
  { stat: "rxPackets", name: "rx_packets", help: "Frames received from the peer" },
  { stat: "rxBytes", name: "rx_bytes", help: "Bytes received from the peer" },
  { stat: "rxDrops", name: "rx_drops", help: "Received frames dropped (malformed, dropped by the peer, or unread at close)" },
  { stat: "rxErrors", name: "rx_errors", help: "Protocol errors the peer made on the receive ring" },
  { stat: "txPackets", name: "tx_packets", help: "Frames the peer took" },
  { stat: "txBytes", name: "tx_bytes", help: "Bytes the peer took" },
  { stat: "txDrops", name: "tx_drops", help: "Frames sent that did not arrive (refused by the peer, or lost)" },
  { stat: "txErrors", name: "tx_errors", help: "Protocol errors the peer made on the send ring" },
  { stat: "txLost", name: "tx_lost", help: "Frames written that never reached the peer (in flight at a session end, or queued at close)" },
  { stat: "rxLost", name: "rx_lost", help: "Frames received that nobody read before close" },
  { stat: "txSleeps", name: "tx_sleeps", help: "Times the sending worker ran out of work and blocked" },
  { stat: "rxSleeps", name: "rx_sleeps", help: "Times the receiving worker ran out of work and blocked" },
  { stat: "listenerErrors", name: "listener_errors", help: "Exceptions thrown by frame listeners" },
];

const LINK_STATES: LinkState[] = ["connecting", "up", "reconnecting", "closed"];

const PREFIX = "bun_xen_net_";

/**
 * The Prometheus text format (version 0.0.4) for these devices: one family per counter
 * (`bun_xen_net_rx_packets_total{role,domid,peer,devid}`), and gauges for queue depth, the
 * number of queues, and the link state (1 on the series of the current state).
 */
export function prometheusText(devices: Iterable<MetricsSource>): string {
  const devs = [...devices].map((d) => ({ labels: labelText(d.metricLabels), totals: d.totals(), depth: d.depth(), link: d.linkState, queues: d.queues }));
  const out: string[] = [];
  const family = (name: string, type: "counter" | "gauge", help: string, rows: string[]) => {
    out.push(`# HELP ${PREFIX}${name} ${help}`, `# TYPE ${PREFIX}${name} ${type}`, ...rows);
  };
  for (const c of COUNTERS) family(`${c.name}_total`, "counter", c.help, devs.map((d) => `${PREFIX}${c.name}_total{${d.labels}} ${d.totals[c.stat]}`));
  family("tx_unsettled_frames", "gauge", "Frames written whose fate is not final yet (queued, or in flight to the peer)", devs.map((d) => `${PREFIX}tx_unsettled_frames{${d.labels}} ${d.depth.txUnsettledFrames}`));
  family("rx_queued_bytes", "gauge", "Bytes received and queued for the application, not read yet", devs.map((d) => `${PREFIX}rx_queued_bytes{${d.labels}} ${d.depth.rxQueuedBytes}`));
  family("queues", "gauge", "Queue pairs of the current session", devs.map((d) => `${PREFIX}queues{${d.labels}} ${d.queues}`));
  family(
    "link_state",
    "gauge",
    "The link's state: 1 on the series of the current one",
    devs.flatMap((d) => LINK_STATES.map((s) => `${PREFIX}link_state{${d.labels},state="${s}"} ${d.link === s ? 1 : 0}`)),
  );
  return out.join("\n") + "\n";
}

function labelText(l: MetricLabels): string {
  return `role="${l.role}",domid="${l.domid}",peer="${l.peer}",devid="${l.devid}"`;
}

/** The part of OpenTelemetry's Meter this needs (structurally: any @opentelemetry/api Meter fits). */
export interface OtelMeter {
  createObservableCounter(name: string, options?: { description?: string; unit?: string }): OtelObservable;
  createObservableGauge(name: string, options?: { description?: string; unit?: string }): OtelObservable;
}
export interface OtelObservable {
  addCallback(cb: (result: { observe(value: number, attributes?: Record<string, string | number>): void }) => void): void;
  removeCallback(cb: (result: { observe(value: number, attributes?: Record<string, string | number>): void }) => void): void;
}

/**
 * Register observable instruments on an OpenTelemetry meter for the devices `devices()`
 * returns at each collection (a function, so devices that come and go are followed: pass
 * `() => server.vifs.values()` for a VifServer). Returns a function that unregisters them.
 */
export function observeDevices(meter: OtelMeter, devices: () => Iterable<MetricsSource>): () => void {
  const undo: (() => void)[] = [];
  const observe = (inst: OtelObservable, value: (d: MetricsSource) => number) => {
    const cb = (r: { observe(v: number, a?: Record<string, string | number>): void }) => {
      for (const d of devices()) r.observe(value(d), { ...d.metricLabels });
    };
    inst.addCallback(cb);
    undo.push(() => inst.removeCallback(cb));
  };
  for (const c of COUNTERS) observe(meter.createObservableCounter(`bun_xen_net.${c.name}`, { description: c.help }), (d) => d.totals()[c.stat]);
  observe(meter.createObservableGauge("bun_xen_net.tx_unsettled_frames", { description: "Frames written whose fate is not final yet" }), (d) => d.depth().txUnsettledFrames);
  observe(meter.createObservableGauge("bun_xen_net.rx_queued_bytes", { description: "Bytes received, not read yet", unit: "By" }), (d) => d.depth().rxQueuedBytes);
  observe(meter.createObservableGauge("bun_xen_net.link_up", { description: "1 while the link is up" }), (d) => (d.linkState === "up" ? 1 : 0));
  return () => {
    for (const u of undo) u();
  };
}
