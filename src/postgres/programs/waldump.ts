// Reading WAL records with pg_waldump: commit timestamps (to bound a recovery window in
// time, and to plan a time target to the microsecond), restore points and transaction ids
// (to place a named or xid target), before anything is stopped. pg_waldump prints about
// 180,000 lines for a busy segment: its output is always read as a stream, line by line,
// never collected.
import readline from 'node:readline';
import { loadExeca } from './execa-lazy.js';
import { findPgBinary } from '../binaries.js';

export type WalRecord =
  | { kind: 'commit' | 'abort'; lsn: string; xid: string; time: Date; /** Microseconds since the epoch (UTC), as PostgreSQL keeps it. */ micros: bigint }
  | { kind: 'restore-point'; lsn: string; xid: string; name: string };

/** Any record: enough to know where the WAL ends. */
export interface WalRecordLine {
  rmgr: string;
  xid: string;
  lsn: string;
  /** Start of the record before this one (pg_waldump's "prev"): replaying up to it stops just before this record. */
  prev: string;
  desc: string;
}

// rmgr: Transaction len (rec/tot): 34/ 34, tx: 725, lsn: 0/01517370, prev 0/01517330, desc: COMMIT 2026-11-24 16:41:33.273480 UTC
const LINE = /^rmgr: (\w+)\s.*?tx:\s+(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev ([0-9A-F]+\/[0-9A-F]+), desc: (.*)$/;
const COMMIT = /^(COMMIT|ABORT)(?:_PREPARED)? (?:\d+: )?(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))? UTC/;
const RESTORE_POINT = /^RESTORE_POINT (.*)$/;

export function parseWalDumpLine(line: string): WalRecord | undefined {
  const m = LINE.exec(line);
  if (!m) return undefined;
  return recordOf({ rmgr: m[1], xid: m[2], lsn: m[3], prev: m[4], desc: m[5] });
}

function recordOf(r: WalRecordLine): WalRecord | undefined {
  if (r.rmgr === 'Transaction') {
    const c = COMMIT.exec(r.desc);
    if (!c) return undefined;
    const [, what, y, mo, d, h, mi, s, frac = ''] = c;
    const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
    const micros = BigInt(ms) * 1000n + BigInt(frac.slice(0, 6).padEnd(6, '0'));
    return { kind: what === 'COMMIT' ? 'commit' : 'abort', lsn: r.lsn, xid: r.xid, time: new Date(Number(micros / 1000n)), micros };
  }
  if (r.rmgr === 'XLOG') {
    const p = RESTORE_POINT.exec(r.desc);
    if (p) return { kind: 'restore-point', lsn: r.lsn, xid: r.xid, name: p[1] };
  }
  return undefined;
}

export interface WalDumpResult {
  /** LSN of the last record pg_waldump printed (any resource manager it was asked for). */
  lastLsn?: string;
  lines: number;
  /** pg_waldump's own last words: at the end of valid WAL it always says why it stopped. */
  stderr: string;
  exitCode: number;
}

/**
 * Stream the records of segments `first`..`last` (one timeline) found in `dir`.
 * `rmgrs` narrows pg_waldump's output to those resource managers (Transaction and XLOG
 * carry commits and restore points; a hundredfold less text on a busy archive).
 * `onRecord` may return true to stop early (pg_waldump is then ended).
 */
export async function streamWalDump(
  dir: string,
  first: string,
  last: string,
  onLine: (r: WalRecordLine) => boolean | undefined,
  opts: { rmgrs?: string[]; signal?: AbortSignal } = {},
): Promise<WalDumpResult> {
  const bin = await findPgBinary('pg_waldump');
  const args = ['--path', dir, ...(opts.rmgrs ?? []).map((r) => `--rmgr=${r}`), first, last];
  // TZ=UTC: pg_waldump prints commit times in the process's local zone. Its stdout is not
  // buffered by execa (buffer: false): a busy archive prints hundreds of megabytes.
  const { execa } = await loadExeca();
  const child = execa(bin, args, { reject: false, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TZ: 'UTC', LANG: 'C' }, extendEnv: false, cancelSignal: opts.signal, stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false, stderr: true } });
  let lastLsn: string | undefined;
  let lines = 0;
  let stopped = false;
  const rl = readline.createInterface({ input: child.stdout!, crlfDelay: Infinity });
  for await (const line of rl) {
    const m = LINE.exec(line);
    if (!m) continue;
    lines++;
    lastLsn = m[3];
    if (onLine({ rmgr: m[1], xid: m[2], lsn: m[3], prev: m[4], desc: m[5] })) {
      stopped = true;
      rl.close();
      child.kill('SIGTERM');
      break;
    }
  }
  const result = await child;
  if (result.isCanceled) throw new Error('pg_waldump was cancelled');
  const stderr = String(result.stderr ?? '').trim();
  if (!stopped && result.exitCode !== 0 && lines === 0 && !/invalid record length|could not find a valid record|error in WAL record|no such file|invalid magic number|contrecord/i.test(stderr)) {
    throw new Error(`pg_waldump failed on ${first}..${last}: ${stderr.split('\n').slice(-3).join(' ')}`);
  }
  return { lastLsn, lines, stderr, exitCode: stopped ? 0 : (result.exitCode ?? 1) };
}

/** Commit/abort and restore-point records, streamed. */
export async function streamWalRecords(dir: string, first: string, last: string, onRecord: (r: WalRecord) => boolean | undefined, signal?: AbortSignal): Promise<WalDumpResult> {
  return streamWalDump(
    dir,
    first,
    last,
    (line) => {
      const r = recordOf(line);
      return r ? onRecord(r) : undefined;
    },
    { rmgrs: ['Transaction', 'XLOG'], signal },
  );
}

/**
 * Commit/abort and restore-point records in the segments `first`..`last` (names) found in
 * `dir`. pg_waldump stops with an error at the end of valid WAL, which is expected at the
 * tip of an archive: whatever it printed before that is returned. For a few segments only:
 * larger scans use streamWalRecords.
 */
export async function readWalRecords(dir: string, first: string, last: string, signal?: AbortSignal): Promise<WalRecord[]> {
  const records: WalRecord[] = [];
  await streamWalRecords(dir, first, last, (r) => void records.push(r), signal);
  return records;
}
