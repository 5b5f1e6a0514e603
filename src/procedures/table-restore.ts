// Table restore: one table from a dump made by backup-logical, brought back into production
// through a temporary database. The dump is downloaded (SHA-256 checked) and its table of
// contents must list the table; the schema (pre-data) and that table's rows (a partitioned
// table's: its leaf partitions') are restored into `pgrunbook_tmp_<run>`; the counts are shown
// (live, restored, dump.json); in replace mode every key other tables reference must be among the
// dumped rows; the rows are streamed into production with COPY, either as a new table
// `<name>_restored_<stamp>` or replacing the live rows in ONE transaction after a typed
// confirmation, with no trigger firing (user triggers disabled inside the transaction,
// session_replication_role = replica when allowed, foreign keys then checked explicitly); the
// contents (row count and an order-independent checksum) are checked inside the transaction,
// before COMMIT, and again after it; the temporary database is dropped.
//
// Cleanup: the engine has no "finally" step and stops at the first failed step, so every step
// after the temporary database exists drops it itself when it fails, is interrupted, or (replace
// mode) is refused; the last step drops it after success. A resumed run restores it again when a
// later step needs it.
import os from 'node:os';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Procedure, StepContext } from '../engine/types.js';
import { ConfirmationRefusedError } from '../engine/types.js';
import { errorMessage, shellQuote } from '../engine/runner.js';
import { formatBytes } from '../engine/format.js';
import { describeConnection, type ConnectionSettings } from '../config/connection.js';
import { withPg } from '../postgres/client.js';
import { findPgBinary } from '../postgres/binaries.js';
import {
  checkFreeSpace,
  copyRows,
  findTableInToc,
  freeSpaceMessage,
  qualified,
  quoteIdent,
  quoteLiteral,
  readToc,
  runPgRestore,
  tablesInToc,
} from '../postgres/pgrestore.js';
import { DUMP_PREFIX } from '../storage/catalog.js';
import { openRepository, safeName } from '../storage/repository.js';
import {
  checkWorkDir,
  chooseDump,
  createDatabaseClauses,
  databaseExists,
  describeDump,
  dropDatabase,
  dropWorkFile,
  ensureDumpFile,
  findPgRestore,
  fitName,
  identTooLong,
  maintenanceConnection,
  nameStamp,
  type ChosenDump,
} from './logical-restore.js';
import { services } from './services.js';

/** PGRUNBOOK_FAULT=table-restore:copy makes the copy fail after its first chunk of rows (tests). */
export const FAULT_ENV = 'PGRUNBOOK_FAULT';
const FAULT_COPY = 'table-restore:copy';
const LOCK_TIMEOUT = '30s';

type Mode = 'new-table' | 'replace';

interface Column {
  name: string;
  type: string;
  notNull: boolean;
  generated: boolean;
  collation: string | null;
}

interface Plan {
  dump: ChosenDump;
  database: string;
  schema: string;
  table: string;
  mode: Mode;
  /** new-table mode: the table created in production. */
  newTable?: string;
  tempDatabase: string;
  live: { exists: boolean; rows?: number };
  /** dump.json's count for the table, when it has one. */
  dumpRows?: number;
  pgRestore: string;
  psql: string;
  workDir: string;
  encoding: string;
  /** Replace mode: the copy runs with session_replication_role = replica (no trigger fires, foreign keys checked explicitly). */
  replica?: boolean;
  /** dump.json's counts of the table's leaf partitions, when dump.json has none for the partitioned table itself. */
  dumpCounts?: Record<string, number>;
}

interface Leaf {
  schema: string;
  table: string;
}

interface Restored {
  rows: number;
  columns: Column[];
  /** A partitioned table: its rows are in these leaf partitions (the dump's). */
  partitioned?: boolean;
  leaves?: Leaf[];
}

/** A foreign key that touches the table (or its partitions), from either side. */
interface ForeignKey {
  name: string;
  /** The referencing table, schema-qualified and quoted. */
  child: string;
  childOid: string;
  childCols: string[];
  childTypes: string[];
  parent: string;
  parentOid: string;
  parentCols: string[];
  onDelete: string;
}

/** "schema.table", "table" (schema public) or quoted parts ("My Schema"."Odd.Name"). */
export function parseTableName(text: string): { schema: string; table: string } | { error: string } {
  const parts: string[] = [];
  let i = 0;
  const s = text.trim();
  while (i <= s.length) {
    if (s[i] === '"') {
      let part = '';
      i++;
      for (;;) {
        if (i >= s.length) return { error: `--table: unterminated quote in "${text}"` };
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += s[i++];
      }
      parts.push(part);
    } else {
      const dot = s.indexOf('.', i);
      const end = dot < 0 ? s.length : dot;
      parts.push(s.slice(i, end));
      i = end;
    }
    if (i >= s.length) break;
    if (s[i] !== '.') return { error: `--table: unexpected "${s[i]}" in "${text}"; write SCHEMA.TABLE, quoting names with dots as "my.schema"."my.table"` };
    i++;
  }
  if (parts.length === 1) parts.unshift('public');
  if (parts.length !== 2 || parts.some((p) => p === '')) return { error: `--table: expected SCHEMA.TABLE or TABLE, got "${text}"` };
  return { schema: parts[0], table: parts[1] };
}

function tableParam(ctx: StepContext): { schema: string; table: string } {
  const t = parseTableName(String(ctx.params.table));
  if ('error' in t) throw new Error(t.error);
  return t;
}

function label(schema: string, table: string): string {
  return `${schema}.${table}`;
}

function plan(ctx: StepContext): Plan {
  const p = ctx.state.plan as Plan | undefined;
  if (!p) throw new Error('the preflight step has not run in this run; start the table restore again');
  return p;
}

function modeParam(ctx: StepContext): Mode {
  return (ctx.params.mode as Mode | undefined) ?? 'new-table';
}

function targetTable(p: Plan): { schema: string; table: string } {
  return { schema: p.schema, table: p.mode === 'replace' ? p.table : p.newTable! };
}

/** pgrunbook_tmp_<the run id's time and random part>: one per run, recognisable, never an existing name. */
export function tempDatabaseName(runId: string): string {
  const tail = runId.replace(/^table-restore-/, '').toLowerCase().replace(/[^a-z0-9]+/g, '_');
  return fitName('pgrunbook_tmp_', tail).slice(0, 63);
}

