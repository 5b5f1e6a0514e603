// One definition for backup-logical (which counts these tables' rows into dump.json) and
// logical-restore (which compares them): both must mean the same tables.
import type pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { ident } from './sql.js';

// The tables whose rows pg_dump writes: ordinary tables and leaf partitions outside the system
// schemas, not temporary (other sessions' pg_temp_N), not owned by an extension (CREATE EXTENSION
// recreates those on restore; pg_dump does not dump their rows). A partitioned table holds no rows
// of its own (relkind 'p'): its rows are counted once, in its leaf partitions, never twice.
export const USER_TABLES_SQL = `
  SELECT n.nspname, c.relname
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'r'
     AND c.relpersistence <> 't'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_toast%'
     AND n.nspname NOT LIKE 'pg\\_temp\\_%'
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
   ORDER BY n.nspname, c.relname`;

/** Ordinary and partitioned tables by "schema.table" (for looking up the keys of a dump.json, old or new). */
export const ANY_TABLES_SQL = `
  SELECT n.nspname, c.relname, c.relkind::text AS relkind
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_temp\\_%'`;

type TableName = { nspname: string; relname: string };

/**
 * Count the rows of every table dump.json names (`keys`, "schema.table") in the database `conn`
 * is connected to. dump.json counts ordinary tables and leaf partitions (USER_TABLES_SQL); one
 * written before that also counted partitioned parents (all their partitions' rows): those keys
 * are looked up among partitioned tables too, and count(*) of a parent is what it recorded.
 * `extra`: user tables dump.json has no count for.
 */
export async function countTables(
  conn: ConnectionSettings,
  keys: string[],
  opts: { signal: AbortSignal; onTable: (key: string, rows: number | undefined) => void; connections?: number },
): Promise<{ extra: string[] }> {
  return withPg(conn, async (c) => {
    const tables = new Map<string, TableName>();
    for (const t of (await c.query<TableName>(USER_TABLES_SQL)).rows) tables.set(`${t.nspname}.${t.relname}`, t);
    const anyTables = new Map<string, TableName>();
    for (const t of (await c.query<TableName>(ANY_TABLES_SQL)).rows) anyTables.set(`${t.nspname}.${t.relname}`, t);
    // `connections` at a time (this one and more), each taking the next table; reported in `keys`' order.
    let next = 0;
    const counted = new Map<string, number | undefined>();
    let reported = 0;
    const report = () => {
      while (reported < keys.length && counted.has(keys[reported])) {
        const key = keys[reported++];
        opts.onTable(key, counted.get(key));
      }
    };
    const work = async (client: pg.Client) => {
      while (next < keys.length) {
        opts.signal.throwIfAborted();
        const key = keys[next++];
        const t = tables.get(key) ?? anyTables.get(key);
        counted.set(key, t ? Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${ident(t.nspname)}.${ident(t.relname)}`)).rows[0].n) : undefined);
        report();
      }
    };
    const more = Math.max(0, Math.min((opts.connections ?? 1) - 1, keys.length - 1));
    await Promise.all([work(c), ...Array.from({ length: more }, () => withPg(conn, work))]);
    const wanted = new Set(keys);
    return { extra: [...tables.keys()].filter((k) => !wanted.has(k)) };
  });
}

/**
 * Exact row counts of the user tables (USER_TABLES_SQL), by "schema.table", read by `client` in
 * whatever transaction it has open (a dump's exported snapshot). count(*) of a big table can run
 * for minutes: on abort the query is cancelled server-side, through a connection of its own to
 * `conn` (the backend is `pid`). `known`: counts already read from the dump itself (its COPY
 * data); only the tables they miss are counted here.
 */
export async function countUserTableRows(
  client: pg.Client,
  conn: ConnectionSettings,
  pid: number,
  signal: AbortSignal,
  known: Record<string, number> = {},
): Promise<Record<string, number>> {
  const tables = await client.query<{ nspname: string; relname: string }>(USER_TABLES_SQL);
  const counts: Record<string, number> = {};
  const cancel = () => {
    void withPg({ ...conn, applicationName: 'pgrunbook cancel' }, (c) => c.query('SELECT pg_cancel_backend($1)', [pid])).catch(() => {});
  };
  signal.addEventListener('abort', cancel, { once: true });
  try {
    for (const t of tables.rows) {
      signal.throwIfAborted();
      const key = `${t.nspname}.${t.relname}`;
      if (key in known) {
        counts[key] = known[key];
        continue;
      }
      const r = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${ident(t.nspname)}.${ident(t.relname)}`);
      counts[key] = Number(r.rows[0].n);
    }
  } finally {
    signal.removeEventListener('abort', cancel);
  }
  return counts;
}
