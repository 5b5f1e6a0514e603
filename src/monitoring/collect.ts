// Reads what status judges: the repository's catalog and the server's WAL position and
// archiver statistics. Each side fails on its own (an unreachable server still lets the
// repository checks run) and reports why in an operator's words; only a bad repository URL is
// a usage error.
import { access, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import type { ConnectionSettings } from '../config/connection.js';
import { describeTarget, withPg } from '../postgres/client.js';
import { describeLocation, parseRepoUrl, openLocation, type RepoLocation } from '../storage/url.js';
import { readCatalog, type Catalog } from '../repo/catalog.js';
import { StorageError } from '../storage/types.js';
import { readLastVerify, type VerifyResult } from '../repo/verify.js';
import { readRestoreTestHistory, type RestoreTestHistory } from '../repo/restore-tests.js';
import { StatusUsageError } from './types.js';
import { withRepositoryKey } from '../repo/encryption.js';
import { errorMessage } from '../engine/errors.js';
import { readPusherReport, spoolFromCommand, type PusherReport } from '../wal/spool.js';

export interface RepositorySnapshot {
  /** The URL with secrets removed. */
  url: string;
  catalog?: Catalog;
  error?: string;
  /** The last `catalog --verify` (verify/last.json); undefined: never verified. */
  lastVerify?: VerifyResult;
  /** verify/last.json exists but cannot be read. */
  lastVerifyError?: string;
  /** The newest restore-test records (restore-tests/). */
  restoreTests?: RestoreTestHistory;
}

export interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedTime: Date | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: Date | null;
  statsReset: Date | null;
}

export interface ServerFacts {
  version: string;
  inRecovery: boolean;
  archiveMode: string;
  walSegmentSize: number;
  timeline?: number;
  currentLsn: string | null;
  currentWalFile: string | null;
  archiver: ArchiverStats;
  /** The archive_command in force (names the spool of asynchronous archiving). */
  archiveCommand?: string;
  /** .ready files in pg_wal/archive_status (pg_ls_archive_statusdir; needs pg_monitor or a superuser). */
  readyCount?: number;
  /** While in recovery: why (a standby, a targeted recovery) and whether replay is paused. */
  recovery?: RecoveryFacts;
}

export interface RecoveryFacts {
  /** Replay is paused: at its target (recovery_target_action = pause) or by pg_wal_replay_pause(). */
  paused: boolean;
  /** The recovery target, e.g. "time 2026-11-24 03:00:00+00"; undefined when none is set. */
  target?: string;
  /** primary_conninfo is set: a streaming standby. */
  streaming: boolean;
  replayLsn?: string;
  replayTime?: Date;
}

export interface ServerSnapshot {
  endpoint: string;
  facts?: ServerFacts;
  error?: string;
  /** The pusher of asynchronous archiving, when archive_command names a spool. */
  pusher?: PusherSnapshot;
}

/** What the spool tells of the pusher; `error` when the spool cannot be read here. */
export interface PusherSnapshot extends Partial<PusherReport> {
  spool: string;
  error?: string;
}

/** Parse the URL (a usage error when it is malformed) without touching the store yet. */
export function repositoryLocation(url: string | undefined, env: NodeJS.ProcessEnv): RepoLocation {
  if (!url) {
    throw new StatusUsageError(
      'no backup repository to check: pass --repo URL (file:///var/backups/pg, s3://bucket/prefix, azure://container/prefix), set PGRUNBOOK_REPO, or use a profile that has one (--profile NAME)',
    );
  }
  try {
    return parseRepoUrl(url, env);
  } catch (err) {
    if (err instanceof StorageError && (err.code === 'invalid-url' || err.code === 'invalid-argument')) throw new StatusUsageError(err.message);
    throw err;
  }
}

export async function collectRepository(loc: RepoLocation, env: NodeJS.ProcessEnv = process.env): Promise<RepositorySnapshot> {
  const url = describeLocation(loc);
  // A local repository whose directory is missing is an unmounted volume or a typo, not an
  // empty repository: listing it would report "no backups" and hide the real problem.
  if (loc.kind === 'file') {
    try {
      const st = await stat(loc.root);
      if (!st.isDirectory()) return { url, error: `${loc.root} is not a directory` };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return {
        url,
        error: code === 'ENOENT' ? `directory ${loc.root} does not exist (is the backup volume mounted? is --repo right?)` : `cannot read ${loc.root}: ${errorMessage(err)}`,
      };
    }
  }
  let store;
  try {
    const inner = await openLocation(loc);
    store = await withRepositoryKey(inner, env).catch(async (err: unknown) => {
      await inner.close().catch(() => undefined);
      throw err;
    });
  } catch (err) {
    return { url, error: errorMessage(err) };
  }
  try {
    const catalog = await readCatalog(store);
    const restoreTests = await readRestoreTestHistory(store).catch((err: unknown) => ({ unreadable: [errorMessage(err)] }));
    try {
      return { url, catalog, restoreTests, lastVerify: await readLastVerify(store) };
    } catch (err) {
      return { url, catalog, restoreTests, lastVerifyError: errorMessage(err) };
    }
  } catch (err) {
    return { url, error: errorMessage(err) };
  } finally {
    await store.close().catch(() => undefined);
  }
}

