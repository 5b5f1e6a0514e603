// What backup-base's steps call: the repository checks before a base backup, what each step
// will do (for --dry-run), and committing a verified backup. The backup itself is in
// base-backup-stream.ts, reading it back in base-backup-verify.ts, the lock and clean-up in
// base-backup-repo.ts.
import { formatBytes } from '../engine/format.js';
import { pgBasebackupArgs } from '../postgres/programs/pg_basebackup.js';
import { describeHoldWal } from '../postgres/replication.js';
import { BACKUP_META, BASEBACKUP_PREFIX, type BaseBackupMeta } from '../repo/catalog.js';
import { checkRepositoryIdentity, ensureRepositoryIdentity, IDENTITY_KEY, IdentityMismatchError, readRepositoryIdentity, type RepositoryIdentity } from '../repo/identity.js';
import type { Repository } from '../repo/repository.js';
import { BACKUP_LOCK, dataObjectName, MANIFEST_OBJECT, removeBackupObjects } from './base-backup-repo.js';
import { manifestChecksums } from './base-backup-check.js';
import { defaultCodec } from '../repo/codec.js';
import type { BaseBackupPreflight } from './base-backup-stream.js';
import { probeRepository, type RunIO } from './run-repository.js';

export function planPreflight(repo: string, server: string): string[] {
  return [
    `list ${BASEBACKUP_PREFIX} in ${repo} (the repository is reachable); get ${IDENTITY_KEY}, the repository's format record: its system identifier must be this cluster's`,
    `connect to ${server}: read wal_level, max_wal_senders, the role's REPLICATION/SUPERUSER, pg_tablespace, sum(pg_database_size)`,
    `open a replication connection and run IDENTIFY_SYSTEM (system identifier, timeline; proves pg_hba.conf allows it)`,
    `pg_basebackup --version (must be at least the server's major version)`,
  ];
}

export function planBackup(opts: { checkpoint: 'fast' | 'spread'; maxRate?: string; env?: NodeJS.ProcessEnv }): string[] {
  const codec = defaultCodec(opts.env);
  return [
    `create ${BACKUP_LOCK} (owner, host, pid, run id, expiry) if absent: another base backup into this repository holding it stops this run with exit 75; refreshed while the backup runs, removed at the end`,
    describeHoldWal('pgrunbook_<id>_<pid>'),
    `pg_basebackup ${pgBasebackupArgs({ label: 'pgrunbook-<id>', checkpoint: opts.checkpoint, maxRate: opts.maxRate, manifestChecksums: manifestChecksums() }).join(' ')} | ${codec === 'zstd' ? 'zstd -1 -T0' : codec === 'gzip' ? 'gzip -1' : 'cat'} -> put ${BASEBACKUP_PREFIX}<id>/${dataObjectName(codec)} (every file hashed as it passes; compared with backup_manifest at the end of the stream)`,
    `put ${BASEBACKUP_PREFIX}<id>/${MANIFEST_OBJECT} (taken from the tar stream as it passes)`,
  ];
}

export function planVerify(): string[] {
  return [
    `get ${BASEBACKUP_PREFIX}<id>/${MANIFEST_OBJECT} (SHA-256 and Manifest-Checksum checked)`,
    `head ${BASEBACKUP_PREFIX}<id>/base.tar.<codec> (the size written); report the stream's check: every tar entry's size and checksum against the manifest, WAL segments from start to stop LSN present`,
  ];
}

export function planCommit(): string[] {
  return [
    `create ${IDENTITY_KEY} (this cluster's system identifier, major version, WAL segment size) if the repository has none; refused if it names another cluster`,
    `put ${BASEBACKUP_PREFIX}<id>/${BACKUP_META} (written last: the backup becomes complete)`,
    `remove ${BACKUP_LOCK}`,
  ];
}

/** Where a backup's objects are, for messages. */
export function backupLocation(id: string | undefined): string {
  return `${BASEBACKUP_PREFIX}${id ?? '<id>'}/`;
}

/** The repository answers (a listing, nothing written); its format record, when it has one. */
export async function reachRepository(repo: Repository): Promise<RepositoryIdentity | undefined> {
  try {
    await probeRepository(repo, BASEBACKUP_PREFIX);
  } catch (err) {
    throw new Error(`the repository ${repo.describe()} is not reachable: ${(err as Error).message}`);
  }
  return readRepositoryIdentity(repo.store);
}

/**
 * A repository holds one cluster: another cluster's is refused (IdentityMismatchError) before
 * anything is written. Returns warnings (a different major version, ...) for the log.
 */
export function checkOwner(repo: Repository, identity: RepositoryIdentity, systemIdentifier: string, server?: { pgMajor: number; walSegmentSize: number }): string[] {
  return checkRepositoryIdentity(repo.store, identity, systemIdentifier, server);
}

/** Checked again under the lock: another cluster may have adopted the repository since preflight. */
export async function recheckOwner(repo: Repository, systemIdentifier: string): Promise<void> {
  const identity = await readRepositoryIdentity(repo.store);
  if (identity && systemIdentifier) checkRepositoryIdentity(repo.store, identity, systemIdentifier);
}

/**
 * Writes backup.json last: from then on the backup is complete. The first committed backup adopts
 * the repository for this cluster; if another cluster got there first, this backup is removed,
 * never committed. A backup committed by an earlier attempt is left as it is.
 */
export async function commitBaseBackup(io: Pick<RunIO, 'log'>, repo: Repository, meta: BaseBackupMeta, pre: BaseBackupPreflight): Promise<void> {
  if (await repo.store.head(repo.baseBackupKey(meta.id, BACKUP_META))) {
    io.log(`backup ${meta.id} was already committed`);
  } else {
    try {
      await ensureRepositoryIdentity(repo.store, {
        systemIdentifier: meta.systemIdentifier ?? pre.systemIdentifier,
        pgMajor: pre.pgMajor ?? Math.floor(pre.serverVersionNum / 10000),
        walSegmentSize: pre.walSegmentSize,
        compression: meta.objects?.data?.compression ?? 'zstd',
      });
    } catch (err) {
      if (err instanceof IdentityMismatchError) await removeBackupObjects(io, repo, meta.id, 'refused');
      throw err;
    }
    await repo.commitBaseBackup(meta);
  }
  io.log(
    `base backup ${meta.id} complete in ${repo.describe()}: ${meta.startLsn} .. ${meta.stopLsn} on timeline ${meta.timeline}, ${formatBytes(meta.size ?? 0)} stored (${formatBytes(meta.uncompressedSize ?? 0)} uncompressed)`,
  );
}
