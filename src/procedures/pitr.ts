// Point-in-time recovery: prove the target is inside a recovery window before touching
// anything, pick the newest base backup that ends before it, stop the server, move the
// data directory aside (never delete it), unpack the backup, replay archived WAL to the
// target while showing progress, verify, and promote.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import type { Procedure, StepContext } from '../engine/types.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { withPg } from '../postgres/client.js';
import { isRoot, lookupUser, ownerOf } from '../postgres/osuser.js';
import { pgCtlStatus } from '../postgres/pgctl.js';
import { serverControlFor, serverStderrFile, startServer, stopServer, type ServerControlSpec } from '../postgres/server-control.js';
import { openRepository, type Repository } from '../storage/repository.js';
import type { BaseBackupMeta } from '../storage/catalog.js';
import { ChecksumMismatchError } from '../storage/types.js';
import { fetchWal, WalCorruptError } from '../storage/walarchive.js';
import { lsnOfSegno, parseLsn, segmentName, segnoOfLsn } from '../storage/walnames.js';
import { findPgBinary } from '../postgres/binaries.js';
import { describeTarget, formatMicrosForPostgres, formatMicrosIso, parseTarget, type RecoveryTarget } from '../restore/target.js';
import { readRepositoryIdentity } from '../storage/identity.js';
import { planRecovery, RepositoryCorruptError, type RecoveryPlan } from '../restore/plan.js';
import { SegmentIndex, segmentOnPath, type PathPart } from '../restore/timelines.js';
import { services } from './services.js';
import { defaultServerEnvFile, walCommandLine, writeServerEnvFile } from './pgrunbook-command.js';
import { verifyProcedure } from './verify.js';

type Plan = RecoveryPlan;

const RECOVERY_MARK = '# pgrunbook pitr recovery settings';

function pgdataOf(ctx: StepContext): string {
  const dir = services(ctx).pgdata;
  if (!dir) throw new Error('no data directory: pass --pgdata DIR or set PGDATA (the directory PostgreSQL runs from)');
  return path.resolve(dir);
}

function plan(ctx: StepContext): Plan {
  const p = ctx.state.plan as Plan | undefined;
  if (!p) throw new Error('no recovery plan in the journal: the preflight step did not finish; start a new run');
  return p;
}

/** For texts shown before the plan exists (dry run, step descriptions). */
function planned(ctx: StepContext): Partial<Plan> & { dataObject?: Plan['dataObject'] } {
  return (ctx.state.plan as Plan | undefined) ?? { target: String(ctx.params.target), backupId: '<chosen in preflight>' };
}

function controlSpec(ctx: StepContext): ServerControlSpec {
  return serverControlFor(services(ctx).profile.server, pgdataOf(ctx));
}

function confirmText(ctx: StepContext): string {
  return (ctx.state.plan as Plan | undefined)?.clusterName || path.basename(pgdataOf(ctx));
}

async function openRepo(ctx: StepContext): Promise<Repository> {
  const svc = services(ctx);
  return openRepository(svc.repo, svc.env);
}

const verifyStep = (id: string) => verifyProcedure.steps.find((s) => s.id === id)!;

