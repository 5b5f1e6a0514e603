// The archiver: pg_stat_archiver, forcing a segment switch and waiting until archive_command has
// taken that segment, and what the server log says when it did not.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { SEGMENT_RE } from '../repo/walnames.js';

export interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedTime: string | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: string | null;
  /** The last failure is newer than the last success. */
  failing: boolean;
}

export async function readArchiver(c: pg.Client): Promise<ArchiverStats> {
  const a = (
    await c.query<{
      archived_count: string;
      last_archived_wal: string | null;
      last_archived_time: string | null;
      failed_count: string;
      last_failed_wal: string | null;
      last_failed_time: string | null;
      failing: boolean;
    }>(
      `SELECT archived_count, last_archived_wal, last_archived_time::text, failed_count, last_failed_wal, last_failed_time::text,
              coalesce(last_failed_time > last_archived_time, last_failed_time IS NOT NULL) AS failing
         FROM pg_stat_archiver`,
    )
  ).rows[0];
  return {
    archivedCount: Number(a.archived_count),
    lastArchivedWal: a.last_archived_wal,
    lastArchivedTime: a.last_archived_time,
    failedCount: Number(a.failed_count),
    lastFailedWal: a.last_failed_wal,
    lastFailedTime: a.last_failed_time,
    failing: a.failing,
  };
}

/**
 * Close the current segment and return its name. A transaction with an xid writes a commit
 * record first, so the switch has a segment to close even on an idle server.
 */
export async function switchWal(c: pg.Client): Promise<string> {
  await c.query('SELECT pg_current_xact_id()');
  return (await c.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name')).rows[0].name;
}

/** The switch, as shown in plans. */
export const SWITCH_WAL_TEXT = 'SELECT pg_switch_wal() after a small transaction';

export type ArchiveOutcome =
  | { kind: 'arrived'; segment: string; key: string; size?: number; ms: number }
  /** pg_stat_archiver reports it archived, but it is not where we looked: archive_command stores it elsewhere. */
  | { kind: 'elsewhere'; segment: string }
  | { kind: 'failing'; segment: string; failures: number; lastFailedWal: string | null; lastFailedTime: string | null }
  | { kind: 'timeout'; segment: string; lastArchivedWal: string | null };

export interface WaitForArchiveOptions {
  timeoutMs: number;
  /** PostgreSQL retries a failing archive_command 3 times before pausing: that many failures is a real failure. */
  failuresBeforeGivingUp: number;
  /** Where the segment landed (its key and size), once pg_stat_archiver reports it archived. */
  locate(segment: string): Promise<{ key: string; size?: number } | undefined>;
  onSwitched?(segment: string): void;
  signal?: AbortSignal;
}

/** Switch WAL, then poll pg_stat_archiver (and `locate`) until the segment arrived, failed, or the time is up. */
export async function switchAndWaitForArchive(c: pg.Client, opts: WaitForArchiveOptions): Promise<ArchiveOutcome> {
  const baseline = (await readArchiver(c)).failedCount;
  const segment = await switchWal(c);
  const switchedAt = Date.now();
  opts.onSwitched?.(segment);
  const deadline = switchedAt + opts.timeoutMs;
  let reportedAt: number | undefined;
  for (;;) {
    opts.signal?.throwIfAborted();
    const s = await readArchiver(c);
    const last = s.lastArchivedWal;
    if (reportedAt === undefined && last && SEGMENT_RE.test(last) && last >= segment) reportedAt = Date.now();
    if (reportedAt !== undefined) {
      const found = await opts.locate(segment);
      if (found) return { kind: 'arrived', segment, ...found, ms: Date.now() - switchedAt };
      if (Date.now() - reportedAt > 5_000 || Date.now() > deadline) return { kind: 'elsewhere', segment };
    }
    const failures = s.failedCount - baseline;
    if (failures >= opts.failuresBeforeGivingUp || (Date.now() > deadline && failures > 0)) {
      return { kind: 'failing', segment, failures, lastFailedWal: s.lastFailedWal, lastFailedTime: s.lastFailedTime };
    }
    if (Date.now() > deadline) return { kind: 'timeout', segment, lastArchivedWal: last };
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---------------------------------------------------------------------------------------------
// the server log about archiving

/** The first of these files that exists and is readable here. */
export function firstReadable(candidates: readonly (string | undefined)[]): string | undefined {
  for (const c of candidates) {
    if (!c) continue;
    try {
      fs.accessSync(c, fs.constants.R_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

/** pg_current_logfile() is relative to the data directory unless it is absolute. */
export function logfilePath(current: string | undefined, dataDir: string | undefined): string | undefined {
  if (!current) return undefined;
  return path.isAbsolute(current) ? current : dataDir ? path.join(dataDir, current) : undefined;
}

// A line written by the server's logger ("2026-11-24 16:37:16.913 UTC [16519] LOG:  ..."); other lines
// in the server's stderr come from child programs, such as archive_command saying why it failed.
const LOGGER_LINE = /\b(LOG|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT|NOTICE|INFO|DEBUG\d?):\s/;

/**
 * Server log lines about archiving written since `offset` (at most the last 256 KiB): the
 * logger's lines that mention archiving, and the archive command's own output (lines not from
 * the logger, e.g. "pgrunbook wal-push: cannot put ...").
 */
export async function archiveLogLines(file: string, offset: number): Promise<string[]> {
  const fh = await fsp.open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const start = Math.max(offset > size ? 0 : offset, size - 256 * 1024);
    const buf = Buffer.alloc(Math.max(0, size - start));
    await fh.read(buf, 0, buf.length, start);
    const out: string[] = [];
    for (const l of buf.toString('utf8').split('\n')) {
      if (!l.trim()) continue;
      const fromLogger = LOGGER_LINE.test(l);
      if ((fromLogger && /archiv/i.test(l)) || !fromLogger) out.push(l.length > 400 ? `${l.slice(0, 400)}…` : l);
    }
    return out.slice(-15);
  } finally {
    await fh.close();
  }
}

/** The few lines that say why: the command's own output first, then PostgreSQL's verdict; without log prefixes. */
export function telltaleLines(lines: string[]): string[] {
  const strip = (l: string) => l.replace(/^.*?\b(LOG|WARNING|ERROR|DETAIL):\s+/, '$1: ');
  const own = [...new Set(lines.filter((l) => !LOGGER_LINE.test(l)))].slice(-2);
  const verdict = lines.filter((l) => /archive command (failed|was terminated)/i.test(l)).slice(-1);
  const picked = [...own, ...verdict].map(strip);
  return picked.length ? picked : lines.slice(-2).map(strip);
}
