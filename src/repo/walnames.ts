// WAL file names and positions. A segment name is TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then
// the segment number split in two 32-bit halves, where the low half counts segments within
// one 4 GiB "xlogid" (256 of them at the default 16 MiB segment size).

export const DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

export const SEGMENT_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
export const HISTORY_RE = /^([0-9A-F]{8})\.history$/;
export const BACKUP_LABEL_RE = /^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$/;
export const PARTIAL_RE = /^([0-9A-F]{24})\.partial$/;

export type WalFileKind = 'segment' | 'history' | 'backup-label' | 'partial';

export interface WalFileName {
  name: string;
  kind: WalFileKind;
  timeline: number;
  /** Segment number (for segments, partial segments and .backup files). */
  segno?: bigint;
}

export function parseWalFileName(name: string, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): WalFileName | undefined {
  let m = SEGMENT_RE.exec(name);
  if (m) return { name, kind: 'segment', timeline: parseInt(m[1], 16), segno: segnoOf(m[2], m[3], segmentSize) };
  m = HISTORY_RE.exec(name);
  if (m) return { name, kind: 'history', timeline: parseInt(m[1], 16) };
  m = BACKUP_LABEL_RE.exec(name);
  if (m) {
    const seg = SEGMENT_RE.exec(m[1])!;
    return { name, kind: 'backup-label', timeline: parseInt(seg[1], 16), segno: segnoOf(seg[2], seg[3], segmentSize) };
  }
  m = PARTIAL_RE.exec(name);
  if (m) {
    const seg = SEGMENT_RE.exec(m[1])!;
    return { name, kind: 'partial', timeline: parseInt(seg[1], 16), segno: segnoOf(seg[2], seg[3], segmentSize) };
  }
  return undefined;
}

function segmentsPerXlogId(segmentSize: number): bigint {
  return 0x100000000n / BigInt(segmentSize);
}

function segnoOf(hi: string, lo: string, segmentSize: number): bigint {
  return BigInt(parseInt(hi, 16)) * segmentsPerXlogId(segmentSize) + BigInt(parseInt(lo, 16));
}

const hex8 = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');

export function segmentName(timeline: number, segno: bigint, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): string {
  const per = segmentsPerXlogId(segmentSize);
  return hex8(timeline) + hex8(segno / per) + hex8(segno % per);
}

/** "16/B374D848" to a byte position. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!m) throw new Error(`not an LSN: "${text}" (expected the form 0/3000060)`);
  return (BigInt(parseInt(m[1], 16)) << 32n) + BigInt(parseInt(m[2], 16));
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function segnoOfLsn(lsn: bigint, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): bigint {
  return lsn / BigInt(segmentSize);
}

export function lsnOfSegno(segno: bigint, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): bigint {
  return segno * BigInt(segmentSize);
}

export interface TimelineHistoryEntry {
  /** The parent timeline. */
  timeline: number;
  /** Where the child timeline branched off the parent. */
  switchLsn: bigint;
  reason: string;
}

/** Parse a NNNNNNNN.history file: one line per ancestor, "parentTLI\tswitchpoint\treason". */
export function parseHistoryFile(text: string): TimelineHistoryEntry[] {
  const out: TimelineHistoryEntry[] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const [tli, lsn, ...reason] = trimmed.split(/\s+/);
    if (!tli || !lsn) continue;
    out.push({ timeline: Number(tli), switchLsn: parseLsn(lsn), reason: reason.join(' ') });
  }
  return out;
}
