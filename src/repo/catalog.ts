// What a repository holds and what it can restore: complete base backups and dumps (those
// whose metadata file, the commit marker, exists), the archived WAL per timeline with any
// gaps, and the recovery window each base backup opens given gap-free WAL after it.
import type { ListEntry, ObjectStore } from '../storage/types.js';
import {
  DEFAULT_WAL_SEGMENT_SIZE,
  formatLsn,
  lsnOfSegno,
  parseHistoryFile,
  parseLsn,
  parseWalFileName,
  segmentName,
  segnoOfLsn,
  type TimelineHistoryEntry,
} from './walnames.js';

import type { Codec } from './codec.js';
import { BASEBACKUP_PREFIX, DUMP_PREFIX, BACKUP_META, DUMP_META, WAL_PREFIX, parseWalKey } from './layout.js';
import { readObject } from './objects.js';

export { BASEBACKUP_PREFIX, DUMP_PREFIX, BACKUP_META, DUMP_META } from './layout.js';

/** backup.json: written last; its presence is what makes a base backup complete. */
export interface BaseBackupMeta {
  id: string;
  startLsn: string;
  stopLsn: string;
  startTime: string;
  stopTime: string;
  timeline: number;
  systemIdentifier?: string;
  serverVersion?: string;
  walSegmentSize?: number;
  /** The backup carries the WAL it needs to become consistent (pg_basebackup -X). */
  includesWal?: boolean;
  size?: number;
  /** The backup's objects with their SHA-256 (checked on every read): `data` is the data directory as a
   *  tar (WAL in pg_wal/ when includesWal), `manifest` is PostgreSQL's backup_manifest for it. */
  objects?: {
    data?: BaseBackupObject & { format: 'tar'; compression: Codec };
    manifest?: BaseBackupObject;
  };
  /** Bytes of the tar as PostgreSQL sent it, before compression. */
  uncompressedSize?: number;
  /** Regular files in the backup (as listed in backup_manifest). */
  fileCount?: number;
  /** WAL the backup needs to be consistent, per timeline (backup_manifest's WAL-Ranges). */
  walRanges?: { timeline: number; startLsn: string; endLsn: string }[];
  /** The checkpoint the backup starts from (backup_label). */
  checkpointLsn?: string;
  /** 'primary' or 'standby' (backup_label). */
  backupFrom?: string;
  /** The program and version that took it, e.g. "pg_basebackup 15.18". */
  tool?: string;
  [extra: string]: unknown;
}

export interface BaseBackupObject {
  key: string;
  size: number;
  sha256: string;
}

export interface DumpMeta {
  id: string;
  database: string;
  startTime?: string;
  stopTime?: string;
  size?: number;
  sha256?: string;
  /** The dump's object name inside dumps/<db>/<id>/ (backup-logical: "<db>.dump"). */
  object?: string;
  /** pg_dump's archive format ("custom" for -Fc). */
  format?: string;
  /**
   * How the stored object is compressed around the archive (made with --compress=0). Absent:
   * written before pgrunbook compressed dumps itself; the archive is pg_dump's own (gzip inside).
   */
  compression?: Codec;
  /** The archive's size once decompressed (what a restore's local copy takes). */
  archiveSize?: number;
  /**
   * [dump id, offset] of every data block in the archive (its block type byte, from the archive's
   * first byte), found while it streamed: a restore writes them into its local copy's table of
   * contents (pg_restore --jobs seeks there) without reading the archive for them. Absent in dumps
   * made before.
   */
  dataBlocks?: [number, number][];
  /** Where rowCounts came from: the dump's own COPY data ("archive"), or count(*) in its snapshot. */
  rowCountsFrom?: 'archive' | 'count';
  /** Exact row count per table, "schema.table" -> rows, taken in the dump's own snapshot. */
  rowCounts?: Record<string, number>;
  /** The server time of the dump's snapshot: the data is as of this moment. */
  consistentAt?: string;
  durationMs?: number;
  /** `pg_dump --version`'s number, e.g. "15.8". */
  pgDumpVersion?: string;
  serverVersion?: string;
  [extra: string]: unknown;
}

