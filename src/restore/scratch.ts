// Scratch recovery: a throwaway cluster recovered to a target, next to production and never
// touching it. The base backup that ends before the target is unpacked into a directory of our
// own (--scratch-dir, default the system temp directory), started on a free port with a private
// unix socket only and no archiving, replays archived WAL (wal-fetch from the repository) to the
// target and pauses there; what it reached is compared with the plan exactly as pitr does (a
// difference is exit 3: never report what was not reached). Callers read from it through
// scratchConnection() and always end with teardownScratch(): after success, failure, an
// interruption, and when a resumed run finds an earlier attempt's scratch cluster.
//
// Stable API (table-restore --at, logical-restore --at, restore-test):
//   planScratch(o)            preflight, no side effect: identity, free space (before any byte is
//                             downloaded), then the recovery plan with the backup and WAL checksummed
//   recoverScratch(state, o)  build it and replay to the target (throws when not reached)
//   scratchConnection(state)  where to connect to it (a paused hot standby: read-only)
//   makeScratchWritable(state) promote it after the check, for work tables (WAL goes nowhere)
//   teardownScratch(state)    stop it and remove its directory (safe to call twice)
//   scratchGone(state)        proof for a verify step: no server, no directory
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionSettings } from '../config/connection.js';
import { formatBytes } from '../engine/format.js';
import type { StepContext } from '../engine/types.js';
import { runningServerIdentity } from '../postgres/identity.js';
import { firstUntraversableDir, isRoot } from '../postgres/osuser.js';
import { archiveCurrentWal, promoteServer, replayStatus } from '../postgres/recovery.js';
import { findFreePort } from '../postgres/sandbox.js';
import { scratchServerConnection, scratchServerRunning, scratchServerSettings, startScratchServer, stopScratchServer, writeScratchServerFiles, type ScratchServerSpec } from '../postgres/scratch-server.js';
import { bootstrapSuperuser } from '../postgres/scratch-sql.js';
import { walCommandLine, writeServerEnvFile } from '../procedures/pgrunbook-command.js';
import type { Catalog } from '../repo/catalog.js';
import { readRepositoryIdentity } from '../repo/identity.js';
import { openRepository } from '../repo/repository.js';
import { parseLsn } from '../repo/walnames.js';
import { newDataDirOwner, type Owner } from './datadir.js';
import type { RecoveryPlan } from './plan.js';
import { otherCluster, proveRecoverable, type ClusterIdentity } from './preflight.js';
import { recoverySettings, writeRecoverySettings } from './recovery-settings.js';
import { replayProgress, watchReplay } from './replay.js';
import { formatMicrosIso, validTarget, type RecoveryTarget } from './target.js';
import { unpackTar } from './unpack.js';

export type ScratchReport = Pick<StepContext, 'log' | 'check' | 'progress'>;

export type ScratchOptions = {
  /** Repository URL (with its credentials: they go to the server's 0600 env file, never argv). */
  repo: string;
  env: NodeJS.ProcessEnv;
  /** Same syntax as pitr --target: latest, a time with a zone, lsn:, xid:, name:. */
  target: string;
  /** Stop just before the target (an xid or time target then excludes that transaction). */
  exclusive?: boolean;
  timeline?: number;
  backupId?: string;
  /** Parent directory of the scratch cluster; default the system temp directory. Must exist. */
  scratchDir?: string;
  runId: string;
  /**
   * Production, when there is one to ask: its system identifier must be the repository's, its
   * current WAL is archived first (so the newest commits are reachable), and its bootstrap
   * superuser is the role used on the scratch cluster. It is only read, never stopped.
   */
  production?: ConnectionSettings;
  /** Role to connect to the scratch cluster as (default production's bootstrap superuser, else postgres). */
  user?: string;
  replayTimeoutSec?: number;
  signal: AbortSignal;
  report: ScratchReport;
};

