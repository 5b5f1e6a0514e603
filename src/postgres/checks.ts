// What post-restore verification asks a server: its version and databases, whether each
// database opens, how many rows a table holds, which tables come back empty by design.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { ident } from './sql.js';

export type ServerOverview = {
  version: string;
  inRecovery: boolean;
  /** Only when the role may read it (pg_read_all_settings). */
  dataDirectory?: string;
  /** pg_current_logfile(), only when the role is in pg_monitor. */
  logfile?: string;
  /** Databases that accept connections, templates left out. */
  databases: string[];
};

export async function serverOverview(conn: ConnectionSettings): Promise<ServerOverview> {
  return withPg(conn, async (c) => {
    const v = await c.query<{ version: string; in_recovery: boolean; data_directory: string | null; logfile: string | null }>(
      `SELECT current_setting('server_version') AS version, pg_is_in_recovery() AS in_recovery,
              CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory,
              CASE WHEN pg_has_role('pg_monitor', 'member') THEN pg_current_logfile() END AS logfile`,
    );
    const row = v.rows[0];
    return { version: row.version, inRecovery: row.in_recovery, dataDirectory: row.data_directory ?? undefined, logfile: row.logfile ?? undefined, databases: await listDatabases(c) };
  });
}

async function listDatabases(c: { query<R>(sql: string): Promise<{ rows: R[] }> }): Promise<string[]> {
  const dbs = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname`);
  return dbs.rows.map((r) => r.datname);
}

/** Databases that accept connections, templates left out. */
export async function connectableDatabases(conn: ConnectionSettings): Promise<string[]> {
  return withPg(conn, (c) => listDatabases(c));
}

/** SELECT 1 and a catalog read in the connection's database: the number of relations it has. */
export async function probeDatabase(conn: ConnectionSettings): Promise<number> {
  return withPg(conn, async (c) => {
    await c.query('SELECT 1');
    const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_catalog.pg_class`);
    return Number(r.rows[0].n);
  });
}

/** "schema.table" or "table" to a quoted name; parts already in double quotes are kept as written. */
export function quoteQualified(name: string): string {
  return name
    .split('.')
    .map((part) => (part.startsWith('"') ? part : ident(part)))
    .join('.');
}

/** The exact row count of a table, or undefined when there is no such table. */
export async function countRows(conn: ConnectionSettings, table: string): Promise<number | undefined> {
  return withPg(conn, async (c) => {
    const found = await c.query<{ oid: string | null }>(`SELECT to_regclass($1)::oid AS oid`, [table]);
    if (!found.rows[0].oid) return undefined;
    const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${quoteQualified(table)}`);
    return Number(r.rows[0].n);
  });
}

/** Unlogged tables of every database as DATABASE:SCHEMA.TABLE (they come back empty from a physical restore). */
export async function unloggedTables(conn: ConnectionSettings): Promise<string[]> {
  const out: string[] = [];
  for (const db of await connectableDatabases(conn)) {
    const rows = await withPg({ ...conn, database: db }, async (c) =>
      (await c.query<{ name: string }>(`SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p') ORDER BY 1`)).rows,
    ).catch(() => [] as { name: string }[]);
    for (const r of rows) out.push(`${db}:${r.name}`);
  }
  return out;
}
