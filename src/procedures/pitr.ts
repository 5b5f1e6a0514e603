// Point-in-time recovery: prove the target is inside a recovery window before touching
// anything, pick the newest base backup that ends before it and unpack it (checking it as it
// streams) into a staging directory beside the data directory, stop the server, move the data
// directory aside (never delete it), rename the staged one in, replay archived WAL to the target
// while showing progress, verify, and promote.
import fs from 'node:fs';
import path from 'node:path';
import type { StepContext } from '../engine/types.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { unloggedTables } from '../postgres/checks.js';
import { isRoot } from '../postgres/osuser.js';
import { pgCtlStatus } from '../postgres/pgctl.js';
import { archiveCurrentWal, promoteServer, resetRecoveryTargets, resumeReplay } from '../postgres/recovery.js';
import { serverControlFor, serverStderrFile, startServer, stopServer, type ServerControlSpec } from '../postgres/server-control.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { readRepositoryIdentity } from '../repo/identity.js';
import { asideName, claimRestoreDir, finishRestoreDir, freeSpaceFor, handOverKeptWal, makeRestoreDir, moveAside, newDataDirOwner, type Owner } from '../restore/datadir.js';
import type { RecoveryPlan } from '../restore/plan.js';
import { identifyCluster, isCorruption, otherCluster, proveRecoverable, removeStaged } from '../restore/preflight.js';
import { prepareRecoverySpool, recoverySettings, writeRecoverySettings } from '../restore/recovery-settings.js';
import { replayProgress, watchReplay } from '../restore/replay.js';
import { describeTarget, formatMicrosIso, parseTarget, validTarget } from '../restore/target.js';
import { stagedDirName, syncParent, unpackTar } from '../restore/unpack.js';
import { ownerOf } from '../postgres/osuser.js';
import { defineProcedure, type Typed } from './define.js';
import { pitrAdvice } from './pitr-advice.js';
import { defaultServerEnvFile, defaultSpoolDir, walCommandLine, writeServerEnvFile } from './pgrunbook-command.js';
import { criticalTableErrors, verifyConnectStep, verifyDatabasesStep, verifyTablesStep, type VerifyParams, type VerifyState } from './verify.js';
import { pgrunbookCommand } from '../engine/command-name.js';

export type PitrParams = VerifyParams & {
  target: string;
  targetAction?: 'pause' | 'promote';
  backup?: string;
  replayTimeout?: number;
  exclusive?: boolean;
  timeline?: number;
};

/** Where replay stopped, and whether it was verified against the plan and promoted. */
export type Reached = { lsn?: string; time?: string; micros?: string; ok?: boolean; promoted?: boolean; promotedAt?: string };

export type PitrState = VerifyState & {
  plan?: RecoveryPlan;
  /** The running server's log file, kept for messages and for starting it again. */
  serverLog?: string;
  stoppedAt?: string;
  movedAside?: string;
  /** The base backup, unpacked and checked by the preflight beside the data directory. */
  staged?: string;
  pgdataOwner?: Owner;
  pgdataMode?: number;
  envFile?: string;
  /** Replay was paused where it stalled (short of the target): a resume goes on from there. */
  stallPaused?: boolean;
  reached?: Reached;
  leftPaused?: boolean;
  rtoMs?: number;
};

type Ctx = StepContext<Typed<PitrParams, PitrState>>;

function pgdataOf(ctx: Ctx): string {
  const dir = ctx.services.pgdata;
  if (!dir) throw new Error('no data directory: pass --pgdata DIR or set PGDATA (the directory PostgreSQL runs from)');
  return path.resolve(dir);
}

function plan(ctx: Ctx): RecoveryPlan {
  const p = ctx.state.plan;
  if (!p) throw new Error('no recovery plan in the journal: the preflight step did not finish; start a new run');
  return p;
}

/** For texts shown before the plan exists (dry run, step descriptions). */
function planned(ctx: Ctx): Partial<RecoveryPlan> {
  return ctx.state.plan ?? { target: ctx.params.target, backupId: '<chosen in preflight>' };
}

function owner(ctx: Ctx): Owner {
  const o = ctx.state.pgdataOwner;
  if (!o) throw new Error('the journal does not say who owns the data directory: the stop step did not finish; start a new run');
  return o;
}