interface ServerRow {
  version: string;
  in_recovery: boolean;
  archive_mode: string;
  seg_setting: string;
  seg_unit: string | null;
  current_lsn: string | null;
  current_wal_file: string | null;
  archived_count: string;
  last_archived_wal: string | null;
  last_archived_time: Date | null;
  failed_count: string;
  last_failed_wal: string | null;
  last_failed_time: Date | null;
  stats_reset: Date | null;
  replay_paused: boolean | null;
  recovery_target: string | null;
  streaming: boolean;
  replay_lsn: string | null;
  replay_time: Date | null;
  archive_command: string;
}

// pg_current_wal_lsn() fails on a standby, hence the CASE; pg_stat_archiver and these
// functions need no special privileges (pg_is_wal_replay_paused neither). primary_conninfo is
// read through pg_settings, which hides it from a role without pg_read_all_settings (instead
// of failing); a connected WAL receiver says "standby" too.
const SERVER_SQL = `
SELECT current_setting('server_version') AS version,
       pg_is_in_recovery() AS in_recovery,
       current_setting('archive_mode') AS archive_mode,
       s.setting AS seg_setting, s.unit AS seg_unit,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current_wal_file,
       a.archived_count::text AS archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count::text AS failed_count, a.last_failed_wal, a.last_failed_time, a.stats_reset,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
       CASE WHEN current_setting('recovery_target_time') <> '' THEN 'time ' || current_setting('recovery_target_time')
            WHEN current_setting('recovery_target_lsn') <> '' THEN 'LSN ' || current_setting('recovery_target_lsn')
            WHEN current_setting('recovery_target_xid') <> '' THEN 'xid ' || current_setting('recovery_target_xid')
            WHEN current_setting('recovery_target_name') <> '' THEN 'restore point ' || current_setting('recovery_target_name')
            WHEN current_setting('recovery_target') <> '' THEN current_setting('recovery_target') END AS recovery_target,
       coalesce((SELECT setting <> '' FROM pg_settings WHERE name = 'primary_conninfo'), false)
         OR EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS streaming,
       pg_last_wal_replay_lsn()::text AS replay_lsn, pg_last_xact_replay_timestamp() AS replay_time,
       current_setting('archive_command') AS archive_command
FROM pg_stat_archiver a, pg_settings s
WHERE s.name = 'wal_segment_size'`;

function segmentSizeBytes(setting: string, unit: string | null): number {
  const n = Number(setting);
  // PostgreSQL 11+ reports bytes ("B"); 10 reported 8 kB pages.
  if (unit === '8kB') return n * 8192;
  if (unit === 'kB') return n * 1024;
  if (unit === 'MB') return n * 1024 * 1024;
  return n;
}

export async function collectServer(conn: ConnectionSettings): Promise<ServerSnapshot> {
  const target = { ...conn, connectTimeoutSec: conn.connectTimeoutSec ?? 5, applicationName: 'pgrunbook status' };
  const endpoint = describeTarget(target);
  try {
    const row = await withPg(target, async (c) => {
      await c.query(`SET statement_timeout = '15s'`);
      const r = await c.query<ServerRow>(SERVER_SQL);
      let ready: number | undefined;
      try {
        const q = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'`);
        ready = Number(q.rows[0].n);
      } catch {
        ready = undefined; // not pg_monitor: the pusher's own count stands in
      }
      return { ...r.rows[0], ready };
    });
    const tl = row.current_wal_file ? parseInt(row.current_wal_file.slice(0, 8), 16) : undefined;
    return {
      endpoint,
      facts: {
        version: row.version,
        inRecovery: row.in_recovery,
        archiveMode: row.archive_mode,
        walSegmentSize: segmentSizeBytes(row.seg_setting, row.seg_unit),
        timeline: tl,
        currentLsn: row.current_lsn,
        currentWalFile: row.current_wal_file,
        archiver: {
          archivedCount: Number(row.archived_count),
          lastArchivedWal: row.last_archived_wal,
          lastArchivedTime: row.last_archived_time,
          failedCount: Number(row.failed_count),
          lastFailedWal: row.last_failed_wal,
          lastFailedTime: row.last_failed_time,
          statsReset: row.stats_reset,
        },
        recovery: row.in_recovery
          ? {
              paused: row.replay_paused === true,
              target: row.recovery_target ?? undefined,
              streaming: row.streaming,
              replayLsn: row.replay_lsn ?? undefined,
              replayTime: row.replay_time ?? undefined,
            }
          : undefined,
        archiveCommand: row.archive_command,
        readyCount: row.ready,
      },
      pusher: await collectPusher(row.archive_command),
    };
  } catch (err) {
    return { endpoint, error: errorMessage(err) };
  }
}

/** The pusher's spool, when archive_command names one (it lives on the server's machine: readable here when status runs there). */
export async function collectPusher(archiveCommand: string | undefined): Promise<PusherSnapshot | undefined> {
  const spool = archiveCommand ? spoolFromCommand(archiveCommand) : undefined;
  if (!spool) return undefined;
  try {
    await access(spool, constants.R_OK | constants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      spool,
      error: code === 'ENOENT' ? `the spool ${spool} does not exist here (status runs on another machine, or no segment was archived yet)` : `cannot read the spool ${spool} (${code}): run status as the server's OS user or root`,
    };
  }
  return readPusherReport(spool);
}
