/**
 * A test's own reading of "this frame is a TCP packet of GSO type 1 (IPv4) or 2 (IPv6)", written
 * apart from src/protocol/tcp-segment.ts: the reference models of the fuzz tests use it.
 */
export function isTcpOfType(b: Uint8Array, type: number): boolean {
  if (b.length < 14) return false;
  let at = 12;
  let et = (b[12]! << 8) | b[13]!;
  for (let t = 0; t < 2 && (et === 0x8100 || et === 0x88a8) && b.length >= at + 6; t++) {
    at += 4;
    et = (b[at]! << 8) | b[at + 1]!;
  }
  const ip = at + 2;
  let tcp: number;
  let end: number;
  if (type === 1 && et === 0x0800) {
    if (b.length < ip + 20 || b[ip]! >> 4 !== 4 || (b[ip]! & 15) < 5) return false;
    const total = (b[ip + 2]! << 8) | b[ip + 3]!;
    tcp = ip + (b[ip]! & 15) * 4;
    end = ip + total;
    if (total < tcp - ip || end > b.length || (((b[ip + 6]! << 8) | b[ip + 7]!) & 0x3fff) !== 0 || b[ip + 9] !== 6) return false;
  } else if (type === 2 && et === 0x86dd) {
    if (b.length < ip + 40 || b[ip]! >> 4 !== 6 || b[ip + 6] !== 6) return false;
    tcp = ip + 40;
    end = tcp + ((b[ip + 4]! << 8) | b[ip + 5]!);
    if (end > b.length) return false;
  } else return false;
  const doff = (b[tcp + 12] ?? 0) >> 4;
  return end - tcp >= 20 && doff >= 5 && doff * 4 <= end - tcp;
}
