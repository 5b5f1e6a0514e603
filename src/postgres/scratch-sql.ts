// What a scratch recovery asks production (read-only): the role initdb made, which owns
// everything and exists on the scratch copy too.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { ident } from './sql.js';
import { USER_TABLES_SQL } from './user-tables.js';

/** The bootstrap superuser's name (the role with oid 10). */
export async function bootstrapSuperuser(conn: ConnectionSettings): Promise<string> {
  return withPg({ ...conn, connectTimeoutSec: 10 }, async (c) => {
    const r = await c.query<{ name: string }>('SELECT rolname AS name FROM pg_roles WHERE oid = 10');
    return r.rows[0].name;
  });
}

/** Exact row counts of the user tables (the tables dump.json would count), by "schema.table". */
export async function userTableCounts(conn: ConnectionSettings, signal: AbortSignal): Promise<Record<string, number>> {
  return withPg(conn, async (c) => {
    const out: Record<string, number> = {};
    for (const t of (await c.query<{ nspname: string; relname: string }>(USER_TABLES_SQL)).rows) {
      signal.throwIfAborted();
      out[`${t.nspname}.${t.relname}`] = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${ident(t.nspname)}.${ident(t.relname)}`)).rows[0].n);
    }
    return out;
  });
}

/** The owner of the database `conn` is connected to. */
export async function currentDatabaseOwner(conn: ConnectionSettings): Promise<string> {
  return withPg(conn, async (c) => (await c.query<{ o: string }>('SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = current_database()')).rows[0].o);
}