/** Journaled between steps: enough to reach, check and tear down the scratch cluster on a resume. */
export type ScratchState = {
  runId: string;
  /** The directory this run made (everything scratch lives under it; removed by teardown). */
  base: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  port: number;
  owner: Owner;
  user: string;
  plan: RecoveryPlan;
  /** Bytes the backup unpacks to and bytes free where it goes, as checked in planScratch. */
  needBytes: number;
  freeBytes: number;
  /** Set once recoverScratch has made the directory: a resume tears it down first. */
  built?: boolean;
  reached?: { lsn?: string; time?: string; micros?: string };
};

/** The recovery did not stop where the plan said: exit 3 (the caller tears the cluster down). */
export class ScratchNotReachedError extends Error {
  readonly procedureExitCode = 3;
  constructor(
    message: string,
    readonly hint = 'pick a target inside a recovery window (pgrunbook catalog), or check the WAL archive; the scratch cluster was removed',
  ) {
    super(message);
    this.name = 'ScratchNotReachedError';
  }
}

/** Not enough room for the scratch cluster: refused before anything was downloaded. */
export class ScratchSpaceError extends Error {
  readonly hint: string;
  constructor(
    readonly dir: string,
    readonly needBytes: number,
    readonly freeBytes: number,
  ) {
    super(`not enough free space for the scratch cluster in ${dir}: the base backup unpacks to about ${formatBytes(needBytes)} (${needBytes} bytes, plus 10% for replayed WAL), ${formatBytes(freeBytes)} (${freeBytes} bytes) is free. Nothing was downloaded.`);
    this.name = 'ScratchSpaceError';
    this.hint = 'free space there, or pass --scratch-dir DIR on a file system with room (it must be on this host)';
  }
}

const MARKER = '.pgrunbook-scratch';

/** Where a run's scratch cluster lives: `<parent>/pgrunbook-scratch-<run id>`. */
export function scratchBaseFor(parent: string | undefined, runId: string): string {
  return path.join(path.resolve(parent ?? os.tmpdir()), `pgrunbook-scratch-${runId.replace(/[^A-Za-z0-9._-]+/g, '-')}`);
}

/**
 * The server's socket directory: inside the scratch directory when the socket's path fits in
 * sun_path (107 bytes), else a short private directory in the system temp directory named
 * after it (teardown removes both).
 */
function socketDirFor(base: string): string {
  const inside = path.join(base, 'sock');
  if (Buffer.byteLength(`${inside}/.s.PGSQL.65535`) <= 100) return inside;
  return path.join(os.tmpdir(), `pgrunbook-sock-${createHash('sha256').update(base).digest('hex').slice(0, 12)}`);
}

/** Free bytes for a non-root user on the file system holding `dir`. */
async function freeBytesAt(dir: string): Promise<number> {
  const st = await fsp.statfs(dir);
  return st.bavail * st.bsize;
}

/** What the chosen backup is likely to be, from the catalog alone (no byte downloaded): its unpacked size. */
function expectedBackupSize(catalog: Catalog, target: RecoveryTarget, backupId?: string): number {
  const complete = catalog.baseBackups.filter((b) => b.complete && b.meta?.objects?.data).map((b) => b.meta!);
  const sizeOf = (m: (typeof complete)[number]) => Number(m.uncompressedSize ?? m.size ?? 0);
  const pick = backupId
    ? complete.filter((m) => m.id === backupId)
    : target.kind === 'time'
      ? complete.filter((m) => Date.parse(m.stopTime) * 1000 < Number(target.micros))
      : target.kind === 'lsn'
        ? complete.filter((m) => parseLsn(m.stopLsn) <= target.lsn)
        : complete;
  const newest = pick.sort((a, b) => (parseLsn(b.stopLsn) > parseLsn(a.stopLsn) ? 1 : -1));
  // latest takes the newest; an xid or name target may take any: the largest is the safe guess.
  if (target.kind === 'xid' || target.kind === 'name') return Math.max(0, ...newest.map(sizeOf));
  return newest.length ? sizeOf(newest[0]) : 0;
}

