// What a form offers to pick from, as the server says it: the databases (with their size) and
// the user tables of one database (with their estimated rows and size), and what the app's
// connection test shows (version, role, archiving, system identifier). Read-only queries.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { USER_TABLES_SQL } from './user-tables.js';

export interface DatabaseListing {
  name: string;
  bytes: number;
}

/** The databases that accept connections, templates left out, largest first. */
export async function listDatabases(conn: ConnectionSettings): Promise<DatabaseListing[]> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ datname: string; bytes: string }>(
      `SELECT datname, pg_database_size(oid)::text AS bytes FROM pg_database
        WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT')
        ORDER BY pg_database_size(oid) DESC, datname`,
    );
    return r.rows.map((row) => ({ name: row.datname, bytes: Number(row.bytes) }));
  });
}

export interface TableListing {
  /** schema.table */
  name: string;
  /** The planner's estimate (reltuples); -1 when never analyzed. */
  rowsEstimate: number;
  bytes: number;
}

/** The user tables of the database `conn` names (the ones a dump holds rows of), largest first. */
export async function listTables(conn: ConnectionSettings): Promise<TableListing[]> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ nspname: string; relname: string; rows: string; bytes: string }>(
      `SELECT t.nspname, t.relname, c.reltuples::bigint::text AS rows, pg_total_relation_size(c.oid)::text AS bytes
         FROM (${USER_TABLES_SQL}) t
         JOIN pg_catalog.pg_namespace n ON n.nspname = t.nspname
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relname
        ORDER BY pg_total_relation_size(c.oid) DESC, t.nspname, t.relname`,
    );
    return r.rows.map((row) => ({ name: `${row.nspname}.${row.relname}`, rowsEstimate: Number(row.rows), bytes: Number(row.bytes) }));
  });
}

export interface ServerFacts {
  version: string;
  user: string;
  superuser: boolean;
  replication: boolean;
  inRecovery: boolean;
  archiveMode: string;
  archiveCommand: string;
  systemIdentifier: string;
  /** When this role may read it (pg_read_all_settings). */
  dataDirectory?: string;
}

/** What the connection test reports about the server and the connected role. */
export async function readServerFacts(conn: ConnectionSettings): Promise<ServerFacts> {
  return withPg(conn, async (c) => {
    const r = await c.query<{
      version: string;
      usr: string;
      superuser: boolean;
      replication: boolean;
      in_recovery: boolean;
      archive_mode: string;
      archive_command: string;
      sysid: string;
      data_directory: string | null;
    }>(
      `SELECT current_setting('server_version') AS version, current_user AS usr, r.rolsuper AS superuser, r.rolreplication AS replication,
              pg_is_in_recovery() AS in_recovery, current_setting('archive_mode') AS archive_mode,
              (SELECT reset_val FROM pg_settings WHERE name = 'archive_command') AS archive_command,
              (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
              CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory
         FROM pg_roles r WHERE r.rolname = current_user`,
    );
    const row = r.rows[0];
    return {
      version: row.version,
      user: row.usr,
      superuser: row.superuser,
      replication: row.replication,
      inRecovery: row.in_recovery,
      archiveMode: row.archive_mode,
      archiveCommand: row.archive_command ?? '',
      systemIdentifier: row.sysid,
      dataDirectory: row.data_directory ?? undefined,
    };
  });
}
