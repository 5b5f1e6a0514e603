// Table restore: one table from a dump made by backup-logical, brought back into production
// through a temporary database. The dump is downloaded (SHA-256 checked) and its table of
// contents must list the table; the schema (pre-data) and that table's rows are restored into
// `pgrunbook_tmp_<run>`; the counts are shown (live, restored, dump.json); the rows are streamed
// into production with COPY, either as a new table `<name>_restored_<stamp>` or replacing the live
// rows in ONE transaction after a typed confirmation; the copy is verified (row count and an
// order-independent checksum of the rows); the temporary database is dropped.
//
// Cleanup: the engine has no "finally" step and stops at the first failed step, so every step
// after the temporary database exists drops it itself when it fails, is interrupted, or (replace
// mode) is refused; the last step drops it after success. A resumed run restores it again when a
// later step needs it.
import os from 'node:os';
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
}

interface Restored {
  rows: number;
  columns: Column[];
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
    const row = columns.length ? `ROW(${columns.map(quoteIdent).join(', ')})::text` : `''`;
    const r = await c.query<{ n: string; sum: string }>(
      `SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(${row}), 1, 15))::bit(60)::bigint), 0)::text AS sum FROM ${qualified(schema, table)}`,
    );
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
          ? 'refuse if other tables reference it with ON DELETE CASCADE / SET NULL / SET DEFAULT (replacing would change their rows)'
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
          if (!found.data) throw new Error(`the dump defines ${label(p.schema, p.table)} but holds no rows for it (no TABLE DATA entry: a partitioned table's rows are in its partitions, restore those)`);
          ctx.log(`found ${label(p.schema, p.table)} in the dump's table of contents (entries ${found.table.id} and ${found.data.id})`);
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
        `pg_restore --section=pre-data --no-owner --no-privileges into it; pg_restore --section=data --schema=<schema> --table=<table>; then delete the downloaded copy`,
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
      describe: () => 'The live table\'s rows now, the rows restored from the dump, and the count dump.json recorded: the restored count must equal dump.json\'s.',
      plan: () => ['SELECT count(*) of the live table and of the restored one; compare with dump.json'],
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
          ? `After a typed confirmation (${confirmText(p)}): in ONE transaction on ${p.database}, LOCK TABLE ${label(p.schema, p.table)} IN EXCLUSIVE MODE (reads go on), DELETE its rows, COPY the restored rows in, check the count, COMMIT. A failure anywhere rolls back: the live rows stay as they are.`
          : `CREATE TABLE ${label(p.schema, p.newTable!)} (the dumped columns and types, NOT NULL; no defaults, indexes or constraints) and COPY the restored rows into it, in one transaction.`;
      },
      plan: (ctx) =>
        modeParam(ctx) === 'replace'
          ? [
              `ask to confirm: delete all rows of ${String(ctx.params.table)} in ${String(ctx.params.database)} and insert the rows from the dump (type "${String(ctx.params.database)}.${(() => {
                const t = parseTableName(String(ctx.params.table));
                return 'error' in t ? String(ctx.params.table) : label(t.schema, t.table);
              })()}" or pass --confirm)`,
              `psql: BEGIN; SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'; LOCK TABLE ... IN EXCLUSIVE MODE; DELETE FROM ...; COPY ... FROM STDIN (rows streamed from the temporary database's COPY ... TO STDOUT); count check; COMMIT`,
            ]
          : [`psql: BEGIN; CREATE TABLE <schema>.<table>_restored_<stamp> (...); COPY ... FROM STDIN (streamed from the temporary database); count check; COMMIT`],
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
  const repo = await openRepository(svc.repo, svc.env);
  try {
    const { chosen: c, meta } = await chooseDump(repo, database, ctx.params.dump as string | undefined);
    chosen = c;
    const key = label(schema, table);
    // dump.json lists every table whose rows were dumped: a missing one is refused before downloading anything.
    if (meta.rowCounts && !(key in meta.rowCounts)) {
      const message = notInDumpMessage(schema, table, { dump: c }, Object.keys(meta.rowCounts));
      ctx.check('table in the dump', false, message);
      problems.push(message);
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
          let refs: { child: string; action: string }[] = [];
          let triggers: string[] = [];
          if (rel && (rel.relkind === 'r' || rel.relkind === 'p')) {
            rows = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(schema, table)}`)).rows[0].n);
            refs = (
              await c.query<{ child: string; action: string }>(
                `SELECT conrelid::regclass::text AS child, confdeltype::text AS action FROM pg_constraint WHERE contype = 'f' AND confrelid = $1::oid AND conrelid <> confrelid`,
                [rel.oid],
              )
            ).rows;
            triggers = (await c.query<{ tgname: string }>(`SELECT tgname FROM pg_trigger WHERE tgrelid = $1::oid AND NOT tgisinternal ORDER BY tgname`, [rel.oid])).rows.map((r) => r.tgname);
          }
          const newTaken = newTable ? Boolean(await liveTable(c, schema, newTable)) : false;
          return { enc, schemaExists, rel, rows, refs, triggers, newTaken };
        });
        encoding = info.enc;
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
            const changing = info.refs.filter((r) => r.action === 'c' || r.action === 'n' || r.action === 'd');
            if (changing.length) {
              const what = changing.map((r) => `${r.child} (ON DELETE ${r.action === 'c' ? 'CASCADE' : r.action === 'n' ? 'SET NULL' : 'SET DEFAULT'})`).join(', ');
              const message = `deleting the rows of ${label(schema, table)} would change rows of other tables that reference it: ${what}. Use --mode new-table and merge the rows you need by hand`;
              ctx.check('replace possible', false, message);
              problems.push(message);
            } else {
              ctx.check('replace possible', true, info.refs.length ? `referenced by ${info.refs.map((r) => r.child).join(', ')} (no action/restrict: if a deleted row is still referenced, the replace fails and rolls back)` : 'no other table references it');
            }
            if (info.triggers.length) ctx.log(`triggers on ${label(schema, table)} fire for every deleted and inserted row: ${info.triggers.join(', ')}`, 'warn');
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

  if (problems.length) throw new Error(`cannot restore the table: ${problems.join('; ')}. Nothing was created or changed`);
  const p: Plan = { dump: chosen!, database, schema, table, mode, newTable, tempDatabase, live, dumpRows, pgRestore: pgRestore!, psql: psql!, workDir, encoding };
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
  await runPgRestore({ ...common, args: ['--section=data', `--schema=${p.schema}`, `--table=${p.table}`, '--no-owner', '--no-privileges'] });
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
    return { rows: n, columns: cols.rows.map((r) => ({ name: r.name, type: r.type, notNull: r.not_null, generated: r.generated, collation: r.collation })) };
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
    return { rows: n, columns: cols.rows };
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
  if (p.dumpRows !== undefined) {
    const same = restored.rows === p.dumpRows;
    ok &&= same;
    ctx.check('restored rows', same, same ? `${restored.rows} rows, as dump.json records` : `${restored.rows} rows restored, dump.json says ${p.dumpRows}: the dump does not hold what was counted; choose another --dump`);
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
    }
  }
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
    // ACCESS EXCLUSIVE lock and is not MVCC-safe), row triggers fire, and foreign keys are checked
    // instead of TRUNCATE refusing (or, with CASCADE, emptying the referencing tables). EXCLUSIVE
    // mode blocks other writers, whose rows would otherwise mix with the restored ones, not readers.
    before = [`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}';`, `LOCK TABLE ${qualified(p.schema, p.table)} IN EXCLUSIVE MODE;`, `DELETE FROM ${qualified(p.schema, p.table)};`];
  } else {
    columns = restored.columns;
    // Columns, types and NOT NULL only: defaults would share (or miss) the live table's sequences,
    // and constraint and index names would clash with the live table's.
    const defs = columns.map((c) => `${quoteIdent(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''}${c.notNull ? ' NOT NULL' : ''}`);
    before = [`CREATE TABLE ${qualified(target.schema, target.table)} (${defs.join(', ')});`];
  }
  const colList = columns.map((c) => quoteIdent(c.name)).join(', ');
  ctx.log(`copying ${restored.rows} rows from ${p.tempDatabase} into ${label(target.schema, target.table)} in ${p.database}, in one transaction`);
  ctx.progress({ done: 0, total: restored.rows, unit: 'rows' });
  const r = await copyRows({
    psql: p.psql,
    source: temp,
    sourceQuery: `SELECT ${colList} FROM ${qualified(p.schema, p.table)}`,
    target: prod,
    before,
    into: `${qualified(target.schema, target.table)} (${colList})`,
    expectRows: { table: qualified(target.schema, target.table), rows: restored.rows },
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
  ctx.check(`contents of ${copied.table}`, sumOk, sumOk ? `every row matches the dump (checksum of ${copied.columns.length} columns)` : `the rows differ from the dump's (checksums ${prod.sum} and ${temp.sum}): something changed them since the copy`);
  return countsOk && sumOk;
}
