// Reading WAL records with pg_waldump: commit timestamps (to bound a recovery window in
// time), restore points and transaction ids (to place a named or xid target), before
// anything is stopped.
import readline from 'node:readline';
import { execa } from 'execa';
import { findPgBinary } from './binaries.js';

export type WalRecord =
  | { kind: 'commit' | 'abort'; lsn: string; xid: string; time: Date }
  | { kind: 'restore-point'; lsn: string; xid: string; name: string };

// rmgr: Transaction len (rec/tot): 34/ 34, tx: 725, lsn: 0/01517370, prev 0/01517330, desc: COMMIT 2026-11-24 16:41:33.273480 UTC
const LINE = /^rmgr: (\w+)\s.*?tx:\s+(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev [0-9A-F]+\/[0-9A-F]+, desc: (.*)$/;
const COMMIT = /^(COMMIT|ABORT)(?:_PREPARED)? (?:\d+: )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC/;
const RESTORE_POINT = /^RESTORE_POINT (.*)$/;

export function parseWalDumpLine(line: string): WalRecord | undefined {
  const m = LINE.exec(line);
  if (!m) return undefined;
  const [, rmgr, xid, lsn, desc] = m;
  if (rmgr === 'Transaction') {
    const c = COMMIT.exec(desc);
    if (!c) return undefined;
    return { kind: c[1] === 'COMMIT' ? 'commit' : 'abort', lsn, xid, time: new Date(c[2].replace(' ', 'T') + 'Z') };
  }
  if (rmgr === 'XLOG') {
    const r = RESTORE_POINT.exec(desc);
    if (r) return { kind: 'restore-point', lsn, xid, name: r[1] };
  }
  return undefined;
}

/**
 * Commit/abort and restore-point records in the segments `first`..`last` (names) found in
 * `dir`. pg_waldump stops with an error at the end of valid WAL, which is expected at the
 * tip of an archive: whatever it printed before that is returned.
 */
export async function readWalRecords(dir: string, first: string, last: string, signal?: AbortSignal): Promise<WalRecord[]> {
  const bin = await findPgBinary('pg_waldump');
  // TZ=UTC: pg_waldump prints commit times in the process's local zone.
  const child = execa(bin, ['--path', dir, first, last], { reject: false, env: { ...process.env, TZ: 'UTC' }, cancelSignal: signal, stderr: 'pipe', stdout: 'pipe' });
  const records: WalRecord[] = [];
  const lines = readline.createInterface({ input: child.stdout! });
  for await (const line of lines) {
    const r = parseWalDumpLine(line);
    if (r) records.push(r);
  }
  const result = await child;
  if (result.isCanceled) throw new Error('pg_waldump was cancelled');
  if (result.exitCode !== 0 && records.length === 0 && !/invalid record length|could not find a valid record|error in WAL record|no such file/i.test(String(result.stderr))) {
    throw new Error(`pg_waldump failed on ${first}..${last}: ${String(result.stderr).trim().split('\n').slice(-3).join(' ')}`);
  }
  return records;
}
