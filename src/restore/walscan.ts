// Looking inside archived WAL for the target picker: the last commit time of each window, so the
// timeline can show where a time target stops being recoverable. pitr's own planning reads the
// WAL path in restore/plan.ts.
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