const promoting = (ctx: Ctx) => ctx.params.targetAction === 'promote';
const controlSpec = (ctx: Ctx): ServerControlSpec => serverControlFor(ctx.services.profile.server, pgdataOf(ctx));
const openRepo = (ctx: Ctx): Promise<Repository> => openRepository(ctx.services.repo, ctx.services.env);
const originalAt = (ctx: Ctx) => ctx.state.movedAside ?? '(none)';

function targetWords(text: string): string {
  const t = parseTarget(text);
  return 'error' in t ? text : describeTarget(t);
}

export const pitrProcedure = defineProcedure<PitrParams, PitrState>({
  id: 'pitr',
  title: 'Point-in-time recovery',
  summary: 'Restore a base backup and replay archived WAL to a time, LSN, xid, restore point or the latest; verify; promote.',
  group: 'restore',
  params: [
    { name: 'target', type: 'string', required: true, description: 'where to recover to: latest, an ISO 8601 time with zone, lsn:0/3000060, xid:1234 or name:LABEL', example: '2026-11-24T03:14:00Z' },
    { name: 'targetAction', type: 'choice', choices: ['pause', 'promote'], default: 'pause', description: 'at the target: pause for inspection (then promote), or promote at once' },
    { name: 'backup', type: 'string', description: 'restore from this base backup id instead of the newest that ends before the target' },
    { name: 'databases', type: 'list', description: 'databases to verify after recovery (default: all)' },
    { name: 'criticalTables', type: 'list', description: 'tables to count after recovery, DATABASE:SCHEMA.TABLE[:MIN_ROWS]', example: 'app:public.users:100' },
    { name: 'replayTimeout', type: 'number', default: 3600, description: 'seconds to wait for replay to reach the target' },
    { name: 'exclusive', type: 'boolean', default: false, description: 'stop just before the target instead of just after it (a commit exactly at a target time is then not kept)' },
    { name: 'timeline', type: 'number', description: 'follow this timeline instead of the newest in the repository (needed for a target that lies only on an abandoned branch)' },
  ],
  advise: pitrAdvice,
  validate(params) {
    const t = parseTarget(params.target ?? '');
    return ('error' in t ? [t.error] : []).concat(criticalTableErrors(params.criticalTables));
  },
  steps: [
    {
      id: 'preflight',
      title: 'Prove the target is recoverable',
      kind: 'check',
      describe: (ctx) => `Reading the repository's catalog and the archived WAL to prove ${targetWords(ctx.params.target)} lies in a recovery window, and choosing the base backup. Nothing is touched yet.`,
      plan: (ctx) => [`read the catalog of ${ctx.services.repo ?? '(no --repo)'}`, `check ${ctx.services.pgdata ?? '(no --pgdata)'} and the server`],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const target = validTarget(ctx.params.target);
        if (!fs.existsSync(pgdata)) {
          // A lost host or disk: restore into a new directory where the old one was.
          if (!fs.existsSync(path.dirname(pgdata))) throw new Error(`neither the data directory ${pgdata} nor its parent exists; check --pgdata, or create ${path.dirname(pgdata)} owned by the PostgreSQL user`);
          ctx.log(`data directory ${pgdata} does not exist: restoring into a new one (nothing to move aside)`, 'warn');
        } else if (!fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
          throw new Error(`${pgdata} is not a PostgreSQL data directory (no PG_VERSION); check --pgdata`);
        }

        const server = await identifyCluster(ctx.services.connection, pgdata);
        if (server.running) {
          ctx.check('server identified', true, `system ${server.systemIdentifier}${server.clusterName ? `, cluster ${server.clusterName}` : ''}`);
          const log = await serverStderrFile(pgdata).catch(() => undefined);
          if (log) ctx.state.serverLog = log;
        } else {
          ctx.log(`the server is not reachable (${server.unreachable}); continuing: it may already be down`, 'warn');
          if (server.fromControlFile) ctx.check('data directory identified', true, `${pgdata}: system ${server.systemIdentifier} (from pg_control)`);
        }

        // latest means the server's newest WAL too: have it archived while the server still runs.
        if (target.kind === 'latest' && server.running) {
          const archived = await archiveCurrentWal(ctx.services.connection, { timeoutMs: 60_000, signal: ctx.signal });
          if (archived?.archived) ctx.log(`the server's current WAL (${archived.segment}) is archived: latest includes its last commits`);
          else if (archived) ctx.log(`the server's current WAL segment ${archived.segment} was not archived within 60 s (is archiving failing? see pg_stat_archiver): latest will end at what the archive holds`, 'warn');
        }

        const repo = await openRepo(ctx);
        try {
          const identity = await readRepositoryIdentity(repo.store);
          if (identity && server.systemIdentifier && identity.systemIdentifier !== server.systemIdentifier) throw otherCluster(`the repository ${repo.describe()}`, identity.systemIdentifier, server);
          const catalog = await repo.catalog();
          ctx.check('repository readable', true, `${repo.describe()}: ${catalog.baseBackups.filter((b) => b.complete).length} complete base backups, ${catalog.wal.files} WAL files`);
          let p: RecoveryPlan;
          // The backup is unpacked here, beside the data directory, as it is checked: its one read.
          const staged = stagedDirName(pgdata, ctx.runId);
          const stageOwner = fs.existsSync(pgdata) ? await ownerOf(pgdata) : await newDataDirOwner(path.dirname(pgdata));
          const stage = { dir: staged, runId: ctx.runId, owner: stageOwner, pgdata, keepWal: true };
          try {
            p = await proveRecoverable({ repo, catalog, target, exclusive: Boolean(ctx.params.exclusive), timeline: ctx.params.timeline, backupId: ctx.params.backup, server, signal: ctx.signal, report: ctx, stage });
            if (fs.existsSync(staged)) ctx.state.staged = staged;
          } catch (e) {
            if (fs.existsSync(path.join(staged, `.pgrunbook-restoring-${ctx.runId}`))) await removeStaged(staged);
            if (!isCorruption(e)) throw e;
            ctx.check('repository objects intact', false, `${(e as Error).message} Nothing was touched: the server and ${pgdata} are as they were.`);
            return;
          }
          ctx.check('WAL checksums', true, `${p.walSegments} segments read and checked${p.lastSegment ? ` through ${p.lastSegment}` : ''}`);
          ctx.check('target inside a recovery window', true, `${p.targetDetail}; from base backup ${p.backupId} (ended ${p.backupStopTime}, ${p.backupStopLsn}), replaying ${p.path}`);
          if (server.clusterName) p.clusterName = server.clusterName;

          if (!ctx.state.staged) {
            const backup = catalog.baseBackups.find((b) => b.id === p.backupId)?.meta;
            const need = Number(backup?.uncompressedSize ?? backup?.size ?? 0);
            const space = await freeSpaceFor(pgdata, need);
            if (space) ctx.check('free space', true, `${formatBytes(space.free)} free for about ${formatBytes(need)}`);
          }

          ctx.state.plan = p;
          ctx.log(`plan: stop the server, move ${pgdata} aside, ${ctx.state.staged ? `rename ${ctx.state.staged} (checked) into its place` : `unpack ${formatBytes(p.dataObject.size)} from ${p.dataObject.key}`}, replay WAL to ${p.targetDetail}, ${promoting(ctx) ? 'verify, then promote' : 'pause for inspection'}`);
        } finally {
          await repo.close();
        }
      },
    },
    {
      id: 'stop',
      title: 'Stop PostgreSQL and move the data directory aside',
      kind: 'action',
      describe: (ctx) => `Stopping the server and renaming ${pgdataOf(ctx)} to a dated name next to it: nothing is deleted, and the journal records where it went.`,
      destructive: {
        what: (ctx) => `stop PostgreSQL and replace data directory ${pgdataOf(ctx)} with base backup ${planned(ctx).backupId} recovered to ${planned(ctx).target} (the current one is moved aside, not deleted)`,
        confirmText: (ctx) => ctx.state.plan?.clusterName || path.basename(pgdataOf(ctx)),
        confirmMeaning: (ctx) => (ctx.state.plan?.clusterName ? "the cluster's name (cluster_name)" : `the data directory's name (the last part of ${pgdataOf(ctx)})`),
      },
      plan: (ctx) => [`stop the server (${controlSpec(ctx).method})`, `rename ${pgdataOf(ctx)} to ${pgdataOf(ctx)}.pgrunbook-<time>`],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        // A resumed run (its preflight done by an earlier process) takes over the staged backup
        // before the server stops, so that retention never takes it from under this run.
        if (ctx.state.staged && fs.existsSync(ctx.state.staged)) await claimRestoreDir(ctx.state.staged, ctx.runId);
        ctx.state.stoppedAt ??= new Date().toISOString();
        const status = await pgCtlStatus(pgdata).catch(() => ({ running: false }));
        if (status.running || controlSpec(ctx).method !== 'pg_ctl') {
          ctx.log(`stopping PostgreSQL (${controlSpec(ctx).method})`);
          await stopServer(controlSpec(ctx), { mode: 'fast', signal: ctx.signal });
        }
        const aside = ctx.state.movedAside ?? asideName(pgdata);
        if (!fs.existsSync(pgdata) && !ctx.state.movedAside) {
          ctx.state.pgdataOwner = await newDataDirOwner(path.dirname(pgdata));
          ctx.state.pgdataMode = 0o700;
          ctx.log(`${pgdata} does not exist; nothing to move aside`, 'warn');
          return;
        }
        if (!fs.existsSync(aside)) {
          const was = await moveAside(pgdata, aside);
          ctx.state.movedAside = aside;
          ctx.state.pgdataOwner = was.owner;
          ctx.state.pgdataMode = was.mode;
        }
        ctx.log(`the original data directory is now ${aside}`, 'warn');
      },
    },
    {
      id: 'unpack',
      title: 'Put the base backup in place',
      kind: 'action',
      describe: (ctx) =>
        ctx.state.staged
          ? `Renaming ${ctx.state.staged}, the base backup the preflight unpacked and checked, to ${pgdataOf(ctx)}.`
          : `Streaming ${planned(ctx).dataObject?.key ?? 'the base backup'} (${formatBytes(planned(ctx).dataObject?.size ?? 0)}) from the repository into a new ${pgdataOf(ctx)}, checking its SHA-256 as it arrives.`,
      plan: (ctx) => [
        `rename ${stagedDirName(pgdataOf(ctx), ctx.runId)} (unpacked and checked by the preflight) to ${pgdataOf(ctx)}`,
        `if the preflight staged nothing: mkdir ${pgdataOf(ctx)} (mode 0700), get ${planned(ctx).dataObject?.key ?? 'basebackups/<id>/base.tar.zst'} | zstd -d | tar -x -C ${pgdataOf(ctx)}`,
      ],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const data = plan(ctx).dataObject;
        const staged = ctx.state.staged;
        if (staged && fs.existsSync(staged)) {
          // Only an empty directory, or one an earlier attempt of this run made, gives way at pgdata.
          if (fs.existsSync(pgdata)) {
            await makeRestoreDir(pgdata, ctx.runId, owner(ctx));
            await fs.promises.rm(pgdata, { recursive: true });
          }
          await fs.promises.rename(staged, pgdata);
          await syncParent(pgdata);
          ctx.log(`renamed ${staged} (unpacked and checked before anything was touched) to ${pgdata}`);
          await finishRestoreDir(pgdata, ctx.runId);
          return;
        }
        if (staged && fs.existsSync(path.join(pgdata, `.pgrunbook-restoring-${ctx.runId}`)) && fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
          ctx.log(`${pgdata} is the staged backup, renamed by an earlier attempt of this run`);
          await finishRestoreDir(pgdata, ctx.runId);
          return;
        }
        if (staged) ctx.log(`the staged backup ${staged} is gone: unpacking from the repository again`, 'warn');
        await makeRestoreDir(pgdata, ctx.runId, owner(ctx));
        const repo = await openRepo(ctx);
        try {
          const body = await repo.getVerified(data.key, data.sha256, ctx.signal);
          const onBytes = (done: number) => ctx.progress({ done, total: data.size, unit: 'bytes' });
          await unpackTar(body, { dir: pgdata, compression: data.compression, owner: owner(ctx), signal: ctx.signal, onBytes });
          onBytes(data.size);
        } finally {
          await repo.close();
        }
        await finishRestoreDir(pgdata, ctx.runId);
      },
    },
    {
      id: 'configure',
      title: 'Write the recovery settings',
      kind: 'action',
      describe: (ctx) => `Setting restore_command to pgrunbook wal-fetch, the recovery target (${planned(ctx).target}), pausing there, and creating standby.signal so the server never ends recovery on its own.`,
      plan: () => ['restore_command, recovery_target_*, recovery_target_timeline, recovery_target_action = pause in postgresql.auto.conf', 'touch standby.signal'],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const { repo = '', env } = ctx.services;
        // restore_command runs with the server's clean environment: credentials go in a file it owns.
        const envFile = await writeServerEnvFile(defaultServerEnvFile(pgdata, plan(ctx).clusterName), repo, env, isRoot() ? owner(ctx) : undefined);
        ctx.state.envFile = envFile;
        // Prefetch: restore_command moves a verified segment from the spool, else fetches it itself.
        const spool = defaultSpoolDir(pgdata, plan(ctx).clusterName);
        await prepareRecoverySpool(spool, owner(ctx));
        // The segments the preflight checked and kept: restore_command takes them from the spool.
        const handed = await handOverKeptWal(pgdata, path.join(spool, 'fetch'), isRoot() ? owner(ctx) : undefined);
        if (handed) ctx.log(`${handed} WAL segments checked by the preflight are waiting in ${path.join(spool, 'fetch')} for replay`);
        const restoreCommand = walCommandLine('wal-fetch', repo, env, { envFile, spool }).command;
        // Standby mode: the run promotes only after comparing what was reached with the plan.
        const lines = await writeRecoverySettings(pgdata, recoverySettings(plan(ctx), restoreCommand), ctx.runId, owner(ctx));
        for (const l of lines) ctx.log(l);
      },
    },
    {
      id: 'replay',
      title: 'Start PostgreSQL and replay WAL to the target',
      kind: 'action',
      describe: (ctx) => `Starting the server in recovery; it fetches archived WAL through pgrunbook wal-fetch and replays it up to ${planned(ctx).target}. Progress is the replayed LSN against ${planned(ctx).replayEndLsn ?? 'the target'}.`,
      plan: () => ['start the server', 'poll pg_last_wal_replay_lsn() until the target is reached, then compare it with the plan'],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const p = plan(ctx);
        const conn = ctx.services.connection;
        const status = await pgCtlStatus(pgdata).catch(() => ({ running: false }));
        if (!status.running) {
          const started = await startServer(controlSpec(ctx), { logFile: ctx.state.serverLog, signal: ctx.signal });
          if (started.logFile) ctx.state.serverLog = started.logFile;
          ctx.log(`started: ${started.command}`);
        }
        if (ctx.state.stallPaused) {
          // An earlier attempt paused replay where it stalled (short of the target): go on from there.
          await resumeReplay(conn).catch(() => undefined);
          ctx.state.stallPaused = undefined;
          ctx.log('resumed replay where an earlier attempt stopped it');
        }

        const outcome = await watchReplay({
          conn,
          pgdata,
          plan: p,
          openRepo: () => openRepo(ctx),
          timeoutSec: ctx.params.replayTimeout ?? 3600,
          signal: ctx.signal,
          onPoll: (s) => {
            if (s.replayLsn) ctx.progress(replayProgress(p, s));
          },
          stoppedError: (why) => new Error(`the server stopped during recovery: ${why}. It was not promoted. Its log: ${ctx.state.serverLog ?? 'see the server log'}. The original data directory is safe at ${ctx.state.movedAside}.`),
        });

        if (outcome.kind === 'left-recovery') {
          // Nothing of ours promotes before the comparison: someone or something else did.
          ctx.state.reached = { lsn: outcome.currentLsn, promoted: true };
          ctx.progress(replayProgress(p, { replayLsn: outcome.currentLsn }, { promoted: true }));
          ctx.check('recovery stopped where planned', false, `the server left recovery on its own at ${outcome.currentLsn ?? '?'} before pgrunbook compared it with the plan (${p.targetDetail}); check its log and the data before using it`);
          return;
        }
        const s = outcome.status;
        ctx.progress(replayProgress(p, s, { paused: true }));
        if (outcome.kind === 'stalled') {
          ctx.state.reached = { lsn: s.replayLsn, time: s.replayTime, promoted: false, ok: false };
          ctx.state.stallPaused = true;
          ctx.check(
            'recovery stopped where planned',
            false,
            `replay stopped at ${s.replayLsn ?? '?'} short of the plan (${p.targetDetail}): ${outcome.why}. The server is left paused in recovery and was not promoted; nothing was archived from it. The original data directory is at ${originalAt(ctx)}. Put the segment back and ${pgrunbookCommand(`--resume ${ctx.runId}`)}, or recover to a target before ${s.replayLsn ?? 'it'}.`,
          );
          return;
        }
        ctx.state.reached = { lsn: s.replayLsn, time: s.replayTime, micros: s.replayMicros, promoted: false, ok: outcome.problems.length === 0 };
        if (outcome.problems.length) {
          ctx.check('recovery stopped where planned', false, `${outcome.problems.join('; ')}. The server is left paused in recovery and was not promoted; the original data directory is at ${originalAt(ctx)}.`);
          return;
        }
        ctx.check('recovery stopped where planned', true, `replayed to ${s.replayLsn}${s.replayMicros ? `, last commit ${formatMicrosIso(BigInt(s.replayMicros))}` : ''}: ${p.targetDetail}`);
        ctx.log(`paused at the target: replayed to ${s.replayLsn}${s.replayTime ? `, last commit ${s.replayTime}` : ''}`);
      },
    },
    { ...verifyConnectStep, id: 'verify-connect', title: 'Verify: connect to the recovered server' },
    { ...verifyDatabasesStep, id: 'verify-databases', title: 'Verify: query every database' },
    { ...verifyTablesStep, id: 'verify-tables', title: 'Verify: count rows of critical tables' },
    {
      id: 'promote',
      title: 'Promote the recovered server',
      kind: 'action',
      describe: (ctx) =>
        promoting(ctx)
          ? 'Ending recovery: the server becomes read-write on a new timeline. Only after the target was verified.'
          : `Leaving the server paused at the target for inspection (--target-action pause); promote later with ${pgrunbookCommand('--procedure promote')}.`,
      async run(ctx) {
        if (!ctx.state.reached?.ok) throw new Error('the target was not verified as reached; not promoting');
        if (!promoting(ctx)) {
          ctx.state.leftPaused = true;
          ctx.log(`left paused for inspection; promote later with: ${pgrunbookCommand(`--procedure promote --pgdata ${pgdataOf(ctx)} --yes`)} (or pg_promote() in psql)`, 'warn');
          return;
        }
        await promoteAndClear(ctx, plan(ctx));
      },
    },
    {
      id: 'report',
      title: 'Report the recovery point and RTO',
      kind: 'verify',
      async run(ctx) {
        const reached = ctx.state.reached;
        const p = plan(ctx);
        const rto = Date.now() - Date.parse(ctx.state.stoppedAt ?? '');
        ctx.state.rtoMs = rto;
        const commit = reached?.micros ? formatMicrosIso(BigInt(reached.micros)) : reached?.time;
        ctx.fact('Recovery point', `${reached?.lsn ?? '?'}${commit ? ` (last replayed commit ${commit})` : ''}`);
        ctx.fact('Target', p.targetDetail);
        ctx.fact('RTO', `${formatDuration(rto)} (server stopped to verified)`);
        if (ctx.state.movedAside) ctx.fact('Original data directory', ctx.state.movedAside);
        if (ctx.state.leftPaused) ctx.fact('State', `paused for inspection; promote with ${pgrunbookCommand('--procedure promote --yes')}`);
        const unlogged = await unloggedTables({ ...ctx.services.connection, connectTimeoutSec: 5 }).catch((): string[] => []);
        if (unlogged.length) ctx.fact('Unlogged tables (empty after recovery by design)', unlogged.join(', '));
        if (ctx.state.movedAside) ctx.log(`the original data directory is kept at ${ctx.state.movedAside}; remove it once you are sure`, 'warn');
        ctx.check(
          'recovered',
          reached?.ok === true,
          reached?.ok ? `${p.target} from backup ${p.backupId}; RTO ${formatDuration(rto)}${ctx.state.leftPaused ? '; left paused for inspection' : ''}` : `${p.target} was NOT reached; see the checks above`,
        );
      },
    },
  ],
});

/** Promote, record it, and clear the recovery target: a later restart into recovery would stop there again. */
async function promoteAndClear(ctx: Ctx, p: RecoveryPlan): Promise<void> {
  const { currentLsn } = await promoteServer(ctx.services.connection);
  ctx.state.reached = { ...ctx.state.reached, promoted: true, promotedAt: currentLsn };
  ctx.progress(replayProgress(p, { replayLsn: ctx.state.reached.lsn, replayTime: ctx.state.reached.time }, { promoted: true }));
  ctx.log(`promoted: the server is read-write at ${currentLsn}`);
  await resetRecoveryTargets(ctx.services.connection).catch((e: Error) => ctx.log(`could not clear the recovery target settings (${e.message}); remove them from postgresql.auto.conf by hand`, 'warn'));
}
