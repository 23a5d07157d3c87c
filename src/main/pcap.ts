/**
 * Classic pcap (libpcap's file format, version 2.4), as `tcpdump -r` and Wireshark read it:
 * a 24-byte file header, then per frame a 16-byte record header and the captured bytes.
 * Written little-endian with the microsecond magic 0xa1b2c3d4 (readers tell the byte order
 * from the magic). Pure codecs: no I/O, no clock.
 */

export const PCAP_MAGIC_MICROS = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
/** LINKTYPE_ETHERNET: each record is an Ethernet frame, from its destination MAC on. */
export const LINKTYPE_ETHERNET = 1;
export const PCAP_FILE_HEADER_SIZE = 24;
export const PCAP_RECORD_HEADER_SIZE = 16;
/** The snapshot length tcpdump and Wireshark use when told nothing else is 262144; 65535 covers any netif TX frame. */
export const DEFAULT_SNAPLEN = 65535;
/** Readers refuse records larger than this (libpcap's MAXIMUM_SNAPLEN). */
export const MAX_SNAPLEN = 262144;

export interface PcapFileHeader {
  magic: number;
  versionMajor: number;
  versionMinor: number;
  /** GMT offset and timestamp accuracy: always 0 in practice. */
  thiszone: number;
  sigfigs: number;
  snaplen: number;
  linktype: number;
}

export interface PcapRecordHeader {
  /** Seconds since the epoch. */
  tsSec: number;
  /** Microseconds within the second, 0..999999. */
  tsUsec: number;
  /** Bytes stored in the file for this frame (at most snaplen). */
  inclLen: number;
  /** The frame's length on the wire. */
  origLen: number;
}

/** The file header for a capture of Ethernet frames cut at `snaplen` bytes. */
export function encodePcapFileHeader(snaplen = DEFAULT_SNAPLEN, linktype = LINKTYPE_ETHERNET): Uint8Array {
  checkSnaplen(snaplen);
  const b = new Uint8Array(PCAP_FILE_HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, PCAP_MAGIC_MICROS, true);
  v.setUint16(4, PCAP_VERSION_MAJOR, true);
  v.setUint16(6, PCAP_VERSION_MINOR, true);
  v.setInt32(8, 0, true);
  v.setUint32(12, 0, true);
  v.setUint32(16, snaplen, true);
  v.setUint32(20, linktype, true);
  return b;
}

/** Parse a file header written by anyone, either byte order (microsecond magic only). */
export function decodePcapFileHeader(b: Uint8Array): PcapFileHeader {
  if (b.byteLength < PCAP_FILE_HEADER_SIZE) throw new RangeError(`a pcap file header has ${PCAP_FILE_HEADER_SIZE} bytes, got ${b.byteLength}`);
  const v = new DataView(b.buffer, b.byteOffset, PCAP_FILE_HEADER_SIZE);
  const le = v.getUint32(0, true) === PCAP_MAGIC_MICROS;
  if (!le && v.getUint32(0, false) !== PCAP_MAGIC_MICROS) throw new RangeError(`not a microsecond pcap file: magic 0x${v.getUint32(0, true).toString(16)}`);
  return {
    magic: PCAP_MAGIC_MICROS,
    versionMajor: v.getUint16(4, le),
    versionMinor: v.getUint16(6, le),
    thiszone: v.getInt32(8, le),
    sigfigs: v.getUint32(12, le),
    snaplen: v.getUint32(16, le),
    linktype: v.getUint32(20, le),
  };
}

/**
 * Write a record header at `off` of `view` for a frame of `origLen` bytes of which `inclLen`
 * are stored, seen at `micros` microseconds since the epoch.
 */
export function writePcapRecordHeader(view: DataView, off: number, micros: number, inclLen: number, origLen: number): void {
  const sec = Math.floor(micros / 1e6);
  view.setUint32(off, sec >>> 0, true);
  view.setUint32(off + 4, Math.floor(micros - sec * 1e6), true);
  view.setUint32(off + 8, inclLen, true);
  view.setUint32(off + 12, origLen, true);
}

export function decodePcapRecordHeader(b: Uint8Array, off = 0, littleEndian = true): PcapRecordHeader {
  const v = new DataView(b.buffer, b.byteOffset + off, PCAP_RECORD_HEADER_SIZE);
  return { tsSec: v.getUint32(0, littleEndian), tsUsec: v.getUint32(4, littleEndian), inclLen: v.getUint32(8, littleEndian), origLen: v.getUint32(12, littleEndian) };
}

/** One whole record (header and the first `snaplen` bytes of `frame`), as a new array. */
export function encodePcapRecord(frame: Uint8Array, micros: number, snaplen = DEFAULT_SNAPLEN): Uint8Array {
  const incl = Math.min(frame.byteLength, snaplen);
  const b = new Uint8Array(PCAP_RECORD_HEADER_SIZE + incl);
  writePcapRecordHeader(new DataView(b.buffer), 0, micros, incl, frame.byteLength);
  b.set(frame.subarray(0, incl), PCAP_RECORD_HEADER_SIZE);
  return b;
}

/** Every record of a whole pcap file written by encodePcapFileHeader/encodePcapRecord (for tests and tools). */
export function decodePcapFile(b: Uint8Array): { header: PcapFileHeader; records: (PcapRecordHeader & { data: Uint8Array })[] } {
  const header = decodePcapFileHeader(b);
  const le = new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) === PCAP_MAGIC_MICROS;
  const records: (PcapRecordHeader & { data: Uint8Array })[] = [];
  let off = PCAP_FILE_HEADER_SIZE;
  while (off < b.byteLength) {
    if (b.byteLength - off < PCAP_RECORD_HEADER_SIZE) throw new RangeError(`truncated record header at byte ${off}`);
    const h = decodePcapRecordHeader(b, off, le);
    off += PCAP_RECORD_HEADER_SIZE;
    if (h.inclLen > b.byteLength - off) throw new RangeError(`record at byte ${off - PCAP_RECORD_HEADER_SIZE} claims ${h.inclLen} bytes, ${b.byteLength - off} left`);
    records.push({ ...h, data: b.subarray(off, off + h.inclLen) });
    off += h.inclLen;
  }
  return { header, records };
}

function checkSnaplen(snaplen: number): void {
  if (!Number.isInteger(snaplen) || snaplen < 1 || snaplen > MAX_SNAPLEN) throw new RangeError(`snaplen must be an integer in 1..${MAX_SNAPLEN}, got ${String(snaplen)}`);
}
