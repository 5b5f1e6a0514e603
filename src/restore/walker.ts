// Walking the WAL path of a recovery plan: every segment from the base backup onward fetched
// from the repository with its checksums checked, and, where records are wanted, read with
// pg_waldump in streamed batches. Also the timeline history files the path is built from.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ObjectStore } from '../storage/types.js';
import type { Catalog } from '../repo/catalog.js';
import { fetchWal, WalCorruptError } from '../repo/walarchive.js';
import { parseHistoryFile, parseLsn, segmentName, segnoOfLsn, type TimelineHistoryEntry } from '../repo/walnames.js';
import { streamWalDump, streamWalRecords, type WalRecord, type WalRecordLine } from '../postgres/programs/waldump.js';
import { RepositoryCorruptError } from './errors.js';
import { type SegmentIndex, segmentOnPath, type PathPart, type PathSegment } from './timelines.js';

/** What the walker needs of the plan's input: where to read, when to stop, whom to tell. */
export type WalkerInput = {
  store: ObjectStore;
  signal?: AbortSignal;
  onWalSegment?: (name: string, count: number) => void;
};

const BATCH = 8;

/** The timeline history files the repository holds, by timeline (a damaged one is RepositoryCorruptError). */
export async function readHistories(store: ObjectStore, catalog: Catalog, dir: string, signal?: AbortSignal): Promise<Map<number, TimelineHistoryEntry[]>> {
  const out = new Map<number, TimelineHistoryEntry[]>();
  for (const tli of catalog.wal.histories) {
    const name = `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`;
    const dest = path.join(dir, name);
    try {
      const r = await fetchWal(store, name, dest, { signal });
      if (r.status === 'missing') continue;
    } catch (e) {
      if (e instanceof WalCorruptError) throw new RepositoryCorruptError(e.message, name);
      throw e;
    }
    out.set(tli, parseHistoryFile(await fsp.readFile(dest, 'utf8')));
    await fsp.rm(dest, { force: true });
  }
  return out;
}

export interface WalkResult {
  gap?: string;
  reached?: boolean;
  lastSegment?: string;
  /** Start LSN of the last record read (any resource manager) when the walk read to the end. */
  lastRecordStart?: string;
  lastRecordEnd?: bigint;
  /** The walk ended in a parent's copy of a branch segment: nothing at or after this LSN is on the path. */
  clipAt?: bigint;
}

/**
 * Reads the WAL path segment by segment: each one fetched with its checksums checked (a
 * damaged one is RepositoryCorruptError, exit 3), and, where records are wanted, fed through
 * pg_waldump in batches whose output is streamed. Batches overlap by one segment so a record
 * that crosses a batch boundary is seen; records already seen are skipped by LSN.
 */
export class PathWalker {
  segmentsRead = 0;
  bytesRead = 0;
  lastSegment?: string;
  lastSegno?: bigint;
  private readonly ss: number;

  constructor(
    private readonly input: WalkerInput,
    private readonly index: SegmentIndex,
    private readonly tlPath: PathPart[],
    private readonly dir: string,
  ) {
    this.ss = index.segmentSize;
  }

  private async fetch(seg: PathSegment): Promise<string> {
    const dest = path.join(this.dir, seg.name);
    try {
      const r = await fetchWal(this.input.store, seg.name, dest, { signal: this.input.signal });
      if (r.status === 'missing') throw new RepositoryCorruptError(`WAL segment ${seg.name} is listed in the repository but could not be read from ${this.input.store.describe()}`, seg.name);
      this.bytesRead += r.rawSize ?? this.ss;
    } catch (e) {
      if (e instanceof WalCorruptError) throw new RepositoryCorruptError(e.message, seg.name);
      throw e;
    }
    this.segmentsRead++;
    this.lastSegment = seg.name;
    this.lastSegno = seg.segno;
    this.input.onWalSegment?.(seg.name, this.segmentsRead);
    return dest;
  }

