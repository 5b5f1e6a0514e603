// A server in recovery, as pitr and promote ask about it and steer it: where replay is and
// whether it paused, pause and resume, promotion, clearing the recovery target afterwards,
// and getting the server's current WAL into the archive before a recovery to the latest.
import type { ConnectionSettings } from '../config/connection.js';
import { formatMicrosIso } from '../restore/target.js';
import { delay } from '../storage/retry.js';
import { withPg } from './client.js';

export type ReplayStatus = {
  inRecovery: boolean;
  replayLsn?: string;
  replayTime?: string;
  /** pg_last_xact_replay_timestamp() in microseconds since the epoch, exactly. */
  replayMicros?: string;
  /** pg_current_wal_lsn(), once out of recovery. */
  currentLsn?: string;
  pauseState?: string;
};

/** Short connect timeout: a server that went away during recovery must not hold the poll for long. */
const quick = (conn: ConnectionSettings): ConnectionSettings => ({ ...conn, connectTimeoutSec: 5 });

export async function replayStatus(conn: ConnectionSettings): Promise<ReplayStatus> {
  return withPg(quick(conn), async (c) => {
    const r = await c.query<{ in_recovery: boolean; replay: string | null; replay_micros: string | null; pause_state: string | null; current: string | null }>(
      `SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replay,
              (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000000)::bigint::text AS replay_micros,
              CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,
              CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current`,
    );
    const row = r.rows[0];
    return {
      inRecovery: row.in_recovery,
      replayLsn: row.replay ?? undefined,
      replayTime: row.replay_micros ? formatMicrosIso(BigInt(row.replay_micros)) : undefined,
      replayMicros: row.replay_micros ?? undefined,
      currentLsn: row.current ?? undefined,
      pauseState: row.pause_state ?? undefined,
    };
  });
}

export async function pauseReplay(conn: ConnectionSettings): Promise<void> {
  await withPg(conn, (c) => c.query('SELECT pg_wal_replay_pause()'));
}

export async function resumeReplay(conn: ConnectionSettings): Promise<void> {
  await withPg(conn, (c) => c.query('SELECT pg_wal_replay_resume()'));
}

/** pg_promote(), waiting for it; then the LSN the server writes at, read-write. */
export async function promoteServer(conn: ConnectionSettings): Promise<{ currentLsn?: string }> {
  await withPg(conn, async (c) => {
    await c.query(`SELECT pg_promote(false)`);
    // A server paused in recovery notices the promotion only when its pause times out, once a
    // second (recoveryPausesHere sleeps on a condition variable the promote signal does not wake):
    // ending the pause wakes it now. Either way it first replays what WAL it can still read, as
    // promotion always does, and the pause was at the verified target (the caller's check). An
    // error says the promotion was already noticed (or is over): nothing to wake.
    await c.query(`SELECT pg_wal_replay_resume()`).catch(() => undefined);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const r = await c.query<{ rec: boolean }>(`SELECT pg_is_in_recovery() AS rec`);
      if (!r.rows[0].rec) break;
      if (Date.now() > deadline) throw new Error('the server did not finish promoting within 120 s of pg_promote(); check the server log');
      await delay(25);
    }
  });
  const s = await replayStatus(conn);
  if (s.inRecovery) throw new Error('the server is still in recovery after pg_promote(); check the server log');
  return { currentLsn: s.currentLsn };
}

const RECOVERY_TARGET_SETTINGS = ['recovery_target_time', 'recovery_target_lsn', 'recovery_target_xid', 'recovery_target_name', 'recovery_target_action', 'recovery_target_timeline'];

/** ALTER SYSTEM RESET of every recovery_target_* setting: a later restart into recovery must not stop there again. */
export async function resetRecoveryTargets(conn: ConnectionSettings): Promise<void> {
  await withPg(conn, async (c) => {
    for (const k of RECOVERY_TARGET_SETTINGS) await c.query(`ALTER SYSTEM RESET ${k}`);
  });
}

/** pg_switch_wal() on an archiving primary: the name of the segment it closed, or undefined (in recovery, or archive_mode off). */
export async function switchWalIfArchiving(conn: ConnectionSettings): Promise<string | undefined> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ rec: boolean; mode: string }>(`SELECT pg_is_in_recovery() AS rec, current_setting('archive_mode') AS mode`);
    if (r.rows[0].rec || r.rows[0].mode === 'off') return undefined;
    return switchWal(c);
  });
}

/** pg_switch_wal(): the name of the segment it closed. */
export async function switchWalNow(conn: ConnectionSettings): Promise<string> {
  return withPg(conn, (c) => switchWal(c));
}

async function switchWal(c: { query<R>(sql: string): Promise<{ rows: R[] }> }): Promise<string> {
  const w = await c.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
  return w.rows[0].name;
}

export type ArchiverStatus = { lastArchived: string | null; lastFailed: string | null };

export async function archiverStatus(conn: ConnectionSettings): Promise<ArchiverStatus> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ last: string | null; failed: string | null }>(`SELECT last_archived_wal AS last, last_failed_wal AS failed FROM pg_stat_archiver`);
    return { lastArchived: r.rows[0].last, lastFailed: r.rows[0].failed };
  });
}

/**
 * Force the current WAL segment into the archive and wait for it (up to `timeoutMs`): a recovery
 * to the latest then includes the last commits. Undefined when the server does not archive.
 */
export async function archiveCurrentWal(conn: ConnectionSettings, opts: { timeoutMs: number; signal: AbortSignal }): Promise<{ segment: string; archived: boolean } | undefined> {
  const segment = await switchWalIfArchiving(quick(conn)).catch(() => undefined);
  if (!segment) return undefined;
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const last = await archiverStatus(quick(conn)).then((s) => s.lastArchived).catch(() => null);
    // Compare log and segment number only: a timeline switch changes the first 8 characters.
    if (last && last.slice(8) >= segment.slice(8)) return { segment, archived: true };
    if (Date.now() > deadline) return { segment, archived: false };
    await delay(250, opts.signal);
  }
}
