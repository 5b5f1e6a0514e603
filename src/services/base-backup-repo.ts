// Base backups in the repository, around the backup itself: the lock that keeps one base backup
// at a time per repository (held from the backup step through verify and commit), fresh ids, and
// removing what a failed or rejected backup left behind.
import type { Repository } from '../repo/repository.js';
import { uniqueBackupId } from '../repo/repository.js';
import { acquireLock, lockKey, type HeldLock } from '../repo/lock.js';
import { BASEBACKUP_PREFIX } from '../repo/catalog.js';
import { CODEC_SUFFIX, type Codec } from '../repo/codec.js';
import { anythingUnder, openRunRepository, sentence, type RepoSettings, type RunIO } from './run-repository.js';

/** One base backup at a time per repository. */
export const BACKUP_LOCK = lockKey('backup-base');
/** The data object's name: the tar, its key's suffix naming its codec (base.tar.zst, base.tar.gz before zstd). */
export function dataObjectName(codec: Codec): string {
  return `base.tar${CODEC_SUFFIX[codec]}`;
}
export const MANIFEST_OBJECT = 'backup_manifest';
/** Deleting a failed backup's objects must not hold up an interrupted run (the runner waits 10 s). */
const CLEANUP_DEADLINE_MS = 6000;

type Log = RunIO['log'];

/** Held locks of runs in this process, by run id: taken by the backup step, kept through verify and commit. */
const heldLocks = new Map<string, { lock: HeldLock; repo: Repository; log: Log }>();

/** Take (or keep) the repository's base backup lock for this run; LockHeldError (exit 75) names the holder. */
export async function holdBackupLock(io: RunIO, svc: RepoSettings): Promise<HeldLock> {
  const have = heldLocks.get(io.runId);
  if (have && !have.lock.lost) {
    have.log = (m, l) => io.log(m, l);
    return have.lock;
  }
  if (have) await releaseBackupLock(io);
  // Its own connection: it outlives each step's and refreshes the lock in the background.
  const repo = await openRunRepository(io, svc);
  try {
    let log: Log = (m, l) => io.log(m, l);
    const lock = await acquireLock(repo.store, BACKUP_LOCK, { runId: io.runId, procedure: 'backup-base', onWarn: (m) => log(m, 'warn') });
    const entry = { lock, repo, log };
    // Later steps replace the entry's log with theirs: warnings from the refresher follow it.
    log = (m, l) => entry.log(m, l);
    lock.startRefreshing();
    heldLocks.set(io.runId, entry);
    io.log(`took the repository's base backup lock ${BACKUP_LOCK} (valid until ${lock.expiresAt}; refreshed while this run goes on)`);
    return lock;
  } catch (err) {
    await repo.close().catch(() => {});
    throw err;
  }
}

export async function releaseBackupLock(io: Pick<RunIO, 'runId'>): Promise<void> {
  const have = heldLocks.get(io.runId);
  if (!have) return;
  heldLocks.delete(io.runId);
  await have.lock.release();
  await have.repo.close().catch(() => {});
}

/** Unique ids (time plus a random part): two runs never pick the same one; checked anyway. */
export async function freshBackupId(repo: Repository): Promise<string> {
  for (let n = 0; n < 5; n++) {
    const id = uniqueBackupId(new Date());
    if (!(await anythingUnder(repo, `${BASEBACKUP_PREFIX}${id}/`))) return id;
  }
  throw new Error(`could not find a free backup id under ${BASEBACKUP_PREFIX} in ${repo.describe()}`);
}

/** Best effort, bounded in time: a dead repository must not hold up the end of the run. */
export async function removeBackupObjects(io: Pick<RunIO, 'log'>, repo: Repository, id: string, why: string): Promise<void> {
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
    if (removed) io.log(`removed the ${stored} object${stored === 1 ? '' : 's'} of the ${why} backup ${id}`, 'warn');
  } catch (err) {
    io.log(
      `could not remove the objects of the ${why} backup ${id} under ${BASEBACKUP_PREFIX}${id}/: ${sentence((err as Error).message)} ` +
        `They have no backup.json, so they are never offered for restore; delete them when the repository is back`,
      'warn',
    );
  } finally {
    clearTimeout(timer);
  }
}
