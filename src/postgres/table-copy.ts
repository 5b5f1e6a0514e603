// Copying one table's rows between databases in ONE transaction on the receiving side, as either a
// new table or a replacement of the live rows, with the checks that make it safe: the rows'
// count and an order-independent checksum before COMMIT, the partitions' counts, the foreign keys
// (when session_replication_role = replica keeps their triggers from firing), and, before any
// change, the keys other tables reference looked up among the dumped rows.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { copyRows, type CopyRowsResult } from './programs/psql.js';
import { ident, literal } from './sql.js';
import { countRowsOn, qualifiedName, type Column, type ForeignKey, type Leaf, type Trigger } from './tables.js';

const LOCK_TIMEOUT = '30s';

/** The same text for the same rows on both sides: dates, intervals, floats and bytea printed one way. */
const SESSION_SETTINGS = [`SET DateStyle = 'ISO, YMD'`, `SET IntervalStyle = 'postgres'`, `SET TimeZone = 'UTC'`, `SET extra_float_digits = 3`, `SET bytea_output = 'hex'`];

export interface Fingerprint {
  rows: number;
  sum: string;
}

/** Row count and order-independent checksum of `source` (the copied columns), as one SELECT: run with SESSION_SETTINGS. */
function fingerprintSql(source: string, columns: string[]): string {
  const row = columns.length ? `ROW(${columns.map(ident).join(', ')})::text` : `''`;
  return `SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(${row}), 1, 15))::bit(60)::bigint), 0)::text AS sum FROM ${source}`;
}

/** Row count and an order-independent checksum of the rows (sum of 60-bit prefixes of each row's md5): streams, constant memory. */
export async function tableFingerprint(conn: ConnectionSettings, schema: string, table: string, columns: string[]): Promise<Fingerprint> {
  return withPg(conn, async (c) => {
    for (const s of SESSION_SETTINGS) await c.query(s);
    const r = await c.query<{ n: string; sum: string }>(fingerprintSql(qualifiedName(schema, table), columns));
    return { rows: Number(r.rows[0].n), sum: r.rows[0].sum };
  });
}

/** Each leaf partition's row count. */
export async function leafRowCounts(conn: ConnectionSettings, leaves: Leaf[]): Promise<{ leaf: Leaf; rows: number }[]> {
  return withPg(conn, async (c) => {
    const out: { leaf: Leaf; rows: number }[] = [];
    for (const leaf of leaves) out.push({ leaf, rows: await countRowsOn(c, leaf.schema, leaf.table) });
    return out;
  });
}

/** A new table with the dumped columns, types, collations and NOT NULL: no defaults (they would share or miss the live table's sequences), no constraint or index names to clash. */
function createTableSql(schema: string, table: string, columns: Column[]): string {
  const defs = columns.map((c) => `${ident(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''}${c.notNull ? ' NOT NULL' : ''}`);
  return `CREATE TABLE ${qualifiedName(schema, table)} (${defs.join(', ')});`;
}

/**
 * Before the rows, replacing: DELETE rather than TRUNCATE, so readers keep seeing the old rows
 * until COMMIT (TRUNCATE takes an ACCESS EXCLUSIVE lock and is not MVCC-safe, and would refuse or,
 * with CASCADE, empty the referencing tables). EXCLUSIVE mode (taken on every partition too) blocks
 * other writers, whose rows would otherwise mix with the restored ones, not readers. No trigger
 * fires: the user triggers are disabled inside the transaction (a rollback undoes it), and with
 * session_replication_role = replica the foreign keys' triggers do not fire either (the keys are
 * checked explicitly before COMMIT instead).
 */
function replaceBeforeSql(schema: string, table: string, replica: boolean, triggers: Trigger[]): string[] {
  return [
    `SET LOCAL lock_timeout = '${LOCK_TIMEOUT}';`,
    `LOCK TABLE ${qualifiedName(schema, table)} IN EXCLUSIVE MODE;`,
    replica ? `SET LOCAL session_replication_role = replica;` : `SET CONSTRAINTS ALL DEFERRED;`,
    ...triggers.map((t) => `ALTER TABLE ONLY ${t.table} DISABLE TRIGGER ${ident(t.name)};`),
    `DELETE FROM ${qualifiedName(schema, table)};`,
  ];
}