export const pitrProcedure: Procedure = {
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
  validate(params) {
    const t = parseTarget(String(params.target ?? ''));
    const errors = 'error' in t ? [t.error] : [];
    return errors.concat(verifyProcedure.validate?.({ criticalTables: params.criticalTables }) ?? []);
  },
  steps: [
    {
      id: 'preflight',
      title: 'Prove the target is recoverable',
      kind: 'check',
      describe: (ctx) => `Reading the repository's catalog and the archived WAL to prove ${describeTarget(parseTarget(String(ctx.params.target)) as RecoveryTarget)} lies in a recovery window, and choosing the base backup. Nothing is touched yet.`,
      plan: (ctx) => [`read the catalog of ${services(ctx).repo ?? '(no --repo)'}`, `check ${services(ctx).pgdata ?? '(no --pgdata)'} and the server`],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const target = parseTarget(String(ctx.params.target)) as RecoveryTarget;
        if (!fs.existsSync(pgdata)) {
          // A lost host or disk: restore into a new directory where the old one was.
          if (!fs.existsSync(path.dirname(pgdata))) throw new Error(`neither the data directory ${pgdata} nor its parent exists; check --pgdata, or create ${path.dirname(pgdata)} owned by the PostgreSQL user`);
          ctx.log(`data directory ${pgdata} does not exist: restoring into a new one (nothing to move aside)`, 'warn');
        } else if (!fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
          throw new Error(`${pgdata} is not a PostgreSQL data directory (no PG_VERSION); check --pgdata`);
        }
        const server = await identifyServer(ctx, pgdata);
        // latest means the server's newest WAL too: have it archived while the server still runs.
        if (target.kind === 'latest' && server.running) await archiveCurrentWal(ctx);

        const repo = await openRepo(ctx);
        try {
          const identity = await readRepositoryIdentity(repo.store);
          if (identity && server.systemIdentifier && identity.systemIdentifier !== server.systemIdentifier) {
            throw new Error(
              `the repository ${repo.describe()} belongs to another cluster (system identifier ${identity.systemIdentifier}); ${server.source} is cluster ${server.systemIdentifier}. Nothing was touched. Check --repo and --pgdata.`,
            );
          }
          const catalog = await repo.catalog();
          ctx.check('repository readable', true, `${repo.describe()}: ${catalog.baseBackups.filter((b) => b.complete).length} complete base backups, ${catalog.wal.files} WAL files`);
          let plannedBytes = 0;
          let doneBytes = 0;
          const tick = (n: number) => {
            doneBytes += n;
            ctx.progress({ done: doneBytes, total: Math.max(plannedBytes, doneBytes), unit: 'bytes' });
          };
          let p: Plan;
          try {
            p = await planRecovery({
              store: repo.store,
              catalog,
              target,
              exclusive: Boolean(ctx.params.exclusive),
              timeline: ctx.params.timeline === undefined ? undefined : Number(ctx.params.timeline),
              backupId: ctx.params.backup === undefined ? undefined : String(ctx.params.backup),
              signal: ctx.signal,
              log: (m, level) => ctx.log(m, level),
              progress: (u) => ctx.progress(u),
              readBackup: async ({ meta }) => {
                // Identity before bytes: never unpack another cluster's backup over this one.
                if (server.systemIdentifier && meta.systemIdentifier && server.systemIdentifier !== meta.systemIdentifier) {
                  throw new Error(
                    `base backup ${meta.id} belongs to another cluster (system identifier ${meta.systemIdentifier}); ${server.source} is cluster ${server.systemIdentifier}. Nothing was touched. Check --repo and --pgdata.`,
                  );
                }
                const objs = [meta.objects?.data, meta.objects?.manifest].filter((o): o is NonNullable<typeof o> => Boolean(o));
                plannedBytes = objs.reduce((n, o) => n + o.size, 0);
                ctx.log(`reading base backup ${meta.id} (${formatBytes(plannedBytes)}) to check its checksums before anything is touched`);
                for (const o of objs) await readWhole(repo, o.key, o.sha256, ctx.signal, tick);
                ctx.check('base backup checksums', true, `${meta.id}: ${objs.map((o) => o.key).join(', ')}`);
              },
              onWalSegment: (name, count) => {
                plannedBytes += catalog.segmentSize;
                tick(catalog.segmentSize);
                if (count % 16 === 0) ctx.log(`checked ${count} WAL segments (at ${name})`);
              },
            });
          } catch (e) {
            if (e instanceof RepositoryCorruptError || isChecksumError(e)) {
              ctx.check('repository objects intact', false, `${(e as Error).message} Nothing was touched: the server and ${pgdata} are as they were.`);
              return;
            }
            throw e;
          }
          ctx.check('WAL checksums', true, `${p.walSegments} segments read and checked${p.lastSegment ? ` through ${p.lastSegment}` : ''}`);
          ctx.check('target inside a recovery window', true, `${p.targetDetail}; from base backup ${p.backupId} (ended ${p.backupStopTime}, ${p.backupStopLsn}), replaying ${p.path}`);
          if (server.clusterName) p.clusterName = server.clusterName;
          await checkSpace(ctx, pgdata, catalog.baseBackups.find((b) => b.id === p.backupId)?.meta);
          ctx.state.plan = p;
          ctx.log(`plan: stop the server, move ${pgdata} aside, unpack ${formatBytes(p.dataObject.size)} from ${p.dataObject.key}, replay WAL to ${p.targetDetail}, ${String(ctx.params.targetAction) === 'promote' ? 'verify, then promote' : 'pause for inspection'}`);
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
        confirmText,
      },
      plan: (ctx) => [`stop the server (${controlSpec(ctx).method})`, `rename ${pgdataOf(ctx)} to ${pgdataOf(ctx)}.pgrunbook-<time>`],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        ctx.state.stoppedAt ??= new Date().toISOString();
        const status = await pgCtlStatus(pgdata).catch(() => ({ running: false }));
        if (status.running || controlSpec(ctx).method !== 'pg_ctl') {
          ctx.log(`stopping PostgreSQL (${controlSpec(ctx).method})`);
          await stopServer(controlSpec(ctx), { mode: 'fast', signal: ctx.signal });
        }
        const aside = (ctx.state.movedAside as string | undefined) ?? `${pgdata}.pgrunbook-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
        if (!fs.existsSync(pgdata) && !ctx.state.movedAside) {
          ctx.state.pgdataOwner = await newDataDirOwner(path.dirname(pgdata));
          ctx.state.pgdataMode = 0o700;
          ctx.log(`${pgdata} does not exist; nothing to move aside`, 'warn');
          return;
        }
        if (!fs.existsSync(aside)) {
          const owner = await ownerOf(pgdata);
          const mode = (await fsp.stat(pgdata)).mode & 0o777;
          await fsp.rename(pgdata, aside).catch((e: NodeJS.ErrnoException) => {
            throw new Error(`could not move ${pgdata} aside to ${aside}: ${e.message}${e.code === 'EXDEV' ? ' (different file systems)' : ''}. The server is stopped and the data directory is untouched; start it again with the profile's start command if you stop here.`);
          });
          ctx.state.movedAside = aside;
          ctx.state.pgdataOwner = owner;
          ctx.state.pgdataMode = mode;
        }
        ctx.log(`the original data directory is now ${aside}`, 'warn');
      },
    },
    {
      id: 'unpack',
      title: 'Download and unpack the base backup',
      kind: 'action',
      describe: (ctx) => `Streaming ${planned(ctx).dataObject?.key ?? 'the base backup'} (${formatBytes(planned(ctx).dataObject?.size ?? 0)}) from the repository into a new ${pgdataOf(ctx)}, checking its SHA-256 as it arrives.`,
      plan: (ctx) => [`mkdir ${pgdataOf(ctx)} (mode 0700)`, `get ${planned(ctx).dataObject?.key ?? 'basebackups/<id>/base.tar.gz'} | gunzip | tar -x -C ${pgdataOf(ctx)}`],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const p = plan(ctx);
        const owner = ctx.state.pgdataOwner as { uid: number; gid: number };
        // After an interrupted unpack, start over from empty, but only a directory this run made
        // (it carries our marker) or an empty one: never anything else found at that path.
        const marker = path.join(pgdata, `.pgrunbook-restoring-${ctx.runId}`);
        if (fs.existsSync(pgdata)) {
          const entries = await fsp.readdir(pgdata);
          if (entries.length && !fs.existsSync(marker)) {
            throw new Error(`${pgdata} exists and was not made by this restore (run ${ctx.runId}); it is left alone. Move it aside yourself, then --resume ${ctx.runId}.`);
          }
          await fsp.rm(pgdata, { recursive: true, force: true });
        }
        await fsp.mkdir(pgdata, { mode: 0o700 });
        await fsp.writeFile(marker, '');
        if (isRoot()) await fsp.chown(pgdata, owner.uid, owner.gid);
        const repo = await openRepo(ctx);
        try {
          const body = await repo.getVerified(p.dataObject.key, p.dataObject.sha256, ctx.signal);
          let done = 0;
          body.on('data', (chunk: Buffer) => {
            done += chunk.length;
            ctx.progress({ done, total: p.dataObject.size, unit: 'bytes' });
          });
          // --ignore-zeros: read to the end of the stream, past the end-of-archive blocks, so
          // tar never closes its input early and the whole object's checksum is checked.
          const tar = execa('tar', ['-x', '--ignore-zeros', '-f', '-', '-C', pgdata], {
            ...(isRoot() ? { uid: owner.uid, gid: owner.gid } : {}),
            stdin: 'pipe',
            stdout: 'ignore',
            stderr: 'pipe',
            cancelSignal: ctx.signal,
            reject: false,
          });
          const stages: (NodeJS.ReadableStream | NodeJS.ReadWriteStream | NodeJS.WritableStream)[] = [body];
          if (p.dataObject.compression === 'gzip') stages.push(zlib.createGunzip());
          stages.push(tar.stdin!);
          await pipeline(stages, { signal: ctx.signal });
          const r = await tar;
          if (r.exitCode !== 0) throw new Error(`tar could not unpack the backup into ${pgdata}: ${String(r.stderr).trim().slice(-500)}`);
          ctx.progress({ done: p.dataObject.size, total: p.dataObject.size, unit: 'bytes' });
        } finally {
          await repo.close();
        }
        await fsp.rm(path.join(pgdata, 'postmaster.pid'), { force: true });
        await fsp.rm(marker, { force: true });
        await fsp.chmod(pgdata, 0o700);
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
        const owner = ctx.state.pgdataOwner as { uid: number; gid: number };
        const auto = path.join(pgdata, 'postgresql.auto.conf');
        const existing = fs.existsSync(auto) ? await fsp.readFile(auto, 'utf8') : '';
        const kept = existing.split(RECOVERY_MARK)[0].trimEnd();
        // restore_command runs with the server's clean environment: credentials go in a file it owns.
        const svc = services(ctx);
        ctx.state.envFile = await writeServerEnvFile(defaultServerEnvFile(pgdata, plan(ctx).clusterName), svc.repo ?? '', svc.env, isRoot() ? owner : undefined);
        const lines = recoverySettings(ctx).map(([k, v]) => `${k} = '${v.replace(/'/g, "''")}'`);
        await fsp.writeFile(auto, `${kept}\n${RECOVERY_MARK} (run ${ctx.runId})\n${lines.join('\n')}\n`);
        // Standby mode: at the end of the archived WAL (or at a missing segment) the server waits
        // instead of promoting itself. The run promotes only after comparing what was reached with the plan.
        await fsp.rm(path.join(pgdata, 'recovery.signal'), { force: true });
        await fsp.writeFile(path.join(pgdata, 'standby.signal'), '');
        if (isRoot()) {
          await fsp.chown(auto, owner.uid, owner.gid);
          await fsp.chown(path.join(pgdata, 'standby.signal'), owner.uid, owner.gid);
        }
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
        const status = await pgCtlStatus(pgdata).catch(() => ({ running: false }));
        if (!status.running) {
          const logFile = (ctx.state.serverLog as string | undefined) ?? undefined;
          const started = await startServer(controlSpec(ctx), { logFile, signal: ctx.signal });
          if (started.logFile) ctx.state.serverLog = started.logFile;
          ctx.log(`started: ${started.command}`);
        }
        if (ctx.state.stallPaused) {
          // An earlier attempt paused replay where it stalled (short of the target): go on from there.
          await withPg(services(ctx).connection, (c) => c.query('SELECT pg_wal_replay_resume()')).catch(() => undefined);
          ctx.state.stallPaused = undefined;
          ctx.log('resumed replay where an earlier attempt stopped it');
        }
        const from = parseLsn(p.backupStopLsn);
        const to = parseLsn(p.replayEndLsn);
        const deadline = Date.now() + Number(ctx.params.replayTimeout ?? 3600) * 1000;
        let lastLsn = -1n;
        let lastProgressAt = Date.now();
        let lastStallCheck = 0;
        for (;;) {
          ctx.signal.throwIfAborted();
          const s = await replayStatus(ctx).catch((e: Error) => ({ error: e.message }));
          if ('error' in s) {
            const up = await pgCtlStatus(pgdata).catch(() => ({ running: false }));
            if (!up.running) throw new Error(`the server stopped during recovery: ${s.error}. It was not promoted. Its log: ${String(ctx.state.serverLog ?? 'see the server log')}. The original data directory is safe at ${String(ctx.state.movedAside)}.`);
          } else {
            if (!s.inRecovery) {
              // Nothing of ours promotes before the comparison: someone or something else did.
              ctx.state.reached = { lsn: s.currentLsn, promoted: true };
              ctx.check('recovery stopped where planned', false, `the server left recovery on its own at ${s.currentLsn ?? '?'} before pgrunbook compared it with the plan (${p.targetDetail}); check its log and the data before using it`);
              return;
            }
            const at = s.replayLsn ? parseLsn(s.replayLsn) : 0n;
            if (s.replayLsn) ctx.progress({ done: Math.max(0, Number(at - from)), total: Math.max(1, Number(to - from)), unit: 'bytes' });
            if (at > lastLsn) {
              lastLsn = at;
              lastProgressAt = Date.now();
            }
            const paused = s.pauseState === 'paused';
            const reachedEnd = !p.expect.pausesAtTarget && p.expect.replayedPast !== undefined && at > parseLsn(p.expect.replayedPast);
            if (reachedEnd && !paused) {
              await withPg(services(ctx).connection, (c) => c.query('SELECT pg_wal_replay_pause()'));
              continue;
            }
            if (paused) {
              const problems = compareWithPlan(p, s);
              ctx.state.reached = { lsn: s.replayLsn, time: s.replayTime, micros: s.replayMicros, promoted: false, ok: problems.length === 0 };
              if (problems.length) {
                ctx.check('recovery stopped where planned', false, `${problems.join('; ')}. The server is left paused in recovery and was not promoted; the original data directory is at ${String(ctx.state.movedAside ?? '(none)')}.`);
                return;
              }
              ctx.check('recovery stopped where planned', true, `replayed to ${s.replayLsn}${s.replayMicros ? `, last commit ${formatMicrosIso(BigInt(s.replayMicros))}` : ''}: ${p.targetDetail}`);
              ctx.log(`paused at the target: replayed to ${s.replayLsn}${s.replayTime ? `, last commit ${s.replayTime}` : ''}`);
              return;
            }
            // No progress for a while: is the WAL replay waits for still there and intact?
            if (Date.now() - lastProgressAt > STALL_MS && Date.now() - lastStallCheck > STALL_MS) {
              lastStallCheck = Date.now();
              const why = await whyReplayWaits(ctx, p, s.replayLsn ?? p.backupStopLsn);
              if (why) {
                ctx.state.reached = { lsn: s.replayLsn, time: s.replayTime, promoted: false, ok: false };
                await withPg(services(ctx).connection, (c) => c.query('SELECT pg_wal_replay_pause()')).catch(() => undefined);
                ctx.state.stallPaused = true;
                ctx.check('recovery stopped where planned', false, `replay stopped at ${s.replayLsn ?? '?'} short of the plan (${p.targetDetail}): ${why}. The server is left paused in recovery and was not promoted; nothing was archived from it. The original data directory is at ${String(ctx.state.movedAside ?? '(none)')}. Put the segment back and --resume ${ctx.runId}, or recover to a target before ${s.replayLsn ?? 'it'}.`);
                return;
              }
            }
          }
          if (Date.now() > deadline) throw new Error(`replay did not reach the target within ${String(ctx.params.replayTimeout)} s; the server is still recovering (check its log). Raise --replay-timeout and --resume to keep waiting.`);
          await sleep(300, ctx.signal);
        }
      },
    },
    { ...verifyStep('connect'), id: 'verify-connect', title: 'Verify: connect to the recovered server' },
    { ...verifyStep('databases'), id: 'verify-databases', title: 'Verify: query every database' },
    { ...verifyStep('critical-tables'), id: 'verify-tables', title: 'Verify: count rows of critical tables' },
    {
      id: 'promote',
      title: 'Promote the recovered server',
      kind: 'action',
      describe: (ctx) =>
        String(ctx.params.targetAction) === 'promote'
          ? 'Ending recovery: the server becomes read-write on a new timeline. Only after the target was verified.'
          : 'Leaving the server paused at the target for inspection (--target-action pause); promote later with pgrunbook --procedure promote.',
      async run(ctx) {
        const reached = ctx.state.reached as { ok?: boolean; promoted?: boolean } | undefined;
        if (!reached?.ok) throw new Error('the target was not verified as reached; not promoting');
        if (String(ctx.params.targetAction) !== 'promote') {
          ctx.state.leftPaused = true;
          ctx.log(`left paused for inspection; promote later with: pgrunbook --procedure promote --pgdata ${pgdataOf(ctx)} --yes (or SELECT pg_promote())`, 'warn');
          return;
        }
        await promote(ctx);
        await clearRecoverySettings(ctx);
      },
    },
    {
      id: 'report',
      title: 'Report the recovery point and RTO',
      kind: 'verify',
      async run(ctx) {
        const reached = ctx.state.reached as { lsn?: string; time?: string; micros?: string; ok?: boolean } | undefined;
        const p = plan(ctx);
        const rto = Date.now() - Date.parse(String(ctx.state.stoppedAt));
        ctx.state.rtoMs = rto;
        const commit = reached?.micros ? formatMicrosIso(BigInt(reached.micros)) : reached?.time;
        ctx.fact('Recovery point', `${reached?.lsn ?? '?'}${commit ? ` (last replayed commit ${commit})` : ''}`);
        ctx.fact('Target', p.targetDetail);
        ctx.fact('RTO', `${formatDuration(rto)} (server stopped to verified)`);
        if (ctx.state.movedAside) ctx.fact('Original data directory', String(ctx.state.movedAside));
        if (ctx.state.leftPaused) ctx.fact('State', 'paused for inspection; promote with pgrunbook --procedure promote --yes');
        const unlogged = await unloggedTables(ctx).catch(() => [] as string[]);
        if (unlogged.length) ctx.fact('Unlogged tables (empty after recovery by design)', unlogged.join(', '));
        if (ctx.state.movedAside) ctx.log(`the original data directory is kept at ${String(ctx.state.movedAside)}; remove it once you are sure`, 'warn');
        ctx.check('recovered', reached?.ok === true, reached?.ok ? `${p.target} from backup ${p.backupId}; RTO ${formatDuration(rto)}${ctx.state.leftPaused ? '; left paused for inspection' : ''}` : `${p.target} was NOT reached; see the checks above`);
      },
    },
  ],
};

