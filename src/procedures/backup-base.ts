// Physical base backup: pg_basebackup's tar streamed through gzip into the repository, with the
// WAL it needs inside (so it is consistent on its own) and its backup_manifest lifted out of the
// stream as a separate object. Nothing touches the local disk but the manifest (small), nothing
// is buffered whole. The backup is read back and checked file by file against the manifest
// before backup.json, the commit marker, is written.
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { Procedure, StepContext } from '../engine/types.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { describeConnection } from '../config/connection.js';
import { findPgBinary, pgBinaryVersion } from '../postgres/binaries.js';
import {
  ManifestError,
  ManifestReader,
  TarFormatError,
  TarReader,
  holdWal,
  identifySystem,
  manifestChecksummer,
  parseBackupLabel,
  pgBasebackupArgs,
  readBaseBackupReadiness,
  startPgBasebackup,
  type FileChecksummer,
  type ManifestFile,
  type ManifestSummary,
  type TarEntrySink,
  type WalHold,
} from '../postgres/basebackup.js';
import { openRepository, uniqueBackupId, type ObjectRecord, type Repository } from '../storage/repository.js';
import { checkRepositoryIdentity, ensureRepositoryIdentity, IDENTITY_KEY, IdentityMismatchError, readRepositoryIdentity, type RepositoryIdentity } from '../storage/identity.js';
import { acquireLock, lockKey, type HeldLock } from '../storage/lock.js';
import { BACKUP_META, BASEBACKUP_PREFIX, type BaseBackupMeta } from '../storage/catalog.js';
import { ChecksumMismatchError, StorageError } from '../storage/types.js';
import { describeLocation, parseRepoUrl, secretsOf } from '../storage/url.js';
import { parseLsn, segmentName, segnoOfLsn } from '../storage/walnames.js';
import { services } from './services.js';

const DATA_OBJECT = 'base.tar.gz';
const MANIFEST_OBJECT = 'backup_manifest';
/** Deleting a failed backup's objects must not hold up an interrupted run (the runner waits 10 s). */
const CLEANUP_DEADLINE_MS = 6000;
const ZLIB_CHUNK = 256 * 1024;

interface PreflightState {
  serverVersion: string;
  serverVersionNum: number;
  systemIdentifier: string;
  walSegmentSize: number;
  sizeEstimate: number;
  tool: string;
  /** The repository checked (secrets removed): a resumed run must use the same one. */
  repository: string;
  pgMajor?: number;
}

/** One base backup at a time per repository. */
const BACKUP_LOCK = lockKey('backup-base');

