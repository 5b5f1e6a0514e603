// A snapshot exported for pg_dump (pg_export_snapshot()), held by a read-only repeatable-read
// transaction that stays open until pg_dump has started and the row counts have been read in it:
// the dump and the counts then see one and the same database.
import type pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { connectPg } from './client.js';
import { countUserTableRows } from './user-tables.js';

export class ExportedSnapshot {
  private constructor(
    private readonly client: pg.Client,
    private readonly conn: ConnectionSettings,
    /** The name pg_dump --snapshot takes. */
    readonly name: string,
    /** The backend holding it (cancelled on abort while counting). */
    readonly pid: number,
    /** The transaction's start: when the dump is consistent. */
    readonly at: Date,
  ) {}

  static async open(conn: ConnectionSettings, applicationName: string): Promise<ExportedSnapshot> {
    const client = await connectPg({ ...conn, applicationName });
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const snap = await client.query<{ snapshot: string; pid: number; at: Date }>(`SELECT pg_export_snapshot() AS snapshot, pg_backend_pid() AS pid, now() AS at`);
      const { snapshot, pid, at } = snap.rows[0];
      return new ExportedSnapshot(client, conn, snapshot, pid, new Date(at));
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
  }

  /** Exact row counts of the user tables, in this snapshot (those in `known` are taken from it). */
  countRows(signal: AbortSignal, known?: Record<string, number>): Promise<Record<string, number>> {
    return countUserTableRows(this.client, this.conn, this.pid, signal, known);
  }

  /** Ends the transaction (the counts are read by then); the connection stays until close(). */
  async commit(): Promise<void> {
    await this.client.query('COMMIT');
  }

  async rollback(): Promise<void> {
    await this.client.query('ROLLBACK').catch(() => {});
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => {});
  }
}

/** What a snapshot-consistent dump runs, for a dry run's plan. */
export function describeSnapshotDump(dumpKey: string, metaKey: string): string {
  return (
    `BEGIN ISOLATION LEVEL REPEATABLE READ; pg_export_snapshot(); pg_dump --format=custom --compress=0 --snapshot=<that snapshot>, ` +
    `each table's rows counted in its COPY data as it streams, compressed and written to ${dumpKey}; then ${metaKey} written last`
  );
}