export const promoteProcedure: Procedure = {
  id: 'promote',
  title: 'Promote a paused recovery',
  summary: 'End a recovery paused at its target: verify, promote (new timeline), clear the recovery settings.',
  group: 'restore',
  params: [
    { name: 'databases', type: 'list', description: 'databases to verify (default: all)' },
    { name: 'criticalTables', type: 'list', description: 'tables to count, DATABASE:SCHEMA.TABLE[:MIN_ROWS]' },
  ],
  steps: [
    { ...verifyStep('connect'), id: 'verify-connect' },
    { ...verifyStep('databases'), id: 'verify-databases' },
    { ...verifyStep('critical-tables'), id: 'verify-tables' },
    {
      id: 'promote',
      title: 'Promote',
      kind: 'action',
      describe: () => 'Ending recovery: the server becomes read-write on a new timeline.',
      async run(ctx) {
        const s = await replayStatus(ctx);
        if (!s.inRecovery) throw new Error('the server is not in recovery; there is nothing to promote');
        const ok = await ctx.confirm({ message: `Promote the server paused at ${s.replayLsn}${s.replayTime ? ` (last commit ${s.replayTime})` : ''}?` });
        if (!ok) throw Object.assign(new Error('promotion not confirmed; pass --yes to promote'), { hint: 'pass --yes' });
        await promote(ctx);
        if (services(ctx).pgdata) await clearRecoverySettings(ctx);
      },
    },
  ],
};

