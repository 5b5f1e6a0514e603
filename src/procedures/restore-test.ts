// restore-test: prove that the real backups restore. The newest complete base backup (or
// --backup) and the WAL to the end of the archive are recovered into a scratch cluster beside
// production (never touching it), then checked: every database answers, the rows of the newest
// dumps and the profile's critical tables are there, pg_amcheck and pg_checksums find no damage;
// with --dumps the newest dump of each database is restored there too and its counts compared.
// The measured RTO (per phase) and RPO, and every check, go into restore-tests/<time>.json in the
// repository, which `status` on any host reads. The scratch cluster is removed whatever happens.
import os from 'node:os';
import type { ConnectionSettings } from '../config/connection.js';
import { errorMessage } from '../engine/errors.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import type { StepContext } from '../engine/types.js';
import { runningServerIdentity } from '../postgres/identity.js';
import { pgCtlStop } from '../postgres/pgctl.js';
import { openRepository } from '../repo/repository.js';
import { writeRestoreTestRecord, type RestoreTestCheck, type RestoreTestRecord } from '../repo/restore-tests.js';
import { makeScratchWritable, planScratch, recoverScratch, scratchConnection, scratchGone, teardownScratch, type ScratchOptions, type ScratchState } from '../restore/scratch.js';
import { defineProcedure, type Typed } from './define.js';
import { checkRunningCluster, checkStoppedCluster, type DumpCounts } from './restore-test/checks.js';
import { checkDumpRestores } from './restore-test/dumps.js';

type Params = { backup?: string; scratchDir?: string; amcheck?: string; dumps?: boolean };
type State = {
  startedAt?: string;
  scratch?: ScratchState;
  dumps?: DumpCounts;
  production?: boolean;
  unpackSeconds?: number;
  replaySeconds?: number;
  checksSeconds?: number;
  checks?: RestoreTestCheck[];
  recorded?: string;
};
type Ctx = StepContext<Typed<Params, State>>;

function options(ctx: Ctx, production: ConnectionSettings | undefined): ScratchOptions {
  return {
    repo: ctx.services.repo ?? '',
    env: ctx.services.env,
    target: 'latest',
    backupId: ctx.params.backup,
    scratchDir: ctx.params.scratchDir,
    runId: ctx.runId,
    production,
    signal: ctx.signal,
    report: ctx,
  };
}

/** Production, when it answers and is the repository's cluster: its current WAL is archived first, so the RPO is today's. */
async function reachableProduction(ctx: Ctx): Promise<ConnectionSettings | undefined> {
  const conn = { ...ctx.services.connection, connectTimeoutSec: 5 };
  try {
    await runningServerIdentity(conn);
    return conn;
  } catch (err) {
    ctx.log(`production does not answer (${errorMessage(err)}): testing from the repository alone (its WAL archive's end is the target)`);
    return undefined;
  }
}

/** On any failure: the record says failed (unless interrupted), and the scratch cluster goes. */
async function guarded(ctx: Ctx, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    await teardown(ctx);
    if (!ctx.signal.aborted) await record(ctx, errorMessage(err)).catch((e: unknown) => ctx.log(`could not write the restore test's record: ${errorMessage(e)}`, 'error'));
    throw err;
  }
}

async function teardown(ctx: Ctx): Promise<void> {
  const s = ctx.state.scratch;
  if (!s) return;
  try {
    await teardownScratch(s);
  } catch (err) {
    ctx.log(`could not remove the scratch cluster ${s.base}: ${errorMessage(err)}. Stop it (pg_ctl stop -D ${s.dataDir} -m immediate) and remove the directory by hand`, 'error');
  }
}

async function record(ctx: Ctx, failure?: string): Promise<string> {
  const s = ctx.state.scratch;
  const p = s?.plan;
  const started = Date.parse(ctx.state.startedAt ?? new Date().toISOString());
  const finished = Date.now();
  const checks = ctx.state.checks ?? [];
  const failed = checks.filter((c) => !c.ok);
  const reachedMs = s?.reached?.time ? Date.parse(s.reached.time) : undefined;
  const bytes = p?.dataObject.size !== undefined ? p.dataObject.size + (p.walBytes ?? 0) : undefined;
  const total = (finished - started) / 1000;
  const rec: RestoreTestRecord = {
    version: 1,
    runId: ctx.runId,
    host: os.hostname(),
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date(finished).toISOString(),
    ok: !failure && failed.length === 0,
    ...(failure || failed.length ? { failure: failure ?? failed.map((c) => `${c.name}: ${c.detail}`).join('; ') } : {}),
    ...(p ? { backup: { id: p.backupId, stopTime: p.backupStopTime, stopLsn: p.backupStopLsn, bytes: p.dataObject.size } } : {}),
    ...(p ? { wal: { from: p.backupStopLsn, to: s?.reached?.lsn ?? p.replayEndLsn, segments: p.walSegments, timeline: p.timeline } } : {}),
    ...(s?.reached?.time ? { recoveredTo: s.reached.time } : {}),
    ...(reachedMs !== undefined ? { rpoSeconds: Math.max(0, Math.round((started - reachedMs) / 100) / 10) } : {}),
    timings: { unpackSeconds: ctx.state.unpackSeconds, replaySeconds: ctx.state.replaySeconds, checksSeconds: ctx.state.checksSeconds, totalSeconds: Math.round(total * 10) / 10 },
    ...(bytes !== undefined ? { bytes, bytesPerSecond: Math.round(bytes / Math.max(0.001, (ctx.state.unpackSeconds ?? 0) + (ctx.state.replaySeconds ?? 0))) } : {}),
    checks,
  };
  const repo = await openRepository(ctx.services.repo, ctx.services.env);
  try {
    const key = await writeRestoreTestRecord(repo.store, rec);
    ctx.state.recorded = key;
    ctx.log(`recorded ${rec.ok ? 'a passed' : 'a FAILED'} restore test as ${key}`);
    return key;
  } finally {
    await repo.close();
  }
}