/** A DO block that fails (rolling the transaction back) when rows of the foreign key's table reference keys its referenced table lacks. */
function foreignKeyCheckSql(fk: ForeignKey): string {
  const keyText = fk.childCols.length === 1 ? `c.${ident(fk.childCols[0])}::text` : `ROW(${fk.childCols.map((col) => `c.${ident(col)}`).join(', ')})::text`;
  return (
    `DO $pgrunbook$ DECLARE n bigint; sample text; BEGIN ` +
    `SELECT count(*), array_to_string((array_agg(x ORDER BY x))[1:5], ', ') INTO n, sample FROM (SELECT ${keyText} AS x FROM ${fk.child} c ` +
    `WHERE ${fk.childCols.map((col) => `c.${ident(col)} IS NOT NULL`).join(' AND ')} ` +
    `AND NOT EXISTS (SELECT 1 FROM ${fk.parent} t WHERE ${fk.parentCols.map((col, j) => `t.${ident(col)} = c.${ident(fk.childCols[j])}`).join(' AND ')})) m; ` +
    `IF n > 0 THEN RAISE EXCEPTION 'pgrunbook: foreign key % of %: % rows reference keys (%) that % does not hold, e.g. %; rolling back', ` +
    `${literal(fk.name)}, ${literal(fk.child)}, n, ${literal(fk.childCols.join(', '))}, ${literal(fk.parent)}, sample; END IF; END $pgrunbook$;`
  );
}

/** After the rows, before COMMIT: constraints checked, triggers enabled as they were, the contents proven to be the dumped ones. */
function afterSql(o: {
  replace: boolean;
  replica: boolean;
  triggers: Trigger[];
  target: Leaf;
  columns: string[];
  expected: Fingerprint;
  leafCounts: { leaf: Leaf; rows: number }[];
  fks: ForeignKey[];
}): string[] {
  const targetLabel = `${o.target.schema}.${o.target.table}`;
  return [
    ...(o.replace && !o.replica ? ['SET CONSTRAINTS ALL IMMEDIATE;'] : []),
    ...o.triggers.map((t) => `ALTER TABLE ONLY ${t.table} ENABLE ${t.enabled === 'A' ? 'ALWAYS ' : t.enabled === 'R' ? 'REPLICA ' : ''}TRIGGER ${ident(t.name)};`),
    ...SESSION_SETTINGS.map((s) => `${s.replace(/^SET /, 'SET LOCAL ')};`),
    `DO $pgrunbook$ DECLARE n bigint; s text; BEGIN ` +
      `SELECT q.n, q.sum INTO n, s FROM (${fingerprintSql(qualifiedName(o.target.schema, o.target.table), o.columns)}) q; ` +
      `IF n <> ${o.expected.rows} OR s <> ${literal(o.expected.sum)} THEN RAISE EXCEPTION 'pgrunbook: before COMMIT % held % rows (checksum %), the dump % rows (checksum %): the rows are not the dumped ones; rolling back', ` +
      `${literal(targetLabel)}, n, s, ${o.expected.rows}, ${literal(o.expected.sum)}; END IF; END $pgrunbook$;`,
    ...o.leafCounts.map(
      ({ leaf, rows }) =>
        `DO $pgrunbook$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM ${qualifiedName(leaf.schema, leaf.table)}; ` +
        `IF n <> ${rows} THEN RAISE EXCEPTION 'pgrunbook: before COMMIT partition % held % rows, the dump % rows; rolling back', ${literal(`${leaf.schema}.${leaf.table}`)}, n, ${rows}; END IF; END $pgrunbook$;`,
    ),
    ...o.fks.map((fk) => foreignKeyCheckSql(fk)),
  ];
}

export interface TableCopy {
  psql: string;
  /** The temporary database the rows come from, and the table there. */
  source: ConnectionSettings;
  from: Leaf;
  /** Production, and the table the rows go into. */
  target: ConnectionSettings;
  into: Leaf;
  columns: Column[];
  /** What the rows must add up to before COMMIT. */
  expected: Fingerprint;
  /** Replace the live rows (else: create `into`). */
  replace?: { replica: boolean; triggers: Trigger[]; fks: ForeignKey[]; leafCounts: { leaf: Leaf; rows: number }[] };
  clientEncoding: string;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  applicationName: string;
  onRows?: (rows: number) => void;
  fault?: (bytesSent: number, final: boolean) => void | Promise<void>;
}