function checkSpace(dir: string, need: number, free: number): void {
  if (need && free < need * 1.1) throw new ScratchSpaceError(dir, need, free);
}

/**
 * Everything checked before the first side effect: the parent directory, the identity of
 * repository and production, free space against the backup's size (before any download), then
 * the recovery plan (the chosen backup and every WAL segment read with their checksums).
 */
export async function planScratch(o: ScratchOptions): Promise<ScratchState> {
  const target = validTarget(o.target);
  const parent = path.resolve(o.scratchDir ?? os.tmpdir());
  if (!fs.existsSync(parent) || !fs.statSync(parent).isDirectory()) throw new Error(`--scratch-dir ${parent} is not a directory; create it (on this host, with room for the base backup) or leave it out to use ${os.tmpdir()}`);
  const base = scratchBaseFor(parent, o.runId);
  let server: ClusterIdentity = { running: false, source: 'the repository' };
  let user = o.user;
  if (o.production) {
    const id = await runningServerIdentity({ ...o.production, connectTimeoutSec: 10 });
    server = { running: true, systemIdentifier: id.systemIdentifier, clusterName: id.clusterName, source: 'the production server' };
    user ??= await bootstrapSuperuser(o.production).catch(() => undefined);
    // The newest commits are in production's current WAL segment: have it archived first.
    const archived = await archiveCurrentWal(o.production, { timeoutMs: 60_000, signal: o.signal }).catch(() => undefined);
    if (archived?.archived) o.report.log(`production's current WAL (${archived.segment}) is archived: the target may be as recent as its last commits`);
    else if (archived) o.report.log(`production's current WAL segment ${archived.segment} was not archived within 60 s (see pg_stat_archiver): the target must lie in what the archive holds`, 'warn');
  }
  const repo = await openRepository(o.repo, o.env);
  try {
    const identity = await readRepositoryIdentity(repo.store);
    if (identity && server.systemIdentifier && identity.systemIdentifier !== server.systemIdentifier) throw otherCluster(`the repository ${repo.describe()}`, identity.systemIdentifier, server);
    if (!server.systemIdentifier && identity) server = { ...server, systemIdentifier: identity.systemIdentifier };
    const catalog = await repo.catalog();
    // Free space first: the plan below downloads the backup to check it.
    const expected = expectedBackupSize(catalog, target, o.backupId);
    const free = await freeBytesAt(parent);
    checkSpace(parent, expected, free);
    const plan = await proveRecoverable({ repo, catalog, target, exclusive: Boolean(o.exclusive), timeline: o.timeline, backupId: o.backupId, server, signal: o.signal, report: o.report });
    const meta = catalog.baseBackups.find((b) => b.id === plan.backupId)?.meta;
    const need = Number(meta?.uncompressedSize ?? meta?.size ?? plan.dataObject.size);
    checkSpace(parent, need, free);
    o.report.check('room for the scratch cluster', true, `${formatBytes(free)} free in ${parent} for about ${formatBytes(need)}`);
    o.report.check('target inside a recovery window', true, `${plan.targetDetail}; from base backup ${plan.backupId} (ended ${plan.backupStopTime}, ${plan.backupStopLsn})`);
    const owner = await newDataDirOwner(parent);
    const blocked = isRoot() ? await firstUntraversableDir(parent, owner) : undefined;
    if (blocked) throw new Error(`the scratch cluster's server runs as uid ${owner.uid}, which cannot enter ${blocked} (mode bits): pass --scratch-dir DIR in a directory it can reach (e.g. /var/tmp), or chmod o+x ${blocked}`);
    return {
      runId: o.runId,
      base,
      dataDir: path.join(base, 'data'),
      socketDir: socketDirFor(base),
      logFile: path.join(base, 'server.log'),
      port: 0,
      owner,
      user: user ?? 'postgres',
      plan,
      needBytes: need,
      freeBytes: free,
    };
  } finally {
    await repo.close();
  }
}