function recoverySettings(ctx: StepContext): [string, string][] {
  const p = plan(ctx);
  const svc = services(ctx);
  const target = parseTarget(p.target) as RecoveryTarget;
  const envFile = ctx.state.envFile as string | undefined;
  const out: [string, string][] = [['restore_command', walCommandLine('wal-fetch', svc.repo ?? '', svc.env, { envFile }).command]];
  out.push(['recovery_target_timeline', p.timelineSetting]);
  for (const [k, v] of p.settings) {
    // Microseconds kept end to end: the target as typed, never through a JavaScript Date.
    out.push([k, k === 'recovery_target_time' && target.kind === 'time' ? formatMicrosForPostgres(target.micros) : v]);
  }
  // Always pause: promotion follows only a verified target, and is pgrunbook's to do.
  if (p.settings.length) out.push(['recovery_target_action', 'pause']);
  // A recovering copy must never follow another primary or stop before readable.
  out.push(['primary_conninfo', ''], ['hot_standby', 'on']);
  return out;
}

/** What replay reached against what the plan said it must: each difference, in words. */
function compareWithPlan(p: Plan, s: ReplayStatus): string[] {
  const problems: string[] = [];
  const at = s.replayLsn ? parseLsn(s.replayLsn) : 0n;
  if (p.expect.replayedPast && !(at > parseLsn(p.expect.replayedPast))) problems.push(`replay stopped at ${s.replayLsn ?? '?'}, before the record at ${p.expect.replayedPast} that the target needs`);
  if (p.expect.notPast && at > parseLsn(p.expect.notPast)) problems.push(`replay went on to ${s.replayLsn}, past ${p.expect.notPast} where the target ends`);
  if (p.expect.lastXactMicros && s.replayMicros !== p.expect.lastXactMicros) {
    problems.push(`the last replayed commit is ${s.replayMicros ? formatMicrosIso(BigInt(s.replayMicros)) : 'none'}, the plan's is ${formatMicrosIso(BigInt(p.expect.lastXactMicros))}`);
  }
  return problems;
}

