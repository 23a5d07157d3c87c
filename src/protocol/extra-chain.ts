/** Reading the run of extra-info slots that follows a slot flagged extra_info (TX and RX alike). */
import { ProtocolError } from "./errors.ts";
import { decodeExtraInfo, type ExtraInfo } from "./extra-info.ts";

export interface SlotSource {
  readonly view: DataView;
  slotOffset(idx: number): number;
}

export interface ExtraChain {
  extras: ExtraInfo[];
  /** Slots the chain occupied. */
  slots: number;
}

/**
 * Read extras starting at ring index `start`, of which `available` are published. The chain is
 * bounded twice: by the published entries (a peer cannot make us read stale slots) and by the
 * rule that each type appears once (a peer cannot make the chain endless).
 */
export function readExtraChain(src: SlotSource, start: number, available: number, field: string): ExtraChain | ProtocolError {
  const extras: ExtraInfo[] = [];
  let seen = 0;
  for (let i = 0; ; i++) {
    if (i >= available) {
      return new ProtocolError(
        "EXTRA_CHAIN_NOT_TERMINATED",
        `${field}.flags`,
        "MORE",
        `extra-info chain runs past the ${available} published slot(s)`,
      );
    }
    const d = decodeExtraInfo(src.view, src.slotOffset(start + i), field);
    if (d instanceof ProtocolError) return d;
    const bit = 1 << d.extra.type;
    if (seen & bit) {
      return new ProtocolError("BAD_EXTRA_TYPE", `${field}.type`, d.extra.type, "extra-info type repeated within one packet");
    }
    seen |= bit;
    extras.push(d.extra);
    if (!d.more) return { extras, slots: i + 1 };
  }
}
