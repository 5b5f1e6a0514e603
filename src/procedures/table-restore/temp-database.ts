// The temporary database a table is restored into: made (with the dump's schema and the table's
// rows, or its leaf partitions'), made again on a resumed run that finds it gone, and dropped
// when the run is done or any step after it fails.
//
// The engine has no "finally" step and stops at the first failed step, so every step after the
// temporary database exists drops it itself when it fails, is interrupted, or (replace mode) is
// refused; the last step drops it after success.
import fsp from 'node:fs/promises';
import type { ConnectionSettings } from '../../config/connection.js';
import path from 'node:path';
import { createDatabase, createDatabaseClauses, maintenanceConnection } from '../../postgres/databases.js';
import { findTableInToc, readToc, runPgRestore } from '../../postgres/programs/pg_restore.js';
import { tableColumnsAndRows, tableLeaves } from '../../postgres/tables.js';
import { dropOurDatabase, dropWorkFile, ensureDumpFile } from '../logical-restore/steps-common.js';
import { cleanupScratch, ensureScratchRestored, scratchSource } from './at.js';
import { dumpOf, label, planOf, type Restored, type TableRestoreContext } from './types.js';

/** Where the restored rows are read: the temporary database, or (--at) the scratch cluster's copy of the database. */
export function sourceConnection(ctx: TableRestoreContext): ConnectionSettings {
  const p = planOf(ctx);
  return p.at ? scratchSource(ctx) : { ...ctx.services.connection, database: p.tempDatabase };
}

/** Run `fn`; if it fails (or is interrupted), drop the temporary database before passing the error on. */
export async function withTempCleanup(ctx: TableRestoreContext, why: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    await cleanupTemp(ctx, why);
    throw err;
  }
}

/** Drop the temporary database (only if this run created it) and the dump's temporary copy. */
export async function cleanupTemp(ctx: TableRestoreContext, why: string): Promise<void> {
  await dropWorkFile(ctx);
  const p = ctx.state.plan;
  if (p?.at) return cleanupScratch(ctx, why);
  if (!p || !ctx.state.tempCreated) return;
  if (await dropOurDatabase(ctx, p.tempDatabase, `temporary database: ${why}`)) {
    ctx.state.tempCreated = false;
    delete ctx.state.restored;
  }
}

/** The temporary database with the table's rows in it: made here, or again on a resumed run after it was dropped. */
export async function ensureTempRestored(ctx: TableRestoreContext): Promise<Restored> {
  const p = planOf(ctx);
  if (p.at) return ensureScratchRestored(ctx);
  const existing = ctx.state.restored;
  if (ctx.state.tempCreated && existing) return existing;
  if (ctx.state.tempCreated) {
    // An earlier attempt stopped half-way: start again from an empty database.
    if (!(await dropOurDatabase(ctx, p.tempDatabase, 'an earlier attempt left it half-restored'))) throw new Error(`the temporary database ${p.tempDatabase} could not be dropped; drop it, then resume`);
    ctx.state.tempCreated = false;
  }
  const wf = await ensureDumpFile(ctx, dumpOf(p), p.workDir);
  await createTempDatabase(ctx);
  const temp = { ...ctx.services.connection, database: p.tempDatabase };
  const common = { pgRestore: p.pgRestore, connection: temp, file: wf.file, signal: ctx.signal, env: ctx.services.env, onMessage: (line: string) => ctx.log(line, 'warn') };
  // The whole schema (types, functions, tables, sequences; no indexes or constraints) so the table's
  // definition finds what it depends on; owners and grants left out (the copy is ours, then dropped).
  // Publications and subscriptions are post-data, and a subscription would connect to its publisher.
  await runPgRestore({ ...common, args: ['--section=pre-data', '--no-owner', '--no-privileges', '--no-publications', '--no-subscriptions', '--no-tablespaces'] });
  ctx.log(`restored the dump's schema (pre-data) into ${p.tempDatabase}`);
  // The rows: the table's own TABLE DATA entry, or a partitioned table's leaf partitions' (as the dump defines them).
  const shape = await tableLeaves(temp, p.schema, p.table);
  if (!shape) throw new Error(`${label(p.schema, p.table)} is not in the schema restored from the dump`);
  if (shape.skipped.length) ctx.log(`partitions whose rows are not in a dump (not restored): ${shape.skipped.join(', ')}`, 'warn');
  const ids = await dataEntries(ctx, wf.file, shape);
  if (ids.length) {
    const listFile = path.join(wf.dir, 'data.list');
    await fsp.writeFile(listFile, ids.map((id) => `${id}\n`).join(''), { mode: 0o600 });
    await runPgRestore({ ...common, args: ['--section=data', `--use-list=${listFile}`, '--no-owner', '--no-privileges'] });
  }
  if (shape.partitioned) ctx.log(`${label(p.schema, p.table)} is partitioned: restored the rows of its ${shape.leaves.length} partitions (${shape.leaves.map((l) => label(l.schema, l.table)).join(', ')})`);
  const restored: Restored = { ...(await tableColumnsAndRows(temp, p.schema, p.table)), partitioned: shape.partitioned, leaves: shape.leaves };
  ctx.state.restored = restored;
  ctx.log(`restored ${restored.rows} rows of ${label(p.schema, p.table)} into ${p.tempDatabase}`);
  return restored;
}

/** CREATE DATABASE pgrunbook_tmp_<run>, with the production database's encoding and locale. */
async function createTempDatabase(ctx: TableRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const maint = await maintenanceConnection(ctx.services.connection, [p.tempDatabase]);
  const clauses = await createDatabaseClauses(maint, p.database);
  if ((await createDatabase(maint, p.tempDatabase, clauses)) === 'exists') throw new Error(`database "${p.tempDatabase}" already exists and is not this run's; nothing was changed`);
  ctx.state.tempCreated = true;
  ctx.log(`created temporary database ${p.tempDatabase}`);
}

/** The dump's TABLE DATA entries for the table (or each leaf partition); refuses a dump that lacks any. */
async function dataEntries(ctx: TableRestoreContext, file: string, shape: { partitioned: boolean; leaves: { schema: string; table: string }[] }): Promise<number[]> {
  const p = planOf(ctx);
  const toc = await readToc(p.pgRestore, file, { env: ctx.services.env, signal: ctx.signal });
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
  return ids;
}
