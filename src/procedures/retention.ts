// Retention: expire old base backups and dumps, debris of failed runs, and the WAL that no kept
// base backup needs, never the WAL one does. The deciding is done by src/storage/retention.ts
// (pure); this procedure reads the repository, shows the plan item by item, asks for the
// repository's name as confirmation, deletes (metadata first, WAL last) and proves afterwards
// that every kept backup can still recover to the same point as before.
import type { StepContext } from '../engine/types.js';
import { formatBytes } from '../engine/format.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { BASEBACKUP_PREFIX, DUMP_PREFIX, type Catalog } from '../repo/catalog.js';
import { WAL_PREFIX } from '../repo/walarchive.js';
import {
  DEFAULT_RETENTION_POLICY,
  WalCoverage,
  WalTally,
  assertPlanSafe,
  compareWindows,
  narrowPlan,
  planRetention,
  planTotals,
  walVerdict,
  type RetentionPlan,
  type RetentionPolicy,
  type WalRule,
  type WalTallySummary,
} from '../repo/retention.js';
import { findDebris, removeDebris, type DebrisItem, type DebrisScan } from '../repo/debris.js';
import { debrisText, describeRetentionPlan, plural } from '../repo/retention-text.js';
import { readRepositoryState, slimCatalog } from '../repo/retention-state.js';
import { defineProcedure, type Typed } from './define.js';
import { DEFAULT_KEEP_DATA_DIR_DAYS, dataDirSteps, type DataDirParams, type DataDirState } from './retention-data-dirs.js';

type ExpiredState = {
  baseBackups: string[];
  dumps: string[];
  walFiles: number;
  bytes: number;
  /** The WAL line actually applied (may be more cautious than the plan's). */
  walRule?: WalRule;
  /** Temp files and empty directories removed (paths relative to the repository). */
  debris?: string[];
};

type RetentionParams = { keepBaseBackups?: number; keepDumpDays?: number; incompleteGraceHours?: number; now?: string } & DataDirParams;

type RetentionState = DataDirState & {
  /** The repository the run was planned for, as it describes itself. */
  repo?: string;
  confirmText?: string;
  /** The catalog as it was before anything was deleted (slimmed: no per-table row counts). */
  catalog?: Catalog;
  /** When each incomplete backup was last written to, by its prefix. */
  lastWrite?: Record<string, string>;
  debris?: DebrisScan;
  now?: string;
  plan?: RetentionPlan;
  wal?: WalTallySummary;
  expired?: ExpiredState;
};

type Ctx = StepContext<Typed<RetentionParams, RetentionState>>;

function debrisOf(ctx: Ctx): DebrisItem[] {
  return ctx.state.debris?.items ?? [];
}

