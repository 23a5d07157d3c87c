/** A tiny host for tests: answers ARP requests and ICMP echo for one IPv4 address, or several. */

/** The reply to `f` from whichever of `ips` it asks for, or null. */
export function respondAny(f: Uint8Array, mac: Uint8Array, ips: readonly (readonly number[])[]): Uint8Array | null {
  for (const ip of ips) {
    const r = respond(f, mac, ip);
    if (r !== null) return r;
  }
  return null;
}

/** The reply to `f`, or null: an ARP reply for who-has `ip`, an echo reply to a ping of `ip`. */
export function respond(f: Uint8Array, mac: Uint8Array, ip: readonly number[]): Uint8Array | null {
  if (f.length < 14) return null;
  const type = (f[12]! << 8) | f[13]!;
  if (type === 0x0806 && f.length >= 42 && f[21] === 1 && ip.every((b, i) => f[38 + i] === b)) {
    const r = new Uint8Array(60);
    r.set(f.subarray(6, 12), 0); // to the asker
    r.set(mac, 6);
    r.set([0x08, 0x06], 12);
    r.set(f.subarray(14, 20), 14); // htype, ptype, hlen, plen
    r.set([0, 2], 20); // reply
    r.set(mac, 22);
    r.set(ip, 28);
    r.set(f.subarray(22, 32), 32); // the asker's MAC and IP become the target
    return r;
  }
  if (type === 0x0800 && f.length >= 34) {
    const ihl = (f[14]! & 15) * 4;
    const icmp = 14 + ihl;
    if (f[23] !== 1 || !ip.every((b, i) => f[30 + i] === b) || f.length < icmp + 8 || f[icmp] !== 8) return null;
    const total = (f[16]! << 8) | f[17]!;
    const r = f.slice(0, 14 + total);
    r.set(f.subarray(6, 12), 0);
    r.set(mac, 6);
    r.set(f.subarray(30, 34), 26); // swapping source and destination leaves the IP checksum as it is
    r.set(f.subarray(26, 30), 30);
    r[icmp] = 0; // echo reply
    r[icmp + 2] = 0;
    r[icmp + 3] = 0;
    const sum = checksum(r.subarray(icmp, 14 + total));
    r[icmp + 2] = sum >> 8;
    r[icmp + 3] = sum & 0xff;
    return r;
  }
  return null;
}

function checksum(b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