export const restoreTestProcedure = defineProcedure<Params, State>({
  id: 'restore-test',
  title: 'Prove the backups restore',
  summary: 'The newest base backup and the WAL to the end of the archive recovered into a scratch cluster beside production; databases, row counts, pg_amcheck and pg_checksums checked; RTO and RPO recorded in the repository for status.',
  group: 'verify',
  params: [
    { name: 'backup', type: 'string', description: 'the base backup to test (default: the newest complete one; see pgrunbook catalog)', example: '20261124T031500Z-042-9f3c1a' },
    { name: 'scratchDir', type: 'string', description: 'directory for the scratch cluster (default: the system temp directory; it needs room for the base backup); removed afterwards', example: '/var/tmp' },
    { name: 'dumps', type: 'boolean', default: false, description: 'also restore the newest dump of each database into the scratch cluster (pg_restore -j 2) and check every table has exactly the rows its dump.json records' },
    { name: 'amcheck', type: 'choice', choices: ['standard', 'heapallindexed'], default: 'standard', description: 'pg_amcheck depth: standard (heap and btree structure) or heapallindexed (also every tuple in its indexes: slower)' },
  ],
  validate: (params) => {
    const errors: string[] = [];
    if (params.amcheck !== undefined && params.amcheck !== 'standard' && params.amcheck !== 'heapallindexed') errors.push('--amcheck: standard or heapallindexed');
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Plan the recovery',
      kind: 'check',
      describe: () => 'Before anything is downloaded: the repository, its newest complete base backup and every WAL segment to the end of the archive read with their checksums, room for the scratch cluster, and the newest dump of each database (its row counts are the yardstick).',
      plan: (ctx) => [`plan a scratch recovery to the end of the archive from ${ctx.params.backup ? `base backup ${ctx.params.backup}` : 'the newest complete base backup'}`, 'read the newest dump.json of each database'],
      async run(ctx) {
        if (!ctx.services.repo) throw Object.assign(new Error('restore-test needs the repository: pass --repo URL (or a profile with one)'), { procedureExitCode: 2 });
        ctx.state.startedAt ??= new Date().toISOString();
        await guarded(ctx, async () => {
          const production = await reachableProduction(ctx);
          ctx.state.production = Boolean(production);
          ctx.state.scratch = await planScratch(options(ctx, production));
          ctx.state.dumps = await newestDumpCounts(ctx);
          const n = Object.keys(ctx.state.dumps).length;
          ctx.log(n ? `row counts to compare with: ${Object.entries(ctx.state.dumps).map(([db, d]) => `${db} (dump ${d.id})`).join(', ')}` : 'no dumps in the repository: the row counts are not compared');
        });
      },
    },
    {
      id: 'recover',
      title: 'Recover a scratch cluster',
      kind: 'action',
      describe: (ctx) => `Download and unpack the base backup into ${ctx.params.scratchDir ?? os.tmpdir()}, start it privately (socket only, no archiving), replay the WAL to the end of the archive and check it got there.`,
      plan: () => ['unpack the base backup (SHA-256 checked) into the scratch directory', 'start a private server (no TCP, no archiving) and replay to the end of the archive, paused', 'compare where replay stopped with the plan'],
      async run(ctx) {
        const scratch = ctx.state.scratch;
        if (!scratch) throw new Error('the journal has no recovery plan: the preflight did not finish; run restore-test again');
        await guarded(ctx, async () => {
          const t0 = Date.now();
          let replayFrom: number | undefined;
          const report = {
            ...ctx,
            log: ctx.log.bind(ctx),
            check: ctx.check.bind(ctx),
            progress: (u: Parameters<Ctx['progress']>[0]) => {
              if (u.replay && replayFrom === undefined) replayFrom = Date.now();
              ctx.progress(u);
            },
          };
          const production = ctx.state.production ? ctx.services.connection : undefined;
          await recoverScratch(scratch, { ...options(ctx, production), report });
          const t1 = Date.now();
          ctx.state.unpackSeconds = Math.round(((replayFrom ?? t1) - t0) / 100) / 10;
          ctx.state.replaySeconds = Math.round((t1 - (replayFrom ?? t1)) / 100) / 10;
        });
      },
    },
    {
      id: 'checks',
      title: 'Check the recovered databases',
      kind: 'verify',
      describe: (ctx) =>
        `Every database answers SELECT 1 and a catalog query; every table of the newest dumps is there with at least its rows; the critical tables have their minimum; pg_amcheck on every database; ${ctx.params.dumps ? 'the newest dump of each database restored into the scratch cluster with exactly its rows; ' : ''}pg_checksums on the stopped data directory.`,
      plan: (ctx) => [
        'promote the scratch cluster (its WAL goes nowhere)',
        'SELECT 1 and a catalog query in each database; count the rows of the dumps\' tables',
        'pg_amcheck --all',
        ...(ctx.params.dumps ? ['restore the newest dump of each database into a new database of the scratch cluster (pg_restore -j 2 --no-owner) and compare every table\'s rows with its dump.json'] : []),
        'stop it; pg_checksums --check',
      ],
      async run(ctx) {
        const scratch = ctx.state.scratch!;
        await guarded(ctx, async () => {
          const t0 = Date.now();
          const checks: RestoreTestCheck[] = [];
          const add = (c: RestoreTestCheck) => {
            checks.push(c);
            ctx.check(c.name, c.ok, c.detail);
          };
          await makeScratchWritable(scratch);
          const running = await checkRunningCluster({
            conn: (db) => scratchConnection(scratch, db),
            dumps: ctx.state.dumps ?? {},
            critical: ctx.services.profile.criticalTables ?? [],
            heapallindexed: ctx.params.amcheck === 'heapallindexed',
            signal: ctx.signal,
            add,
          });
          // Before the stop: the dumps restore into the running scratch server.
          if (ctx.params.dumps) {
            await checkDumpRestores({
              repo: ctx.services.repo ?? '',
              env: ctx.services.env,
              dumps: ctx.state.dumps ?? {},
              workDir: scratch.base,
              conn: (db) => scratchConnection(scratch, db),
              signal: ctx.signal,
              log: (m) => ctx.log(m),
              add,
            });
          }
          await pgCtlStop({ pgdata: scratch.dataDir, mode: 'fast', timeoutSec: 120 });
          if (running.checksums) add(await checkStoppedCluster(scratch.dataDir, scratch.owner, running.files, ctx.signal));
          else ctx.log('the cluster has no data checksums (initdb --data-checksums): pg_checksums is skipped; pg_amcheck still read every table');
          ctx.state.checks = checks;
          ctx.state.checksSeconds = Math.round((Date.now() - t0) / 100) / 10;
        });
      },
    },
    {
      id: 'record',
      title: 'Record the result and remove the scratch cluster',
      kind: 'verify',
      describe: () => 'restore-tests/<time>.json in the repository (RTO per phase, RPO, every check), then the scratch cluster is stopped and removed.',
      plan: () => ['write restore-tests/<time>.json', 'stop and remove the scratch cluster'],
      async run(ctx) {
        await teardown(ctx);
        const s = ctx.state.scratch;
        if (s) {
          const g = await scratchGone(s);
          ctx.check('scratch cluster removed', g.gone, g.detail);
        }
        const key = await record(ctx);
        const p = s?.plan;
        const total = (Date.now() - Date.parse(ctx.state.startedAt ?? new Date().toISOString())) / 1000;
        ctx.fact('RTO', `${formatDuration(total * 1000)} (unpack ${ctx.state.unpackSeconds ?? '?'} s, replay ${ctx.state.replaySeconds ?? '?'} s, checks ${ctx.state.checksSeconds ?? '?'} s)`);
        if (s?.reached?.time) ctx.fact('RPO', `${formatDuration(Math.max(0, Date.parse(ctx.state.startedAt!) - Date.parse(s.reached.time)))} (the test's start to the last commit recovered)`);
        if (p) ctx.fact('Tested', `base backup ${p.backupId} (${formatBytes(p.dataObject.size)}), ${p.walSegments} WAL segments to ${s?.reached?.lsn ?? p.replayEndLsn}`);
        ctx.fact('Record', key);
      },
    },
  ],
});

async function newestDumpCounts(ctx: Ctx): Promise<DumpCounts> {
  const repo = await openRepository(ctx.services.repo, ctx.services.env);
  try {
    const out: DumpCounts = {};
    for (const d of (await repo.catalog()).dumps) {
      if (!d.complete || !d.meta?.rowCounts) continue;
      const had = out[d.database];
      if (!had || d.id > had.id) out[d.database] = { id: d.id, consistentAt: d.meta.consistentAt, rowCounts: d.meta.rowCounts };
    }
    return out;
  } finally {
    await repo.close();
  }
}
