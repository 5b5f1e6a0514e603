// The copy into production and its verification. Replacing: the typed confirmation (with the
// live count now, what the operator agrees to lose), then ONE transaction that deletes the live
// rows and copies the restored ones in with no trigger firing, proven before COMMIT to hold
// exactly the dumped rows. New table: a table with the dumped columns, filled the same way.
import { errorMessage, shellQuote } from '../../engine/runner.js';
import { formatBytes } from '../../engine/format.js';
import { copyTable, leafRowCounts, renameBackHint, tableFingerprint, waitForCopyProgress } from '../../postgres/table-copy.js';
import { countRows, triggersAndKeys, triggersToDisable, type ForeignKey, type Trigger } from '../../postgres/tables.js';
import { refusal, throwIfInterrupted } from '../logical-restore/steps-common.js';
import { ensureTempRestored, sourceConnection } from './temp-database.js';
import { FAULT_COPY, FAULT_ENV, confirmText, label, planOf, sourceWords, targetTable, type TableRestoreContext } from './types.js';

/** Replace mode: the live row count now, and the operator's typed confirmation to lose those rows. */
async function confirmReplace(ctx: TableRestoreContext, restoredRows: number): Promise<void> {
  const p = planOf(ctx);
  // The count now, not the preflight's: it is what the operator agrees to lose.
  const n = await countRows({ ...ctx.services.connection, database: p.database }, p.schema, p.table);
  const what = `delete all ${n} rows of ${label(p.schema, p.table)} in ${p.database} and insert the ${restoredRows} rows from ${sourceWords(p)}`;
  const expected = confirmText(p);
  if (await ctx.confirm({ message: `${what}? Type "${expected}" to continue.`, destructive: { what, expected, means: 'the table, as DATABASE.SCHEMA.TABLE' } })) return;
  throwIfInterrupted(ctx.signal);
  throw refusal(`not confirmed: ${what}. Nothing was changed; the temporary database is dropped`, `to allow it, run the table restore again with --confirm ${shellQuote(expected)}`);
}

/** Replace mode: the triggers to keep from firing and (replica) the foreign keys to check before COMMIT. */
async function liveTriggersAndKeys(ctx: TableRestoreContext): Promise<{ triggers: Trigger[]; fks: ForeignKey[] }> {
  const p = planOf(ctx);
  const live = await triggersAndKeys({ ...ctx.services.connection, database: p.database }, p.schema, p.table, Boolean(p.replica));
  if (!live) throw new Error(`${label(p.schema, p.table)} does not exist in ${p.database} any more; nothing was changed`);
  const triggers = triggersToDisable(live.triggers, Boolean(p.replica));
  if (triggers.length) ctx.log(`triggers disabled for the copy, inside its transaction: ${triggers.map((t) => `${t.table}: ${t.name}`).join(', ')}`);
  if (p.replica) ctx.log(`session_replication_role = replica for the copy's transaction: foreign keys are checked explicitly before COMMIT${live.fks.length ? ` (${live.fks.map((k) => k.name).join(', ')})` : ''}`);
  return { triggers, fks: live.fks };
}

/**
 * Test hook (PGRUNBOOK_FAULT=table-restore:copy): fail once the server has taken rows into the
 * COPY (pg_stat_progress_copy), i.e. truly mid-copy. A watcher polls while the rows keep flowing
 * (psql sends them in 8 KiB batches).
 */
function injectedCopyFault(ctx: TableRestoreContext, applicationName: string): ((bytes: number, final: boolean) => Promise<void>) | undefined {
  const faults = (ctx.services.env[FAULT_ENV] ?? '').split(',').map((s) => s.trim());
  if (!faults.includes(FAULT_COPY)) return undefined;
  const prod = { ...ctx.services.connection, database: planOf(ctx).database };
  let watcher: Promise<number> | undefined;
  let received = 0;
  return async (bytes, final) => {
    watcher ??= waitForCopyProgress(prod, applicationName, ctx.signal).then((n) => (received = n));
    if (final) await watcher;
    if (received > 0 || final) {
      throw new Error(`injected fault (${FAULT_ENV}=${FAULT_COPY}) after ${bytes} bytes of rows had been sent and the server had received ${received} rows`);
    }
  };
}

