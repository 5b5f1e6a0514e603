// Point-in-time recovery: prove the target is inside a recovery window before touching
// anything, pick the newest base backup that ends before it, stop the server, move the
// data directory aside (never delete it), unpack the backup, replay archived WAL to the
// target while showing progress, verify, and promote.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
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
import type { BaseBackupMeta, Catalog } from '../storage/catalog.js';
import { formatLsn, parseLsn } from '../storage/walnames.js';
import { chooseBackup, describeTarget, parseTarget, usableWindows, type RecoveryTarget, type TargetPosition, type WindowBounds } from '../restore/target.js';
import { lastCommitInWindow, locateInWindow } from '../restore/walscan.js';
import { services } from './services.js';
import { walCommandLine } from './pgrunbook-command.js';
import { verifyProcedure } from './verify.js';

interface Plan {
  backupId: string;
  backupStopTime: string;
  backupStopLsn: string;
  timeline: number;
  target: string;
  targetLsn?: string;
  targetTime?: string;
  /** Where replay is expected to end, for the progress bar. */
  replayEndLsn: string;
  dataObject: { key: string; sha256: string; size: number; compression: string };
  clusterName?: string;
  windows: string;
}

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

        const repo = await openRepo(ctx);
        let catalog: Catalog;
        try {
          catalog = await repo.catalog();
          ctx.check('repository readable', true, `${repo.describe()}: ${catalog.baseBackups.filter((b) => b.complete).length} complete base backups, ${catalog.wal.files} WAL files`);
          const bounds = await windowBounds(ctx, repo, catalog, target);
          const position = await locateTarget(ctx, repo, catalog, target, bounds);
          const candidates = ctx.params.backup ? bounds.filter((b) => b.backup.id === ctx.params.backup) : bounds;
          if (ctx.params.backup && !candidates.length) {
            throw new Error(`--backup ${String(ctx.params.backup)} is not a complete, usable base backup; usable: ${bounds.map((b) => b.backup.id).join(', ') || 'none'}`);
          }
          const chosen = chooseBackup(target, position, candidates);
          const data = chosen.backup.objects?.data;
          if (!data) throw new Error(`base backup ${chosen.backup.id} has no data object recorded in its backup.json; it cannot be restored by this version of pgrunbook`);
          const replayEnd = position.lsn ?? parseLsn(chosen.window.toLsn);
          const p: Plan = {
            backupId: chosen.backup.id,
            backupStopTime: chosen.backup.stopTime,
            backupStopLsn: chosen.backup.stopLsn,
            timeline: chosen.window.timeline,
            target: String(ctx.params.target),
            targetLsn: position.lsn !== undefined ? formatLsn(position.lsn) : undefined,
            targetTime: position.time?.toISOString(),
            replayEndLsn: formatLsn(replayEnd),
            dataObject: { key: data.key, sha256: data.sha256, size: data.size, compression: data.compression },
            windows: bounds.map((b) => `${b.backup.id}: ${b.window.fromLsn}..${b.window.toLsn}`).join('; '),
          };
          ctx.check('target inside a recovery window', true, `${describeTarget(target)} from base backup ${p.backupId} (ended ${p.backupStopTime}, ${p.backupStopLsn}), replaying timeline ${p.timeline}`);
          await checkServerAndSpace(ctx, pgdata, chosen.backup, p);
          ctx.state.plan = p;
          ctx.log(`plan: stop the server, move ${pgdata} aside, unpack ${formatBytes(data.size)} from ${data.key}, replay WAL to ${describeTarget(target)}, ${String(ctx.params.targetAction) === 'promote' ? 'promote' : 'pause for inspection'}`);
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
      describe: (ctx) => `Setting restore_command to pgrunbook wal-fetch, the recovery target (${planned(ctx).target}) and its action, and creating recovery.signal.`,
      plan: () => ['restore_command, recovery_target_*, recovery_target_timeline in postgresql.auto.conf', 'touch recovery.signal'],
      async run(ctx) {
        const pgdata = pgdataOf(ctx);
        const owner = ctx.state.pgdataOwner as { uid: number; gid: number };
        const auto = path.join(pgdata, 'postgresql.auto.conf');
        const existing = fs.existsSync(auto) ? await fsp.readFile(auto, 'utf8') : '';
        const kept = existing.split(RECOVERY_MARK)[0].trimEnd();
        const lines = recoverySettings(ctx).map(([k, v]) => `${k} = '${v.replace(/'/g, "''")}'`);
        await fsp.writeFile(auto, `${kept}\n${RECOVERY_MARK} (run ${ctx.runId})\n${lines.join('\n')}\n`);
        await fsp.writeFile(path.join(pgdata, 'recovery.signal'), '');
        if (isRoot()) {
          await fsp.chown(auto, owner.uid, owner.gid);
          await fsp.chown(path.join(pgdata, 'recovery.signal'), owner.uid, owner.gid);
        }
        for (const l of lines) ctx.log(l);
      },
    },
    {
      id: 'replay',
      title: 'Start PostgreSQL and replay WAL to the target',
      kind: 'action',
      describe: (ctx) => `Starting the server in recovery; it fetches archived WAL through pgrunbook wal-fetch and replays it up to ${planned(ctx).target}. Progress is the replayed LSN against ${planned(ctx).replayEndLsn ?? 'the target'}.`,
      plan: () => ['start the server', 'poll pg_last_wal_replay_lsn() until the target is reached'],
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
        const from = parseLsn(p.backupStopLsn);
        const to = parseLsn(p.replayEndLsn);
        const deadline = Date.now() + Number(ctx.params.replayTimeout ?? 3600) * 1000;
        const wantPause = String(ctx.params.targetAction) === 'pause' && p.target !== 'latest';
        for (;;) {
          ctx.signal.throwIfAborted();
          const s = await replayStatus(ctx).catch((e: Error) => ({ error: e.message }));
          if ('error' in s) {
            const up = await pgCtlStatus(pgdata).catch(() => ({ running: false }));
            if (!up.running) throw new Error(`the server stopped during recovery: ${s.error}. Its log: ${String(ctx.state.serverLog ?? 'see the server log')}. The original data directory is safe at ${String(ctx.state.movedAside)}.`);
          } else {
            if (s.replayLsn) {
              const done = Number(parseLsn(s.replayLsn) - from);
              ctx.progress({ done: Math.max(0, done), total: Math.max(1, Number(to - from)), unit: 'bytes' });
            }
            if (!s.inRecovery) {
              ctx.state.reached = { lsn: s.replayLsn ?? s.currentLsn, time: s.replayTime, promoted: true };
              ctx.log(`recovery finished and the server was promoted at ${s.currentLsn}${s.replayTime ? ` (last replayed commit ${s.replayTime})` : ''}`);
              return;
            }
            if (wantPause && s.pauseState === 'paused') {
              ctx.state.reached = { lsn: s.replayLsn, time: s.replayTime, promoted: false };
              ctx.log(`paused at the target: replayed to ${s.replayLsn}${s.replayTime ? `, last commit ${s.replayTime}` : ''}`);
              return;
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
        (ctx.state.reached as { promoted?: boolean } | undefined)?.promoted
          ? 'The server already promoted itself at the end of recovery.'
          : 'Ending recovery: the server becomes read-write on a new timeline. Inspect the data first; this cannot be undone.',
      async run(ctx) {
        const reached = ctx.state.reached as { promoted?: boolean } | undefined;
        if (!reached?.promoted) {
          const ok = await ctx.confirm({ message: `Recovery is paused at ${planned(ctx).target}. Promote the server now (read-write, new timeline)?` });
          if (!ok) {
            ctx.state.leftPaused = true;
            ctx.log(`left paused for inspection; promote later with: pgrunbook --procedure promote --pgdata ${pgdataOf(ctx)} --yes (or SELECT pg_promote())`, 'warn');
            return;
          }
          await promote(ctx);
        }
        await clearRecoverySettings(ctx);
      },
    },
    {
      id: 'report',
      title: 'Report the recovery point and RTO',
      kind: 'verify',
      async run(ctx) {
        const reached = ctx.state.reached as { lsn?: string; time?: string } | undefined;
        const rto = Date.now() - Date.parse(String(ctx.state.stoppedAt));
        ctx.state.rtoMs = rto;
        ctx.fact('Recovery point', `${reached?.lsn ?? '?'}${reached?.time ? ` (last replayed commit ${reached.time})` : ''}`);
        ctx.fact('RTO', `${formatDuration(rto)} (server stopped to verified)`);
        if (ctx.state.movedAside) ctx.fact('Original data directory', String(ctx.state.movedAside));
        if (ctx.state.leftPaused) ctx.fact('State', 'paused for inspection; promote with pgrunbook --procedure promote --yes');
        if (ctx.state.movedAside) ctx.log(`the original data directory is kept at ${String(ctx.state.movedAside)}; remove it once you are sure`, 'warn');
        ctx.check('recovered', true, `${plan(ctx).target} from backup ${plan(ctx).backupId}; RTO ${formatDuration(rto)}${ctx.state.leftPaused ? '; left paused for inspection' : ''}`);
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
  const out: [string, string][] = [['restore_command', walCommandLine('wal-fetch', svc.repo ?? '', svc.env).command]];
  out.push(['recovery_target_timeline', String(p.timeline)]);
  switch (target.kind) {
    case 'time':
      // PostgreSQL's parser for this setting wants "YYYY-MM-DD HH:MM:SS.fff+00", not ISO's T and Z.
      out.push(['recovery_target_time', target.time.toISOString().replace('T', ' ').replace('Z', '+00')]);
      break;
    case 'lsn':
      out.push(['recovery_target_lsn', formatLsn(target.lsn)]);
      break;
    case 'xid':
      out.push(['recovery_target_xid', target.xid]);
      break;
    case 'name':
      out.push(['recovery_target_name', target.name]);
      break;
    case 'latest':
      break;
  }
  if (target.kind !== 'latest') out.push(['recovery_target_action', String(ctx.params.targetAction) === 'promote' ? 'promote' : 'pause']);
  return out;
}

async function windowBounds(ctx: StepContext, repo: Repository, catalog: Catalog, target: RecoveryTarget): Promise<WindowBounds[]> {
  const out: WindowBounds[] = [];
  // Windows of several backups usually end in the same WAL: read each end once.
  const lastCommitByEnd = new Map<string, Date>();
  for (const { window, backup } of usableWindows(catalog)) {
    // Only a time target needs the last commit time (a commit after the target must exist).
    let lastCommitTime: Date | undefined;
    if (target.kind === 'time') {
      const end = `${window.timeline}:${window.toLsn}`;
      lastCommitTime = lastCommitByEnd.get(end);
      // None found may mean this window's WAL is too short to hold one; an older window looks further back.
      if (!lastCommitTime) {
        lastCommitTime = await lastCommitInWindow(repo.store, window, catalog.segmentSize, ctx.signal);
        if (lastCommitTime) lastCommitByEnd.set(end, lastCommitTime);
      }
    }
    out.push({ window, backup, lastCommitTime });
  }
  return out;
}

async function locateTarget(ctx: StepContext, repo: Repository, catalog: Catalog, target: RecoveryTarget, bounds: WindowBounds[]): Promise<TargetPosition> {
  switch (target.kind) {
    case 'time':
      return { time: target.time };
    case 'lsn':
      return { lsn: target.lsn };
    case 'latest':
      return {};
    case 'xid':
    case 'name': {
      // Find the record in the archived WAL, so the backup is chosen by where it really is.
      const scanned = new Set<string>();
      for (const b of bounds) {
        const stats = { segments: 0, records: 0 };
        const found = await locateInWindow(
          repo.store,
          b.window,
          catalog.segmentSize,
          (r) => (target.kind === 'name' ? r.kind === 'restore-point' && r.name === target.name : (r.kind === 'commit' || r.kind === 'abort') && r.xid === target.xid),
          ctx.signal,
          256,
          stats,
          scanned,
        );
        ctx.log(`searched ${stats.segments} WAL segments (${stats.records} commits and restore points) of the window ${b.window.fromLsn}..${b.window.toLsn}`);
        if (found) {
          ctx.log(`found ${describeTarget(target)} at ${found.lsn} in the archived WAL`);
          return { lsn: parseLsn(found.lsn) };
        }
      }
      throw new Error(
        `${describeTarget(target)} was not found in the archived WAL of any recovery window (${bounds.map((b) => `${b.window.fromLsn}..${b.window.toLsn}`).join('; ') || 'none'}). ` +
          (target.kind === 'name' ? 'Check the name (SELECT pg_create_restore_point(...) creates one) and that its WAL segment was archived (SELECT pg_switch_wal()).' : 'Check the transaction id and that its commit was archived.'),
      );
    }
  }
}

async function checkServerAndSpace(ctx: StepContext, pgdata: string, backup: BaseBackupMeta, p: Plan): Promise<void> {
  const svc = services(ctx);
  try {
    const info = await withPg({ ...svc.connection, connectTimeoutSec: 5 }, async (c) => {
      const r = await c.query<{ sysid: string; cluster_name: string; data_directory: string | null }>(
        `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, current_setting('cluster_name') AS cluster_name,
                CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory`,
      );
      return r.rows[0];
    });
    if (backup.systemIdentifier && info.sysid !== backup.systemIdentifier) {
      throw new Error(`base backup ${backup.id} belongs to another cluster (system identifier ${backup.systemIdentifier}; this server is ${info.sysid}); check --repo`);
    }
    if (info.data_directory && path.resolve(info.data_directory) !== pgdata) {
      throw new Error(`--pgdata ${pgdata} is not the data directory of the server you connected to (${info.data_directory}); point --pgdata and --host/--port at the same cluster`);
    }
    if (info.cluster_name) p.clusterName = info.cluster_name;
    ctx.check('server identified', true, `system ${info.sysid}${info.cluster_name ? `, cluster ${info.cluster_name}` : ''}`);
    const log = await serverStderrFile(pgdata).catch(() => undefined);
    if (log) ctx.state.serverLog = log;
  } catch (e) {
    if (/belongs to another cluster|is not the data directory/.test((e as Error).message)) throw e;
    ctx.log(`the server is not reachable (${(e as Error).message}); continuing: it may already be down`, 'warn');
  }
  const need = Number(backup.uncompressedSize ?? backup.size ?? 0);
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

interface ReplayStatus {
  inRecovery: boolean;
  replayLsn?: string;
  replayTime?: string;
  currentLsn?: string;
  pauseState?: string;
}

async function replayStatus(ctx: StepContext): Promise<ReplayStatus> {
  return withPg({ ...services(ctx).connection, connectTimeoutSec: 5 }, async (c) => {
    const r = await c.query<{ in_recovery: boolean; replay: string | null; replay_time: Date | null; pause_state: string | null; current: string | null }>(
      `SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replay, pg_last_xact_replay_timestamp() AS replay_time,
              CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,
              CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current`,
    );
    const row = r.rows[0];
    return {
      inRecovery: row.in_recovery,
      replayLsn: row.replay ?? undefined,
      replayTime: row.replay_time ? row.replay_time.toISOString() : undefined,
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
