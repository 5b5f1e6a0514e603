// Physical base backup: pg_basebackup's tar streamed through zstd into the repository, with the
// WAL it needs inside (so it is consistent on its own) and its backup_manifest lifted out of the
// stream as a separate object. Nothing touches the local disk but the manifest (small), nothing
// is buffered whole. Every file is checked against the manifest as it streams (one pass) before
// backup.json, the commit marker, is written.
import { describeConnection } from '../config/connection.js';
import { formatBytes } from '../engine/format.js';
import { errorMessage } from '../engine/runner.js';
import type { StepContext } from '../engine/types.js';
import { findPgBinary, pgBinaryVersion } from '../postgres/binaries.js';
import { baseBackupChecks, readBaseBackupReadiness, replicationPossible } from '../postgres/cluster.js';
import { parseMaxRate } from '../postgres/programs/pg_basebackup.js';
import { identifySystem, replicationConnectHint } from '../postgres/replication.js';
import type { BaseBackupMeta } from '../repo/catalog.js';
import type { RepositoryIdentity } from '../repo/identity.js';
import {
  backupLocation,
  checkOwner,
  commitBaseBackup,
  planBackup,
  planCommit,
  planPreflight,
  planVerify,
  reachRepository,
  recheckOwner,
} from '../services/base-backup.js';
import { freshBackupId, holdBackupLock, releaseBackupLock, removeBackupObjects } from '../services/base-backup-repo.js';
import { streamBaseBackup, type BaseBackupPreflight } from '../services/base-backup-stream.js';
import type { StreamCheckResult } from '../services/base-backup-check.js';
import { verifyBaseBackup, type VerifiedBackup } from '../services/base-backup-verify.js';
import { describeRepository, noOwnerYet, openRunRepository, ownerCheckDetail } from '../services/run-repository.js';
import { defineProcedure, type Typed } from './define.js';

type BackupBaseParams = {
  checkpoint?: 'spread' | 'fast';
  /** pg_basebackup --max-rate, e.g. "100M". */
  maxRate?: string;
};

type BackupBaseState = {
  preflight?: BaseBackupPreflight;
  /** Set before the backup is streamed: an interrupted attempt's objects are found by it. */
  backupId?: string;
  meta?: BaseBackupMeta;
  /** What the backup step's check against backup_manifest found as the tar streamed past. */
  streamCheck?: StreamCheckResult;
  verified?: VerifiedBackup;
  committed?: boolean;
};

type Ctx = StepContext<Typed<BackupBaseParams, BackupBaseState>>;