export interface BaseBackupEntry {
  id: string;
  complete: boolean;
  objects: number;
  bytes: number;
  meta?: BaseBackupMeta;
  /** Why the metadata could not be read, if it could not. */
  problem?: string;
}

export interface DumpEntry {
  database: string;
  id: string;
  complete: boolean;
  objects: number;
  bytes: number;
  meta?: DumpMeta;
  problem?: string;
}

export interface WalGap {
  timeline: number;
  /** First and last missing segment names. */
  from: string;
  to: string;
  missing: number;
}

export interface WalTimeline {
  timeline: number;
  segments: number;
  first: string;
  last: string;
  firstArchivedAt: string;
  lastArchivedAt: string;
  gaps: WalGap[];
  /** From this timeline's .history file: its ancestors and where it branched off them. */
  history?: { timeline: number; switchLsn: string; reason: string }[];
}

export interface RecoveryWindow {
  backupId: string;
  timeline: number;
  /** The earliest consistent point: the end of the base backup. */
  fromLsn: string;
  fromTime: string;
  /** The end of gap-free WAL after the backup, on the backup's timeline and its descendants. */
  toLsn: string;
  /** When the last gap-free segment was archived: commits up to about then are covered. */
  toArchivedAt?: string;
  /** Timelines the window runs through, oldest first. */
  timelines: number[];
  /** The gap-free WAL of the window, one run of segment names per timeline, oldest first. */
  runs: { timeline: number; first: string; last: string }[];
  /** The WAL the backup itself needs is not archived and not inside the backup. */
  unusable?: string;
  /** The first missing segment that ends the window early, if a gap does. */
  endedByGap?: WalGap;
}

export interface Catalog {
  store: string;
  baseBackups: BaseBackupEntry[];
  dumps: DumpEntry[];
  wal: { timelines: WalTimeline[]; histories: number[]; files: number; bytes: number };
  gaps: WalGap[];
  windows: RecoveryWindow[];
  segmentSize: number;
}

async function collect(store: ObjectStore, prefix: string): Promise<ListEntry[]> {
  const out: ListEntry[] = [];
  for await (const entry of store.list(prefix)) out.push(entry);
  return out;
}

async function readJson<T>(store: ObjectStore, key: string): Promise<T> {
  const info = await store.head(key);
  const raw = await readObject(store, key, { expectedSha256: info?.metadata.sha256 });
  return JSON.parse(raw.toString('utf8')) as T;
}

async function readText(store: ObjectStore, key: string): Promise<string> {
  const buf = await readObject(store, key);
  const codec = parseWalKey(key)?.compression ?? 'none';
  if (codec !== 'none') {
    const { decompressBuffer } = await import('./codec.js');
    return (await decompressBuffer(codec, buf)).toString('utf8');
  }
  return buf.toString('utf8');
}