export const retentionProcedure = defineProcedure<RetentionParams, RetentionState>({
  id: 'retention',
  title: 'Expire old backups and WAL',
  summary:
    'Keep the newest N base backups and N days of dumps; delete older ones, debris of failed runs, and the WAL no kept base backup needs. Confirm by typing the repository URL.',
  group: 'backup',
  params: [
    {
      name: 'keepBaseBackups',
      type: 'number',
      description: `complete base backups to keep, newest first; the newest is never deleted (default: the profile's retention.baseBackups, else ${DEFAULT_RETENTION_POLICY.keepBaseBackups})`,
      example: '7',
    },
    {
      name: 'keepDumpDays',
      type: 'number',
      description: `days to keep dumps for; the newest dump of each database is always kept (default: the profile's retention.dumpDays, else ${DEFAULT_RETENTION_POLICY.keepDumpDays})`,
      example: '7',
    },
    {
      name: 'incompleteGraceHours',
      type: 'number',
      default: DEFAULT_RETENTION_POLICY.incompleteGraceHours,
      description: 'incomplete backups (no backup.json / dump.json) last written longer ago than this are deleted as debris of failed runs; younger ones may still be running and are kept (at least 1)',
    },
    {
      name: 'now',
      type: 'string',
      env: 'PGRUNBOOK_NOW',
      description: 'measure ages from this time instead of the clock (ISO 8601), to see what a later run would expire; incomplete backups are still judged by the real clock too',
      example: '2026-12-01T00:00:00Z',
    },
    {
      name: 'dataDirs',
      type: 'boolean',
      default: false,
      description: 'instead of the repository: remove data directories that pitr and the drill moved aside next to --pgdata, older than --keep-data-dir-days (confirm by typing their names)',
    },
    { name: 'keepDataDirDays', type: 'number', default: DEFAULT_KEEP_DATA_DIR_DAYS, description: 'with --data-dirs: keep moved-aside data directories (and pitr staging directories) younger than this many days' },
  ],
  validate(params) {
    const errors: string[] = [];
    const k = params.keepBaseBackups;
    if (k !== undefined && !(Number.isInteger(k) && k >= 1)) {
      errors.push(`--keep-base-backups: expected a whole number of at least 1 (the newest complete base backup is always kept), got ${k}`);
    }
    const d = params.keepDumpDays;
    if (d !== undefined && !(d >= 0)) errors.push(`--keep-dump-days: expected a number of days, 0 or more, got ${d}`);
    const g = params.incompleteGraceHours;
    if (g !== undefined && !(g >= 1)) {
      errors.push(`--incomplete-grace-hours: expected at least 1 (a backup written to within the last hour may still be running), got ${g}`);
    }
    if (params.keepDataDirDays !== undefined && !(params.keepDataDirDays >= 0)) errors.push(`--keep-data-dir-days: expected a number of days, 0 or more, got ${params.keepDataDirDays}`);
    if (params.now !== undefined && parseNow(params.now) === undefined) {
      errors.push(`--now: "${params.now}" is not an ISO 8601 time such as 2026-12-01T00:00:00Z`);
    }
    return errors;
  },
  steps: [
    {
      id: 'catalog',
      title: 'Read the repository catalog',
      kind: 'check',
      skipIf: repositoryOnly,
      describe: (ctx) => `Listing base backups, dumps and archived WAL in ${ctx.services.repo ?? 'the repository'}, with each backup's recovery window.`,
      plan: async (ctx) => [await loadCatalog(ctx)],
      async run(ctx) {
        const summary = await loadCatalog(ctx);
        ctx.check('repository catalog read', true, summary);
      },
    },
    {
      id: 'plan',
      title: 'Decide what expires',
      kind: 'check',
      skipIf: repositoryOnly,
      describe: (ctx) => {
        const p = policyOf(ctx);
        return `Keeping the ${plural(p.keepBaseBackups, 'newest complete base backup')}, dumps from the last ${plural(p.keepDumpDays, 'day')} (and the newest of each database), and all WAL from the oldest kept base backup's start onward.`;
      },
      plan: async (ctx) => makePlan(ctx),
      async run(ctx) {
        for (const line of await makePlan(ctx)) ctx.log(line, line.startsWith('warning:') ? 'warn' : 'info');
      },
    },
    {
      id: 'expire',
      title: 'Delete expired backups and WAL',
      kind: 'action',
      describe: () => 'Deleting each backup metadata file first (so no half-deleted backup ever looks complete), then its data; WAL files last.',
      skipIf: (ctx) => {
        if (ctx.params.dataDirs) return repositoryOnly(ctx);
        const { plan, wal } = ctx.state;
        if (!plan || !wal) return undefined;
        return planTotals(plan, wal.expired).objects === 0 && debrisOf(ctx).length === 0 ? 'nothing has expired under this policy' : undefined;
      },
      destructive: {
        what: (ctx) => confirmationWhat(ctx),
        // The repository URL (without its query), as the operator knows it: typing it proves which
        // repository loses backups, as typing a database name does before a drop.
        confirmText: (ctx) => ctx.state.confirmText ?? ctx.services.repo ?? 'delete-backups',
        confirmMeaning: () => "the repository's URL, without its query",
      },
      plan: (ctx) => {
        const { plan, wal } = decided(ctx);
        const lines: string[] = [];
        for (const b of plan.expire.baseBackups) lines.push(`delete ${BASEBACKUP_PREFIX}${b.id}/ (backup.json first, then ${plural(b.objects, 'object')}, ${formatBytes(b.bytes)})`);
        for (const d of plan.expire.dumps) lines.push(`delete ${DUMP_PREFIX}${d.database}/${d.id}/ (dump.json first, then ${plural(d.objects, 'object')}, ${formatBytes(d.bytes)})`);
        for (const r of wal.expired.runs) lines.push(`delete ${WAL_PREFIX}${r.from} .. ${r.to} (${plural(r.files, 'file')}, ${formatBytes(r.bytes)})`);
        for (const d of debrisOf(ctx)) lines.push(`delete ${d.kind === 'temp-file' ? `temporary file ${d.path} (${formatBytes(d.bytes)})` : `empty directory ${d.path}`}`);
        return lines;
      },
      async run(ctx) {
        await expire(ctx);
      },
    },
    {
      id: 'verify',
      title: 'Check that kept backups still restore as before',
      kind: 'verify',
      skipIf: repositoryOnly,
      describe: () => 'Re-reading the catalog: expired items are gone, every kept base backup is complete with the same recovery window, and no WAL it needs is missing.',
      plan: () => ['re-read the catalog; compare the recovery window of every kept base backup with the one before; check that every WAL file that was to stay is still there'],
      async run(ctx) {
        await verify(ctx);
      },
    },
    ...dataDirSteps,
  ],
});