const STALL_MS = 8_000;

/** Replay has not moved for a while: name the segment it waits for if the repository no longer has it intact. */
async function whyReplayWaits(ctx: StepContext, p: Plan, replayLsn: string): Promise<string | undefined> {
  const repo = await openRepo(ctx);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrunbook-replaywait-'));
  try {
    const catalog = await repo.catalog();
    const ss = catalog.segmentSize;
    const tlPath: PathPart[] = p.pathParts.map((x) => ({ timeline: x.timeline, begin: parseLsn(x.begin), end: x.end === undefined ? undefined : parseLsn(x.end) }));
    const segno = segnoOfLsn(parseLsn(replayLsn), ss);
    for (const s of [segno, segno + 1n]) {
      if (parseLsn(p.replayEndLsn) < lsnOfSegno(s, ss)) break;
      const step = segmentOnPath(tlPath, new SegmentIndex(catalog, ss), s);
      if (step.kind === 'end') return `WAL segment ${segmentName(tlPath.find((x) => lsnOfSegno(s, ss) >= x.begin && (x.end === undefined || lsnOfSegno(s, ss) < x.end))?.timeline ?? p.timeline, s, ss)} is missing from the repository (it was there at preflight)`;
      try {
        const r = await fetchWal(repo.store, step.segment.name, path.join(dir, step.segment.name), { signal: ctx.signal });
        if (r.status === 'missing') return `WAL segment ${step.segment.name} is missing from the repository (it was there at preflight)`;
      } catch (e) {
        if (e instanceof WalCorruptError) return `WAL segment ${step.segment.name} is corrupt in the repository: ${e.message}`;
        throw e;
      }
    }
    return undefined;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
    await repo.close();
  }
}

