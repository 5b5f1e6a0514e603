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
// Cleanup: every step after the temporary database exists drops it itself when it fails, is
// interrupted, or (replace mode) is refused; the last step drops it after success. A resumed run
// restores it again when a later step needs it (table-restore/temp-database.ts).
import os from 'node:os';
import { describeConnection } from '../config/connection.js';
import { byHand, databaseExists, maintenanceConnection } from '../postgres/databases.js';
import { findTableInToc, readToc, tablesInToc } from '../postgres/programs/pg_restore.js';
import { copyPlanLines } from '../postgres/table-copy.js';
import { dumpFolder } from '../repo/dump-files.js';
import { parseTarget, TARGET_FORMS } from '../restore/target.js';
import { defineProcedure } from './define.js';
import { identTooLong } from './logical-restore/names.js';
import { dropWorkFile, ensureDumpFile } from './logical-restore/steps-common.js';
import { checkScratchGone } from './table-restore/at.js';
import { compare } from './table-restore/compare.js';
import { copyIntoProduction, verifyCopy } from './table-restore/copy.js';
import { notInDumpMessage, parseTableName, splitTables, tempDatabaseName } from './table-restore/names.js';
import { compareSet, copySet, verifySet } from './table-restore/multi.js';
import { preflight } from './table-restore/preflight.js';
import { cleanupTemp, ensureTempRestored, withTempCleanup } from './table-restore/temp-database.js';
import { confirmText, dumpOf, label, modeOf, planOf, type TableRestoreContext, type TableRestoreParams, type TableRestoreState } from './table-restore/types.js';

export { parseTableName, similarNames, tempDatabaseName } from './table-restore/names.js';
export { FAULT_ENV } from './table-restore/types.js';

