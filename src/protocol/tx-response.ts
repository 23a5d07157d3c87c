/** netif_tx_response: 4 bytes (in a 12-byte ring slot), the back end's "done with id". */
import { ProtocolError } from "./errors.ts";
import { NETIF_RSP } from "./netif.ts";

export const TX_RESPONSE_SIZE = 4;
export const TX_RESPONSE = { id: 0, status: 2 } as const;

export interface TxResponse {
  id: number;
  status: number;
}

export function encodeTxResponse(v: DataView, off: number, r: TxResponse): void {
  v.setUint16(off + TX_RESPONSE.id, r.id, true);
  v.setInt16(off + TX_RESPONSE.status, r.status, true);
}

export function decodeTxResponse(v: DataView, off: number, into: TxResponse = { id: 0, status: 0 }): TxResponse {
  into.id = v.getUint16(off + TX_RESPONSE.id, true);
  into.status = v.getInt16(off + TX_RESPONSE.status, true);
  return into;
}

/** A TX status is one of DROPPED, ERROR, OKAY or NULL; anything else is a broken back end. */
export function checkTxStatus(status: number): ProtocolError | null {
  if (status >= NETIF_RSP.dropped && status <= NETIF_RSP.null) return null;
  return new ProtocolError("BAD_STATUS", "tx_response.status", status, "expected -2 (dropped), -1 (error), 0 (okay) or 1 (null)");
}
