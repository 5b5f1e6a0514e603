// Looking inside archived WAL for the target picker: the last commit time of each window, so the
// timeline can show where a time target stops being recoverable, and every commit and restore
// point of each timeline (scanActivity), so the picker can step by commit. pitr's own planning reads the
// WAL path in restore/plan.ts.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ObjectStore } from '../storage/types.js';
import type { Catalog, RecoveryWindow, WalTimeline } from '../repo/catalog.js';
import { fetchWal } from '../repo/walarchive.js';
import { parseLsn, parseWalFileName, segmentName } from '../repo/walnames.js';
import { readWalRecords, type WalRecord } from '../postgres/programs/waldump.js';

/** Runs of consecutive segment names a window covers, one per timeline, oldest first. */
export function windowRuns(window: RecoveryWindow, segmentSize: number): string[][] {
  return window.runs.map((run) => {
    const first = parseWalFileName(run.first, segmentSize)!.segno!;
    const last = parseWalFileName(run.last, segmentSize)!.segno!;
    const names: string[] = [];
    for (let s = first; s <= last; s++) names.push(segmentName(run.timeline, s, segmentSize));
    return names;
  });
}

async function withSegments<T>(store: ObjectStore, names: string[], fn: (dir: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrunbook-walscan-'));
  try {
    for (const name of names) {
      signal?.throwIfAborted();
      const r = await fetchWal(store, name, path.join(dir, name), { signal });
      if (r.status === 'missing') throw new Error(`WAL segment ${name} is listed in the catalog but could not be fetched from ${store.describe()}`);
    }
    return await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Records in a run of consecutive segments. */
export async function scanSegments(store: ObjectStore, names: string[], signal?: AbortSignal): Promise<WalRecord[]> {
  if (!names.length) return [];
  return withSegments(store, names, (dir) => readWalRecords(dir, names[0], names[names.length - 1], signal), signal);
}

/** The newest commit in a window, looking back at most `maxSegments` from its end. */
export async function lastCommitInWindow(store: ObjectStore, window: RecoveryWindow, segmentSize: number, signal?: AbortSignal, maxSegments = 16): Promise<Date | undefined> {
  const runs = windowRuns(window, segmentSize);
  const segments = runs[runs.length - 1] ?? [];
  for (let end = segments.length; end > 0 && segments.length - end < maxSegments; end -= 4) {
    const chunk = segments.slice(Math.max(0, end - 4), end);
    const commits = (await scanSegments(store, chunk, signal)).filter((r) => r.kind === 'commit');
    if (commits.length) return (commits[commits.length - 1] as Extract<WalRecord, { kind: 'commit' | 'abort' }>).time;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// What happened in the archived WAL, for the target picker: every commit (xid, time, LSN) and
// named restore point of each timeline, from its newest segments back. A child timeline's first
// segment repeats its parent's WAL up to the switch point: those records are the parent's and
// are dropped from the child.

export interface ActivityCommit {
  timeline: number;
  xid: string;
  lsn: string;
  /** ISO 8601 with microseconds (PostgreSQL's precision). */
  time: string;
  /** ms since the epoch, for placing on the axis. */
  ms: number;
  aborted?: boolean;
}

export interface ActivityRestorePoint {
  timeline: number;
  name: string;
  lsn: string;
  /** The time of the last commit before it (a restore point record has no time of its own). */
  after?: string;
  ms?: number;
}

export interface WalActivity {
  /** Oldest first within each timeline; timelines in ascending order. */
  commits: ActivityCommit[];
  restorePoints: ActivityRestorePoint[];
  /** The segments read per timeline; older WAL was not read (`truncated`). */
  scanned: { timeline: number; first: string; last: string; segments: number }[];
  truncated: boolean;
  /** Why some WAL could not be read (the rest is still shown). */
  problem?: string;
}

/** Runs of consecutive archived segments of one timeline, oldest first, gaps left out. */
export function timelineRuns(timeline: WalTimeline, segmentSize: number): string[][] {
  const segno = (name: string) => parseWalFileName(name, segmentSize)!.segno!;
  const missing = timeline.gaps.map((g) => [segno(g.from), segno(g.to)] as const);
  const runs: string[][] = [];
  let run: string[] = [];
  for (let s = segno(timeline.first); s <= segno(timeline.last); s++) {
    if (missing.some(([a, b]) => s >= a && s <= b)) {
      if (run.length) runs.push(run);
      run = [];
      continue;
    }
    run.push(segmentName(timeline.timeline, s, segmentSize));
  }
  if (run.length) runs.push(run);
  return runs;
}

function microsIso(micros: bigint): string {
  const ms = Number(micros / 1000n);
  const frac = (micros % 1_000_000n).toString().padStart(6, '0');
  return `${new Date(ms).toISOString().slice(0, 19)}.${frac}Z`;
}

/** Commits and restore points of every timeline in `catalog`, reading at most `maxSegments` of each timeline's newest WAL. */
export async function scanActivity(store: ObjectStore, catalog: Catalog, opts: { maxSegments?: number; signal?: AbortSignal } = {}): Promise<WalActivity> {
  const maxSegments = opts.maxSegments ?? 64;
  const out: WalActivity = { commits: [], restorePoints: [], scanned: [], truncated: false };
  for (const tl of [...catalog.wal.timelines].sort((a, b) => a.timeline - b.timeline)) {
    const switchLsn = tl.history?.at(-1)?.switchLsn;
    const from = switchLsn ? parseLsn(switchLsn) : 0n;
    // Newest runs first until the budget is spent; each run is read oldest to newest.
    const runs = timelineRuns(tl, catalog.segmentSize);
    const chosen: string[][] = [];
    let budget = maxSegments;
    for (let i = runs.length - 1; i >= 0 && budget > 0; i--) {
      const run = runs[i].slice(-budget);
      chosen.unshift(run);
      budget -= run.length;
    }
    if (runs.reduce((n, r) => n + r.length, 0) > maxSegments) out.truncated = true;
    let segments = 0;
    let lastCommit: ActivityCommit | undefined;
    for (const run of chosen) {
      let records: WalRecord[];
      try {
        records = await scanSegments(store, run, opts.signal);
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        out.problem ??= err instanceof Error ? err.message : String(err);
        continue;
      }
      segments += run.length;
      for (const r of records) {
        if (parseLsn(r.lsn) < from) continue;
        if (r.kind === 'restore-point') {
          out.restorePoints.push({ timeline: tl.timeline, name: r.name, lsn: r.lsn, after: lastCommit?.time, ms: lastCommit?.ms });
        } else {
          lastCommit = { timeline: tl.timeline, xid: r.xid, lsn: r.lsn, time: microsIso(r.micros), ms: r.time.getTime(), aborted: r.kind === 'abort' ? true : undefined };
          out.commits.push(lastCommit);
        }
      }
    }
    if (chosen.length) out.scanned.push({ timeline: tl.timeline, first: chosen[0][0], last: chosen.at(-1)!.at(-1)!, segments });
  }
  return out;
}