/** Names close to `wanted`, best first: for "did you mean". */
export function similarNames(wanted: string, candidates: string[], max = 8): string[] {
  const w = wanted.toLowerCase();
  const scored = candidates.map((c) => {
    const l = c.toLowerCase();
    const bare = l.includes('.') ? l.slice(l.indexOf('.') + 1) : l;
    const wBare = w.includes('.') ? w.slice(w.indexOf('.') + 1) : w;
    let score = Math.min(editDistance(w, l), editDistance(wBare, bare));
    if (bare.includes(wBare) || wBare.includes(bare)) score = Math.min(score, 1);
    return { c, score };
  });
  const wBare = w.includes('.') ? w.slice(w.indexOf('.') + 1) : w;
  const limit = Math.max(2, Math.floor(wBare.length / 3));
  return scored
    .filter((s) => s.score <= limit)
    .sort((a, b) => a.score - b.score || a.c.localeCompare(b.c))
    .slice(0, max)
    .map((s) => s.c);
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

function notInDumpMessage(schema: string, table: string, p: { dump: ChosenDump }, candidates: string[]): string {
  const similar = similarNames(label(schema, table), candidates);
  return (
    `table ${label(schema, table)} is not in ${describeDump(p.dump)}` +
    (similar.length ? `; similar tables in the dump: ${similar.join(', ')}` : candidates.length ? `; it holds ${candidates.length} tables, none with a similar name` : '; the dump holds no tables') +
    `. Check --table (SCHEMA.TABLE; default schema public) and --dump`
  );
}

const SESSION_SETTINGS = [
  `SET DateStyle = 'ISO, YMD'`,
  `SET IntervalStyle = 'postgres'`,
  `SET TimeZone = 'UTC'`,
  `SET extra_float_digits = 3`,
  `SET bytea_output = 'hex'`,
];

/** Row count and an order-independent checksum of the rows (sum of 60-bit prefixes of each row's md5): streams, constant memory. */
async function tableFingerprint(conn: ConnectionSettings, schema: string, table: string, columns: string[]): Promise<{ rows: number; sum: string }> {
  return withPg(conn, async (c) => {
    for (const s of SESSION_SETTINGS) await c.query(s);
    const r = await c.query<{ n: string; sum: string }>(fingerprintSql(qualified(schema, table), columns));
    return { rows: Number(r.rows[0].n), sum: r.rows[0].sum };
  });
}

async function liveTable(c: { query: (sql: string, params?: unknown[]) => Promise<{ rows: any[] }> }, schema: string, table: string): Promise<{ oid: string; relkind: string } | undefined> {
  const r = await c.query(
    `SELECT c.oid::text AS oid, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, table],
  );
  return r.rows[0];
}

type Queryable = { query: (sql: string, params?: unknown[]) => Promise<{ rows: any[] }> };

/** The table and every partition under it (pg_partition_tree), as oids. */
async function familyOids(c: Queryable, oid: string): Promise<string[]> {
  // pg_partition_tree returns no rows for a table that is not partitioned.
  const tree = (await c.query(`SELECT relid::oid::text AS oid FROM pg_partition_tree($1::oid::regclass)`, [oid])).rows.map((r: { oid: string }) => r.oid);
  return tree.length ? tree : [oid];
}

const QNAME = (alias: string) => `quote_ident(${alias}n.nspname) || '.' || quote_ident(${alias}c.relname)`;

/** Foreign keys (the top-level constraint, not its per-partition clones) that reference or are declared on any of `oids`. */
async function foreignKeys(c: Queryable, oids: string[]): Promise<ForeignKey[]> {
  const cols = (rel: string, key: string, what: string) =>
    `ARRAY(SELECT ${what} FROM unnest(k.${key}) WITH ORDINALITY u(n, i) JOIN pg_attribute a ON a.attrelid = k.${rel} AND a.attnum = u.n ORDER BY u.i)::text[]`;
  const r = await c.query(
    `SELECT k.conname AS name, k.conrelid::text AS child_oid, k.confrelid::text AS parent_oid, k.confdeltype::text AS on_delete,
            ${QNAME('c')} AS child, ${QNAME('p')} AS parent,
            ${cols('conrelid', 'conkey', 'a.attname')} AS child_cols,
            ${cols('conrelid', 'conkey', 'format_type(a.atttypid, a.atttypmod)')} AS child_types,
            ${cols('confrelid', 'confkey', 'a.attname')} AS parent_cols
       FROM pg_constraint k
       JOIN pg_class cc ON cc.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
       JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE k.contype = 'f' AND k.conparentid = 0 AND (k.confrelid::text = ANY($1::text[]) OR k.conrelid::text = ANY($1::text[]))
      ORDER BY k.conname`,
    [oids],
  );
  return r.rows.map((x: any) => ({
    name: x.name,
    child: x.child,
    childOid: x.child_oid,
    childCols: x.child_cols,
    childTypes: x.child_types,
    parent: x.parent,
    parentOid: x.parent_oid,
    parentCols: x.parent_cols,
    onDelete: x.on_delete,
  }));
}

interface Trigger {
  /** The table it is on, schema-qualified and quoted. */
  table: string;
  name: string;
  /** pg_trigger.tgenabled: O (origin and local), A (always), R (replica). */
  enabled: string;
}

/** Enabled user triggers (not the internal ones that implement foreign keys) on any of `oids`. */
async function userTriggers(c: Queryable, oids: string[]): Promise<Trigger[]> {
  const r = await c.query(
    `SELECT ${QNAME('')} AS table, t.tgname AS name, t.tgenabled::text AS enabled
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE t.tgrelid::text = ANY($1::text[]) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
      ORDER BY n.nspname, c.relname, t.tgname`,
    [oids],
  );
  return r.rows as Trigger[];
}

/** The triggers to disable for the copy: all of them, or with session_replication_role = replica only those that fire in it (ALWAYS, REPLICA). */
function triggersToDisable(triggers: Trigger[], replica: boolean): Trigger[] {
  return replica ? triggers.filter((t) => t.enabled === 'A' || t.enabled === 'R') : triggers;
}

/** Row count and order-independent checksum of `source` (the copied columns), as one SELECT: run with SESSION_SETTINGS. */
function fingerprintSql(source: string, columns: string[]): string {
  const row = columns.length ? `ROW(${columns.map(quoteIdent).join(', ')})::text` : `''`;
  return `SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(${row}), 1, 15))::bit(60)::bigint), 0)::text AS sum FROM ${source}`;
}

export const tableRestoreProcedure: Procedure = {
  id: 'table-restore',
  title: 'Restore one table from a dump',
  summary: 'One table from a dump, through a temporary database, into production as a new table or (typed confirmation) replacing its rows in one transaction; counts and contents verified; the temporary database dropped.',
  group: 'restore',
  params: [
    { name: 'database', type: 'string', required: true, description: 'the production database the table belongs to (its dumps are searched)', example: 'app' },
    { name: 'table', type: 'string', required: true, description: 'the table, as SCHEMA.TABLE (default schema public); quote names with dots: "my.schema"."t"', example: 'public.orders' },
    { name: 'dump', type: 'string', description: 'the dump id to restore from (default: the newest complete one; see pgrunbook catalog)', example: '20261124T031500Z' },
    {
      name: 'mode',
      type: 'choice',
      choices: ['new-table', 'replace'],
      default: 'new-table',
      description:
        'new-table: create <table>_restored_<YYYYMMDDHHMM> beside the live table (nothing existing changes); replace: delete the live rows and insert the dumped ones in one transaction (typed confirmation: DATABASE.SCHEMA.TABLE)',
    },
    { name: 'newTable', type: 'string', description: 'new-table mode: the name of the table to create (default <table>_restored_<YYYYMMDDHHMM>); it must not exist', example: 'orders_before_incident' },
    { name: 'workDir', type: 'string', description: 'directory for the temporary copy of the dump (default: the system temp directory); deleted afterwards', example: '/var/tmp' },
  ],
  validate(params) {
    const errors: string[] = [];
    if (params.table !== undefined) {
      const t = parseTableName(String(params.table));
      if ('error' in t) errors.push(t.error);
      else if (identTooLong(t.table) || identTooLong(t.schema)) errors.push(`--table: names are at most 63 bytes in PostgreSQL`);
    }
    if (params.newTable !== undefined && params.mode === 'replace') errors.push('--new-table only applies to --mode new-table');
    if (params.newTable !== undefined && identTooLong(String(params.newTable))) errors.push(`--new-table: "${String(params.newTable)}" is longer than 63 bytes, which PostgreSQL would cut short`);
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Choose the dump and check the table',
      kind: 'check',
      describe: (ctx) =>
        `Before anything is created: a complete dump of ${String(ctx.params.database)} that lists ${String(ctx.params.table)}, the server answers, ` +
        `the live table as it is now, the names to create are free, and the temporary copy of the dump fits.`,
      plan: (ctx) => [
        `list ${DUMP_PREFIX}${safeName(String(ctx.params.database))}/ in the repository; pick ${ctx.params.dump ? `dump ${String(ctx.params.dump)}` : 'the newest dump with a dump.json'}`,
        `connect to ${describeConnection(services(ctx).connection)}; count the live rows of ${String(ctx.params.table)} in ${String(ctx.params.database)} (it may not exist any more)`,
        modeParam(ctx) === 'replace'
          ? 'list its triggers and the foreign keys that reference it; refuse if triggers could not be disabled, or (without the right to set session_replication_role) other tables reference it with ON DELETE CASCADE / SET NULL / SET DEFAULT'
          : `refuse if the new table's name is taken`,
      ],
      run: preflight,
    },
    {
      id: 'download',
      title: 'Download the dump and find the table in it',
      kind: 'action',
      describe: (ctx) => `Copying the dump into a private temporary directory under ${String(ctx.params.workDir ?? os.tmpdir())} (SHA-256 checked), then reading its table of contents (pg_restore --list): the table must be there.`,
      plan: () => ['download the dump (SHA-256 and size checked against dump.json); pg_restore --list it; refuse if the table or its data is not listed'],
      async run(ctx) {
        const p = plan(ctx);
        try {
          const wf = await ensureDumpFile(ctx, p.dump, p.workDir, { progress: true });
          const toc = await readToc(p.pgRestore, wf.file, { env: services(ctx).env, signal: ctx.signal });
          const found = findTableInToc(toc, p.schema, p.table);
          if (!found.table) throw new Error(notInDumpMessage(p.schema, p.table, p, tablesInToc(toc)));
          if (found.data) ctx.log(`found ${label(p.schema, p.table)} in the dump's table of contents (entries ${found.table.id} and ${found.data.id})`);
          else ctx.log(`found ${label(p.schema, p.table)} in the dump's table of contents (entry ${found.table.id}), without rows of its own: if it is partitioned, its partitions' rows are restored`);
        } catch (err) {
          await dropWorkFile(ctx);
          throw err;
        }
      },
    },
    {
      id: 'restore-temp',
      title: 'Restore the table into a temporary database',
      kind: 'action',
      describe: (ctx) => {
        const p = ctx.state.plan as Plan | undefined;
        return `CREATE DATABASE ${p?.tempDatabase ?? 'pgrunbook_tmp_<run>'}; pg_restore the dump's schema (pre-data: types, tables, sequences) and the rows of ${String(ctx.params.table)} into it. It is dropped at the end, also when a step fails.`;
      },
      plan: (ctx) => [
        `CREATE DATABASE ${tempDatabaseName(ctx.runId)} TEMPLATE template0 (encoding and locale of ${String(ctx.params.database)})`,
        `pg_restore --section=pre-data --no-owner --no-privileges into it; pg_restore --section=data --use-list=<the table's TABLE DATA entry, or its leaf partitions'>; then delete the downloaded copy`,
      ],
      async run(ctx) {
        await withTempCleanup(ctx, 'restoring into it failed', async () => {
          await ensureTempRestored(ctx);
        });
        await dropWorkFile(ctx);
      },
    },
    {
      id: 'compare',
      title: 'Compare the row counts',
      kind: 'verify',
      describe: () =>
        'The live table\'s rows now, the rows restored from the dump, and the count dump.json recorded: the restored count must equal dump.json\'s. ' +
        'Replace mode: the columns and partitions must match, and every key that other tables reference now must be among the dumped rows (else nothing is changed).',
      plan: (ctx) => [
        'SELECT count(*) of the live table and of the restored one; compare with dump.json',
        ...(modeParam(ctx) === 'replace' ? ['for each foreign key referencing the table: stream the referenced keys from production into the temporary database and look for keys the dump lacks'] : []),
      ],
      async run(ctx) {
        await withTempCleanup(ctx, 'the comparison failed', async () => {
          const ok = await compare(ctx);
          if (!ok) await cleanupTemp(ctx, 'nothing will be copied after a failed check');
        });
      },
    },
    {
      id: 'copy',
      title: 'Copy the rows into production',
      kind: 'action',
      describe: (ctx) => {
        const p = ctx.state.plan as Plan | undefined;
        if (!p) return 'Copying the restored rows into production.';
        return p.mode === 'replace'
          ? `After a typed confirmation (${confirmText(p)}): in ONE transaction on ${p.database}, LOCK TABLE ${label(p.schema, p.table)} IN EXCLUSIVE MODE (reads go on; all its partitions), ` +
              `${p.replica ? 'SET LOCAL session_replication_role = replica, ' : ''}disable its triggers, DELETE its rows, COPY the restored rows in, enable the triggers, ` +
              `check the count and checksum${p.replica ? ' and the foreign keys' : ''}, COMMIT. No trigger fires; a failure anywhere rolls back: the live rows stay as they are.`
          : `CREATE TABLE ${label(p.schema, p.newTable!)} (the dumped columns and types, NOT NULL; no defaults, indexes or constraints) and COPY the restored rows into it, in one transaction.`;
      },
      plan: (ctx) =>
        modeParam(ctx) === 'replace'
          ? [
              `ask to confirm: delete all rows of ${String(ctx.params.table)} in ${String(ctx.params.database)} and insert the rows from the dump (type "${String(ctx.params.database)}.${(() => {
                const t = parseTableName(String(ctx.params.table));
                return 'error' in t ? String(ctx.params.table) : label(t.schema, t.table);
              })()}" or pass --confirm)`,
              `psql: BEGIN; SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'; LOCK TABLE ... IN EXCLUSIVE MODE; SET LOCAL session_replication_role = replica (when allowed); ALTER TABLE ONLY ... DISABLE TRIGGER <each user trigger>; DELETE FROM ...; ` +
                `COPY ... FROM STDIN (rows streamed from the temporary database's COPY ... TO STDOUT); ALTER TABLE ONLY ... ENABLE TRIGGER ...; count, checksum and foreign-key checks; COMMIT`,
            ]
          : [`psql: BEGIN; CREATE TABLE <schema>.<table>_restored_<stamp> (...); COPY ... FROM STDIN (streamed from the temporary database); count and checksum check; COMMIT`],
      async run(ctx) {
        await withTempCleanup(ctx, 'the copy did not complete', () => copyIntoProduction(ctx));
      },
    },
    {
      id: 'verify',
      title: 'Verify the copy',
      kind: 'verify',
      describe: () => 'Counting the rows in production and comparing a checksum of every row (order-independent) with the restored table.',
      plan: () => ['count(*) and sum of per-row md5 prefixes of the copied columns, in production and in the temporary database; they must be equal'],
      async run(ctx) {
        await withTempCleanup(ctx, 'the verification failed', async () => {
          const ok = await verifyCopy(ctx);
          if (!ok) await cleanupTemp(ctx, 'the verification failed; the temporary database is not needed to look into it');
        });
      },
    },
    {
      id: 'cleanup',
      title: 'Drop the temporary database',
      kind: 'action',
      describe: (ctx) => `DROP DATABASE ${(ctx.state.plan as Plan | undefined)?.tempDatabase ?? 'pgrunbook_tmp_<run>'} WITH (FORCE), and delete the downloaded dump if it is still there.`,
      plan: (ctx) => [`DROP DATABASE ${tempDatabaseName(ctx.runId)} WITH (FORCE)`],
      async run(ctx) {
        const p = plan(ctx);
        await cleanupTemp(ctx, 'the table restore is done');
        const gone = await withPg(await maintenanceConnection(services(ctx).connection, [p.tempDatabase]), async (c) => !(await databaseExists(c, p.tempDatabase)));
        ctx.check('temporary database dropped', gone, gone ? `${p.tempDatabase} is gone` : `${p.tempDatabase} still exists: DROP DATABASE ${quoteIdent(p.tempDatabase)} WITH (FORCE);`);
      },
    },
  ],
};

