/**
 * An event-channel port as the main thread holds it for the rings that use it: one ring's own
 * port, or one port for both rings of a queue (a peer without split event channels). The port
 * is unbound once its last holder lets go, never while a ring may still notify through it.
 */
import type { EventChannels, Port } from "../platform/types.ts";

export class PortLease {
  private holders = 1;

  constructor(
    /** The channels the port is bound through (a pool worker's view). */
    readonly evtchn: EventChannels,
    readonly port: Port,
    /** Runs once the port is unbound. */
    private readonly onFree: () => void,
  ) {}

  /** One more holder (the second ring on a shared port); each holder releases once. */
  share(): PortLease {
    if (this.holders === 0) throw new Error(`port ${this.port} was released already`);
    this.holders++;
    return this;
  }

  release(): void {
    if (this.holders === 0 || --this.holders > 0) return;
    try {
      this.evtchn.unbind(this.port);
    } catch {
      // Unbound already: the worker's handle was closed with its thread, or the domain is gone.
    }
    this.onFree();
  }
}