export async function readCatalog(store: ObjectStore, opts: { segmentSize?: number } = {}): Promise<Catalog> {
  const [backupObjects, dumpObjects, walObjects] = await Promise.all([collect(store, BASEBACKUP_PREFIX), collect(store, DUMP_PREFIX), collect(store, WAL_PREFIX)]);

  const baseBackups = await readBaseBackups(store, backupObjects);
  const dumps = await readDumps(store, dumpObjects);
  const segmentSize = opts.segmentSize ?? baseBackups.find((b) => b.meta?.walSegmentSize)?.meta?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;

  // Segments per timeline, by number; history files by timeline.
  const segmentsByTli = new Map<number, Map<bigint, ListEntry>>();
  const historyKeys = new Map<number, string>();
  let walBytes = 0;
  for (const entry of walObjects) {
    walBytes += entry.size;
    const parsed = parseWalKey(entry.key);
    if (!parsed) continue;
    const name = parseWalFileName(parsed.name, segmentSize);
    if (!name) continue;
    if (name.kind === 'segment') {
      let m = segmentsByTli.get(name.timeline);
      if (!m) segmentsByTli.set(name.timeline, (m = new Map()));
      m.set(name.segno!, entry);
    } else if (name.kind === 'history') {
      historyKeys.set(name.timeline, entry.key);
    }
  }

  const histories = new Map<number, TimelineHistoryEntry[]>();
  await Promise.all(
    [...historyKeys].map(async ([tli, key]) => {
      try {
        histories.set(tli, parseHistoryFile(await readText(store, key)));
      } catch {
        /* an unreadable history file: the timeline is still listed, just not linked */
      }
    }),
  );

  const gaps: WalGap[] = [];
  const timelines: WalTimeline[] = [];
  for (const tli of [...segmentsByTli.keys()].sort((a, b) => a - b)) {
    const segs = segmentsByTli.get(tli)!;
    const numbers = [...segs.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const tliGaps: WalGap[] = [];
    for (let i = 1; i < numbers.length; i++) {
      if (numbers[i] - numbers[i - 1] > 1n) {
        const gap = {
          timeline: tli,
          from: segmentName(tli, numbers[i - 1] + 1n, segmentSize),
          to: segmentName(tli, numbers[i] - 1n, segmentSize),
          missing: Number(numbers[i] - numbers[i - 1] - 1n),
        };
        tliGaps.push(gap);
      }
    }
    gaps.push(...tliGaps);
    const times = [...segs.values()].map((e) => e.lastModified.getTime());
    timelines.push({
      timeline: tli,
      segments: numbers.length,
      first: segmentName(tli, numbers[0], segmentSize),
      last: segmentName(tli, numbers[numbers.length - 1], segmentSize),
      firstArchivedAt: new Date(Math.min(...times)).toISOString(),
      lastArchivedAt: new Date(Math.max(...times)).toISOString(),
      gaps: tliGaps,
      history: histories.get(tli)?.map((h) => ({ timeline: h.timeline, switchLsn: formatLsn(h.switchLsn), reason: h.reason })),
    });
  }

  const windows: RecoveryWindow[] = [];
  for (const b of baseBackups) {
    if (!b.complete || !b.meta) continue;
    windows.push(windowFor(b.meta, segmentsByTli, histories, segmentSize));
  }

  return {
    store: store.describe(),
    baseBackups,
    dumps,
    wal: { timelines, histories: [...historyKeys.keys()].sort((a, b) => a - b), files: walObjects.length, bytes: walBytes },
    gaps,
    windows,
    segmentSize,
  };
}

function windowFor(
  meta: BaseBackupMeta,
  segmentsByTli: Map<number, Map<bigint, ListEntry>>,
  histories: Map<number, TimelineHistoryEntry[]>,
  segmentSize: number,
): RecoveryWindow {
  const startSeg = segnoOfLsn(parseLsn(meta.startLsn), segmentSize);
  const stopLsn = parseLsn(meta.stopLsn);
  const stopSeg = segnoOfLsn(stopLsn, segmentSize);
  const window: RecoveryWindow = {
    backupId: meta.id,
    timeline: meta.timeline,
    fromLsn: meta.stopLsn,
    fromTime: meta.stopTime,
    toLsn: meta.stopLsn,
    timelines: [meta.timeline],
    runs: [],
  };
  const segs = segmentsByTli.get(meta.timeline) ?? new Map<bigint, ListEntry>();

  // The WAL from the backup's start to its stop must exist, in the archive or in the backup.
  if (!meta.includesWal) {
    for (let s = startSeg; s <= stopSeg; s++) {
      if (!segs.has(s)) {
        window.unusable = `segment ${segmentName(meta.timeline, s, segmentSize)}, needed to make this backup consistent, is not archived`;
        return window;
      }
    }
  }

  // Follow gap-free WAL from the stop segment, switching to a child timeline where one branched.
  let tli = meta.timeline;
  let seg = stopSeg;
  let tliSegs = segs;
  if (!tliSegs.has(seg)) return window; // only the consistency point itself is reachable
  for (;;) {
    const runStart = seg;
    while (tliSegs.has(seg + 1n)) seg++;
    window.runs.push({ timeline: tli, first: segmentName(tli, runStart, segmentSize), last: segmentName(tli, seg, segmentSize) });
    window.toLsn = formatLsn(lsnOfSegno(seg + 1n, segmentSize));
    window.toArchivedAt = tliSegs.get(seg)!.lastModified.toISOString();
    const child = childTimeline(tli, lsnOfSegno(seg + 1n, segmentSize), lsnOfSegno(segnoOfLsn(stopLsn, segmentSize), segmentSize), histories);
    if (child) {
      const childSegs = segmentsByTli.get(child.timeline);
      const switchSeg = segnoOfLsn(child.switchLsn, segmentSize);
      if (childSegs?.has(switchSeg)) {
        tli = child.timeline;
        tliSegs = childSegs;
        seg = switchSeg;
        window.timelines.push(tli);
        window.timeline = tli;
        continue;
      }
    }
    const nextNumbers = [...tliSegs.keys()].filter((n) => n > seg + 1n);
    if (nextNumbers.length) {
      const next = nextNumbers.reduce((a, b) => (a < b ? a : b));
      window.endedByGap = { timeline: tli, from: segmentName(tli, seg + 1n, segmentSize), to: segmentName(tli, next - 1n, segmentSize), missing: Number(next - seg - 1n) };
    }
    return window;
  }
}

/** The newest timeline that branched off `parent` inside [from, upTo]. */
function childTimeline(parent: number, upTo: bigint, from: bigint, histories: Map<number, TimelineHistoryEntry[]>): { timeline: number; switchLsn: bigint } | undefined {
  let best: { timeline: number; switchLsn: bigint } | undefined;
  for (const [tli, entries] of histories) {
    const last = entries[entries.length - 1];
    if (!last || last.timeline !== parent) continue;
    if (last.switchLsn < from || last.switchLsn > upTo) continue;
    if (!best || tli > best.timeline) best = { timeline: tli, switchLsn: last.switchLsn };
  }
  return best;
}

async function readBaseBackups(store: ObjectStore, objects: ListEntry[]): Promise<BaseBackupEntry[]> {
  const byId = new Map<string, BaseBackupEntry>();
  for (const o of objects) {
    const rest = o.key.slice(BASEBACKUP_PREFIX.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) continue;
    const id = rest.slice(0, slash);
    let e = byId.get(id);
    if (!e) byId.set(id, (e = { id, complete: false, objects: 0, bytes: 0 }));
    e.objects++;
    e.bytes += o.size;
    if (rest.slice(slash + 1) === BACKUP_META) e.complete = true;
  }
  const entries = [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
  await Promise.all(
    entries
      .filter((e) => e.complete)
      .map(async (e) => {
        try {
          e.meta = await readJson<BaseBackupMeta>(store, `${BASEBACKUP_PREFIX}${e.id}/${BACKUP_META}`);
        } catch (err) {
          e.complete = false;
          e.problem = `backup.json unreadable: ${(err as Error).message}`;
        }
      }),
  );
  return entries;
}

async function readDumps(store: ObjectStore, objects: ListEntry[]): Promise<DumpEntry[]> {
  const byKey = new Map<string, DumpEntry>();
  for (const o of objects) {
    const parts = o.key.slice(DUMP_PREFIX.length).split('/');
    if (parts.length < 3) continue;
    const [database, id] = parts;
    const k = `${database}/${id}`;
    let e = byKey.get(k);
    if (!e) byKey.set(k, (e = { database, id, complete: false, objects: 0, bytes: 0 }));
    e.objects++;
    e.bytes += o.size;
    if (parts.slice(2).join('/') === DUMP_META) e.complete = true;
  }
  const entries = [...byKey.values()].sort((a, b) => a.database.localeCompare(b.database) || a.id.localeCompare(b.id));
  await Promise.all(
    entries
      .filter((e) => e.complete)
      .map(async (e) => {
        try {
          e.meta = await readJson<DumpMeta>(store, `${DUMP_PREFIX}${e.database}/${e.id}/${DUMP_META}`);
        } catch (err) {
          e.complete = false;
          e.problem = `dump.json unreadable: ${(err as Error).message}`;
        }
      }),
  );
  return entries;
}