function confirmText(p: Plan): string {
  return `${p.database}.${p.schema}.${p.table}`;
}

// ---------------------------------------------------------------------------------------------

async function preflight(ctx: StepContext): Promise<void> {
  const svc = services(ctx);
  const database = String(ctx.params.database);
  const { schema, table } = tableParam(ctx);
  const mode = modeParam(ctx);
  const problems: string[] = [];
  if (!svc.repo) await openRepository(undefined, svc.env);

  let chosen: ChosenDump | undefined;
  let dumpRows: number | undefined;
  /** Not in dump.json's counts: refused below unless the live table is partitioned (its rows are counted in its partitions). */
  let notCounted: { message: string; counts: Record<string, number> } | undefined;
  const repo = await openRepository(svc.repo, svc.env);
  try {
    const { chosen: c, meta } = await chooseDump(repo, database, ctx.params.dump as string | undefined);
    chosen = c;
    const key = label(schema, table);
    // dump.json lists every table whose rows were dumped: a missing one is refused before downloading anything.
    if (meta.rowCounts && !(key in meta.rowCounts)) {
      notCounted = { message: notInDumpMessage(schema, table, { dump: c }, Object.keys(meta.rowCounts)), counts: meta.rowCounts };
    } else {
      dumpRows = meta.rowCounts?.[key];
      ctx.check('dump', true, `${describeDump(c)}${dumpRows !== undefined ? `; ${key}: ${dumpRows} rows in dump.json` : ''}`);
    }
  } catch (err) {
    ctx.check('dump', false, errorMessage(err));
    problems.push(errorMessage(err));
  } finally {
    await repo.close().catch(() => {});
  }

  const stamp = nameStamp();
  const tempDatabase = tempDatabaseName(ctx.runId);
  const newTable = mode === 'new-table' ? ((ctx.params.newTable as string | undefined) ?? fitName(table, `_restored_${stamp}`)) : undefined;
  const conn = svc.connection;
  let server: { versionNum: number; version: string; superuser: boolean; createdb: boolean; user: string; names: Set<string> } | undefined;
  try {
    server = await withPg(conn, async (c) => {
      const v = await c.query<{ num: string; version: string; superuser: boolean; createdb: boolean; user: string }>(
        `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version, r.rolsuper AS superuser, r.rolcreatedb AS createdb, current_user AS user
           FROM pg_roles r WHERE r.rolname = current_user`,
      );
      const dbs = await c.query<{ datname: string }>(`SELECT datname FROM pg_database`);
      return { versionNum: Number(v.rows[0].num), version: v.rows[0].version, superuser: v.rows[0].superuser, createdb: v.rows[0].createdb, user: v.rows[0].user, names: new Set(dbs.rows.map((r) => r.datname)) };
    });
    ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${server.version}`);
  } catch (err) {
    ctx.check('server reachable', false, errorMessage(err));
    problems.push(errorMessage(err));
  }

  let live: Plan['live'] = { exists: false };
  let encoding = 'UTF8';
  let replica = false;
  let dumpCounts: Record<string, number> | undefined;
  let livePartitioned = false;
  if (server) {
    if (!server.superuser && !server.createdb) {
      const message = `user "${server.user}" may not create the temporary database (needs CREATEDB or superuser): ALTER ROLE ${quoteIdent(server.user)} CREATEDB, or connect as another user`;
      ctx.check('may create databases', false, message);
      problems.push(message);
    }
    if (server.names.has(tempDatabase)) {
      const message = `database "${tempDatabase}" already exists; it is not ours to reuse. Drop it if it is left over from an old run`;
      ctx.check('temporary database name free', false, message);
      problems.push(message);
    }
    if (!server.names.has(database)) {
      const message = `database "${database}" does not exist on ${describeConnection(conn)}: a table is restored into its database. To bring back a whole database use: pgrunbook --procedure logical-restore --database ${database}`;
      ctx.check('database', false, message);
      problems.push(message);
    } else {
      try {
        const info = await withPg({ ...conn, database }, async (c) => {
          const enc = (await c.query<{ e: string }>(`SELECT pg_encoding_to_char(encoding) AS e FROM pg_database WHERE datname = current_database()`)).rows[0].e;
          const schemaExists = (await c.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [schema])).rows.length > 0;
          const rel = await liveTable(c, schema, table);
          let rows: number | undefined;
          let refs: ForeignKey[] = [];
          let triggers: Trigger[] = [];
          let mayAlter = false;
          let mayReplica = false;
          if (rel && (rel.relkind === 'r' || rel.relkind === 'p')) {
            rows = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(schema, table)}`)).rows[0].n);
            const family = await familyOids(c, rel.oid);
            refs = (await foreignKeys(c, family)).filter((k) => !family.includes(k.childOid));
            triggers = await userTriggers(c, family);
            const priv = await c.query<{ owner: boolean; replica: boolean }>(
              `SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS owner,
                      (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) ${server!.versionNum >= 150000 ? `OR has_parameter_privilege('session_replication_role', 'SET')` : ''} AS replica
                 FROM pg_class c WHERE c.oid = $1::oid`,
              [rel.oid],
            );
            mayAlter = priv.rows[0].owner || server!.superuser;
            mayReplica = priv.rows[0].replica;
          }
          const newTaken = newTable ? Boolean(await liveTable(c, schema, newTable)) : false;
          return { enc, schemaExists, rel, rows, refs, triggers, newTaken, mayAlter, mayReplica };
        });
        encoding = info.enc;
        livePartitioned = info.rel?.relkind === 'p';
        if (info.rel && info.rel.relkind !== 'r' && info.rel.relkind !== 'p') {
          const message = `${label(schema, table)} in ${database} is not a table (relkind ${info.rel.relkind}); table-restore restores tables`;
          ctx.check('live table', false, message);
          problems.push(message);
        } else if (info.rel) {
          live = { exists: true, rows: info.rows };
          ctx.check('live table', true, `${label(schema, table)} in ${database}: ${info.rows} rows now`);
        } else {
          ctx.check('live table', true, `${label(schema, table)} does not exist in ${database} (dropped?)${mode === 'replace' ? '' : `: it comes back as ${label(schema, newTable!)}`}`);
        }
        if (!info.schemaExists) {
          const message = `schema "${schema}" does not exist in ${database}: create it first (CREATE SCHEMA ${quoteIdent(schema)};), then run this again`;
          ctx.check('schema', false, message);
          problems.push(message);
        }
        if (mode === 'replace') {
          if (!info.rel) {
            const message = `--mode replace needs the live table, and ${label(schema, table)} does not exist in ${database}; use --mode new-table to bring it back`;
            ctx.check('replace possible', false, message);
            problems.push(message);
          } else {
            replica = info.mayReplica;
            const changing = info.refs.filter((r) => r.onDelete === 'c' || r.onDelete === 'n' || r.onDelete === 'd');
            const referenced = info.refs.map((r) => `${r.child} (${r.name})`).join(', ');
            if (replica) {
              // No trigger fires during the copy, ON DELETE actions included: the rows of the
              // referencing tables stay as they are, so every key they reference must come back.
              ctx.check(
                'replace possible',
                true,
                info.refs.length ? `referenced by ${referenced}: every key they reference must be in the dump (checked before any change, and again before COMMIT)` : 'no other table references it',
              );
            } else if (changing.length) {
              const what = changing.map((r) => `${r.child} (ON DELETE ${r.onDelete === 'c' ? 'CASCADE' : r.onDelete === 'n' ? 'SET NULL' : 'SET DEFAULT'})`).join(', ');
              const message =
                `deleting the rows of ${label(schema, table)} would change rows of other tables that reference it: ${what}, and user "${server.user}" may not set session_replication_role to keep them as they are. ` +
                `Connect as a superuser, or use --mode new-table and merge the rows you need by hand`;
              ctx.check('replace possible', false, message);
              problems.push(message);
            } else {
              ctx.check(
                'replace possible',
                true,
                info.refs.length
                  ? `referenced by ${referenced} (user "${server.user}" may not set session_replication_role: if a deleted row is still referenced when checked, the replace fails and rolls back; deferrable constraints are checked at COMMIT. ` +
                      `To keep the foreign keys' triggers from firing, connect as a superuser or have one run: GRANT SET ON PARAMETER session_replication_role TO ${quoteIdent(server.user)})`
                  : 'no other table references it',
              );
            }
            if (info.triggers.length) {
              const names = [...new Set(info.triggers.map((t) => `${t.table}: ${t.name}`))].join(', ');
              const toDisable = triggersToDisable(info.triggers, replica);
              if (!toDisable.length) {
                ctx.check('triggers', true, `${names}: they do not fire during the copy (session_replication_role = replica)`);
              } else if (!info.mayAlter) {
                const message = `${label(schema, table)} has triggers (${names}) that would fire for every restored row, and user "${server.user}" may not disable them (it is not the table's owner or a superuser). Connect as its owner or a superuser, or use --mode new-table`;
                ctx.check('triggers', false, message);
                problems.push(message);
              } else {
                const other = info.triggers.filter((t) => !toDisable.includes(t));
                ctx.check(
                  'triggers',
                  true,
                  `${toDisable.map((t) => `${t.table}: ${t.name}`).join(', ')}: disabled inside the copy's transaction (they do not fire for the deleted and restored rows) and enabled again before COMMIT` +
                    (other.length ? `; ${other.map((t) => `${t.table}: ${t.name}`).join(', ')}: do not fire during the copy (session_replication_role = replica)` : ''),
                );
              }
            }
          }
        } else if (info.newTaken) {
          const message = `${label(schema, newTable!)} already exists in ${database}; pass another name with --new-table NAME`;
          ctx.check('new table name free', false, message);
          problems.push(message);
        } else {
          ctx.check('new table name free', true, label(schema, newTable!));
        }
      } catch (err) {
        ctx.check('database', false, errorMessage(err));
        problems.push(errorMessage(err));
      }
    }
  }

  let pgRestore: string | undefined;
  let psql: string | undefined;
  if (server) {
    try {
      pgRestore = (await findPgRestore(server.versionNum, chosen?.pgDumpVersion)).path;
      psql = await findPgBinary('psql');
      ctx.check('client programs', true, `${pgRestore}, ${psql}`);
    } catch (err) {
      ctx.check('client programs', false, errorMessage(err));
      problems.push(errorMessage(err));
    }
  }

  const workDir = String(ctx.params.workDir ?? os.tmpdir());
  const bad = await checkWorkDir(workDir);
  if (bad) {
    ctx.check('work directory', false, bad);
    problems.push(bad);
  } else if (chosen) {
    const space = await checkFreeSpace(workDir, chosen.size ?? 0);
    if (!space.ok) {
      const message = freeSpaceMessage(space, `the dump (${formatBytes(chosen.size ?? 0)})`);
      ctx.check('work directory', false, message);
      problems.push(message);
    } else {
      ctx.check('work directory', true, `${workDir}: ${formatBytes(space.free)} free, the dump takes ${formatBytes(chosen.size ?? 0)}`);
    }
  }

  if (notCounted) {
    if (livePartitioned) {
      // dump.json counts a partitioned table's rows in its leaf partitions: summed once the dump's partitions are known.
      dumpCounts = notCounted.counts;
      ctx.check('dump', true, `${describeDump(chosen!)}; ${label(schema, table)} is partitioned: dump.json counts its rows in its partitions`);
    } else {
      ctx.check('table in the dump', false, notCounted.message);
      problems.push(notCounted.message);
    }
  }
  if (problems.length) throw new Error(`cannot restore the table: ${problems.join('; ')}. Nothing was created or changed`);
  const p: Plan = { dump: chosen!, database, schema, table, mode, newTable, tempDatabase, live, dumpRows, pgRestore: pgRestore!, psql: psql!, workDir, encoding, replica, dumpCounts };
  ctx.state.plan = p;
}