function repositoryOnly(ctx: Ctx): string | undefined {
  return ctx.params.dataDirs ? 'with --data-dirs only the moved-aside data directories are looked at' : undefined;
}

/** The plan the operator confirmed, and the WAL tally it was made with. */
function decided(ctx: Ctx): { plan: RetentionPlan; wal: WalTallySummary } {
  const { plan, wal } = ctx.state;
  if (!plan || !wal) throw new Error('no retention plan in the journal: the plan step did not finish; start a new run');
  return { plan, wal };
}

function catalogOf(ctx: Ctx): Catalog {
  const c = ctx.state.catalog;
  if (!c) throw new Error('no catalog in the journal: the catalog step did not finish; start a new run');
  return c;
}

function parseNow(text: string): Date | undefined {
  if (!/^\d{4}-\d\d-\d\d/.test(text.trim())) return undefined;
  const d = new Date(text.trim());
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function policyOf(ctx: Ctx): RetentionPolicy {
  const planned = ctx.state.plan;
  if (planned) return planned.policy;
  const profile = ctx.services.profile.retention ?? {};
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return {
    keepBaseBackups: num(ctx.params.keepBaseBackups) ?? profile.baseBackups ?? DEFAULT_RETENTION_POLICY.keepBaseBackups,
    keepDumpDays: num(ctx.params.keepDumpDays) ?? profile.dumpDays ?? DEFAULT_RETENTION_POLICY.keepDumpDays,
    incompleteGraceHours: num(ctx.params.incompleteGraceHours) ?? DEFAULT_RETENTION_POLICY.incompleteGraceHours,
  };
}

async function withRepository<T>(ctx: Ctx, fn: (repo: Repository) => Promise<T>): Promise<T> {
  const svc = ctx.services;
  const planned = ctx.state.repo;
  // The repository is a flag, not a journaled param: a resumed run must be pointed at the same one.
  if (planned && !svc.repo) throw new Error(`this run works on ${planned}: pass --repo ${planned.split('?')[0]} again (the repository is not kept in the journal)`);
  const repo = await openRepository(svc.repo, svc.env);
  if (planned && repo.describe() !== planned) {
    await repo.close().catch(() => undefined);
    throw new Error(`this run was planned for ${planned}, not ${repo.describe()}: pass --repo ${planned.split('?')[0]} to continue it, or start a new run for the other repository`);
  }
  try {
    return await fn(repo);
  } finally {
    await repo.close().catch(() => undefined);
  }
}

async function loadCatalog(ctx: Ctx): Promise<string> {
  return withRepository(ctx, async (repo) => {
    const { catalog, lastWrite } = await readRepositoryState(repo);
    const where = repo.describe();
    if (catalog.baseBackups.length === 0 && catalog.dumps.length === 0 && catalog.wal.files === 0) {
      throw new Error(`${where} holds no base backups, dumps or WAL files, so nothing can expire. Check --repo (or PGRUNBOOK_REPO, or the profile's repo): is it the repository your backups go to?`);
    }
    ctx.state.repo = where;
    ctx.state.confirmText = where.split('?')[0];
    ctx.state.catalog = slimCatalog(catalog);
    ctx.state.lastWrite = lastWrite;
    const complete = catalog.baseBackups.filter((b) => b.complete).length;
    const dumps = catalog.dumps.filter((d) => d.complete);
    for (const g of catalog.gaps) ctx.log(`the WAL archive has a gap on timeline ${g.timeline}: ${g.from}${g.missing > 1 ? ` .. ${g.to}` : ''} missing`, 'warn');
    const incompleteBackups = catalog.baseBackups.length - complete;
    const incompleteDumps = catalog.dumps.length - dumps.length;
    return (
      `${where}: ${plural(complete, 'complete base backup')}${incompleteBackups ? ` (+${incompleteBackups} incomplete)` : ''}, ` +
      `${plural(dumps.length, 'complete dump')} of ${plural(new Set(dumps.map((d) => d.database)).size, 'database')}${incompleteDumps ? ` (+${incompleteDumps} incomplete)` : ''}, ` +
      `${plural(catalog.wal.files, 'WAL file')} (${formatBytes(catalog.wal.bytes)}) on ${plural(catalog.wal.timelines.length, 'timeline')}`
    );
  });
}

/** Decide, store the plan in the run's state, and describe every item with its reason. */
async function makePlan(ctx: Ctx): Promise<string[]> {
  const catalog = catalogOf(ctx);
  const now = ctx.state.now ? new Date(ctx.state.now) : ctx.params.now ? parseNow(ctx.params.now)! : new Date();
  const plan = planRetention(catalog, { policy: policyOf(ctx), now, clock: new Date(), lastWrite: ctx.state.lastWrite ?? {} });
  const tally = new WalTally(plan.wal.rule, catalog.segmentSize);
  let debris: DebrisScan | undefined;
  await withRepository(ctx, async (repo) => {
    for await (const entry of repo.store.list(WAL_PREFIX)) {
      ctx.signal.throwIfAborted();
      tally.add(entry);
    }
    // Debris of killed runs: always by the real clock, whatever --now says.
    debris = await findDebris(repo.store, { clock: new Date() });
  });
  const wal = tally.summary();
  ctx.state.debris = debris;
  ctx.state.now = plan.now;
  ctx.state.plan = plan;
  ctx.state.wal = wal;

  return describeRetentionPlan(plan, wal, debris, ctx.params.now !== undefined);
}

function confirmationWhat(ctx: Ctx): string {
  const { plan, wal } = decided(ctx);
  const t = planTotals(plan, wal.expired);
  const extra = debrisText(debrisOf(ctx));
  return (
    `delete ${plural(t.baseBackups, 'base backup')}${t.incompleteBaseBackups ? ` (${t.incompleteBaseBackups} of them incomplete)` : ''}, ` +
    `${plural(t.dumps, 'dump')} and ${plural(t.walFiles, 'WAL file')} (${formatBytes(t.bytes)})${extra ? `, and ${extra}` : ''} from ${ctx.state.repo}`
  );
}

async function expire(ctx: Ctx): Promise<void> {
  const { plan: confirmed, wal } = decided(ctx);
  const walPlanned = wal.expired;
  const done: ExpiredState = ctx.state.expired ?? { baseBackups: [], dumps: [], walFiles: 0, bytes: 0 };
  ctx.state.expired = done;
  await withRepository(ctx, async (repo) => {
    // The repository may have changed since the plan was shown (a resumed run, another job):
    // decide again with the same policy and time, and delete only what both decisions expire.
    const { catalog, lastWrite } = await readRepositoryState(repo);
    const current = planRetention(catalog, { policy: confirmed.policy, now: new Date(confirmed.now), clock: new Date(), lastWrite });
    const { plan, dropped } = narrowPlan(confirmed, current);
    for (const d of dropped) ctx.log(`not deleting ${d}`, d.endsWith('already gone') ? 'info' : 'warn');
    assertPlanSafe(plan, catalog);
    done.walRule = plan.wal.rule;

    const total = planTotals(plan, walPlanned).objects;
    let objects = 0;
    ctx.progress({ done: 0, total, unit: 'objects' });
    for (const b of plan.expire.baseBackups) {
      ctx.signal.throwIfAborted();
      await repo.deleteBaseBackup(b.id);
      objects += b.objects;
      done.baseBackups.push(b.id);
      done.bytes += b.bytes;
      ctx.log(`deleted base backup ${b.id} (${plural(b.objects, 'object')}, ${formatBytes(b.bytes)})`);
      ctx.progress({ done: objects, total, unit: 'objects' });
    }
    for (const d of plan.expire.dumps) {
      ctx.signal.throwIfAborted();
      await repo.deleteDump(d.database, d.id);
      objects += d.objects;
      done.dumps.push(`${d.database}/${d.id}`);
      done.bytes += d.bytes;
      ctx.log(`deleted dump ${d.database}/${d.id} (${plural(d.objects, 'object')}, ${formatBytes(d.bytes)})`);
      ctx.progress({ done: objects, total, unit: 'objects' });
    }

    // WAL last: until the backups above are gone, they still look restorable and need it.
    const rule = plan.wal.rule;
    if (!rule) {
      ctx.log(`no WAL deleted: ${plan.wal.keepAllReason}`);
      return;
    }
    const sizes = new Map<string, number>();
    async function* expiredKeys(): AsyncGenerator<string> {
      for await (const entry of repo.store.list(WAL_PREFIX)) {
        if (!walVerdict(entry.key, rule, rule!.segmentSize).expire) continue;
        sizes.set(entry.key, entry.size);
        yield entry.key;
      }
    }
    try {
      await repo.deleteWalFiles(expiredKeys(), {
        signal: ctx.signal,
        onDeleted: (key) => {
          done.walFiles++;
          done.bytes += sizes.get(key) ?? 0;
          sizes.delete(key);
          objects++;
          ctx.progress({ done: objects, total: Math.max(total, objects), unit: 'objects' });
        },
      });
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      throw new Error(
        `deleting expired WAL failed after ${plural(done.walFiles, 'file')}: ${(err as Error).message}. ` +
          `The backups were already removed; the rest of the expired WAL is still there and harmless. Fix the cause and run retention again (or resume this run).`,
      );
    }
    ctx.log(`deleted ${plural(done.walFiles, 'WAL file')} before ${rule.beforeSegment}`);
  });
  await expireDebris(ctx, done);
  const debrisDone = done.debris?.length ? `; removed ${debrisText(debrisOf(ctx).filter((d) => done.debris!.includes(d.path)))}` : '';
  ctx.log(`expired ${plural(done.baseBackups.length, 'base backup')}, ${plural(done.dumps.length, 'dump')} and ${plural(done.walFiles, 'WAL file')}: ${formatBytes(done.bytes)} freed${debrisDone}`);
}

/** Temp files and empty directories of killed runs: only what the confirmed plan named and a new look still finds. */
async function expireDebris(ctx: Ctx, done: ExpiredState): Promise<void> {
  const planned = debrisOf(ctx);
  if (!planned.length) return;
  done.debris ??= [];
  await withRepository(ctx, async (repo) => {
    const current = await findDebris(repo.store, { clock: new Date() });
    const still = new Set(current.items.map((i) => `${i.kind} ${i.path}`));
    const items = planned.filter((i) => !done.debris!.includes(i.path));
    for (const i of items) if (!still.has(`${i.kind} ${i.path}`)) ctx.log(`not removing ${i.path}: changed since the plan (written to, no longer empty, or gone)`);
    const result = await removeDebris(
      repo.store,
      items.filter((i) => still.has(`${i.kind} ${i.path}`)),
      { clock: new Date(), signal: ctx.signal },
    );
    for (const r of result.removed) {
      done.debris!.push(r.path);
      done.bytes += r.bytes;
      ctx.log(`removed ${r.kind === 'temp-file' ? 'temporary file' : 'empty directory'} ${r.path}`);
    }
    for (const k of result.kept) ctx.log(`not removing ${k.item.path}: ${k.why}`);
  });
}

async function verify(ctx: Ctx): Promise<void> {
  const { plan, wal } = decided(ctx);
  const expired = ctx.state.expired ?? { baseBackups: [], dumps: [], walFiles: 0, bytes: 0, walRule: plan.wal.rule };
  // The windows as they were when the run started (step 1), before anything was deleted.
  const { windows: before, segmentSize } = catalogOf(ctx);
  await withRepository(ctx, async (repo) => {
    const catalog = await repo.catalog();

    const backupsLeft = expired.baseBackups.filter((id) => catalog.baseBackups.some((b) => b.id === id));
    const dumpsLeft = expired.dumps.filter((k) => catalog.dumps.some((d) => `${d.database}/${d.id}` === k));
    ctx.check(
      'expired backups removed',
      backupsLeft.length === 0 && dumpsLeft.length === 0,
      backupsLeft.length || dumpsLeft.length
        ? `still there: ${[...backupsLeft.map((id) => `base backup ${id}`), ...dumpsLeft.map((k) => `dump ${k}`)].join(', ')}; run retention again`
        : `${plural(expired.baseBackups.length, 'base backup')} and ${plural(expired.dumps.length, 'dump')} gone`,
    );

    for (const kept of plan.keep.baseBackups.filter((b) => b.complete)) {
      const entry = catalog.baseBackups.find((b) => b.id === kept.id);
      if (!entry?.complete) {
        ctx.check(`base backup ${kept.id} kept`, false, entry ? `no longer complete: ${entry.problem ?? 'backup.json is missing'}` : 'it is gone from the repository');
        continue;
      }
      const was = before.find((w) => w.backupId === kept.id);
      if (!was) continue;
      const cmp = compareWindows(was, catalog.windows.find((w) => w.backupId === kept.id));
      ctx.check(`recovery window from ${kept.id}`, cmp.ok, cmp.detail);
    }

    const coverage = new WalCoverage(wal.kept.runs, wal.histories, segmentSize);
    let leftover = 0;
    for await (const entry of repo.store.list(WAL_PREFIX)) {
      ctx.signal.throwIfAborted();
      coverage.add(entry.key);
      if (expired.walRule && walVerdict(entry.key, expired.walRule, segmentSize).expire) leftover++;
    }
    const missing = coverage.missing();
    const keptSegments = wal.kept.runs.reduce((s, r) => s + r.files, 0);
    ctx.check(
      'WAL of kept backups present',
      missing.runs.length === 0 && missing.histories.length === 0,
      missing.runs.length || missing.histories.length
        ? `MISSING: ${[...missing.runs.map((m) => `${m.missing} of ${m.run.from} .. ${m.run.to}`), ...missing.histories].join(', ')}; recovery through them is no longer possible from this repository`
        : `all ${plural(keptSegments, 'segment')} that were to stay are there${wal.histories.length ? `, and ${plural(wal.histories.length, 'history file')}` : ''}`,
    );
    const debrisPlanned = ctx.state.debris?.items ?? [];
    if (debrisPlanned.length) {
      const after = await findDebris(repo.store, { clock: new Date() });
      const removed = new Set(expired.debris ?? []);
      const left = after.items.filter((i) => removed.has(i.path));
      ctx.check(
        'temporary files removed',
        left.length === 0,
        left.length
          ? `still there: ${left.map((i) => i.path).join(', ')}; run retention again`
          : `${debrisText(debrisPlanned.filter((i) => removed.has(i.path))) || 'nothing'} removed${removed.size < debrisPlanned.length ? ` (${debrisPlanned.length - removed.size} changed since the plan and were left alone)` : ''}; nothing under locks/ touched`,
      );
    }
    if (expired.walRule) {
      ctx.check(
        'expired WAL removed',
        leftover === 0,
        leftover ? `${plural(leftover, 'WAL file')} before ${expired.walRule.beforeSegment} still there; run retention again` : `${plural(expired.walFiles, 'WAL file')} before ${expired.walRule.beforeSegment} gone`,
      );
    }
  });
}
