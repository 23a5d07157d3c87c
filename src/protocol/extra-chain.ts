/** Reading the run of extra-info slots that follows a slot flagged extra_info (TX and RX alike). */
import { ProtocolError } from "./errors.ts";
import { decodeExtraInfo, EXTRA_INFO, type ExtraInfo } from "./extra-info.ts";
import { EXTRA_FLAG_MORE } from "./netif.ts";

export interface SlotSource {
  readonly view: DataView;
  slotOffset(idx: number): number;
}

export interface ExtraChain {
  extras: ExtraInfo[];
  /** Slots the chain occupied. */
  slots: number;
}

export interface ExtraChainError {
  error: ProtocolError;
  /** Slots up to the chain's end, when its MORE flags still say where that is; else null. */
  slots: number | null;
}

/**
 * Read extras starting at ring index `start`, of which `available` are published. The chain is
 * bounded twice: by the published entries (a peer cannot make us read stale slots) and by the
 * rule that each type appears once (a peer cannot make the chain endless). After a bad extra
 * the MORE flags are still followed, so the caller can drop this packet and keep the next.
 */
export function readExtraChain(src: SlotSource, start: number, available: number, field: string): ExtraChain | ExtraChainError {
  const extras: ExtraInfo[] = [];
  let firstError: ProtocolError | null = null;
  let seen = 0;
  for (let i = 0; i < available; i++) {
    const off = src.slotOffset(start + i);
    const more = (src.view.getUint8(off + EXTRA_INFO.flags) & EXTRA_FLAG_MORE) !== 0;
    if (firstError === null) {
      const d = decodeExtraInfo(src.view, off, field);
      if (d instanceof ProtocolError) {
        firstError = d;
      } else if (seen & (1 << d.extra.type)) {
        firstError = new ProtocolError("BAD_EXTRA_TYPE", `${field}.type`, d.extra.type, "extra-info type repeated within one packet");
      } else {
        seen |= 1 << d.extra.type;
        extras.push(d.extra);
      }
    }
    if (!more) return firstError === null ? { extras, slots: i + 1 } : { error: firstError, slots: i + 1 };
  }
  return {
    error:
      firstError ??
      new ProtocolError("EXTRA_CHAIN_NOT_TERMINATED", `${field}.flags`, "MORE", `extra-info chain runs past the ${available} published slot(s)`),
    slots: null,
  };
}

export function isExtraChainError(r: ExtraChain | ExtraChainError): r is ExtraChainError {
  return (r as ExtraChainError).error !== undefined;
}