/** Run `fn`; if it fails (or is interrupted), drop the temporary database before passing the error on. */
async function withTempCleanup(ctx: StepContext, why: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    await cleanupTemp(ctx, why);
    throw err;
  }
}

/** Drop the temporary database (only if this run created it) and the dump's temporary copy. */
async function cleanupTemp(ctx: StepContext, why: string): Promise<void> {
  await dropWorkFile(ctx);
  const p = ctx.state.plan as Plan | undefined;
  if (!p || !ctx.state.tempCreated) return;
  if (await dropDatabase(ctx, p.tempDatabase, `temporary database: ${why}`)) {
    ctx.state.tempCreated = false;
    delete ctx.state.restored;
  }
}

/** The temporary database with the table's rows in it: made here, or again on a resumed run after it was dropped. */
async function ensureTempRestored(ctx: StepContext): Promise<Restored> {
  const p = plan(ctx);
  const svc = services(ctx);
  const existing = ctx.state.restored as Restored | undefined;
  if (ctx.state.tempCreated && existing) return existing;
  const maint = await maintenanceConnection(svc.connection, [p.tempDatabase]);
  if (ctx.state.tempCreated) {
    // An earlier attempt stopped half-way: start again from an empty database.
    if (!(await dropDatabase(ctx, p.tempDatabase, 'an earlier attempt left it half-restored'))) throw new Error(`the temporary database ${p.tempDatabase} could not be dropped; drop it, then resume`);
    ctx.state.tempCreated = false;
  }
  const wf = await ensureDumpFile(ctx, p.dump, p.workDir);
  const clauses = await createDatabaseClauses(maint, p.database);
  await withPg(maint, async (c) => {
    if (await databaseExists(c, p.tempDatabase)) throw new Error(`database "${p.tempDatabase}" already exists and is not this run's; nothing was changed`);
    await c.query(`CREATE DATABASE ${quoteIdent(p.tempDatabase)} ${clauses}`);
  });
  ctx.state.tempCreated = true;
  ctx.log(`created temporary database ${p.tempDatabase}`);
  const temp = { ...svc.connection, database: p.tempDatabase };
  const common = { pgRestore: p.pgRestore, connection: temp, file: wf.file, signal: ctx.signal, env: svc.env, onMessage: (line: string) => ctx.log(line, 'warn') };
  // The whole schema (types, functions, tables, sequences; no indexes or constraints) so the table's
  // definition finds what it depends on; owners and grants left out (the copy is ours, then dropped).
  // Publications and subscriptions are post-data, and a subscription would connect to its publisher.
  await runPgRestore({ ...common, args: ['--section=pre-data', '--no-owner', '--no-privileges', '--no-publications', '--no-subscriptions', '--no-tablespaces'] });
  ctx.log(`restored the dump's schema (pre-data) into ${p.tempDatabase}`);
  // The rows: the table's own TABLE DATA entry, or a partitioned table's leaf partitions' (as the dump defines them).
  const shape = await withPg(temp, async (c) => {
    const rel = await liveTable(c, p.schema, p.table);
    if (!rel) throw new Error(`${label(p.schema, p.table)} is not in the schema restored from the dump`);
    if (rel.relkind !== 'p') return { partitioned: false, leaves: [{ schema: p.schema, table: p.table }], skipped: [] as string[] };
    const r = await c.query<{ schema: string; table: string; relkind: string }>(
      `SELECT n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind
         FROM pg_partition_tree($1::oid::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.isleaf ORDER BY 1, 2`,
      [rel.oid],
    );
    return {
      partitioned: true,
      leaves: r.rows.filter((x) => x.relkind === 'r').map((x) => ({ schema: x.schema, table: x.table })),
      skipped: r.rows.filter((x) => x.relkind !== 'r').map((x) => `${label(x.schema, x.table)} (relkind ${x.relkind})`),
    };
  });
  if (shape.skipped.length) ctx.log(`partitions whose rows are not in a dump (not restored): ${shape.skipped.join(', ')}`, 'warn');
  const toc = await readToc(p.pgRestore, wf.file, { env: svc.env, signal: ctx.signal });
  const ids: number[] = [];
  const noRows: string[] = [];
  for (const leaf of shape.leaves) {
    const id = findTableInToc(toc, leaf.schema, leaf.table).data?.id;
    if (id === undefined) noRows.push(label(leaf.schema, leaf.table));
    else ids.push(id);
  }
  if (noRows.length) {
    throw new Error(
      shape.partitioned
        ? `the dump holds no rows (no TABLE DATA entry) for these partitions of ${label(p.schema, p.table)}: ${noRows.join(', ')}; choose another --dump`
        : `the dump defines ${label(p.schema, p.table)} but holds no rows for it (no TABLE DATA entry); choose another --dump`,
    );
  }
  if (ids.length) {
    const listFile = path.join(wf.dir, 'data.list');
    await fsp.writeFile(listFile, ids.map((id) => `${id}\n`).join(''), { mode: 0o600 });
    await runPgRestore({ ...common, args: ['--section=data', `--use-list=${listFile}`, '--no-owner', '--no-privileges'] });
  }
  if (shape.partitioned) ctx.log(`${label(p.schema, p.table)} is partitioned: restored the rows of its ${shape.leaves.length} partitions (${shape.leaves.map((l) => label(l.schema, l.table)).join(', ')})`);
  const restored = await withPg(temp, async (c) => {
    await c.query(`SET search_path = pg_catalog`);
    const cols = await c.query<{ name: string; type: string; not_null: boolean; generated: boolean; collation: string | null }>(
      `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null, a.attgenerated <> '' AS generated,
              CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END AS collation
         FROM pg_attribute a
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_collation co ON co.oid = a.attcollation
         LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
        WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
      [p.schema, p.table],
    );
    const n = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(p.schema, p.table)}`)).rows[0].n);
    return {
      rows: n,
      columns: cols.rows.map((r) => ({ name: r.name, type: r.type, notNull: r.not_null, generated: r.generated, collation: r.collation })),
      partitioned: shape.partitioned,
      leaves: shape.leaves,
    };
  });
  ctx.state.restored = restored;
  ctx.log(`restored ${restored.rows} rows of ${label(p.schema, p.table)} into ${p.tempDatabase}`);
  return restored;
}