export const backupBaseProcedure: Procedure = {
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
    if (params.maxRate !== undefined && params.maxRate !== '' && parseMaxRate(String(params.maxRate)) === undefined) {
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
        `Checking that ${repoDescription(ctx)} is reachable, and that ${describeConnection(services(ctx).connection)} allows a base backup: wal_level, max_wal_senders, the REPLICATION privilege, a replication connection (pg_hba.conf), no tablespaces outside the data directory, and a pg_basebackup at least as new as the server.`,
      plan: (ctx) => [
        `list ${BASEBACKUP_PREFIX} in ${repoDescription(ctx)} (the repository is reachable); get ${IDENTITY_KEY}, the repository's format record: its system identifier must be this cluster's`,
        `connect to ${describeConnection(services(ctx).connection)}: read wal_level, max_wal_senders, the role's REPLICATION/SUPERUSER, pg_tablespace, sum(pg_database_size)`,
        `open a replication connection and run IDENTIFY_SYSTEM (system identifier, timeline; proves pg_hba.conf allows it)`,
        `pg_basebackup --version (must be at least the server's major version)`,
      ],
      async run(ctx) {
        const svc = services(ctx);
        const repo = await openRepo(ctx);
        let identity: RepositoryIdentity | undefined;
        try {
          try {
            for await (const entry of repo.store.list(BASEBACKUP_PREFIX)) {
              void entry;
              break;
            }
          } catch (err) {
            throw new Error(`the repository ${repo.describe()} is not reachable: ${(err as Error).message}`);
          }
          identity = await readRepositoryIdentity(repo.store);
        } finally {
          await repo.close().catch(() => {});
        }
        ctx.check('repository reachable', true, repo.describe());

        // Unreachable server: nothing else can be checked, the step fails (exit 1) with the client's message.
        const r = await readBaseBackupReadiness(svc.connection);
        const major = Math.floor(r.serverVersionNum / 10000);
        ctx.check('server reachable', true, `${describeConnection(svc.connection)}, PostgreSQL ${r.serverVersion}${r.inRecovery ? ', a standby (the backup is taken from it)' : ''}`);

        ctx.check(
          'PostgreSQL 13 or newer',
          major >= 13,
          major >= 13 ? `PostgreSQL ${r.serverVersion} writes backup manifests` : `PostgreSQL ${r.serverVersion} has no backup manifests (they came in 13); upgrade the server, or back it up with pg_basebackup directly`,
        );
        const walOk = r.walLevel === 'replica' || r.walLevel === 'logical';
        ctx.check(
          'wal_level',
          walOk,
          walOk
            ? `wal_level = ${r.walLevel}`
            : `wal_level is "${r.walLevel}"; a base backup needs "replica" (or "logical"). Set it with ALTER SYSTEM SET wal_level = 'replica' (and max_wal_senders = 10 if it is 0), then restart PostgreSQL`,
        );
        const sendersFree = r.maxWalSenders - r.walSendersInUse;
        ctx.check(
          'max_wal_senders',
          r.maxWalSenders > 0 && sendersFree > 0,
          r.maxWalSenders === 0
            ? `max_wal_senders is 0; pg_basebackup needs a WAL sender. Set it with ALTER SYSTEM SET max_wal_senders = 10, then restart PostgreSQL`
            : sendersFree <= 0
              ? `all ${r.maxWalSenders} WAL senders are in use (see pg_stat_replication); raise max_wal_senders (needs a restart) or wait for a running backup or replica to disconnect`
              : `max_wal_senders = ${r.maxWalSenders}, ${r.walSendersInUse} in use`,
        );
        const privileged = r.superuser || r.replication;
        ctx.check(
          'replication privilege',
          privileged,
          privileged
            ? `role "${r.user}" has ${r.superuser ? 'SUPERUSER' : 'REPLICATION'}`
            : `role "${r.user}" has neither REPLICATION nor SUPERUSER; as a superuser run ALTER ROLE ${quoteIdent(r.user)} REPLICATION, or connect as a role that has it (--user)`,
        );
        ctx.check(
          'tablespaces',
          r.extraTablespaces.length === 0,
          r.extraTablespaces.length === 0
            ? 'only pg_default and pg_global: everything is inside the data directory'
            : `the cluster has tablespaces outside the data directory: ${r.extraTablespaces.map((t) => `${t.name} (${t.location})`).join(', ')}. backup-base streams one tar of the data directory and would not include them. Move their tables and indexes to pg_default (ALTER TABLE ... SET TABLESPACE pg_default; ALTER DATABASE ... SET TABLESPACE pg_default) and DROP TABLESPACE, or back this cluster up with pg_basebackup -Ft -D DIR directly`,
        );

        let tool = 'pg_basebackup';
        try {
          const v = await pgBinaryVersion(await findPgBinary('pg_basebackup'));
          tool = `pg_basebackup ${v.full}`;
          ctx.check(
            'pg_basebackup version',
            v.major >= major,
            v.major >= major
              ? `${v.path} ${v.full}`
              : `${v.path} is version ${v.full}, older than the server (${major}); install the PostgreSQL ${major} client programs (apt-get install -y postgresql-client-${major}) or set PGRUNBOOK_PG_BINDIR to their directory`,
          );
        } catch (err) {
          ctx.check('pg_basebackup version', false, (err as Error).message);
        }

        // Only worth trying when the settings allow it: otherwise its error repeats the above.
        let systemIdentifier = '';
        if (walOk && r.maxWalSenders > 0 && privileged) {
          try {
            const id = await identifySystem(svc.connection);
            systemIdentifier = id.systemIdentifier;
            ctx.check('replication connection', true, `IDENTIFY_SYSTEM: system identifier ${id.systemIdentifier}, timeline ${id.timeline}, WAL at ${id.walPosition}`);
          } catch (err) {
            ctx.check('replication connection', false, replicationConnectHint((err as Error).message, r.user));
          }
        }

        // A repository holds one cluster: another cluster's is refused before anything is written.
        const sysid = r.systemIdentifier ?? systemIdentifier;
        if (identity && sysid) {
          for (const w of checkRepositoryIdentity(repo.store, identity, sysid, { pgMajor: major, walSegmentSize: r.walSegmentSize })) ctx.log(w, 'warn');
          ctx.check('repository belongs to this cluster', true, `${IDENTITY_KEY}: system identifier ${identity.systemIdentifier}`);
        } else if (!identity) {
          ctx.log(`${repo.describe()} has no format record (${IDENTITY_KEY}) yet: the first backup committed adopts it for system identifier ${sysid || '(not known yet)'}`);
        }

        const state: PreflightState = {
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
        ctx.state.preflight = state;
        ctx.log(`estimated backup size: ${formatBytes(state.sizeEstimate)} (sum of pg_database_size plus one WAL segment; the progress total is this estimate)`);
      },
    },
    {
      id: 'backup',
      title: 'Stream pg_basebackup into the repository',
      kind: 'action',
      describe: (ctx) =>
        `Running pg_basebackup (tar, WAL included, ${String(ctx.params.checkpoint ?? 'spread')} checkpoint) and streaming it, gzip-compressed, to ${repoDescription(ctx)}; its backup_manifest is stored alongside. Nothing is offered for restore until the backup has been verified and committed.`,
      plan: (ctx) => [
        `create ${BACKUP_LOCK} (owner, host, pid, run id, expiry) if absent: another base backup into this repository holding it stops this run with exit 75; refreshed while the backup runs, removed at the end`,
        `SELECT pg_create_physical_replication_slot('pgrunbook_<id>_<pid>', true, true): a temporary slot holding WAL until the backup has fetched it (it goes with the session)`,
        `pg_basebackup ${pgBasebackupArgs({ label: 'pgrunbook-<id>', checkpoint: checkpointOf(ctx), maxRate: maxRateOf(ctx) }).join(' ')} | gzip -1 -> put ${BASEBACKUP_PREFIX}<id>/${DATA_OBJECT}`,
        `put ${BASEBACKUP_PREFIX}<id>/${MANIFEST_OBJECT} (taken from the tar stream as it passes)`,
      ],
      async run(ctx) {
        const pre = ctx.state.preflight as PreflightState;
        const repo = await openRepo(ctx);
        let done = false;
        try {
          if (pre.repository && repo.describe() !== pre.repository) {
            throw new Error(`this run checked the repository ${pre.repository}, but now has ${repo.describe()}: when resuming, pass the same --repo (and connection flags) as the first attempt`);
          }
          await holdBackupLock(ctx);
          // Checked again under the lock: another cluster may have adopted the repository since preflight.
          const identity = await readRepositoryIdentity(repo.store);
          if (identity && pre.systemIdentifier) checkRepositoryIdentity(repo.store, identity, pre.systemIdentifier);
          // An earlier attempt of this run that stopped half-way left objects without backup.json: remove them.
          const previous = ctx.state.backupId as string | undefined;
          if (previous && !ctx.state.committed) await removeBackupObjects(ctx, repo, previous, 'earlier unfinished');
          delete ctx.state.meta;

          const id = await freshBackupId(repo);
          ctx.state.backupId = id;
          try {
            ctx.state.meta = await streamBackup(ctx, repo, id, pre);
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
      title: 'Read the backup back and check it against its manifest',
      kind: 'verify',
      describe: (ctx) =>
        `Reading ${BASEBACKUP_PREFIX}${String(ctx.state.backupId ?? '<id>')}/ back from ${repoDescription(ctx)}: the SHA-256 of both objects, the backup_manifest's own checksum, and every file in the tar against the manifest (size and checksum), including the WAL the backup needs.`,
      plan: () => [
        `get ${BASEBACKUP_PREFIX}<id>/${MANIFEST_OBJECT} (SHA-256 and Manifest-Checksum checked)`,
        `get ${BASEBACKUP_PREFIX}<id>/${DATA_OBJECT} (SHA-256 checked), gunzip, read every tar entry: sizes and checksums against the manifest, WAL segments from start to stop LSN present`,
      ],
      async run(ctx) {
        const meta = ctx.state.meta as BaseBackupMeta;
        const repo = await openRepo(ctx);
        let done = false;
        try {
          await holdBackupLock(ctx);
          const failed = await verifyBackup(ctx, repo, meta);
          if (failed) {
            ctx.log(`verification failed: removing ${BASEBACKUP_PREFIX}${meta.id}/ so that it is never offered for restore`, 'error');
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
      plan: () => [
        `create ${IDENTITY_KEY} (this cluster's system identifier, major version, WAL segment size) if the repository has none; refused if it names another cluster`,
        `put ${BASEBACKUP_PREFIX}<id>/${BACKUP_META} (written last: the backup becomes complete)`,
        `remove ${BACKUP_LOCK}`,
      ],
      async run(ctx) {
        const meta = ctx.state.meta as BaseBackupMeta;
        const pre = ctx.state.preflight as PreflightState;
        const repo = await openRepo(ctx);
        try {
          await holdBackupLock(ctx);
          if (await repo.store.head(repo.baseBackupKey(meta.id, BACKUP_META))) {
            ctx.log(`backup ${meta.id} was already committed`);
          } else {
            // The first committed backup adopts the repository for this cluster; if another cluster
            // got there first, this backup is removed, never committed.
            try {
              await ensureRepositoryIdentity(repo.store, {
                systemIdentifier: meta.systemIdentifier ?? pre.systemIdentifier,
                pgMajor: pre.pgMajor ?? Math.floor(pre.serverVersionNum / 10000),
                walSegmentSize: pre.walSegmentSize,
                compression: 'gzip',
              });
            } catch (err) {
              if (err instanceof IdentityMismatchError) await removeBackupObjects(ctx, repo, meta.id, 'refused');
              throw err;
            }
            await repo.commitBaseBackup(meta);
          }
          ctx.state.committed = true;
          ctx.log(
            `base backup ${meta.id} complete in ${repo.describe()}: ${meta.startLsn} .. ${meta.stopLsn} on timeline ${meta.timeline}, ${formatBytes(meta.size ?? 0)} stored (${formatBytes(meta.uncompressedSize ?? 0)} uncompressed)`,
          );
        } finally {
          await releaseBackupLock(ctx);
          await repo.close().catch(() => {});
        }
      },
    },
  ],
};

// ---------------------------------------------------------------------------------------------

function repoDescription(ctx: StepContext): string {
  const svc = services(ctx);
  if (!svc.repo) return 'the repository (none given: pass --repo URL)';
  try {
    return describeLocation(parseRepoUrl(svc.repo, svc.env));
  } catch {
    return 'the repository';
  }
}

async function openRepo(ctx: StepContext): Promise<Repository> {
  const svc = services(ctx);
  if (svc.repo) {
    try {
      for (const s of secretsOf(parseRepoUrl(svc.repo, svc.env))) ctx.addSecret(s);
    } catch {
      // openRepository reports a bad URL with its own message
    }
  }
  return openRepository(svc.repo, svc.env);
}

function checkpointOf(ctx: StepContext): 'fast' | 'spread' {
  return ctx.params.checkpoint === 'fast' ? 'fast' : 'spread';
}

function maxRateOf(ctx: StepContext): string | undefined {
  const v = ctx.params.maxRate;
  return v === undefined || v === '' ? undefined : String(v);
}

/** pg_basebackup --max-rate: kB/s, or with k/M; 32 kB/s to 1024 MB/s. */
export function parseMaxRate(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kKmM]?)$/.exec(text.trim());
  if (!m) return undefined;
  const kb = Number(m[1]) * (m[2].toLowerCase() === 'm' ? 1024 : 1);
  return kb >= 32 && kb <= 1024 * 1024 ? kb : undefined;
}

function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

function replicationConnectHint(message: string, user: string): string {
  if (/no pg_hba\.conf entry/i.test(message)) {
    return `${message}. Allow it in pg_hba.conf (e.g. "host replication ${user} <client address>/32 scram-sha-256", or "local replication ${user} peer" for a socket), then SELECT pg_reload_conf()`;
  }
  return `a replication connection (as pg_basebackup opens) failed: ${message}`;
}

/** Held locks of runs in this process, by run id: taken by the backup step, kept through verify and commit. */
const heldLocks = new Map<string, { lock: HeldLock; repo: Repository; log: (message: string, level?: 'info' | 'warn' | 'error') => void }>();

/** Take (or keep) the repository's base backup lock for this run; LockHeldError (exit 75) names the holder. */
async function holdBackupLock(ctx: StepContext): Promise<HeldLock> {
  const have = heldLocks.get(ctx.runId);
  if (have && !have.lock.lost) {
    have.log = (m, l) => ctx.log(m, l);
    return have.lock;
  }
  if (have) await releaseBackupLock(ctx);
  // Its own connection: it outlives each step's and refreshes the lock in the background.
  const repo = await openRepo(ctx);
  try {
    const entry = { repo, log: (m: string, l?: 'info' | 'warn' | 'error') => ctx.log(m, l) } as { lock: HeldLock; repo: Repository; log: (m: string, l?: 'info' | 'warn' | 'error') => void };
    entry.lock = await acquireLock(repo.store, BACKUP_LOCK, { runId: ctx.runId, procedure: 'backup-base', onWarn: (m) => entry.log(m, 'warn') });
    entry.lock.startRefreshing();
    heldLocks.set(ctx.runId, entry);
    ctx.log(`took the repository's base backup lock ${BACKUP_LOCK} (valid until ${entry.lock.expiresAt}; refreshed while this run goes on)`);
    return entry.lock;
  } catch (err) {
    await repo.close().catch(() => {});
    throw err;
  }
}

async function releaseBackupLock(ctx: StepContext): Promise<void> {
  const have = heldLocks.get(ctx.runId);
  if (!have) return;
  heldLocks.delete(ctx.runId);
  await have.lock.release();
  await have.repo.close().catch(() => {});
}

/** Unique ids (time plus a random part): two runs never pick the same one; checked anyway. */
async function freshBackupId(repo: Repository): Promise<string> {
  for (let n = 0; n < 5; n++) {
    const id = uniqueBackupId(new Date());
    let taken = false;
    for await (const entry of repo.store.list(`${BASEBACKUP_PREFIX}${id}/`)) {
      void entry;
      taken = true;
      break;
    }
    if (!taken) return id;
  }
  throw new Error(`could not find a free backup id under ${BASEBACKUP_PREFIX} in ${repo.describe()}`);
}

/** Best effort, bounded in time: a dead repository must not hold up the end of the run. */
async function removeBackupObjects(ctx: StepContext, repo: Repository, id: string, why: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    let stored = 0;
    const removed = await Promise.race([
      (async () => {
        for await (const entry of repo.store.list(`${BASEBACKUP_PREFIX}${id}/`)) {
          void entry;
          stored++;
        }
        return stored ? repo.deleteBaseBackup(id) : 0;
      })(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${CLEANUP_DEADLINE_MS / 1000} s`)), CLEANUP_DEADLINE_MS);
      }),
    ]);
    if (removed) ctx.log(`removed the ${stored} object${stored === 1 ? '' : 's'} of the ${why} backup ${id}`, 'warn');
  } catch (err) {
    ctx.log(
      `could not remove the objects of the ${why} backup ${id} under ${BASEBACKUP_PREFIX}${id}/: ${sentence((err as Error).message)} ` +
        `They have no backup.json, so they are never offered for restore; delete them when the repository is back`,
      'warn',
    );
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// The backup itself

async function streamBackup(ctx: StepContext, repo: Repository, id: string, pre: PreflightState): Promise<BaseBackupMeta> {
  const svc = services(ctx);
  const checkpoint = checkpointOf(ctx);
  const launchedAt = new Date();
  const started = Date.now();
  const dataKey = repo.baseBackupKey(id, DATA_OBJECT);
  const manifestKey = repo.baseBackupKey(id, MANIFEST_OBJECT);

  // The manifest goes through a private temp file: it is written to the repository after the tar,
  // and parsed for the WAL range. It grows with the number of files (about 150 bytes each).
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'pgrunbook-basebackup-'));
  const manifestPath = path.join(tmp, MANIFEST_OBJECT);
  let manifestFile: FileHandle | undefined = await open(manifestPath, 'wx', 0o600);
  let walHold: WalHold | undefined;
  try {
    let stopping = false;
    try {
      walHold = await holdWal(svc.connection, `pgrunbook_${id.toLowerCase().replace(/[^a-z0-9_]/g, '_')}_${process.pid}`);
      ctx.log(`holding WAL from ${walHold.restartLsn} with the temporary replication slot ${walHold.slot} until the backup has its WAL`);
    } catch (err) {
      ctx.log(
        `could not create a temporary replication slot to hold WAL (${(err as Error).message}): if the server recycles WAL while the backup runs, pg_basebackup fails with "requested WAL segment ... has already been removed". Free a slot (max_replication_slots) or raise wal_keep_size to avoid that`,
        'warn',
      );
    }
    if (checkpoint === 'spread') ctx.log('waiting for the server\'s checkpoint (spread: this can take minutes on a busy server; --checkpoint fast forces it)');
    const bb = await startPgBasebackup({
      connection: svc.connection,
      label: `pgrunbook-${id}`,
      checkpoint,
      maxRate: maxRateOf(ctx),
      signal: ctx.signal,
      env: svc.env,
      // Once we stop it ourselves, its complaints about the closed pipe are noise.
      onStderrLine: (line) => {
        if (!stopping && !ctx.signal.aborted) ctx.log(line);
      },
    });
    ctx.log(`running ${bb.command}`);

    // Follow the tar as it passes: lift out backup_manifest and backup_label, and the first
    // bytes of pg_control (the system identifier) to prove which cluster this is.
    const labelChunks: Buffer[] = [];
    const controlHead: Buffer[] = [];
    let manifestSeen = false;
    let manifestWrites: Promise<unknown> = Promise.resolve();
    const reader = new TarReader((entry): TarEntrySink | undefined => {
      if (entry.name === MANIFEST_OBJECT) {
        manifestSeen = true;
        return {
          data: (chunk) => {
            const copy = Buffer.from(chunk);
            manifestWrites = manifestWrites.then(() => manifestFile!.write(copy));
          },
          end: () => {},
        };
      }
      if (entry.name === 'backup_label') return { data: (c) => void labelChunks.push(Buffer.from(c)), end: () => {} };
      if (entry.name === 'global/pg_control') {
        return { data: (c) => void (Buffer.concat(controlHead).length < 8 && controlHead.push(Buffer.from(c.subarray(0, 8)))), end: () => {} };
      }
      return undefined;
    });
    let rawBytes = 0;
    let streamEndedAt = new Date();
    // An estimate: past it, the total is unknown rather than a moving 100%.
    const total = () => (rawBytes <= pre.sizeEstimate ? pre.sizeEstimate : undefined);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        try {
          reader.write(chunk);
        } catch (err) {
          cb(err as Error);
          return;
        }
        rawBytes += chunk.length;
        ctx.progress({ done: rawBytes, total: total(), unit: 'bytes' });
        // Writing the manifest to its temp file is the only asynchronous part: let it catch up.
        manifestWrites.then(() => cb(null, chunk), (err) => cb(err as Error));
      },
      flush(cb) {
        try {
          reader.end();
          if (!manifestSeen) throw new TarFormatError('the tar stream from pg_basebackup has no backup_manifest (is pg_basebackup older than 13, or --no-manifest set?)');
        } catch (err) {
          cb(err as Error);
          return;
        }
        streamEndedAt = new Date();
        manifestWrites.then(() => cb(), (err) => cb(err as Error));
      },
    });
    // 256 KiB chunks: a sixteenth of the round trips to zlib's thread of the 16 KiB default (about 15% less CPU).
    const gzip = createGzip({ level: 1, chunkSize: ZLIB_CHUNK });
    // Errors anywhere destroy the chain; the put sees them as errors of its body.
    pipeline(bb.stdout, tap, gzip).catch(() => {});

    let putError: unknown;
    const put = repo
      .putObject(dataKey, gzip, { signal: ctx.signal, sizeHint: Math.round(pre.sizeEstimate * 1.1) + 64 * 1024 * 1024, metadata: { compression: 'gzip', format: 'tar' } })
      .catch((err: unknown) => {
        putError = err;
        stopping = true;
        bb.kill(); // the repository failed: stop reading from the server
        return undefined;
      });
    const [result, stored] = await Promise.all([bb.done, put]);

    ctx.signal.throwIfAborted();
    if (putError instanceof StorageError) {
      throw new Error(
        `storing the backup failed: ${sentence((putError as Error).message)} pg_basebackup was stopped; nothing was committed (no backup.json). Check the repository, then run the backup again`,
      );
    }
    // Killed by us because its output could not be used: the put's error is the cause, not the kill.
    const killedByUs = stopping && result.exitCode === undefined && result.signal !== undefined;
    if (!result.ok && !killedByUs) {
      const walGone = /requested WAL segment \S+ has already been removed/.test(result.stderrTail);
      throw new Error(
        `pg_basebackup failed (${result.exitCode !== undefined ? `exit code ${result.exitCode}` : result.signal ?? 'no exit code'}): ${sentence(errorLines(result.stderrTail) || 'no message')} ` +
          (walGone
            ? 'The server recycled WAL the backup needed while it ran: free a replication slot (max_replication_slots) so that backup-base can hold WAL, or raise wal_keep_size. Nothing was committed; run the backup again'
            : 'Nothing was committed; fix the cause and run the backup again'),
      );
    }
    if (putError !== undefined || !stored || !result.ok) {
      const e = putError as Error | undefined;
      const why = e === undefined ? `pg_basebackup ended with ${result.signal ?? 'no exit code'}` : e.message;
      throw new Error(
        `${e instanceof TarFormatError ? 'the backup stream from pg_basebackup is malformed: ' : 'the backup could not be stored: '}${sentence(why)} pg_basebackup was stopped; nothing was committed. Run the backup again`,
      );
    }

    await manifestWrites;
    await manifestFile.close();
    manifestFile = undefined;
    const manifest = await readManifestFile(manifestPath);
    const manifestRecord = await repo.putObject(manifestKey, createReadStream(manifestPath), { signal: ctx.signal, sizeHint: manifest.bytes });

    const label = parseBackupLabel(Buffer.concat(labelChunks).toString('utf8'));
    const ranges = manifest.walRanges;
    if (!ranges.length) throw new Error('the backup_manifest has no WAL-Ranges: the backup cannot be made consistent. Run the backup again');
    const startLsn = ranges[0].startLsn;
    const stopLsn = ranges[ranges.length - 1].endLsn;
    if (result.endLsn && result.endLsn !== stopLsn) ctx.log(`pg_basebackup reported end point ${result.endLsn}, the manifest ${stopLsn}; using the manifest's`, 'warn');

    const systemIdentifier = confirmSystemIdentifier(Buffer.concat(controlHead), pre.systemIdentifier, manifest.systemIdentifier);
    const seconds = (Date.now() - started) / 1000;
    const mbps = rawBytes / 1024 / 1024 / Math.max(seconds, 0.001);
    ctx.log(
      `streamed ${formatBytes(rawBytes)} from the server in ${formatDuration(seconds * 1000)} (${mbps.toFixed(1)} MiB/s), stored as ${formatBytes(stored.size)} (gzip -1, ${((stored.size / Math.max(rawBytes, 1)) * 100).toFixed(0)}%); ${manifest.fileCount} files, WAL ${startLsn} .. ${stopLsn}`,
    );

    const meta: BaseBackupMeta = {
      id,
      startLsn,
      stopLsn,
      // backup_label's START TIME is the server's; when its zone cannot be read, the launch time (earlier: safe).
      startTime: (label.startTime ?? launchedAt).toISOString(),
      // The end of the stream comes after the server stopped the backup: never earlier than the truth.
      stopTime: streamEndedAt.toISOString(),
      timeline: ranges[ranges.length - 1].timeline,
      systemIdentifier,
      serverVersion: pre.serverVersion,
      walSegmentSize: pre.walSegmentSize,
      includesWal: true,
      size: stored.size + manifestRecord.size,
      uncompressedSize: rawBytes,
      fileCount: manifest.fileCount,
      objects: {
        data: { ...objectOf(stored), format: 'tar', compression: 'gzip' },
        manifest: objectOf(manifestRecord),
      },
      walRanges: ranges,
      checkpointLsn: label.checkpointLsn,
      backupFrom: label.backupFrom,
      tool: pre.tool,
      label: `pgrunbook-${id}`,
    };
    return meta;
  } finally {
    await walHold?.release();
    await manifestFile?.close().catch(() => {});
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
  }
}

/** What pg_basebackup said about its failure: from its first error line on, without its -v progress lines. */
function errorLines(stderr: string): string {
  const lines = stderr.trim().split('\n');
  const first = lines.findIndex((l) => /\b(error|fatal|FATAL|ERROR|PANIC):/.test(l));
  return (first >= 0 ? lines.slice(first) : lines.slice(-3)).map((l) => l.trim()).join(' ');
}

/** A message as a sentence that another can follow: exactly one final period. */
function sentence(text: string): string {
  const t = text.trim().replace(/\.+$/, '');
  return `${t}.`;
}

function objectOf(r: ObjectRecord): { key: string; size: number; sha256: string } {
  return { key: r.key, size: r.size, sha256: r.sha256 };
}

async function readManifestFile(file: string): Promise<ManifestSummary> {
  const reader = new ManifestReader();
  for await (const chunk of createReadStream(file)) reader.write(chunk as Buffer);
  try {
    return reader.end();
  } catch (err) {
    throw new Error(`the backup_manifest pg_basebackup sent is unusable: ${(err as Error).message}. Nothing was committed; run the backup again`);
  }
}

/**
 * The system identifier from the backup's own pg_control (its first 8 bytes, in the server's byte
 * order), checked against the one IDENTIFY_SYSTEM gave before the backup: a connection that ended up
 * on another cluster (a moved virtual IP, a pooler) must not produce a backup filed under this one.
 */
function confirmSystemIdentifier(controlHead: Buffer, identified: string, fromManifest: string | undefined): string {
  const candidates = controlHead.length >= 8 ? [controlHead.readBigUInt64LE(0).toString(), controlHead.readBigUInt64BE(0).toString()] : [];
  if (fromManifest) candidates.unshift(fromManifest);
  if (!candidates.length) throw new Error('the backup has no global/pg_control: it is not a PostgreSQL data directory. Nothing was committed');
  if (identified && !candidates.includes(identified)) {
    throw new Error(
      `the backup is of another cluster (system identifier ${candidates[0]}) than the one checked before it started (${identified}): did the address move to another server? Nothing was committed; check the connection and run the backup again`,
    );
  }
  return identified || candidates[0];
}

// ---------------------------------------------------------------------------------------------
// Verification

function isCorruption(err: unknown): boolean {
  if (err instanceof ChecksumMismatchError || err instanceof TarFormatError || err instanceof ManifestError) return true;
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && code.startsWith('Z_'); // zlib: not gzip, or damaged
}

/** Returns true when a check failed (the backup is bad); throws when the repository could not be read. */
async function verifyBackup(ctx: StepContext, repo: Repository, meta: BaseBackupMeta): Promise<boolean> {
  const data = meta.objects?.data;
  const man = meta.objects?.manifest;
  if (!data || !man) throw new Error(`backup ${meta.id} has no object list in its state; run the backup again`);
  let failed = false;
  const fail = (name: string, detail: string) => {
    failed = true;
    ctx.check(name, false, detail);
  };

  // 1. The manifest: the bytes we stored, and its own checksum.
  const manifestReader = new ManifestReader({ keepFiles: true });
  let manifest: ManifestSummary;
  try {
    const body = await repo.getVerified(man.key, man.sha256, ctx.signal);
    for await (const chunk of body) manifestReader.write(chunk as Buffer);
    manifest = manifestReader.end();
  } catch (err) {
    if (!isCorruption(err)) throw err;
    fail(MANIFEST_OBJECT, (err as Error).message);
    return true;
  }
  ctx.check(MANIFEST_OBJECT, true, `SHA-256 and Manifest-Checksum ok; ${manifest.fileCount} files, ${formatBytes(manifest.totalSize)}`);
  const expected = manifestReader.files;

  // 2. The data: SHA-256 of the object, gunzip, every tar entry against the manifest.
  const seen = new Set<string>();
  const problems: string[] = [];
  const walNames = new Set<string>();
  let files = 0;
  let checksummed = 0;
  let unlisted = 0;
  const reader = new TarReader((entry): TarEntrySink | undefined => {
    if (entry.type !== 'file') return undefined;
    files++;
    if (entry.name.startsWith('pg_wal/')) walNames.add(entry.name.slice('pg_wal/'.length));
    if (entry.name === MANIFEST_OBJECT) return undefined;
    const want = expected.get(entry.name);
    // Manifests do not list WAL files (pg_verifybackup checks WAL by parsing it): the needed
    // segments are checked by name below, and their bytes by the object's SHA-256.
    if (!want && entry.name.startsWith('pg_wal/')) return undefined;
    if (!want) {
      unlisted++;
      if (problems.length < 10) problems.push(`${entry.name}: in the tar but not in backup_manifest`);
      return undefined;
    }
    seen.add(entry.name);
    if (want.size !== entry.size) {
      problems.push(`${entry.name}: ${entry.size} bytes in the tar, ${want.size} in backup_manifest`);
      return undefined;
    }
    return checksumSink(want, (outcome) => {
      if (outcome === 'ok') checksummed++;
      else if (outcome !== 'unchecked') problems.push(outcome);
    });
  });

  let compressedRead = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      compressedRead += chunk.length;
      ctx.progress({ done: compressedRead, total: data.size, unit: 'bytes' });
      cb(null, chunk);
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      try {
        reader.write(chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    final(cb) {
      try {
        reader.end();
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  const started = Date.now();
  try {
    const body: Readable = await repo.getVerified(data.key, data.sha256, ctx.signal);
    await pipeline(body, counter, createGunzip({ chunkSize: ZLIB_CHUNK }), sink, { signal: ctx.signal });
  } catch (err) {
    if (ctx.signal.aborted || !isCorruption(err)) throw err;
    fail(DATA_OBJECT, `${(err as Error).message} (after ${formatBytes(compressedRead)} of ${formatBytes(data.size)})`);
    return true;
  }
  const seconds = (Date.now() - started) / 1000;
  ctx.check(
    DATA_OBJECT,
    true,
    `SHA-256 ok, gunzip ok, complete tar: ${files} files, ${formatBytes(reader.bytesRead)} (read at ${(reader.bytesRead / 1024 / 1024 / Math.max(seconds, 0.001)).toFixed(1)} MiB/s)`,
  );

  const missing = [...expected.keys()].filter((p) => !seen.has(p));
  for (const p of missing.slice(0, 10)) problems.push(`${p}: in backup_manifest but not in the tar`);
  if (problems.length) {
    fail('files against backup_manifest', `${problems.length + Math.max(0, missing.length - 10) + Math.max(0, unlisted - 10)} problem(s): ${problems.slice(0, 5).join('; ')}`);
  } else {
    ctx.check('files against backup_manifest', true, `all ${expected.size} files present with the listed size; ${checksummed} checksums verified`);
  }

  // 3. The WAL from the start to the stop LSN, which makes the backup consistent, is inside.
  const segSize = meta.walSegmentSize ?? 16 * 1024 * 1024;
  const needed: string[] = [];
  for (const r of meta.walRanges ?? [{ timeline: meta.timeline, startLsn: meta.startLsn, endLsn: meta.stopLsn }]) {
    const start = parseLsn(r.startLsn);
    const end = parseLsn(r.endLsn);
    const last = end > start ? end - 1n : end;
    for (let s = segnoOfLsn(start, segSize); s <= segnoOfLsn(last, segSize); s++) needed.push(segmentName(r.timeline, s, segSize));
  }
  const absent = needed.filter((n) => !walNames.has(n));
  if (absent.length) fail('WAL inside the backup', `missing from pg_wal/: ${absent.join(', ')} (needed for ${meta.startLsn} .. ${meta.stopLsn})`);
  else ctx.check('WAL inside the backup', true, `${needed.join(', ')} (${meta.startLsn} .. ${meta.stopLsn}) in pg_wal/`);

  ctx.state.verified = { files, checksummed, bytes: reader.bytesRead, seconds };
  return failed;
}

/** Checks one file's contents against its manifest checksum; reports 'ok', 'unchecked' (no or an unknown algorithm) or the problem. */
function checksumSink(want: ManifestFile, done: (outcome: string) => void): TarEntrySink {
  const sum: FileChecksummer | undefined = want.checksum ? manifestChecksummer(want.algorithm) : undefined;
  return {
    data: (chunk) => sum?.update(chunk),
    end: () => {
      if (!sum) return done('unchecked');
      const actual = sum.digestHex();
      done(actual === want.checksum ? 'ok' : `${want.path}: ${want.algorithm} ${actual}, backup_manifest says ${want.checksum}`);
    },
  };
}