/** Stream the rows into production in ONE transaction, checked before COMMIT; any failure rolls everything back. */
export async function copyTable(o: TableCopy): Promise<CopyRowsResult> {
  const names = o.columns.map((c) => c.name);
  const colList = names.map(ident).join(', ');
  const before = o.replace ? replaceBeforeSql(o.into.schema, o.into.table, o.replace.replica, o.replace.triggers) : [createTableSql(o.into.schema, o.into.table, o.columns)];
  const after = afterSql({
    replace: Boolean(o.replace),
    replica: o.replace?.replica ?? false,
    triggers: o.replace?.triggers ?? [],
    target: o.into,
    columns: names,
    expected: o.expected,
    leafCounts: o.replace?.leafCounts ?? [],
    fks: o.replace?.fks ?? [],
  });
  return copyRows({
    psql: o.psql,
    source: o.source,
    sourceQuery: `SELECT ${colList} FROM ${qualifiedName(o.from.schema, o.from.table)}`,
    target: o.target,
    before,
    into: `${qualifiedName(o.into.schema, o.into.table)} (${colList})`,
    after,
    clientEncoding: o.clientEncoding,
    env: o.env,
    signal: o.signal,
    onRows: o.onRows,
    fault: o.fault,
    applicationName: o.applicationName,
  });
}

export interface TablesCopy {
  psql: string;
  source: ConnectionSettings;
  target: ConnectionSettings;
  /** In parent-to-child order (rows inserted so; replacing, deleted child-to-parent). */
  tables: { from: Leaf; into: Leaf; columns: Column[]; expected: Fingerprint; triggers: Trigger[] }[];
  /** Replace the live rows of every table (else: create each `into`). */
  replace?: { replica: boolean; fks: ForeignKey[] };
  clientEncoding: string;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  applicationName: string;
  onRows?: (rows: number) => void;
  fault?: (bytesSent: number, final: boolean) => void | Promise<void>;
}

/**
 * Several tables in ONE transaction (table-restore --tables): every table locked, then (replacing)
 * the live rows deleted child-to-parent and the restored ones copied parent-to-child, so foreign
 * keys between them hold at each statement even where they are not deferrable (deferrable ones are
 * deferred to the checks before COMMIT); each table's count and checksum, and every foreign key
 * touching them (replica), proven before COMMIT.
 */
export async function copyTables(o: TablesCopy): Promise<CopyRowsResult> {
  const colList = (cs: Column[]) => cs.map((c) => ident(c.name)).join(', ');
  const r = o.replace;
  const before = r
    ? [
        `SET LOCAL lock_timeout = '${LOCK_TIMEOUT}';`,
        ...o.tables.map((t) => `LOCK TABLE ${qualifiedName(t.into.schema, t.into.table)} IN EXCLUSIVE MODE;`),
        r.replica ? `SET LOCAL session_replication_role = replica;` : `SET CONSTRAINTS ALL DEFERRED;`,
        ...o.tables.flatMap((t) => t.triggers.map((tr) => `ALTER TABLE ONLY ${tr.table} DISABLE TRIGGER ${ident(tr.name)};`)),
        ...o.tables
          .slice()
          .reverse()
          .map((t) => `DELETE FROM ${qualifiedName(t.into.schema, t.into.table)};`),
      ]
    : o.tables.map((t) => createTableSql(t.into.schema, t.into.table, t.columns));
  const seen = new Set<string>();
  const fks = (r?.fks ?? []).filter((k) => !seen.has(`${k.child} ${k.name}`) && seen.add(`${k.child} ${k.name}`));
  const after = [
    ...(r && !r.replica ? ['SET CONSTRAINTS ALL IMMEDIATE;'] : []),
    ...o.tables.flatMap((t) =>
      afterSql({ replace: false, replica: false, triggers: t.triggers, target: t.into, columns: t.columns.map((c) => c.name), expected: t.expected, leafCounts: [], fks: [] }),
    ),
    ...fks.map((fk) => foreignKeyCheckSql(fk)),
  ];
  const parts = o.tables.map((t) => ({
    source: o.source,
    sourceQuery: `SELECT ${colList(t.columns)} FROM ${qualifiedName(t.from.schema, t.from.table)}`,
    into: `${qualifiedName(t.into.schema, t.into.table)} (${colList(t.columns)})`,
  }));
  return copyRows({
    psql: o.psql,
    ...parts[0],
    target: o.target,
    before,
    after,
    more: parts.slice(1),
    clientEncoding: o.clientEncoding,
    env: o.env,
    signal: o.signal,
    onRows: o.onRows,
    fault: o.fault,
    applicationName: o.applicationName,
  });
}

/**
 * Replace mode, before anything changes: the keys `fk` references now, streamed from production
 * into a scratch schema of the temporary database (never into memory), looked up among the dumped
 * rows there. Returns how many are missing and a few of them.
 */