async function compare(ctx: StepContext): Promise<boolean> {
  const p = plan(ctx);
  const restored = await ensureTempRestored(ctx);
  const live = await withPg({ ...services(ctx).connection, database: p.database }, async (c) => {
    const rel = await liveTable(c, p.schema, p.table);
    if (!rel) return undefined;
    const n = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(p.schema, p.table)}`)).rows[0].n);
    const cols = await c.query<{ name: string; generated: boolean }>(
      `SELECT attname AS name, attgenerated <> '' AS generated FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped`,
      [rel.oid],
    );
    const leaves = await c.query<{ name: string }>(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_partition_tree($1::oid::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf AND c.relkind = 'r'`,
      [rel.oid],
    );
    return { rows: n, columns: cols.rows, partitioned: rel.relkind === 'p', leaves: rel.relkind === 'p' ? leaves.rows.map((r) => r.name) : [] };
  });
  const name = label(p.schema, p.table);
  ctx.state.counts = { live: live?.rows ?? null, restored: restored.rows, dumpJson: p.dumpRows ?? null };
  ctx.log(`${name} in ${p.database} now: ${live ? `${live.rows} rows` : 'does not exist'}`);
  ctx.log(`${name} restored from ${describeDump(p.dump)}: ${restored.rows} rows`);
  ctx.log(`${name} in dump.json: ${p.dumpRows !== undefined ? `${p.dumpRows} rows` : 'no count recorded'}`);
  if (live) {
    const d = restored.rows - live.rows;
    ctx.log(d === 0 ? 'the live table has as many rows as the dump' : `the live table has ${Math.abs(d)} ${d > 0 ? 'fewer' : 'more'} rows than the dump`);
  }
  let ok = true;
  let dumpRows = p.dumpRows;
  if (dumpRows === undefined && restored.partitioned && p.dumpCounts) {
    const keys = (restored.leaves ?? []).map((l) => label(l.schema, l.table));
    const missing = keys.filter((k) => !(k in p.dumpCounts!));
    if (missing.length) ctx.log(`dump.json has no count for these partitions: ${missing.join(', ')}`, 'warn');
    else {
      dumpRows = keys.reduce((a, k) => a + p.dumpCounts![k], 0);
      ctx.log(`${name} in dump.json: ${dumpRows} rows in its ${keys.length} partitions`);
    }
  }
  if (dumpRows !== undefined) {
    const same = restored.rows === dumpRows;
    ok &&= same;
    ctx.check('restored rows', same, same ? `${restored.rows} rows, as dump.json records` : `${restored.rows} rows restored, dump.json says ${dumpRows}: the dump does not hold what was counted; choose another --dump`);
  } else {
    ctx.check('restored rows', true, `${restored.rows} rows (dump.json has no count to compare with)`);
  }
  if (p.mode === 'replace') {
    if (!live) {
      ok = false;
      ctx.check('columns', false, `${name} does not exist in ${p.database} any more; nothing to replace. Use --mode new-table`);
    } else {
      const liveCols = new Map(live.columns.map((c) => [c.name, c]));
      const copied = restored.columns.filter((c) => !c.generated);
      const missing = copied.filter((c) => !liveCols.has(c.name)).map((c) => c.name);
      const generatedNow = copied.filter((c) => liveCols.get(c.name)?.generated).map((c) => c.name);
      const extra = live.columns.filter((c) => !c.generated && !restored.columns.some((r) => r.name === c.name)).map((c) => c.name);
      const good = missing.length === 0 && generatedNow.length === 0;
      ok &&= good;
      ctx.check(
        'columns',
        good,
        good
          ? `${copied.length} columns copied: ${copied.map((c) => c.name).join(', ')}${extra.length ? `; columns only the live table has get their defaults: ${extra.join(', ')}` : ''}`
          : `the live table's columns differ from the dump's (${[missing.length ? `not in the live table: ${missing.join(', ')}` : '', generatedNow.length ? `generated in the live table: ${generatedNow.join(', ')}` : ''].filter(Boolean).join('; ')}); use --mode new-table and merge by hand`,
      );
      if (restored.partitioned) {
        const dumped = (restored.leaves ?? []).map((l) => label(l.schema, l.table)).sort();
        const now = live.leaves.slice().sort();
        const same = dumped.length === now.length && dumped.every((x, i) => x === now[i]);
        ok &&= same;
        ctx.check(
          'partitions',
          same,
          same
            ? `${dumped.length} partitions, the same in the dump and in ${p.database}: all are replaced in one transaction`
            : `the partitions differ (in the dump: ${dumped.join(', ') || 'none'}; in ${p.database}: ${now.join(', ') || 'none'}); use --mode new-table and merge by hand`,
        );
      } else if (live.partitioned) {
        ok = false;
        ctx.check('partitions', false, `${name} is partitioned in ${p.database} but not in the dump; use --mode new-table and merge by hand`);
      }
      if (ok) ok = await checkReferencedKeys(ctx, restored);
    }
  }
  return ok;
}

