// The archived WAL of a time window, read record by record for find-target: the segments on
// the newest timeline's path (its .history file says which timeline holds which part),
// chosen by when each was archived, each fetched with its checksum checked into a temporary
// directory, read with pg_waldump in overlapping batches (a record may cross a segment
// boundary) and removed as soon as it has been read.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ObjectStore } from '../storage/types.js';
import type { Catalog } from '../repo/catalog.js';
import { fetchWal, WalCorruptError, WAL_PREFIX, parseWalKey } from '../repo/walarchive.js';
import { parseLsn, parseWalFileName } from '../repo/walnames.js';
import { streamWalDump, type WalRecordLine } from '../postgres/programs/waldump.js';
import { RepositoryCorruptError } from './errors.js';
import { newestTimeline, SegmentIndex, segmentOnPath, timelinePath, type PathSegment } from './timelines.js';
import { readHistories } from './walker.js';

export interface WindowScan {
  /** Segments read, oldest first. */
  segments: string[];
  timeline: number;
  /** What could not be read (a gap in the archive): the scan went on after it. */
  problems: string[];
}

const BATCH = 8;

/**
 * Feed every record of the WAL archived between `since` and `until` (a segment archived before
 * `since` holds nothing newer; the first one archived after `until` may still hold records from
 * before it) to `onLine`, in WAL order, each record once.
 */
export async function scanWindowWal(
  store: ObjectStore,
  catalog: Catalog,
  window: { since: Date; until: Date },
  onLine: (r: WalRecordLine) => void,
  opts: { signal?: AbortSignal; onSegment?: (name: string, done: number, total: number) => void } = {},
): Promise<WindowScan> {
  const ss = catalog.segmentSize;
  const archived = new Map<string, number>();
  for await (const e of store.list(WAL_PREFIX)) {
    const k = parseWalKey(e.key);
    if (k) archived.set(k.name, e.lastModified.getTime());
  }
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrunbook-findtarget-'));
  try {
    const histories = await readHistories(store, catalog, work, opts.signal);
    const index = new SegmentIndex(catalog, ss);
    const tli = newestTimeline(index, histories);
    const tlPath = timelinePath(tli, histories);
    const problems: string[] = [];

    // The segments to read: on the path, archived from `since` on, up to the first archived after `until`.
    const firsts = catalog.wal.timelines.map((t) => parseWalFileName(t.first, ss)?.segno).filter((s): s is bigint => s !== undefined);
    const lasts = catalog.wal.timelines.map((t) => parseWalFileName(t.last, ss)?.segno).filter((s): s is bigint => s !== undefined);
    const runs: PathSegment[][] = [];
    let run: PathSegment[] = [];
    let previous: PathSegment | undefined;
    if (firsts.length) {
      const last = lasts.reduce((a, b) => (a > b ? a : b));
      for (let s = firsts.reduce((a, b) => (a < b ? a : b)); s <= last; s++) {
        const step = segmentOnPath(tlPath, index, s);
        if (step.kind === 'end') {
          if (step.reason === 'archive-end') break;
          if (run.length) problems.push(`WAL segment ${step.missing} is missing from the repository: incidents in it cannot be seen`);
          if (run.length) runs.push(run);
          run = [];
          previous = undefined;
          continue;
        }
        const seg = step.segment;
        const at = archived.get(seg.name) ?? 0;
        if (at < window.since.getTime()) {
          previous = seg; // kept: a transaction of the window may have begun in it
          continue;
        }
        if (!run.length && previous && previous.timeline === seg.timeline) run.push(previous);
        if (run.length && run[run.length - 1].timeline !== seg.timeline) {
          runs.push(run);
          run = [];
        }
        run.push(seg);
        if (at > window.until.getTime()) break;
      }
    }
    if (run.length) runs.push(run);

    const total = runs.reduce((n, r) => n + r.length, 0);
    const read: string[] = [];
    for (const segs of runs) {
      let seenUpTo = -1n;
      let carried: PathSegment | undefined;
      for (let i = 0; i < segs.length; i += BATCH) {
        const batch = segs.slice(i, i + BATCH);
        for (const seg of batch) {
          opts.signal?.throwIfAborted();
          try {
            const r = await fetchWal(store, seg.name, path.join(work, seg.name), { signal: opts.signal });
            if (r.status === 'missing') throw new RepositoryCorruptError(`WAL segment ${seg.name} is listed in the repository but could not be read from ${store.describe()}`, seg.name);
          } catch (e) {
            if (e instanceof WalCorruptError) throw new RepositoryCorruptError(e.message, seg.name);
            throw e;
          }
          read.push(seg.name);
          opts.onSegment?.(seg.name, read.length, total);
        }
        const files = carried ? [carried, ...batch] : batch;
        const clip = files[files.length - 1].validBefore;
        await streamWalDump(
          work,
          files[0].name,
          files[files.length - 1].name,
          (line) => {
            const at = parseLsn(line.lsn);
            if (at <= seenUpTo || (clip !== undefined && at >= clip)) return false;
            seenUpTo = at;
            onLine(line);
            return false;
          },
          { signal: opts.signal },
        );
        for (const f of files.slice(0, -1)) await fsp.rm(path.join(work, f.name), { force: true });
        carried = files[files.length - 1];
      }
      if (carried) await fsp.rm(path.join(work, carried.name), { force: true });
    }
    return { segments: read, timeline: tli, problems };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}
