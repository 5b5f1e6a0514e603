// table-restore --at: the rows come from a scratch cluster recovered to the target (beside
// production, never touching it) instead of a dump's temporary database. The scratch cluster
// stands where the temporary database stood: built by the first step that needs it, torn down
// by every step that fails or is interrupted after it exists, and by the last step.
import type { ConnectionSettings } from '../../config/connection.js';
import { errorMessage } from '../../engine/errors.js';
import { tableColumnsAndRows, tableLeaves } from '../../postgres/tables.js';
import { makeScratchWritable, planScratch, recoverScratch, scratchConnection, scratchGone, teardownScratch, type ScratchOptions, type ScratchState } from '../../restore/scratch.js';
import { label, planOf, type Restored, type TableRestoreContext } from './types.js';

function scratchOf(ctx: TableRestoreContext): ScratchState {
  const s = ctx.state.scratch;
  if (!s) throw new Error('the journal has no scratch cluster plan: the preflight step did not finish; start the table restore again');
  return s;
}

export function scratchOptions(ctx: TableRestoreContext, target: string): ScratchOptions {
  return {
    repo: ctx.services.repo ?? '',
    env: ctx.services.env,
    target,
    exclusive: Boolean(ctx.params.exclusive),
    scratchDir: ctx.params.scratchDir,
    runId: ctx.runId,
    production: ctx.services.connection,
    signal: ctx.signal,
    report: ctx,
  };
}

/** Preflight: the recovery plan and room for the scratch cluster (nothing downloaded to disk, nothing started). */
export async function planScratchFor(ctx: TableRestoreContext, target: string): Promise<ScratchState> {
  if (!ctx.services.repo) throw new Error('--at needs the repository holding the base backups and WAL: pass --repo URL');
  return planScratch(scratchOptions(ctx, target));
}

export function scratchSource(ctx: TableRestoreContext): ConnectionSettings {
  return scratchConnection(scratchOf(ctx), planOf(ctx).database);
}

/** The scratch cluster recovered to the target, and the table as it was there. */
export async function ensureScratchRestored(ctx: TableRestoreContext): Promise<Restored> {
  const p = planOf(ctx);
  const scratch = scratchOf(ctx);
  if (ctx.state.tempCreated && ctx.state.restored && !(await scratchGone(scratch)).gone) return ctx.state.restored;
  ctx.state.tempCreated = true;
  await recoverScratch(scratch, scratchOptions(ctx, p.at!));
  await makeScratchWritable(scratch);
  const conn = scratchSource(ctx);
  const shape = await tableLeaves(conn, p.schema, p.table);
  if (!shape) throw new Error(`${label(p.schema, p.table)} did not exist in ${p.database} at ${p.at}: pick a target before it was dropped (pgrunbook find-target lists the incidents)`);
  const restored: Restored = { ...(await tableColumnsAndRows(conn, p.schema, p.table)), partitioned: shape.partitioned, leaves: shape.leaves };
  ctx.state.restored = restored;
  ctx.log(`${label(p.schema, p.table)} in ${p.database} at ${p.at}: ${restored.rows} rows`);
  return restored;
}

/** Stop the scratch cluster and remove its directory (never throws: says what to remove by hand). */
export async function cleanupScratch(ctx: TableRestoreContext, why: string): Promise<void> {
  const s = ctx.state.scratch;
  if (!s) return;
  try {
    await teardownScratch(s);
    ctx.log(`removed the scratch cluster ${s.base} (${why})`);
    ctx.state.tempCreated = false;
    delete ctx.state.restored;
  } catch (err) {
    ctx.log(`could not remove the scratch cluster ${s.base} (${why}): ${errorMessage(err)}. Stop it (pg_ctl stop -D ${s.dataDir} -m immediate) and remove the directory by hand`, 'error');
  }
}

/** The last step's proof: no scratch server, no scratch directory. */
export async function checkScratchGone(ctx: TableRestoreContext): Promise<void> {
  const s = ctx.state.scratch;
  if (!s) return;
  const g = await scratchGone(s);
  ctx.check('scratch cluster removed', g.gone, g.detail);
}