interface ServerIdentity {
  running: boolean;
  systemIdentifier?: string;
  clusterName?: string;
  /** Where the identifier came from, for messages. */
  source: string;
}

/** Which cluster is at --pgdata: asked of the running server, else read from pg_control. */
async function identifyServer(ctx: StepContext, pgdata: string): Promise<ServerIdentity> {
  const svc = services(ctx);
  try {
    const info = await withPg({ ...svc.connection, connectTimeoutSec: 5 }, async (c) => {
      const r = await c.query<{ sysid: string; cluster_name: string; data_directory: string | null }>(
        `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, current_setting('cluster_name') AS cluster_name,
                CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory`,
      );
      return r.rows[0];
    });
    if (info.data_directory && path.resolve(info.data_directory) !== pgdata) {
      throw new Error(`--pgdata ${pgdata} is not the data directory of the server you connected to (${info.data_directory}); point --pgdata and --host/--port at the same cluster`);
    }
    ctx.check('server identified', true, `system ${info.sysid}${info.cluster_name ? `, cluster ${info.cluster_name}` : ''}`);
    const log = await serverStderrFile(pgdata).catch(() => undefined);
    if (log) ctx.state.serverLog = log;
    return { running: true, systemIdentifier: info.sysid, clusterName: info.cluster_name || undefined, source: 'the running server' };
  } catch (e) {
    if (/is not the data directory/.test((e as Error).message)) throw e;
    ctx.log(`the server is not reachable (${(e as Error).message}); continuing: it may already be down`, 'warn');
  }
  if (!fs.existsSync(path.join(pgdata, 'global', 'pg_control'))) return { running: false, source: pgdata };
  const sysid = await controlFileSystemIdentifier(pgdata);
  if (sysid) ctx.check('data directory identified', true, `${pgdata}: system ${sysid} (from pg_control)`);
  return { running: false, systemIdentifier: sysid, source: `the data directory ${pgdata}` };
}