export const tableRestoreProcedure = defineProcedure<TableRestoreParams, TableRestoreState>({
  id: 'table-restore',
  title: 'Restore one table from a dump',
  summary: 'One table from a dump, through a temporary database, into production as a new table or (typed confirmation) replacing its rows in one transaction; counts and contents verified; the temporary database dropped.',
  group: 'restore',
  params: [
    { name: 'database', type: 'string', required: true, description: 'the production database the table belongs to (its dumps are searched)', example: 'app' },
    { name: 'table', type: 'string', description: 'the table, as SCHEMA.TABLE (default schema public); quote names with dots: "my.schema"."t" (this or --tables)', example: 'public.orders' },
    {
      name: 'tables',
      type: 'string',
      description:
        'with --at: several tables restored at once, comma-separated, their foreign keys consistent with each other (replace: one transaction, rows deleted child-to-parent and inserted parent-to-child; confirmation DATABASE.SCHEMA.T1,SCHEMA.T2; new-table: each as <name>_restored_<time>)',
      example: 'public.customers,public.orders',
    },
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
    {
      name: 'at',
      type: 'string',
      description: `restore the table as it was at this moment instead of from a dump: a scratch cluster is recovered beside production (base backup + archived WAL) to the target, pitr's syntax: ${TARGET_FORMS}`,
      example: '2026-11-24T03:14:00Z',
    },
    { name: 'exclusive', type: 'boolean', default: false, description: '--at: stop just before the target instead of just after it' },
    { name: 'scratchDir', type: 'string', description: '--at: directory for the scratch cluster (default: the system temp directory; it needs room for the base backup); removed afterwards', example: '/var/tmp' },
  ],
  validate(params) {
    const errors: string[] = [];
    if ((params.table === undefined) === (params.tables === undefined)) errors.push('pass exactly one of --table NAME and --tables A,B');
    if (params.table !== undefined) {
      const t = parseTableName(params.table);
      if ('error' in t) errors.push(t.error);
      else if (identTooLong(t.table) || identTooLong(t.schema)) errors.push(`--table: names are at most 63 bytes in PostgreSQL`);
    }
    if (params.tables !== undefined) errors.push(...tablesErrors(params));
    if (params.at !== undefined) {
      const t = parseTarget(params.at);
      if ('error' in t) errors.push(t.error.replace(/^--target/, '--at'));
      if (params.dump !== undefined) errors.push('--dump and --at exclude each other: the rows come from a dump, or from the archive at a moment');
    } else if (params.exclusive || params.scratchDir !== undefined) {
      errors.push('--exclusive and --scratch-dir only apply with --at TARGET');
    }
    if (params.newTable !== undefined && params.mode === 'replace') errors.push('--new-table only applies to --mode new-table');
    if (params.newTable !== undefined && identTooLong(params.newTable)) errors.push(`--new-table: "${params.newTable}" is longer than 63 bytes, which PostgreSQL would cut short`);
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Choose the dump and check the table',
      kind: 'check',
      describe: (ctx) =>
        `Before anything is created: a complete dump of ${ctx.params.database} that lists ${tablesText(ctx.params)}, the server answers, ` +
        `the live table as it is now, the names to create are free, and the temporary copy of the dump fits.`,
      plan: (ctx) => [
        `list ${dumpFolder(ctx.params.database)} in the repository; pick ${ctx.params.dump ? `dump ${ctx.params.dump}` : 'the newest dump with a dump.json'}`,
        `connect to ${describeConnection(ctx.services.connection)}; count the live rows of ${tablesText(ctx.params)} in ${ctx.params.database} (it may not exist any more)`,
        modeOf(ctx.params) === 'replace'
          ? 'list its triggers and the foreign keys that reference it; refuse if triggers could not be disabled, or (without the right to set session_replication_role) other tables reference it with ON DELETE CASCADE / SET NULL / SET DEFAULT'
          : `refuse if the new table's name is taken`,
      ],
      run: preflight,
    },
    {
      id: 'download',
      title: 'Download the dump and find the table in it',
      kind: 'action',
      describe: (ctx) => `Copying the dump into a private temporary directory under ${ctx.params.workDir ?? os.tmpdir()} (SHA-256 checked), then reading its table of contents (pg_restore --list): the table must be there.`,
      plan: () => ['download the dump (SHA-256 and size checked against dump.json); pg_restore --list it; refuse if the table or its data is not listed'],
      async run(ctx) {
        if (!planOf(ctx).at) return downloadAndFindTable(ctx);
        ctx.log(`--at ${planOf(ctx).at}: recovering a scratch cluster instead of downloading a dump`);
        await withTempCleanup(ctx, 'recovering the scratch cluster failed', async () => {
          await ensureTempRestored(ctx);
        });
      },
    },
    {
      id: 'restore-temp',
      title: 'Restore the table into a temporary database',
      kind: 'action',
      describe: (ctx) =>
        `CREATE DATABASE ${ctx.state.plan?.tempDatabase ?? 'pgrunbook_tmp_<run>'}; pg_restore the dump's schema (pre-data: types, tables, sequences) and the rows of ${tablesText(ctx.params)} into it. It is dropped at the end, also when a step fails.`,
      plan: (ctx) => [
        `CREATE DATABASE ${tempDatabaseName(ctx.runId)} TEMPLATE template0 (encoding and locale of ${ctx.params.database})`,
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
        'count(*) of the live table and of the restored one; compare with dump.json',
        ...(modeOf(ctx.params) === 'replace' ? ['for each foreign key referencing the table: stream the referenced keys from production into the temporary database and look for keys the dump lacks'] : []),
      ],
      async run(ctx) {
        await withTempCleanup(ctx, 'the comparison failed', async () => {
          if (!(await (planOf(ctx).set ? compareSet(ctx) : compare(ctx)))) await cleanupTemp(ctx, 'nothing will be copied after a failed check');
        });
      },
    },
    {
      id: 'copy',
      title: 'Copy the rows into production',
      kind: 'action',
      describe: (ctx) => {
        const p = ctx.state.plan;
        if (!p) return 'Copying the restored rows into production.';
        return p.mode === 'replace'
          ? `After a typed confirmation (${confirmText(p)}): in ONE transaction on ${p.database}, LOCK TABLE ${label(p.schema, p.table)} IN EXCLUSIVE MODE (reads go on; all its partitions), ` +
              `${p.replica ? 'SET LOCAL session_replication_role = replica, ' : ''}disable its triggers, DELETE its rows, COPY the restored rows in, enable the triggers, ` +
              `check the count and checksum${p.replica ? ' and the foreign keys' : ''}, COMMIT. No trigger fires; a failure anywhere rolls back: the live rows stay as they are.`
          : `create the table ${label(p.schema, p.newTable!)} (the dumped columns and types, NOT NULL; no defaults, indexes or constraints) and COPY the restored rows into it, in one transaction.`;
      },
      plan: (ctx) => (modeOf(ctx.params) === 'replace' ? [replaceConfirmPlan(ctx.params), ...copyPlanLines(true)] : copyPlanLines(false)),
      async run(ctx) {
        await withTempCleanup(ctx, 'the copy did not complete', () => (planOf(ctx).set ? copySet(ctx) : copyIntoProduction(ctx)));
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
          if (!(await (planOf(ctx).set ? verifySet(ctx) : verifyCopy(ctx)))) await cleanupTemp(ctx, 'the verification failed; the temporary database is not needed to look into it');
        });
      },
    },
    {
      id: 'cleanup',
      title: 'Drop the temporary database',
      kind: 'action',
      describe: (ctx) => `DROP DATABASE ${ctx.state.plan?.tempDatabase ?? 'pgrunbook_tmp_<run>'} WITH (FORCE), and delete the downloaded dump if it is still there.`,
      plan: (ctx) => [`DROP DATABASE ${tempDatabaseName(ctx.runId)} WITH (FORCE)`],
      run: dropTempDatabase,
    },
  ],
});