export async function copyIntoProduction(ctx: TableRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const restored = await ensureTempRestored(ctx);
  const prod = { ...ctx.services.connection, database: p.database };
  const temp = sourceConnection(ctx);
  const applicationName = `pgrunbook table-restore ${ctx.runId}`;
  const replacing = p.mode === 'replace';
  if (replacing) await confirmReplace(ctx, restored.rows);
  const live = replacing ? await liveTriggersAndKeys(ctx) : undefined;
  const columns = replacing ? restored.columns.filter((c) => !c.generated) : restored.columns;
  const target = targetTable(p);
  // What the rows must add up to, from the temporary database (nothing else writes there): checked
  // inside the transaction, before COMMIT, so a mismatch rolls back instead of being committed.
  const expected = await tableFingerprint(temp, p.schema, p.table, columns.map((c) => c.name));
  const leafCounts = replacing && restored.partitioned ? await leafRowCounts(temp, restored.leaves ?? []) : [];
  ctx.log(`copying ${restored.rows} rows from ${p.at ? 'the scratch cluster' : p.tempDatabase} into ${label(target.schema, target.table)} in ${p.database}, in one transaction`);
  ctx.progress({ done: 0, total: restored.rows, unit: 'rows' });
  const r = await copyTable({
    psql: p.psql,
    source: temp,
    from: { schema: p.schema, table: p.table },
    target: prod,
    into: target,
    columns,
    expected,
    replace: live && { replica: Boolean(p.replica), triggers: live.triggers, fks: live.fks, leafCounts },
    clientEncoding: p.encoding,
    env: ctx.services.env,
    signal: ctx.signal,
    applicationName,
    onRows: (n) => ctx.progress({ done: Math.min(n, restored.rows), total: restored.rows, unit: 'rows' }),
    fault: injectedCopyFault(ctx, applicationName),
  }).catch((err: unknown) => {
    if (ctx.signal.aborted) throw err;
    throw new Error(
      `${errorMessage(err).replace(/\.+$/, '')}. The transaction was rolled back: ${replacing ? `the live rows of ${label(p.schema, p.table)} are unchanged` : `${label(target.schema, target.table)} was not created`}`,
    );
  });
  ctx.progress({ done: r.rows, total: restored.rows, unit: 'rows' });
  const deleted = r.tags.find((t) => t.startsWith('DELETE '));
  ctx.log(`committed: ${[deleted ? `deleted ${deleted.slice(7)} rows` : undefined, `inserted ${r.rows} rows (${formatBytes(r.bytes)})`].filter(Boolean).join(', ')}`);
  ctx.state.copied = { table: label(target.schema, target.table), rows: r.rows, columns: columns.map((c) => c.name) };
  if (!replacing) {
    ctx.log(
      `${label(target.schema, target.table)} has the dumped columns, types and NOT NULL constraints, but no defaults, indexes, constraints or triggers. ` +
        (p.live.exists
          ? `Compare it with ${label(p.schema, p.table)} and merge what you need.`
          : `To put it back under its old name: ${renameBackHint(target.schema, target.table, p.table)}; then recreate its indexes and constraints (their SQL: pg_restore --section=post-data --file=- <the dump>).`),
    );
  }
}

/** After COMMIT: the rows in production, counted and checksummed again, against the restored ones. */
export async function verifyCopy(ctx: TableRestoreContext): Promise<boolean> {
  const p = planOf(ctx);
  await ensureTempRestored(ctx);
  const copied = ctx.state.copied;
  if (!copied) throw new Error('the copy step has not run in this run');
  const target = targetTable(p);
  const [prod, temp] = await Promise.all([
    tableFingerprint({ ...ctx.services.connection, database: p.database }, target.schema, target.table, copied.columns),
    tableFingerprint(sourceConnection(ctx), p.schema, p.table, copied.columns),
  ]);
  const from = p.at ? sourceWords(p) : 'the dump';
  const countsOk = prod.rows === temp.rows;
  ctx.check(`rows in ${copied.table}`, countsOk, countsOk ? `${prod.rows} rows, as restored from ${from}` : `${prod.rows} rows in ${p.database}, ${temp.rows} restored from ${from}`);
  const sumOk = prod.sum === temp.sum;
  ctx.check(
    `contents of ${copied.table}`,
    sumOk,
    sumOk
      ? `every row matches ${from} (checksum of ${copied.columns.length} columns)`
      : `the rows differ from the dump's now (checksums ${prod.sum} and ${temp.sum}), though they matched before COMMIT (checked inside the copy's transaction): they were changed after the commit, by another session or a deferred trigger`,
  );
  return countsOk && sumOk;
}