async function controlFileSystemIdentifier(pgdata: string): Promise<string | undefined> {
  const bin = await findPgBinary('pg_controldata');
  const r = await execa(bin, [pgdata], { reject: false, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' }, extendEnv: false });
  const m = /Database system identifier:\s+(\d+)/.exec(String(r.stdout));
  return m?.[1];
}

/** Force the current WAL segment into the archive and wait for it: latest then includes the last commits. */
async function archiveCurrentWal(ctx: StepContext): Promise<void> {
  const conn = { ...services(ctx).connection, connectTimeoutSec: 5 };
  const name = await withPg(conn, async (c) => {
    const r = await c.query<{ rec: boolean; mode: string }>(`SELECT pg_is_in_recovery() AS rec, current_setting('archive_mode') AS mode`);
    if (r.rows[0].rec || r.rows[0].mode === 'off') return undefined;
    const w = await c.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    return w.rows[0].name;
  }).catch(() => undefined);
  if (!name) return;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const last = await withPg(conn, async (c) => (await c.query<{ last: string | null }>(`SELECT last_archived_wal AS last FROM pg_stat_archiver`)).rows[0].last).catch(() => null);
    if (last && last.slice(8) >= name.slice(8)) {
      ctx.log(`the server's current WAL (${name}) is archived: latest includes its last commits`);
      return;
    }
    if (Date.now() > deadline) {
      ctx.log(`the server's current WAL segment ${name} was not archived within 60 s (is archiving failing? see pg_stat_archiver): latest will end at what the archive holds`, 'warn');
      return;
    }
    await sleep(250, ctx.signal);
  }
}

async function readWhole(repo: Repository, key: string, sha256: string, signal: AbortSignal, onBytes: (n: number) => void): Promise<void> {
  const body = await repo.getVerified(key, sha256, signal);
  for await (const chunk of body) onBytes((chunk as Buffer).length);
}

function isChecksumError(e: unknown): boolean {
  return e instanceof ChecksumMismatchError || /checksum|sha-?256/i.test(String((e as Error)?.message ?? ''));
}

async function checkSpace(ctx: StepContext, pgdata: string, backup: BaseBackupMeta | undefined): Promise<void> {
  const need = Number(backup?.uncompressedSize ?? backup?.size ?? 0);
  try {
    const st = await fsp.statfs(path.dirname(pgdata));
    const free = st.bavail * st.bsize;
    if (need && free < need * 1.1) {
      throw new Error(`not enough free space next to ${pgdata}: the backup unpacks to about ${formatBytes(need)}, ${formatBytes(free)} is free (the current data directory is kept, so both must fit). Free space first.`);
    }
    ctx.check('free space', true, `${formatBytes(free)} free for about ${formatBytes(need)}`);
  } catch (e) {
    if (/not enough free space/.test((e as Error).message)) throw e;
  }
}

/** Unlogged tables come back empty from any physical restore: say which, so nobody is surprised. */
async function unloggedTables(ctx: StepContext): Promise<string[]> {
  const conn = { ...services(ctx).connection, connectTimeoutSec: 5 };
  const dbs = await withPg(conn, async (c) => (await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1`)).rows.map((r) => r.datname));
  const out: string[] = [];
  for (const db of dbs) {
    const rows = await withPg({ ...conn, database: db }, async (c) =>
      (await c.query<{ name: string }>(`SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p') ORDER BY 1`)).rows,
    ).catch(() => [] as { name: string }[]);
    for (const r of rows) out.push(`${db}:${r.name}`);
  }
  return out;
}

interface ReplayStatus {
  inRecovery: boolean;
  replayLsn?: string;
  replayTime?: string;
  /** pg_last_xact_replay_timestamp() in microseconds since the epoch, exactly. */
  replayMicros?: string;
  currentLsn?: string;
  pauseState?: string;
}

async function replayStatus(ctx: StepContext): Promise<ReplayStatus> {
  return withPg({ ...services(ctx).connection, connectTimeoutSec: 5 }, async (c) => {
    const r = await c.query<{ in_recovery: boolean; replay: string | null; replay_time: Date | null; replay_micros: string | null; pause_state: string | null; current: string | null }>(
      `SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replay, pg_last_xact_replay_timestamp() AS replay_time,
              (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000000)::bigint::text AS replay_micros,
              CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,
              CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current`,
    );
    const row = r.rows[0];
    return {
      inRecovery: row.in_recovery,
      replayLsn: row.replay ?? undefined,
      replayTime: row.replay_micros ? formatMicrosIso(BigInt(row.replay_micros)) : undefined,
      replayMicros: row.replay_micros ?? undefined,
      currentLsn: row.current ?? undefined,
      pauseState: row.pause_state ?? undefined,
    };
  });
}

async function promote(ctx: StepContext): Promise<void> {
  await withPg(services(ctx).connection, async (c) => {
    const r = await c.query<{ ok: boolean }>(`SELECT pg_promote(true, 120) AS ok`);
    if (!r.rows[0].ok) throw new Error('pg_promote() did not finish within 120 s; check the server log');
  });
  const s = await replayStatus(ctx);
  if (s.inRecovery) throw new Error('the server is still in recovery after pg_promote(); check the server log');
  ctx.state.reached = { ...(ctx.state.reached as object), promoted: true, promotedAt: s.currentLsn };
  ctx.log(`promoted: the server is read-write at ${s.currentLsn}`);
}

/** The recovery target must not linger: a later restart into recovery would stop there again. */
async function clearRecoverySettings(ctx: StepContext): Promise<void> {
  await withPg(services(ctx).connection, async (c) => {
    for (const k of ['recovery_target_time', 'recovery_target_lsn', 'recovery_target_xid', 'recovery_target_name', 'recovery_target_action', 'recovery_target_timeline']) {
      await c.query(`ALTER SYSTEM RESET ${k}`);
    }
  }).catch((e: Error) => ctx.log(`could not clear the recovery target settings (${e.message}); remove them from postgresql.auto.conf by hand`, 'warn'));
}

/** Who should own a data directory made from nothing: the parent's owner, or postgres when that is root. */
async function newDataDirOwner(parent: string): Promise<{ uid: number; gid: number }> {
  const owner = await ownerOf(parent);
  if (isRoot() && owner.uid === 0) {
    const pg = await lookupUser('postgres').catch(() => undefined);
    if (pg) return { uid: pg.uid, gid: pg.gid };
  }
  return owner;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason ?? new Error('aborted'));
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
