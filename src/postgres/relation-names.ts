// Names of what the WAL calls by number, from a live cluster's catalog: databases by oid,
// relations by relfilenode (pg_filenode_relation) or by oid, per database.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';

export interface RelationName {
  oid: string;
  schema: string;
  name: string;
  /** pg_class.relkind: r table, p partitioned, m materialized view, i index, t toast, S sequence. */
  kind: string;
}

/** Every database's name by oid. */
export async function databasesByOid(conn: ConnectionSettings): Promise<Map<string, string>> {
  return withPg(conn, async (c) => new Map((await c.query<{ datname: string; oid: string }>(`SELECT datname, oid::text AS oid FROM pg_database`)).rows.map((r) => [r.oid, r.datname])));
}

/**
 * In database `database` (a connection to it): the relations now stored in `files`
 * (tablespace oid, relfilenode) and the relations with the oids `oids`.
 */
export async function relationNames(
  conn: ConnectionSettings,
  files: { tablespace: string; relfilenode: string }[],
  oids: string[],
): Promise<{ byFile: Map<string, RelationName>; byOid: Map<string, RelationName> }> {
  return withPg(conn, async (c) => {
    const byFile = new Map<string, RelationName>();
    const byOid = new Map<string, RelationName>();
    const cols = `c.oid::text AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind`;
    for (const f of files) {
      // The default tablespace is 0 to pg_filenode_relation, whatever its oid (1663).
      const spc = f.tablespace === '1663' ? '0' : f.tablespace;
      const { rows } = await c.query<RelationName>(
        `SELECT ${cols} FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = pg_filenode_relation($1::oid, $2::oid)`,
        [spc, f.relfilenode],
      );
      if (rows[0]) byFile.set(`${f.tablespace}/${f.relfilenode}`, rows[0]);
    }
    if (oids.length) {
      const { rows } = await c.query<RelationName>(`SELECT ${cols} FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1::oid[])`, [oids]);
      for (const r of rows) byOid.set(r.oid, r);
    }
    return { byFile, byOid };
  });
}
