// Where the server's WAL is against its archive, for the target picker: whether the segment
// being written now (the last minutes of commits) is archived yet. Read-only.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { parseWalFileName, segmentName } from '../repo/walnames.js';

export interface ServerWalPosition {
  inRecovery: boolean;
  archiving: boolean;
  /** The segment being written (pg_walfile_name(pg_current_wal_lsn())); absent in recovery. */
  currentSegment?: string;
  currentLsn?: string;
  lastArchivedWal?: string;
  lastArchivedTime?: string;
  /** The current segment holds WAL that is not in the archive yet. */
  unarchived: boolean;
}

export async function serverWalPosition(conn: ConnectionSettings): Promise<ServerWalPosition> {
  return withPg({ ...conn, connectTimeoutSec: conn.connectTimeoutSec ?? 5 }, async (c) => {
    const r = await c.query<{ rec: boolean; mode: string; seg: string | null; off: number | null; lsn: string | null; last: string | null; at: string | null }>(
      `SELECT pg_is_in_recovery() AS rec, current_setting('archive_mode') AS mode,
              CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS seg,
              CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_walfile_name_offset(pg_current_wal_lsn())).file_offset END AS off,
              CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS lsn,
              a.last_archived_wal AS last, to_char(a.last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS at
         FROM pg_stat_archiver a`,
    );
    const row = r.rows[0];
    const seg = row.seg ?? undefined;
    const last = row.last ?? undefined;
    // The segment being written holds WAL no archive has yet; right after a switch it is empty
    // (offset 0) and only the previous one must be archived. Log and segment numbers are compared:
    // a new timeline changes the first 8 characters.
    const written = (row.off ?? 0) > 0;
    const previous = seg && !written ? previousSegment(seg) : undefined;
    const unarchived = Boolean(seg && (written || (previous !== undefined && (!last || last.slice(8) < previous.slice(8)))));
    return { inRecovery: row.rec, archiving: row.mode !== 'off', currentSegment: seg, currentLsn: row.lsn ?? undefined, lastArchivedWal: last, lastArchivedTime: row.at ?? undefined, unarchived };
  });
}

function previousSegment(name: string): string | undefined {
  const p = parseWalFileName(name);
  return p?.segno !== undefined && p.timeline !== undefined && p.segno > 0n ? segmentName(p.timeline, p.segno - 1n) : undefined;
}
