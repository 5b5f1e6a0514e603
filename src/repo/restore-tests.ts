// The record of each restore test, in the repository (restore-tests/<time>.json), so that status
// on any host sees when the backups were last proven to restore, and an auditor can read what
// was checked and how long it took.
import { buffer } from 'node:stream/consumers';
import type { ObjectStore } from '../storage/types.js';

export const RESTORE_TEST_PREFIX = 'restore-tests/';

export interface RestoreTestCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface RestoreTestRecord {
  version: 1;
  runId: string;
  host: string;
  startedAt: string;
  finishedAt: string;
  ok: boolean;
  /** Why it failed, in one line (absent when ok). */
  failure?: string;
  backup?: { id: string; stopTime?: string; stopLsn?: string; bytes?: number };
  wal?: { from?: string; to?: string; segments?: number; timeline?: number };
  /** The last commit replayed, and how far it lies behind the test's start: the RPO a disaster would have had. */
  recoveredTo?: string;
  rpoSeconds?: number;
  /** Seconds per phase (download+unpack, replay, checks) and in all: the measured RTO. */
  timings: { unpackSeconds?: number; replaySeconds?: number; checksSeconds?: number; totalSeconds: number };
  bytes?: number;
  bytesPerSecond?: number;
  checks: RestoreTestCheck[];
}

export function restoreTestKey(at: Date): string {
  return `${RESTORE_TEST_PREFIX}${at.toISOString().replace(/[:.]/g, '').replace(/Z$/, 'Z')}.json`;
}

export async function writeRestoreTestRecord(store: ObjectStore, rec: RestoreTestRecord): Promise<string> {
  const key = restoreTestKey(new Date(rec.finishedAt));
  await store.put(key, Buffer.from(`${JSON.stringify(rec, null, 2)}\n`));
  return key;
}

export interface RestoreTestHistory {
  newest?: RestoreTestRecord;
  newestSuccess?: RestoreTestRecord;
  /** Records that could not be read (named, never silently skipped). */
  unreadable: string[];
}

/** The newest record and the newest successful one (reads from the newest backwards, at most 50). */
export async function readRestoreTestHistory(store: ObjectStore): Promise<RestoreTestHistory> {
  const keys: string[] = [];
  for await (const e of store.list(RESTORE_TEST_PREFIX)) if (e.key.endsWith('.json')) keys.push(e.key);
  keys.sort();
  const out: RestoreTestHistory = { unreadable: [] };
  for (const key of keys.reverse().slice(0, 50)) {
    let rec: RestoreTestRecord;
    try {
      rec = JSON.parse((await buffer((await store.get(key)).body)).toString('utf8')) as RestoreTestRecord;
    } catch {
      out.unreadable.push(key);
      continue;
    }
    out.newest ??= rec;
    if (rec.ok) {
      out.newestSuccess = rec;
      break;
    }
  }
  return out;
}