  /**
   * Walk from `first`, handing commit/abort/restore-point records to `onRecord` until it
   * returns true or the path ends. With `wantLast`, the final segment is also read for its
   * last record of any kind (where replay to the end will stop).
   */
  async scan(first: bigint, onRecord?: (r: WalRecord) => boolean, opts: { untilSegno?: bigint; wantLast?: boolean; untilLsn?: bigint } = {}): Promise<WalkResult & { stopped: boolean }> {
    let segno = first;
    let batch: PathSegment[] = [];
    let carried: PathSegment | undefined;
    let seenUpTo = -1n;
    let stopped = false;
    let gap: string | undefined;
    let clipAt: bigint | undefined;
    let lastRecordStart: string | undefined;
    let lastRecordEnd: bigint | undefined;

    const flush = async (final: boolean) => {
      // The last batch may have been flushed full just before the path ended (8, 16, ... segments):
      // the final flush still reads the carried last segment for the last record.
      if (!batch.length && !(final && opts.wantLast && carried && !stopped)) return;
      const files = carried ? [carried, ...batch] : batch;
      const tl = files[files.length - 1].timeline;
      // pg_waldump reads one timeline at a time.
      const same = files.filter((f) => f.timeline === tl);
      if (onRecord && !stopped) {
        const clip = same[same.length - 1].validBefore;
        await streamWalRecords(
          this.dir,
          same[0].name,
          same[same.length - 1].name,
          (rec) => {
            const at = parseLsn(rec.lsn);
            if (at <= seenUpTo) return false;
            if (clip !== undefined && at >= clip) return false;
            seenUpTo = at;
            if (onRecord(rec)) {
              stopped = true;
              return true;
            }
            return false;
          },
          this.input.signal,
        );
      }
      if (final && opts.wantLast && !stopped) {
        const clip = same[same.length - 1].validBefore;
        const lastTwo = same.slice(-2);
        await streamWalDump(
          this.dir,
          lastTwo[0].name,
          lastTwo[lastTwo.length - 1].name,
          (line: WalRecordLine) => {
            const at = parseLsn(line.lsn);
            if (clip !== undefined && at >= clip) return true;
            lastRecordStart = line.lsn;
            lastRecordEnd = at;
            return false;
          },
          { signal: this.input.signal },
        );
      }
      for (const f of files.slice(0, -1)) await fsp.rm(path.join(this.dir, f.name), { force: true });
      carried = files[files.length - 1];
      batch = [];
    };

    for (;;) {
      this.input.signal?.throwIfAborted();
      if (stopped) break;
      if (opts.untilSegno !== undefined && segno > opts.untilSegno) break;
      const step = segmentOnPath(this.tlPath, this.index, segno);
      if (step.kind === 'end') {
        if (step.reason === 'gap') gap = step.missing;
        break;
      }
      const seg = step.segment;
      if (batch.length && batch[batch.length - 1].timeline !== seg.timeline) await flush(false);
      if (carried && carried.timeline !== seg.timeline) carried = undefined;
      await this.fetch(seg);
      batch.push(seg);
      if (seg.validBefore !== undefined) {
        clipAt = seg.validBefore;
        segno++;
        break; // the path continues only on the child's copy, which is not archived
      }
      if (batch.length >= BATCH) await flush(false);
      segno++;
    }
    await flush(true);
    if (carried) await fsp.rm(path.join(this.dir, carried.name), { force: true });
    return { gap, stopped, lastSegment: this.lastSegment, lastRecordStart, lastRecordEnd, clipAt };
  }

  async toEnd(first: bigint): Promise<WalkResult> {
    return this.scan(first, undefined, { wantLast: true });
  }

  async toLsn(first: bigint, lsn: bigint): Promise<WalkResult> {
    const last = segnoOfLsn(lsn, this.ss);
    const r = await this.scan(first, undefined, { untilSegno: last, wantLast: true });
    // Reached when the segment holding the target was read and, past the branch of a timeline
    // whose own copy is missing, the target lies before the branch point.
    const reached = this.lastSegno !== undefined && this.lastSegno >= last && (r.clipAt === undefined || lsn < r.clipAt);
    return { ...r, reached };
  }

  /** A record on a timeline that is not on the path (or past where the path left it). */
  async searchOtherTimelines(tlPath: PathPart[], match: (r: WalRecord) => boolean): Promise<{ timeline: number; lsn: string } | undefined> {
    for (const tli of this.index.timelines().sort((a, b) => b - a)) {
      const last = this.index.last(tli);
      if (last === undefined) continue;
      const part = tlPath.find((p) => p.timeline === tli);
      if (part && part.end === undefined) continue; // the path's own timeline was searched
      const from = part?.end !== undefined ? segnoOfLsn(part.end, this.ss) : 0n;
      let found: { timeline: number; lsn: string } | undefined;
      // Newest segments first, at most 64: targets are usually recent.
      for (let s = last; s >= from && s > last - 64n && !found; s--) {
        if (!this.index.has(tli, s)) continue;
        const seg: PathSegment = { timeline: tli, segno: s, name: segmentName(tli, s, this.ss) };
        const dest = await this.fetch(seg);
        await streamWalRecords(this.dir, seg.name, seg.name, (rec) => {
          if (match(rec) && (!part || parseLsn(rec.lsn) >= part.end!)) {
            found = { timeline: tli, lsn: rec.lsn };
            return true;
          }
          return false;
        }, this.input.signal);
        await fsp.rm(dest, { force: true });
      }
      if (found) return found;
    }
    return undefined;
  }
}
