// Looking inside archived WAL before a restore: the last commit time of each window (so a
// time target past it is refused up front) and the position of a named restore point or a
// transaction id (so the right base backup is chosen for them).
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ObjectStore } from '../storage/types.js';
import type { RecoveryWindow } from '../repo/catalog.js';
import { fetchWal } from '../repo/walarchive.js';
import { parseWalFileName, segmentName } from '../repo/walnames.js';
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

/**
 * Find a restore point by name or a transaction's commit/abort in a window, newest first,
 * scanning at most `maxSegments` segments.
 */
export async function locateInWindow(
  store: ObjectStore,
  window: RecoveryWindow,
  segmentSize: number,
  match: (r: WalRecord) => boolean,
  signal?: AbortSignal,
  maxSegments = 256,
  stats: { segments: number; records: number } = { segments: 0, records: 0 },
  /** Segments already searched (for an earlier, overlapping window): skipped, and added to. */
  scanned: Set<string> = new Set(),
): Promise<WalRecord | undefined> {
  // Newest timeline first, newest segments first: targets are usually recent.
  let budget = maxSegments;
  const chunkSize = 8;
  for (const run of windowRuns(window, segmentSize).reverse()) {
    const segments = run.filter((name) => !scanned.has(name));
    for (const name of segments) scanned.add(name);
    for (let end = segments.length; end > 0 && budget > 0; end -= chunkSize) {
      const chunk = segments.slice(Math.max(0, end - chunkSize), end);
      budget -= chunk.length;
      const records = await scanSegments(store, chunk, signal);
      stats.segments += chunk.length;
      stats.records += records.length;
      const found = records.filter(match);
      if (found.length) return found[found.length - 1];
    }
  }
  return undefined;
}