function replaceConfirmPlan(params: TableRestoreParams): string {
  const text = tablesText(params);
  const parsed = splitTables(text).map((n) => parseTableName(n));
  const tables = parsed.every((t) => !('error' in t)) ? parsed.map((t) => ('error' in t ? '' : label(t.schema, t.table))).join(',') : text;
  return `ask to confirm: delete all rows of ${text} in ${params.database} and insert the restored rows (type "${params.database}.${tables}" or pass --confirm)`;
}

function tablesText(params: Pick<TableRestoreParams, 'table' | 'tables'>): string {
  return params.tables ?? params.table ?? '';
}

/** --tables: with --at only, at least two distinct tables, each a valid name; no --new-table (each gets its own name). */
function tablesErrors(params: Partial<TableRestoreParams>): string[] {
  const errors: string[] = [];
  const names = splitTables(params.tables ?? '');
  const labels: string[] = [];
  for (const n of names) {
    const t = parseTableName(n);
    if ('error' in t) errors.push(t.error.replace(/^--table/, '--tables'));
    else if (identTooLong(t.table) || identTooLong(t.schema)) errors.push(`--tables: names are at most 63 bytes in PostgreSQL`);
    else labels.push(label(t.schema, t.table));
  }
  if (names.length < 2) errors.push('--tables needs at least two tables, comma-separated (for one, use --table)');
  if (new Set(labels).size !== labels.length) errors.push(`--tables names a table twice: ${params.tables}`);
  if (params.at === undefined) errors.push('--tables only applies with --at TARGET (the tables come from a scratch cluster recovered to one moment)');
  if (params.newTable !== undefined) errors.push('--new-table applies to one --table; with --tables each table gets <name>_restored_<time>');
  return errors;
}

/** Download the dump and find the table (or, partitioned, a table without rows of its own) in its table of contents. */
async function downloadAndFindTable(ctx: TableRestoreContext): Promise<void> {
  const p = planOf(ctx);
  try {
    const wf = await ensureDumpFile(ctx, dumpOf(p), p.workDir, { progress: true });
    const toc = await readToc(p.pgRestore, wf.file, { env: ctx.services.env, signal: ctx.signal });
    const found = findTableInToc(toc, p.schema, p.table);
    if (!found.table) throw new Error(notInDumpMessage(p.schema, p.table, { dump: dumpOf(p) }, tablesInToc(toc)));
    if (found.data) ctx.log(`found ${label(p.schema, p.table)} in the dump's table of contents (entries ${found.table.id} and ${found.data.id})`);
    else ctx.log(`found ${label(p.schema, p.table)} in the dump's table of contents (entry ${found.table.id}), without rows of its own: if it is partitioned, its partitions' rows are restored`);
  } catch (err) {
    await dropWorkFile(ctx);
    throw err;
  }
}

async function dropTempDatabase(ctx: TableRestoreContext): Promise<void> {
  const p = planOf(ctx);
  await cleanupTemp(ctx, 'the table restore is done');
  if (p.at) return checkScratchGone(ctx);
  const gone = !(await databaseExists(await maintenanceConnection(ctx.services.connection, [p.tempDatabase]), p.tempDatabase));
  ctx.check('temporary database dropped', gone, gone ? `${p.tempDatabase} is gone` : `${p.tempDatabase} still exists: ${byHand.dropDatabase(p.tempDatabase)}`);
}
