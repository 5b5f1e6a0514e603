// logical-restore --at: the database as it was at a moment, from a scratch cluster recovered to
// the target beside production (never touching it), instead of a dump: pg_dump -Fd -j of the
// scratch cluster's copy into the scratch directory, then the usual pg_restore -j into a new
// database, every table's count compared with the scratch cluster's. The scratch cluster (and the
// directory dump inside it) is removed by the step that fails or is interrupted, and after the
// restore; a resumed run that needs it again recovers it again.
import path from 'node:path';
import { errorMessage } from '../../engine/errors.js';
import { findPgClientFor, serverMajor } from '../../postgres/programs/pg_dump.js';
import { dumpToDirectory } from '../../postgres/programs/pg_dump-dir.js';
import { currentDatabaseOwner, userTableCounts } from '../../postgres/scratch-sql.js';
import type { ChosenDump } from '../../repo/dump-files.js';
import { makeScratchWritable, planScratch, recoverScratch, scratchConnection, scratchGone, teardownScratch, type ScratchOptions, type ScratchState } from '../../restore/scratch.js';
import { planOf, type LogicalRestoreContext } from './types.js';

/** What stands for the dump in the plan with --at (its id names the target; no object in the repository). */
export function scratchSourceDump(database: string, at: string): ChosenDump {
  return { database, id: `the scratch cluster at ${at}`, key: '', metaKey: '' };
}

function options(ctx: LogicalRestoreContext, at: string): ScratchOptions {
  return {
    repo: ctx.services.repo ?? '',
    env: ctx.services.env,
    target: at,
    exclusive: Boolean(ctx.params.exclusive),
    scratchDir: ctx.params.scratchDir,
    runId: ctx.runId,
    production: ctx.services.connection,
    signal: ctx.signal,
    report: ctx,
  };
}

export async function planLogicalScratch(ctx: LogicalRestoreContext, at: string): Promise<ScratchState> {
  if (!ctx.services.repo) throw new Error('--at needs the repository holding the base backups and WAL: pass --repo URL');
  return planScratch(options(ctx, at));
}

function scratchOf(ctx: LogicalRestoreContext): ScratchState {
  const s = ctx.state.scratch;
  if (!s) throw new Error('the journal has no scratch cluster plan: the preflight step did not finish; start the restore again');
  return s;
}

/** The directory dump pg_restore reads, inside the scratch directory. */
export function scratchDumpDir(ctx: LogicalRestoreContext): string {
  return path.join(scratchOf(ctx).base, 'dump');
}

/**
 * Recover the scratch cluster, check the database is there at the target, count its tables and
 * dump it (directory format, parallel) next to it. Everything is removed again if this fails.
 */
export async function recoverAndDump(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const s = scratchOf(ctx);
  const database = ctx.params.database;
  try {
    await recoverScratch(s, options(ctx, ctx.params.at!));
    await makeScratchWritable(s);
    const conn = scratchConnection(s, database);
    const owner = await currentDatabaseOwner(conn).catch((e: Error) => {
      throw new Error(`database ${database} did not exist at ${ctx.params.at} (${e.message}): pick a target before it was dropped (pgrunbook find-target lists the incidents)`);
    });
    ctx.state.dumpOwner = owner;
    ctx.state.scratchCounts = await userTableCounts(conn, ctx.signal);
    ctx.log(`${database} at ${ctx.params.at}: ${Object.keys(ctx.state.scratchCounts).length} tables, owned by "${owner}"`);
    const pgDump = await findPgClientFor('pg_dump', serverMajor(p.serverVersionNum));
    const r = await dumpToDirectory({ pgDump: pgDump.path, connection: conn, dir: scratchDumpDir(ctx), jobs: p.jobs, env: ctx.services.env, signal: ctx.signal });
    ctx.log(`dumped ${database} from the scratch cluster: ${r.command}`);
    ctx.state.scratchDumped = true;
  } catch (err) {
    await removeScratch(ctx, 'recovering or dumping the scratch cluster failed');
    throw err;
  }
}

/** Stop the scratch cluster and remove its directory (and the dump in it); never throws. */
export async function removeScratch(ctx: LogicalRestoreContext, why: string): Promise<void> {
  const s = ctx.state.scratch;
  if (!s) return;
  try {
    await teardownScratch(s);
    ctx.state.scratchDumped = false;
    ctx.log(`removed the scratch cluster ${s.base} (${why})`);
  } catch (err) {
    ctx.log(`could not remove the scratch cluster ${s.base} (${why}): ${errorMessage(err)}. Stop it (pg_ctl stop -D ${s.dataDir} -m immediate) and remove the directory by hand`, 'error');
  }
}

export async function checkScratchRemoved(ctx: LogicalRestoreContext): Promise<void> {
  const s = ctx.state.scratch;
  if (!s) return;
  const g = await scratchGone(s);
  ctx.check('scratch cluster removed', g.gone, g.detail);
}
