// `retention --data-dirs`: the data directories pitr and the drill moved aside next to --pgdata
// (never deleted by them), and the staging directories of pitr runs that never went on (kept for
// --resume), are listed with their origin and age, and those older than --keep-data-dir-days are
// removed after the operator types their names. Never the live data
// directory, never one a server runs in: checked when planning and again just before removing.
import type { Step, StepContext } from '../engine/types.js';
import { formatBytes } from '../engine/format.js';
import { ageWords, describeAsideDir, directoryBytes, listAsideDirs, removeAsideDir } from '../restore/aside-dirs.js';
import type { Typed } from './define.js';

export type DataDirParams = { dataDirs?: boolean; keepDataDirDays?: number; now?: string };
type PlannedDir = { path: string; name: string; movedAt: string; bytes: number };
export type DataDirState = { asideDirs?: { pgdata: string; remove: PlannedDir[] }; removedDirs?: string[] };

export const DEFAULT_KEEP_DATA_DIR_DAYS = 7;

type Ctx = StepContext<Typed<DataDirParams, DataDirState>>;

const only = (ctx: Ctx) => (ctx.params.dataDirs ? undefined : 'only with --data-dirs');

function pgdataOf(ctx: Ctx): string {
  const dir = ctx.services.pgdata;
  if (!dir) throw new Error('--data-dirs needs the data directory whose moved-aside copies to remove: pass --pgdata DIR (or set PGDATA)');
  return dir;
}

function nowOf(ctx: Ctx): Date {
  const t = ctx.params.now ? Date.parse(ctx.params.now) : Number.NaN;
  return Number.isFinite(t) ? new Date(t) : new Date();
}

function planned(ctx: Ctx): PlannedDir[] {
  const p = ctx.state.asideDirs;
  if (!p) throw new Error('no plan for the moved-aside data directories in the journal: the listing step did not finish; start a new run');
  return p.remove;
}

export const dataDirSteps: Step<Typed<DataDirParams, DataDirState>>[] = [
  {
    id: 'data-dirs',
    title: 'List the moved-aside data directories',
    kind: 'check',
    skipIf: only,
    describe: (ctx) => `Looking next to ${ctx.services.pgdata ?? 'the data directory'} for directories recoveries moved aside or staged; those older than ${ctx.params.keepDataDirDays ?? DEFAULT_KEEP_DATA_DIR_DAYS} days expire.`,
    plan: async (ctx) => (await listAndPlan(ctx)).lines,
    async run(ctx) {
      const { lines, found } = await listAndPlan(ctx);
      for (const line of lines) ctx.log(line);
      ctx.check('moved-aside data directories listed', true, `${found} next to ${pgdataOf(ctx)}, ${planned(ctx).length} to remove`);
    },
  },
  {
    id: 'remove-data-dirs',
    title: 'Remove the old moved-aside data directories',
    kind: 'action',
    skipIf: (ctx) => only(ctx) ?? (ctx.state.asideDirs && ctx.state.asideDirs.remove.length === 0 ? 'no moved-aside data directory is old enough to remove' : undefined),
    destructive: {
      what: (ctx) => `remove ${planned(ctx).map((d) => `${d.path} (${formatBytes(d.bytes)})`).join(', ')}: these copies are gone for good`,
      // Their names, as the operator sees them listed: typing them proves which copies go.
      confirmText: (ctx) => planned(ctx).map((d) => d.name).join(' '),
    },
    plan: (ctx) => planned(ctx).map((d) => `rm -r ${d.path}`),
    async run(ctx) {
      const removed = (ctx.state.removedDirs ??= []);
      for (const d of planned(ctx)) {
        ctx.signal.throwIfAborted();
        if (removed.includes(d.path)) continue;
        await removeAsideDir(d.path, ctx.state.asideDirs!.pgdata);
        removed.push(d.path);
        ctx.log(`removed ${d.path} (${formatBytes(d.bytes)})`);
      }
      ctx.check('old moved-aside data directories removed', true, `${removed.length} removed`);
    },
  },
];

async function listAndPlan(ctx: Ctx): Promise<{ lines: string[]; found: number }> {
  const pgdata = pgdataOf(ctx);
  const now = nowOf(ctx);
  const keepMs = (ctx.params.keepDataDirDays ?? DEFAULT_KEEP_DATA_DIR_DAYS) * 86_400_000;
  const dirs = await listAsideDirs(pgdata);
  const lines: string[] = [];
  const remove: PlannedDir[] = [];
  for (const d of dirs) {
    const age = now.getTime() - d.movedAt.getTime();
    const old = age > keepMs;
    const bytes = await directoryBytes(d.path);
    const verdict = d.inUse ? 'kept: in use' : old ? 'expires' : `kept: younger than ${ageWords(keepMs)}`;
    lines.push(`${describeAsideDir(d, now)}, ${formatBytes(bytes)}: ${verdict}`);
    if (old && !d.inUse) remove.push({ path: d.path, name: d.name, movedAt: d.movedAt.toISOString(), bytes });
  }
  if (!dirs.length) lines.push(`no moved-aside or staged data directories next to ${pgdata}`);
  ctx.state.asideDirs = { pgdata, remove };
  return { lines, found: dirs.length };
}