/**
 * Replace mode, before anything changes: every key that other tables reference now must be among
 * the dumped rows. The referencing keys are streamed from production into the temporary database
 * (never into memory) and looked up there.
 */
async function checkReferencedKeys(ctx: StepContext, restored: Restored): Promise<boolean> {
  const p = plan(ctx);
  const svc = services(ctx);
  const prod: ConnectionSettings = { ...svc.connection, database: p.database };
  const temp: ConnectionSettings = { ...svc.connection, database: p.tempDatabase };
  const fks = await withPg(prod, async (c) => {
    const rel = await liveTable(c, p.schema, p.table);
    if (!rel) return [];
    const family = await familyOids(c, rel.oid);
    return (await foreignKeys(c, family)).filter((k) => !family.includes(k.childOid) && family.includes(k.parentOid));
  });
  if (!fks.length) return true;
  const scratch = 'pgrunbook_key_check';
  await withPg(temp, async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS ${quoteIdent(scratch)} CASCADE`);
    await c.query(`CREATE SCHEMA ${quoteIdent(scratch)}`);
  });
  let ok = true;
  for (const [i, fk] of fks.entries()) {
    ctx.signal.throwIfAborted();
    const keys = qualified(scratch, `keys_${i}`);
    const kcols = fk.childCols.map((_, j) => `k${j}`);
    await copyRows({
      psql: p.psql,
      source: prod,
      sourceQuery: `SELECT DISTINCT ${fk.childCols.map(quoteIdent).join(', ')} FROM ${fk.child} WHERE ${fk.childCols.map((col) => `${quoteIdent(col)} IS NOT NULL`).join(' AND ')}`,
      target: temp,
      before: [`CREATE TABLE ${keys} (${kcols.map((k, j) => `${k} ${fk.childTypes[j]}`).join(', ')});`],
      into: `${keys} (${kcols.join(', ')})`,
      clientEncoding: p.encoding,
      env: svc.env,
      signal: ctx.signal,
      applicationName: `pgrunbook table-restore ${ctx.runId}`,
    });
    const keyText = kcols.length === 1 ? `k.${kcols[0]}::text` : `ROW(${kcols.map((k) => `k.${k}`).join(', ')})::text`;
    const r = await withPg(temp, async (c) => {
      const q = await c.query<{ n: string; sample: string | null }>(
        `SELECT count(*) AS n, array_to_string((array_agg(x ORDER BY x))[1:5], ', ') AS sample
           FROM (SELECT ${keyText} AS x FROM ${keys} k
                  WHERE NOT EXISTS (SELECT 1 FROM ${fk.parent} t WHERE ${fk.parentCols.map((col, j) => `t.${quoteIdent(col)} = k.${kcols[j]}`).join(' AND ')})) m`,
      );
      return { missing: Number(q.rows[0].n), sample: q.rows[0].sample };
    });
    const good = r.missing === 0;
    ok &&= good;
    ctx.check(
      `keys referenced by ${fk.child} (${fk.name})`,
      good,
      good
        ? `every ${fk.parentCols.join(', ')} that ${fk.child} references is in the dump`
        : `${r.missing} ${fk.parentCols.join(', ')} value(s) that ${fk.child} references (foreign key ${fk.name}) are not in the dump, e.g. ${r.sample}: ` +
            `replacing ${label(p.schema, p.table)} would leave those rows pointing at nothing. Nothing was changed. Use --mode new-table and merge by hand, or choose another --dump`,
    );
  }
  await withPg(temp, (c) => c.query(`DROP SCHEMA IF EXISTS ${quoteIdent(scratch)} CASCADE`));
  return ok;
}

async function copyIntoProduction(ctx: StepContext): Promise<void> {
  const p = plan(ctx);
  const svc = services(ctx);
  const restored = await ensureTempRestored(ctx);
  const prod: ConnectionSettings = { ...svc.connection, database: p.database };
  const temp: ConnectionSettings = { ...svc.connection, database: p.tempDatabase };
  const faults = (svc.env[FAULT_ENV] ?? '').split(',').map((s) => s.trim());
  const appName = `pgrunbook table-restore ${ctx.runId}`;
  // Test hook: fail once the server has taken rows into the COPY (pg_stat_progress_copy), i.e.
  // truly mid-copy. A watcher polls while the rows keep flowing (psql sends them in 8 KiB batches).
  let watcher: Promise<number> | undefined;
  let received = 0;
  const fault = faults.includes(FAULT_COPY)
    ? async (bytes: number, final: boolean) => {
        watcher ??= withPg(prod, async (c) => {
          for (let i = 0; i < 500 && !ctx.signal.aborted; i++) {
            const r = await c.query<{ n: string | null }>(
              `SELECT max(p.tuples_processed)::text AS n FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid WHERE a.application_name = $1 AND p.command = 'COPY FROM'`,
              [appName],
            );
            received = Number(r.rows[0].n ?? 0);
            if (received > 0) break;
            await new Promise((res) => setTimeout(res, 20));
          }
          return received;
        });
        if (final) await watcher;
        if (received > 0 || final) {
          throw new Error(`injected fault (${FAULT_ENV}=${FAULT_COPY}) after ${bytes} bytes of rows had been sent and the server had received ${received} rows`);
        }
      }
    : undefined;

  let before: string[];
  let columns: Column[];
  let triggers: Trigger[] = [];
  let fks: ForeignKey[] = [];
  const target = targetTable(p);
  if (p.mode === 'replace') {
    columns = restored.columns.filter((c) => !c.generated);
    // The count now, not the preflight's: it is what the operator agrees to lose.
    const n = await withPg(prod, async (c) => Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(p.schema, p.table)}`)).rows[0].n));
    const what = `delete all ${n} rows of ${label(p.schema, p.table)} in ${p.database} and insert the ${restored.rows} rows from the dump of ${p.dump.consistentAt ?? p.dump.id}`;
    const expected = confirmText(p);
    const allowed = await ctx.confirm({ message: `${what}? Type "${expected}" to continue.`, destructive: { what, expected } });
    if (!allowed) {
      if (ctx.signal.aborted) throw ctx.signal.reason ?? new Error('interrupted');
      const err = new ConfirmationRefusedError(`not confirmed: ${what}. Nothing was changed; the temporary database is dropped`);
      (err as ConfirmationRefusedError & { hint?: string }).hint = `to allow it, run the table restore again with --confirm ${shellQuote(expected)}`;
      throw err;
    }
    // DELETE rather than TRUNCATE: readers keep seeing the old rows until COMMIT (TRUNCATE takes an
    // ACCESS EXCLUSIVE lock and is not MVCC-safe), and TRUNCATE would refuse (or, with CASCADE,
    // empty) the referencing tables. EXCLUSIVE mode (taken on every partition too) blocks other
    // writers, whose rows would otherwise mix with the restored ones, not readers.
    // No trigger fires for the deleted and restored rows: the user triggers are disabled inside
    // this transaction (enabled again before COMMIT; a rollback undoes both), and with
    // session_replication_role = replica the foreign keys' triggers do not fire either: the keys
    // are checked explicitly before COMMIT instead, both ways.
    const live = await withPg(prod, async (c) => {
      const rel = await liveTable(c, p.schema, p.table);
      if (!rel) throw new Error(`${label(p.schema, p.table)} does not exist in ${p.database} any more; nothing was changed`);
      const family = await familyOids(c, rel.oid);
      return { triggers: await userTriggers(c, family), fks: p.replica ? await foreignKeys(c, family) : [] };
    });
    triggers = triggersToDisable(live.triggers, Boolean(p.replica));
    fks = live.fks;
    before = [
      `SET LOCAL lock_timeout = '${LOCK_TIMEOUT}';`,
      `LOCK TABLE ${qualified(p.schema, p.table)} IN EXCLUSIVE MODE;`,
      p.replica ? `SET LOCAL session_replication_role = replica;` : `SET CONSTRAINTS ALL DEFERRED;`,
      ...triggers.map((t) => `ALTER TABLE ONLY ${t.table} DISABLE TRIGGER ${quoteIdent(t.name)};`),
      `DELETE FROM ${qualified(p.schema, p.table)};`,
    ];
    if (triggers.length) ctx.log(`triggers disabled for the copy, inside its transaction: ${triggers.map((t) => `${t.table}: ${t.name}`).join(', ')}`);
    if (p.replica) ctx.log(`session_replication_role = replica for the copy's transaction: foreign keys are checked explicitly before COMMIT${fks.length ? ` (${fks.map((k) => k.name).join(', ')})` : ''}`);
  } else {
    columns = restored.columns;
    // Columns, types and NOT NULL only: defaults would share (or miss) the live table's sequences,
    // and constraint and index names would clash with the live table's.
    const defs = columns.map((c) => `${quoteIdent(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''}${c.notNull ? ' NOT NULL' : ''}`);
    before = [`CREATE TABLE ${qualified(target.schema, target.table)} (${defs.join(', ')});`];
  }
  const colList = columns.map((c) => quoteIdent(c.name)).join(', ');
  // What the rows must add up to, from the temporary database (nothing else writes there): checked
  // inside the transaction, before COMMIT, so a mismatch rolls back instead of being committed.
  const names = columns.map((c) => c.name);
  const expected = await tableFingerprint(temp, p.schema, p.table, names);
  const leafCounts =
    p.mode === 'replace' && restored.partitioned
      ? await withPg(temp, async (c) => {
          const out: { leaf: Leaf; rows: number }[] = [];
          for (const leaf of restored.leaves ?? []) out.push({ leaf, rows: Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(leaf.schema, leaf.table)}`)).rows[0].n) });
          return out;
        })
      : [];
  const targetLabel = label(target.schema, target.table);
  const after = [
    ...(p.mode === 'replace' && !p.replica ? ['SET CONSTRAINTS ALL IMMEDIATE;'] : []),
    ...triggers.map((t) => `ALTER TABLE ONLY ${t.table} ENABLE ${t.enabled === 'A' ? 'ALWAYS ' : t.enabled === 'R' ? 'REPLICA ' : ''}TRIGGER ${quoteIdent(t.name)};`),
    ...SESSION_SETTINGS.map((s) => `${s.replace(/^SET /, 'SET LOCAL ')};`),
    `DO $pgrunbook$ DECLARE n bigint; s text; BEGIN ` +
      `SELECT q.n, q.sum INTO n, s FROM (${fingerprintSql(qualified(target.schema, target.table), names)}) q; ` +
      `IF n <> ${expected.rows} OR s <> ${quoteLiteral(expected.sum)} THEN RAISE EXCEPTION 'pgrunbook: before COMMIT % held % rows (checksum %), the dump % rows (checksum %): the rows are not the dumped ones; rolling back', ` +
      `${quoteLiteral(targetLabel)}, n, s, ${expected.rows}, ${quoteLiteral(expected.sum)}; END IF; END $pgrunbook$;`,
    ...leafCounts.map(
      ({ leaf, rows }) =>
        `DO $pgrunbook$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM ${qualified(leaf.schema, leaf.table)}; ` +
        `IF n <> ${rows} THEN RAISE EXCEPTION 'pgrunbook: before COMMIT partition % held % rows, the dump % rows; rolling back', ${quoteLiteral(label(leaf.schema, leaf.table))}, n, ${rows}; END IF; END $pgrunbook$;`,
    ),
    ...fks.map((fk) => foreignKeyCheckSql(fk)),
  ];
  ctx.log(`copying ${restored.rows} rows from ${p.tempDatabase} into ${label(target.schema, target.table)} in ${p.database}, in one transaction`);
  ctx.progress({ done: 0, total: restored.rows, unit: 'rows' });
  const r = await copyRows({
    psql: p.psql,
    source: temp,
    sourceQuery: `SELECT ${colList} FROM ${qualified(p.schema, p.table)}`,
    target: prod,
    before,
    into: `${qualified(target.schema, target.table)} (${colList})`,
    after,
    clientEncoding: p.encoding,
    env: svc.env,
    signal: ctx.signal,
    onRows: (n) => ctx.progress({ done: Math.min(n, restored.rows), total: restored.rows, unit: 'rows' }),
    fault,
    applicationName: appName,
  }).catch((err: unknown) => {
    if (ctx.signal.aborted) throw err;
    throw new Error(
      `${errorMessage(err).replace(/\.+$/, '')}. The transaction was rolled back: ${p.mode === 'replace' ? `the live rows of ${label(p.schema, p.table)} are unchanged` : `${label(target.schema, target.table)} was not created`}`,
    );
  });
  ctx.progress({ done: r.rows, total: restored.rows, unit: 'rows' });
  const deleted = r.tags.find((t) => t.startsWith('DELETE '));
  ctx.log(`committed: ${[deleted ? `deleted ${deleted.slice(7)} rows` : undefined, `inserted ${r.rows} rows (${formatBytes(r.bytes)})`].filter(Boolean).join(', ')}`);
  ctx.state.copied = { table: label(target.schema, target.table), rows: r.rows, columns: columns.map((c) => c.name) };
  if (p.mode === 'new-table') {
    ctx.log(
      `${label(target.schema, target.table)} has the dumped columns, types and NOT NULL constraints, but no defaults, indexes, constraints or triggers. ` +
        (p.live.exists ? `Compare it with ${label(p.schema, p.table)} and merge what you need.` : `To put it back under its old name: ALTER TABLE ${qualified(target.schema, target.table)} RENAME TO ${quoteIdent(p.table)}; then recreate its indexes and constraints (their SQL: pg_restore --section=post-data --file=- <the dump>).`),
    );
  }
}

/** A DO block that fails (rolling the transaction back) when rows of the foreign key's table reference keys its referenced table lacks. */
function foreignKeyCheckSql(fk: ForeignKey): string {
  const keyText = fk.childCols.length === 1 ? `c.${quoteIdent(fk.childCols[0])}::text` : `ROW(${fk.childCols.map((col) => `c.${quoteIdent(col)}`).join(', ')})::text`;
  return (
    `DO $pgrunbook$ DECLARE n bigint; sample text; BEGIN ` +
    `SELECT count(*), array_to_string((array_agg(x ORDER BY x))[1:5], ', ') INTO n, sample FROM (SELECT ${keyText} AS x FROM ${fk.child} c ` +
    `WHERE ${fk.childCols.map((col) => `c.${quoteIdent(col)} IS NOT NULL`).join(' AND ')} ` +
    `AND NOT EXISTS (SELECT 1 FROM ${fk.parent} t WHERE ${fk.parentCols.map((col, j) => `t.${quoteIdent(col)} = c.${quoteIdent(fk.childCols[j])}`).join(' AND ')})) m; ` +
    `IF n > 0 THEN RAISE EXCEPTION 'pgrunbook: foreign key % of %: % rows reference keys (%) that % does not hold, e.g. %; rolling back', ` +
    `${quoteLiteral(fk.name)}, ${quoteLiteral(fk.child)}, n, ${quoteLiteral(fk.childCols.join(', '))}, ${quoteLiteral(fk.parent)}, sample; END IF; END $pgrunbook$;`
  );
}

async function verifyCopy(ctx: StepContext): Promise<boolean> {
  const p = plan(ctx);
  const svc = services(ctx);
  await ensureTempRestored(ctx);
  const copied = ctx.state.copied as { table: string; rows: number; columns: string[] } | undefined;
  if (!copied) throw new Error('the copy step has not run in this run');
  const target = targetTable(p);
  const [prod, temp] = await Promise.all([
    tableFingerprint({ ...svc.connection, database: p.database }, target.schema, target.table, copied.columns),
    tableFingerprint({ ...svc.connection, database: p.tempDatabase }, p.schema, p.table, copied.columns),
  ]);
  const countsOk = prod.rows === temp.rows;
  ctx.check(`rows in ${copied.table}`, countsOk, countsOk ? `${prod.rows} rows, as restored from the dump` : `${prod.rows} rows in ${p.database}, ${temp.rows} restored from the dump`);
  const sumOk = prod.sum === temp.sum;
  ctx.check(`contents of ${copied.table}`, sumOk, sumOk ? `every row matches the dump (checksum of ${copied.columns.length} columns)` : `the rows differ from the dump's now (checksums ${prod.sum} and ${temp.sum}), though they matched before COMMIT (checked inside the copy's transaction): they were changed after the commit, by another session or a deferred trigger`);
  return countsOk && sumOk;
}