async function makeDir(dir: string, owner: Owner): Promise<void> {
  await fsp.mkdir(dir, { mode: 0o700 });
  if (isRoot()) await fsp.chown(dir, owner.uid, owner.gid);
}

/**
 * Build the scratch cluster and replay it to the plan's target, paused there. A leftover of an
 * earlier attempt of this run (a resume) is torn down first. Throws ScratchNotReachedError (exit
 * 3) when replay stopped anywhere else than planned; the caller tears the cluster down.
 */
export async function recoverScratch(state: ScratchState, o: ScratchOptions): Promise<ScratchState> {
  const { report, signal } = o;
  const p = state.plan;
  if (state.built || fs.existsSync(state.base) || fs.existsSync(state.socketDir)) {
    report.log(`removing the scratch cluster an earlier attempt of run ${state.runId} left at ${state.base}`, 'warn');
    await teardownScratch(state);
  }
  const free = await freeBytesAt(path.dirname(state.base));
  checkSpace(path.dirname(state.base), state.needBytes, free);

  await makeDir(state.base, state.owner);
  state.built = true;
  await fsp.writeFile(path.join(state.base, MARKER), `${state.runId}\n`);
  await makeDir(state.dataDir, state.owner);
  await makeDir(state.socketDir, state.owner);

  // Download and unpack (SHA-256 checked as it arrives).
  const repo = await openRepository(o.repo, o.env);
  try {
    const data = p.dataObject;
    report.log(`downloading and unpacking ${formatBytes(data.size)} (${data.key}) into ${state.dataDir}`);
    const body = await repo.getVerified(data.key, data.sha256, signal);
    const onBytes = (done: number) => report.progress({ done, total: data.size, unit: 'bytes' });
    await unpackTar(body, { dir: state.dataDir, compression: data.compression, owner: state.owner, signal, onBytes });
    onBytes(data.size);
  } finally {
    await repo.close();
  }
  await fsp.rm(path.join(state.dataDir, 'postmaster.pid'), { force: true });
  const tblspc = await fsp.readdir(path.join(state.dataDir, 'pg_tblspc')).catch(() => []);
  if (tblspc.length) throw new Error(`the base backup has tablespaces (${tblspc.join(', ')}): a scratch recovery cannot place them without touching production's tablespace directories; restore it with pitr on another host`);

  // Configure: where WAL comes from, where to stop, and a private server.
  state.port = await findFreePort();
  const spec = serverSpec(state);
  const envFile = await writeServerEnvFile(path.join(state.base, 'wal-fetch.env'), o.repo, o.env, isRoot() ? state.owner : undefined);
  const restoreCommand = walCommandLine('wal-fetch', o.repo, o.env, { envFile }).command;
  await writeScratchServerFiles(spec);
  await writeRecoverySettings(state.dataDir, [...recoverySettings(p, restoreCommand), ...scratchServerSettings(spec)], state.runId, state.owner);
  report.log(`starting the scratch server on port ${state.port}, socket ${state.socketDir} only (no TCP), archive_mode off`);
  await startScratchServer(spec, signal);

  const conn = scratchConnection(state);
  const outcome = await watchReplay({
    conn,
    pgdata: state.dataDir,
    plan: p,
    openRepo: () => openRepository(o.repo, o.env),
    timeoutSec: o.replayTimeoutSec ?? 3600,
    signal,
    onPoll: (s) => {
      if (s.replayLsn) report.progress(replayProgress(p, s));
    },
    stoppedError: (why) => new Error(`the scratch server stopped during recovery: ${why}. Its log: ${state.logFile}`),
  });
  if (outcome.kind === 'left-recovery') {
    report.check('recovery stopped where planned', false, `the scratch server left recovery at ${outcome.currentLsn ?? '?'} before it was compared with the plan (${p.targetDetail})`);
    throw new ScratchNotReachedError(`the scratch cluster left recovery on its own; ${p.target} was not verified as reached`);
  }
  const s = outcome.status;
  report.progress(replayProgress(p, s, { paused: true }));
  if (outcome.kind === 'stalled') {
    report.check('recovery stopped where planned', false, `replay stopped at ${s.replayLsn ?? '?'} short of the plan (${p.targetDetail}): ${outcome.why}`);
    throw new ScratchNotReachedError(`${p.target} was NOT reached: replay stopped at ${s.replayLsn ?? '?'} (${outcome.why})`);
  }
  if (outcome.problems.length) {
    report.check('recovery stopped where planned', false, outcome.problems.join('; '));
    throw new ScratchNotReachedError(`${p.target} was NOT reached: ${outcome.problems.join('; ')}`);
  }
  state.reached = { lsn: s.replayLsn, time: s.replayTime, micros: s.replayMicros };
  report.check('recovery stopped where planned', true, `replayed to ${s.replayLsn}${s.replayMicros ? `, last commit ${formatMicrosIso(BigInt(s.replayMicros))}` : ''}: ${p.targetDetail}`);
  return state;
}