export const backupBaseProcedure = defineProcedure<BackupBaseParams, BackupBaseState>({
  id: 'backup-base',
  title: 'Base backup (pg_basebackup) into the repository',
  summary: 'pg_basebackup of the whole cluster, with the WAL it needs and its backup_manifest, streamed compressed into the repository and verified.',
  group: 'backup',
  params: [
    {
      name: 'checkpoint',
      type: 'choice',
      choices: ['spread', 'fast'],
      default: 'spread',
      description: 'the checkpoint the backup starts with: spread (gentle on a busy server, can take minutes: checkpoint_timeout x checkpoint_completion_target) or fast (at once, with an I/O burst)',
    },
    {
      name: 'maxRate',
      type: 'string',
      description: 'limit the transfer from the server (pg_basebackup --max-rate), in kB/s or with a k/M suffix: 32k to 1024M',
      example: '100M',
    },
  ],
  validate(params) {
    const errors: string[] = [];
    if (params.maxRate !== undefined && params.maxRate !== '' && parseMaxRate(params.maxRate) === undefined) {
      errors.push(`--max-rate: "${params.maxRate}" is not a rate pg_basebackup accepts: a number of kB/s from 32 to 1048576, or with a suffix (32k .. 1024M), e.g. 100M`);
    }
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Check the repository and the server',
      kind: 'check',
      describe: (ctx) =>
        `Checking that ${repoDescription(ctx)} is reachable, and that ${describeConnection(ctx.services.connection)} allows a base backup: wal_level, max_wal_senders, the REPLICATION privilege, a replication connection (pg_hba.conf), no tablespaces outside the data directory, and a pg_basebackup at least as new as the server.`,
      plan: (ctx) => planPreflight(repoDescription(ctx), describeConnection(ctx.services.connection)),
      async run(ctx) {
        const conn = ctx.services.connection;
        // The server's answers and pg_basebackup's version are asked for while the repository is
        // reached (each a round trip or a process start); they are reported in this order all the same.
        const readiness = readBaseBackupReadiness(conn);
        const toolVersion = findPgBinary('pg_basebackup').then(pgBinaryVersion);
        for (const p of [readiness, toolVersion]) p.catch(() => undefined); // awaited below, or the step failed before
        const repo = await openRunRepository(ctx, ctx.services);
        let identity: RepositoryIdentity | undefined;
        try {
          identity = await reachRepository(repo);
        } finally {
          await repo.close().catch(() => {});
        }
        ctx.check('repository reachable', true, repo.describe());

        // Unreachable server: nothing else can be checked, the step fails (exit 1) with the client's message.
        const r = await readiness;
        const major = Math.floor(r.serverVersionNum / 10000);
        ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${r.serverVersion}${r.inRecovery ? ', a standby (the backup is taken from it)' : ''}`);
        for (const c of baseBackupChecks(r)) ctx.check(c.name, c.ok, c.detail);
        const tool = await checkPgBasebackup(ctx, major, toolVersion);

        let systemIdentifier = '';
        if (replicationPossible(r)) {
          try {
            const id = await identifySystem(conn);
            systemIdentifier = id.systemIdentifier;
            ctx.check('replication connection', true, `IDENTIFY_SYSTEM: system identifier ${id.systemIdentifier}, timeline ${id.timeline}, WAL at ${id.walPosition}`);
          } catch (err) {
            ctx.check('replication connection', false, replicationConnectHint(errorMessage(err), r.user));
          }
        }

        // A repository holds one cluster: another cluster's is refused before anything is written.
        const sysid = r.systemIdentifier ?? systemIdentifier;
        if (identity && sysid) {
          for (const w of checkOwner(repo, identity, sysid, { pgMajor: major, walSegmentSize: r.walSegmentSize })) ctx.log(w, 'warn');
          ctx.check('repository belongs to this cluster', true, ownerCheckDetail(identity));
        } else if (!identity) {
          ctx.log(noOwnerYet(repo, sysid));
        }

        ctx.state.preflight = {
          serverVersion: r.serverVersion,
          serverVersionNum: r.serverVersionNum,
          pgMajor: major,
          systemIdentifier: systemIdentifier || sysid || '',
          walSegmentSize: r.walSegmentSize,
          // The databases, plus at least one WAL segment inside the tar.
          sizeEstimate: r.sizeEstimate + r.walSegmentSize,
          tool,
          repository: repo.describe(),
        };
        ctx.log(`estimated backup size: ${formatBytes(ctx.state.preflight.sizeEstimate)} (sum of pg_database_size plus one WAL segment; the progress total is this estimate)`);
      },
    },
    {
      id: 'backup',
      title: 'Stream pg_basebackup into the repository',
      kind: 'action',
      describe: (ctx) =>
        `Running pg_basebackup (tar, WAL included, ${checkpointOf(ctx)} checkpoint) and streaming it, zstd-compressed in one pass (every file checked against backup_manifest as it passes), to ${repoDescription(ctx)}; its backup_manifest is stored alongside. Nothing is offered for restore until the backup has been verified and committed.`,
      plan: (ctx) => planBackup({ checkpoint: checkpointOf(ctx), maxRate: maxRateOf(ctx), env: ctx.services.env }),
      async run(ctx) {
        const pre = preflightOf(ctx);
        const repo = await openRunRepository(ctx, ctx.services);
        let done = false;
        try {
          if (pre.repository && repo.describe() !== pre.repository) {
            throw new Error(`this run checked the repository ${pre.repository}, but now has ${repo.describe()}: when resuming, pass the same --repo (and connection flags) as the first attempt`);
          }
          await holdBackupLock(ctx, ctx.services);
          await recheckOwner(repo, pre.systemIdentifier);
          // An earlier attempt of this run that stopped half-way left objects without backup.json: remove them.
          const previous = ctx.state.backupId;
          if (previous && !ctx.state.committed) await removeBackupObjects(ctx, repo, previous, 'earlier unfinished');
          delete ctx.state.meta;
          delete ctx.state.streamCheck;

          const id = await freshBackupId(repo);
          ctx.state.backupId = id;
          try {
            const { connection, env } = ctx.services;
            const streamed = await streamBaseBackup(ctx, repo, id, pre, { connection, env, checkpoint: checkpointOf(ctx), maxRate: maxRateOf(ctx) });
            ctx.state.meta = streamed.meta;
            ctx.state.streamCheck = streamed.check;
          } catch (err) {
            await removeBackupObjects(ctx, repo, id, ctx.signal.aborted ? 'interrupted' : 'failed');
            throw err;
          }
          done = true;
        } finally {
          if (!done || ctx.signal.aborted) await releaseBackupLock(ctx);
          await repo.close().catch(() => {});
        }
      },
    },
    {
      id: 'verify',
      title: 'Check the backup against its manifest',
      kind: 'verify',
      describe: (ctx) =>
        `Reporting what the backup step checked as the tar streamed (every file against backup_manifest, size and checksum, and the WAL the backup needs), and checking ${backupLocation(ctx.state.backupId)} in ${repoDescription(ctx)}: the data object's size, the backup_manifest object's SHA-256 and its own checksum.`,
      plan: () => planVerify(),
      async run(ctx) {
        const meta = metaOf(ctx);
        const repo = await openRunRepository(ctx, ctx.services);
        let done = false;
        try {
          await holdBackupLock(ctx, ctx.services);
          if (!ctx.state.streamCheck) throw new Error('the journal has no result of the check made while the backup streamed: start a new backup');
          const { failed, verified } = await verifyBaseBackup(ctx, repo, meta, ctx.state.streamCheck);
          if (verified) ctx.state.verified = verified;
          if (failed) {
            ctx.log(`verification failed: removing ${backupLocation(meta.id)} so that it is never offered for restore`, 'error');
            await removeBackupObjects(ctx, repo, meta.id, 'rejected');
          } else {
            done = true;
          }
        } finally {
          if (!done || ctx.signal.aborted) await releaseBackupLock(ctx);
          await repo.close().catch(() => {});
        }
      },
    },
    {
      id: 'commit',
      title: 'Commit the backup (write backup.json)',
      kind: 'action',
      describe: () => 'Writing backup.json last: from now on the backup is complete and offered for restore.',
      plan: () => planCommit(),
      async run(ctx) {
        const meta = metaOf(ctx);
        const repo = await openRunRepository(ctx, ctx.services);
        try {
          await holdBackupLock(ctx, ctx.services);
          await commitBaseBackup(ctx, repo, meta, preflightOf(ctx));
          ctx.state.committed = true;
          // The id an operator passes to pitr --backup / restore-test --backup: on the report's first lines.
          ctx.fact('Base backup', `${meta.id} in ${repoDescription(ctx)}`);
        } finally {
          await releaseBackupLock(ctx);
          await repo.close().catch(() => {});
        }
      },
    },
  ],
});

// ---------------------------------------------------------------------------------------------

function repoDescription(ctx: Ctx): string {
  return describeRepository(ctx.services, 'the repository (none given: pass --repo URL)', () => 'the repository');
}

function checkpointOf(ctx: Ctx): 'fast' | 'spread' {
  return ctx.params.checkpoint === 'fast' ? 'fast' : 'spread';
}

function maxRateOf(ctx: Ctx): string | undefined {
  return ctx.params.maxRate || undefined;
}

function preflightOf(ctx: Ctx): BaseBackupPreflight {
  if (!ctx.state.preflight) throw new Error('the preflight step has not run in this run; start a new backup');
  return ctx.state.preflight;
}

function metaOf(ctx: Ctx): BaseBackupMeta {
  if (!ctx.state.meta) throw new Error('the backup step has not stored a backup in this run; start a new backup');
  return ctx.state.meta;
}

/** pg_basebackup must be at least the server's major version; returns what to record as the tool. */
async function checkPgBasebackup(ctx: Ctx, major: number, version: ReturnType<typeof pgBinaryVersion>): Promise<string> {
  try {
    const v = await version;
    ctx.check(
      'pg_basebackup version',
      v.major >= major,
      v.major >= major
        ? `${v.path} ${v.full}`
        : `${v.path} is version ${v.full}, older than the server (${major}); install the PostgreSQL ${major} client programs (apt-get install -y postgresql-client-${major}) or set PGRUNBOOK_PG_BINDIR to their directory`,
    );
    return `pg_basebackup ${v.full}`;
  } catch (err) {
    ctx.check('pg_basebackup version', false, errorMessage(err));
    return 'pg_basebackup';
  }
}
