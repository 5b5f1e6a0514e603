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
  /**
   * Offered each segment of the path the walk has done with, if its uncompressed checksum was
   * verified: true when it took the file (moved it away), else it is removed. pitr keeps them for
   * replay so that restore_command finds them checked and local instead of fetching them again.
   */
  keepSegment?: (file: string, name: string) => Promise<boolean>;
};

const BATCH = 8;
/** Segments fetched ahead of the one the walk is at: each is a get, a hash, a zstd and an fsync. */
const LOOKAHEAD = 4;

type Fetched = { rawSize?: number; verified: boolean };

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

  private readonly verified = new Set<string>();

  /** Fetches a segment into the walk's directory with its checksums checked (nothing counted yet). */
  private async download(seg: PathSegment, signal?: AbortSignal): Promise<Fetched> {
    const dest = path.join(this.dir, seg.name);
    try {
      const r = await fetchWal(this.input.store, seg.name, dest, { signal });
      if (r.status === 'missing') throw new RepositoryCorruptError(`WAL segment ${seg.name} is listed in the repository but could not be read from ${this.input.store.describe()}`, seg.name);
      return { rawSize: r.rawSize, verified: Boolean(r.verified) };
    } catch (e) {
      if (e instanceof WalCorruptError) throw new RepositoryCorruptError(e.message, seg.name);
      throw e;
    }
  }

  /** A downloaded segment, counted and reported in path order. */
  private counted(seg: PathSegment, r: Fetched): string {
    this.bytesRead += r.rawSize ?? this.ss;
    if (r.verified) this.verified.add(seg.name);
    else this.verified.delete(seg.name);
    this.segmentsRead++;
    this.lastSegment = seg.name;
    this.lastSegno = seg.segno;
    this.input.onWalSegment?.(seg.name, this.segmentsRead);
    return path.join(this.dir, seg.name);
  }

  private async fetch(seg: PathSegment): Promise<string> {
    return this.counted(seg, await this.download(seg, this.input.signal));
  }

  /** A path segment the walk is done with: offered to keepSegment (verified ones only), else removed. */
  private async release(name: string): Promise<void> {
    const file = path.join(this.dir, name);
    if (this.input.keepSegment && this.verified.has(name) && (await this.input.keepSegment(file, name))) return;
    await fsp.rm(file, { force: true });
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
      for (const f of files.slice(0, -1)) await this.release(f.name);
      carried = files[files.length - 1];
      batch = [];
    };

    // Downloads run up to LOOKAHEAD segments ahead of the walk (the path is known from the index);
    // each is counted, and its failure reported, only when the walk reaches it, in path order.
    const ahead = new Map<bigint, Promise<Fetched>>();
    const stopAhead = new AbortController();
    const aheadSignal = this.input.signal ? AbortSignal.any([this.input.signal, stopAhead.signal]) : stopAhead.signal;
    let aheadTo = segno;
    let aheadEnded = false;
    const fillAhead = () => {
      while (!aheadEnded && ahead.size < LOOKAHEAD && (opts.untilSegno === undefined || aheadTo <= opts.untilSegno)) {
        const step = segmentOnPath(this.tlPath, this.index, aheadTo);
        if (step.kind === 'end') {
          aheadEnded = true;
          break;
        }
        const p = this.download(step.segment, aheadSignal);
        p.catch(() => undefined); // awaited when the walk reaches it
        ahead.set(aheadTo, p);
        if (step.segment.validBefore !== undefined) aheadEnded = true;
        aheadTo++;
      }
    };

    try {
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
        fillAhead();
        const pending = ahead.get(segno) ?? this.download(seg, aheadSignal);
        ahead.delete(segno);
        this.counted(seg, await pending);
        fillAhead();
        batch.push(seg);
        if (seg.validBefore !== undefined) {
          clipAt = seg.validBefore;
          segno++;
          break; // the path continues only on the child's copy, which is not archived
        }
        if (batch.length >= BATCH) await flush(false);
        segno++;
      }
    } finally {
      // Fetched ahead past where the walk stopped (or failed): not part of this walk.
      stopAhead.abort();
      const left = [...ahead.keys()];
      await Promise.allSettled(ahead.values());
      for (const s of left) {
        const step = segmentOnPath(this.tlPath, this.index, s);
        if (step.kind === 'segment') await fsp.rm(path.join(this.dir, step.segment.name), { force: true });
      }
    }
    await flush(true);
    if (carried) await this.release(carried.name);
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