export async function missingReferencedKeys(o: {
  psql: string;
  prod: ConnectionSettings;
  temp: ConnectionSettings;
  fk: ForeignKey;
  scratchTable: string;
  clientEncoding: string;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  applicationName: string;
}): Promise<{ missing: number; sample: string | null }> {
  const { fk } = o;
  const keys = qualifiedName(SCRATCH_SCHEMA, o.scratchTable);
  const kcols = fk.childCols.map((_, j) => `k${j}`);
  await copyRows({
    psql: o.psql,
    source: o.prod,
    sourceQuery: `SELECT DISTINCT ${fk.childCols.map(ident).join(', ')} FROM ${fk.child} WHERE ${fk.childCols.map((col) => `${ident(col)} IS NOT NULL`).join(' AND ')}`,
    target: o.temp,
    before: [`CREATE TABLE ${keys} (${kcols.map((k, j) => `${k} ${fk.childTypes[j]}`).join(', ')});`],
    into: `${keys} (${kcols.join(', ')})`,
    clientEncoding: o.clientEncoding,
    env: o.env,
    signal: o.signal,
    applicationName: o.applicationName,
  });
  const keyText = kcols.length === 1 ? `k.${kcols[0]}::text` : `ROW(${kcols.map((k) => `k.${k}`).join(', ')})::text`;
  return withPg(o.temp, async (c) => {
    const q = await c.query<{ n: string; sample: string | null }>(
      `SELECT count(*) AS n, array_to_string((array_agg(x ORDER BY x))[1:5], ', ') AS sample
         FROM (SELECT ${keyText} AS x FROM ${keys} k
                WHERE NOT EXISTS (SELECT 1 FROM ${fk.parent} t WHERE ${fk.parentCols.map((col, j) => `t.${ident(col)} = k.${kcols[j]}`).join(' AND ')})) m`,
    );
    return { missing: Number(q.rows[0].n), sample: q.rows[0].sample };
  });
}

const SCRATCH_SCHEMA = 'pgrunbook_key_check';

/** The scratch schema for the referenced keys, empty (made afresh), in the temporary database. */
export async function resetKeyScratch(temp: ConnectionSettings): Promise<void> {
  await withPg(temp, async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS ${ident(SCRATCH_SCHEMA)} CASCADE`);
    await c.query(`CREATE SCHEMA ${ident(SCRATCH_SCHEMA)}`);
  });
}

export async function dropKeyScratch(temp: ConnectionSettings): Promise<void> {
  await withPg(temp, (c) => c.query(`DROP SCHEMA IF EXISTS ${ident(SCRATCH_SCHEMA)} CASCADE`));
}

/**
 * Rows the server has taken into the COPY of the session named `applicationName`
 * (pg_stat_progress_copy), polled until there are some (or ~10 s, or `signal`): for the test hook
 * that fails a copy truly mid-way.
 */
export async function waitForCopyProgress(conn: ConnectionSettings, applicationName: string, signal: AbortSignal): Promise<number> {
  return withPg(conn, async (c) => {
    let received = 0;
    for (let i = 0; i < 500 && !signal.aborted; i++) {
      const r = await c.query<{ n: string | null }>(
        `SELECT max(p.tuples_processed)::text AS n FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid WHERE a.application_name = $1 AND p.command = 'COPY FROM'`,
        [applicationName],
      );
      received = Number(r.rows[0].n ?? 0);
      if (received > 0) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    return received;
  });
}

/** What an operator runs by hand to put a table restored under another name back under its own. */
export function renameBackHint(schema: string, restoredAs: string, table: string): string {
  return `ALTER TABLE ${qualifiedName(schema, restoredAs)} RENAME TO ${ident(table)}`;
}

/** Plan lines: the statements of each kind of copy, for --dry-run. */
export function copyPlanLines(replace: boolean): string[] {
  return replace
    ? [
        `psql: BEGIN; SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'; LOCK TABLE ... IN EXCLUSIVE MODE; SET LOCAL session_replication_role = replica (when allowed); ALTER TABLE ONLY ... DISABLE TRIGGER <each user trigger>; DELETE FROM ...; ` +
          `COPY ... FROM STDIN (rows streamed from the temporary database's COPY ... TO STDOUT); ALTER TABLE ONLY ... ENABLE TRIGGER ...; count, checksum and foreign-key checks; COMMIT`,
      ]
    : [`psql: BEGIN; CREATE TABLE <schema>.<table>_restored_<stamp> (...); COPY ... FROM STDIN (streamed from the temporary database); count and checksum check; COMMIT`];
}