function serverSpec(state: ScratchState): ScratchServerSpec {
  return { dataDir: state.dataDir, socketDir: state.socketDir, port: state.port, logFile: state.logFile, owner: state.owner };
}

/** A connection to the paused scratch cluster (read-only: it is a hot standby). */
export function scratchConnection(state: Pick<ScratchState, 'socketDir' | 'port' | 'user'>, database?: string): ConnectionSettings {
  return scratchServerConnection(state, state.user, database);
}

/**
 * Stop the scratch server (immediate: nothing in it is kept) and remove its directory, only if
 * it carries this run's marker or is empty. Safe to call twice and on a half-built cluster.
 */
export async function teardownScratch(state: Pick<ScratchState, 'base' | 'dataDir' | 'runId' | 'socketDir'>): Promise<void> {
  const outside = !state.socketDir.startsWith(`${state.base}${path.sep}`);
  if (!fs.existsSync(state.base)) {
    if (outside) await fsp.rm(state.socketDir, { recursive: true, force: true });
    return;
  }
  await stopScratchServer(state.dataDir);
  const entries = await fsp.readdir(state.base);
  const ours = fs.existsSync(path.join(state.base, MARKER)) || entries.length === 0;
  if (!ours) throw new Error(`${state.base} was not made by run ${state.runId} (no ${MARKER} in it); it is left alone: remove it yourself`);
  await fsp.rm(state.base, { recursive: true, force: true });
  if (outside) await fsp.rm(state.socketDir, { recursive: true, force: true });
}

/** Whether the scratch cluster is really gone: no server on its data directory, no directory. */
export async function scratchGone(state: Pick<ScratchState, 'base' | 'dataDir' | 'socketDir'>): Promise<{ gone: boolean; detail: string }> {
  const running = await scratchServerRunning(state.dataDir);
  const exists = fs.existsSync(state.base) || fs.existsSync(state.socketDir);
  if (!running && !exists) return { gone: true, detail: `${state.base} removed, its server stopped` };
  return { gone: false, detail: `${running ? 'its server still runs' : ''}${running && exists ? '; ' : ''}${exists ? `${state.base} still exists` : ''}` };
}

/**
 * Promote the scratch cluster once its target was verified, for callers that need to write
 * work tables in it (table-restore's key checks). Its WAL goes nowhere: archive_mode is off.
 */
export async function makeScratchWritable(state: ScratchState): Promise<void> {
  if (!(await replayStatus(scratchConnection(state))).inRecovery) return;
  await promoteServer(scratchConnection(state));
}
