// What pitr proves before it touches anything: which cluster lives at --pgdata (asked of the
// running server, else read from pg_control), and that the target is recoverable from the
// repository: the chosen base backup and every WAL segment on the way read with their checksums.
// The base backup is read once: unpacked, as it is checked, into a staging directory beside the
// data directory (nothing of the server's is touched), which the unpack step later renames in.
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectionSettings } from '../config/connection.js';
import { formatBytes } from '../engine/format.js';
import type { StepContext } from '../engine/types.js';
import { runningServerIdentity } from '../postgres/identity.js';
import { controlFileSystemIdentifier } from '../postgres/programs/controldata.js';
import type { Catalog } from '../repo/catalog.js';
import type { Repository } from '../repo/repository.js';
import { ChecksumMismatchError } from '../storage/types.js';
import { isCodecDataError } from '../repo/codec.js';
import { freeSpaceFor, KEPT_WAL_DIR, makeRestoreDir, type Owner } from './datadir.js';
import { isRoot } from '../postgres/osuser.js';
import { unpackTar } from './unpack.js';
import { planRecovery, RepositoryCorruptError, type RecoveryPlan } from './plan.js';
import type { RecoveryTarget } from './target.js';

export type ClusterIdentity = {
  running: boolean;
  systemIdentifier?: string;
  clusterName?: string;
  /** Where the identifier came from, for messages. */
  source: string;
  /** Read from pg_control because the server did not answer. */
  fromControlFile?: boolean;
  /** Why the server could not be asked (it may already be down). */
  unreachable?: string;
};

/** Which cluster is at `pgdata`: asked of the running server, else read from pg_control. */
export async function identifyCluster(conn: ConnectionSettings, pgdata: string): Promise<ClusterIdentity> {
  let unreachable: string;
  try {
    const info = await runningServerIdentity({ ...conn, connectTimeoutSec: 5 });
    if (info.dataDirectory && path.resolve(info.dataDirectory) !== pgdata) {
      throw new DataDirectoryMismatchError(`--pgdata ${pgdata} is not the data directory of the server you connected to (${info.dataDirectory}); point --pgdata and --host/--port at the same cluster`);
    }
    return { running: true, systemIdentifier: info.systemIdentifier, clusterName: info.clusterName, source: 'the running server' };
  } catch (e) {
    if (e instanceof DataDirectoryMismatchError) throw e;
    unreachable = (e as Error).message;
  }
  if (!fs.existsSync(path.join(pgdata, 'global', 'pg_control'))) return { running: false, source: pgdata, unreachable };
  const sysid = await controlFileSystemIdentifier(pgdata);
  return { running: false, systemIdentifier: sysid, source: `the data directory ${pgdata}`, fromControlFile: sysid !== undefined, unreachable };
}

class DataDirectoryMismatchError extends Error {}

/** The message when a repository or backup belongs to another cluster than the one at --pgdata. */
export function otherCluster(what: string, theirs: string, server: ClusterIdentity): Error {
  return new Error(`${what} belongs to another cluster (system identifier ${theirs}); ${server.source} is cluster ${server.systemIdentifier}. Nothing was touched. Check --repo and --pgdata.`);
}

/** A damaged repository object, as distinct from a target out of reach: exit 3, nothing touched. */
export function isCorruption(e: unknown): boolean {
  if (e instanceof RepositoryCorruptError || e instanceof ChecksumMismatchError || isCodecDataError(e)) return true;
  if ((e as { corrupt?: unknown })?.corrupt === true) return true;
  return /checksum|sha-?256/i.test(String((e as Error)?.message ?? ''));
}

export type ProveOptions = {
  repo: Repository;
  catalog: Catalog;
  target: RecoveryTarget;
  exclusive: boolean;
  timeline?: number;
  backupId?: string;
  server: ClusterIdentity;
  signal: AbortSignal;
  report: Pick<StepContext, 'log' | 'check' | 'progress'>;
  /**
   * Unpack the chosen backup into `dir` (made here, marked as run `runId`'s) while checking it.
   * With `keepWal`, the WAL path's segments checked on the way are kept too, in `dir`/KEPT_WAL_DIR
   * (as many as the free space allows, at most KEEP_WAL_MAX), for replay to use instead of fetching
   * them again (handOverKeptWal).
   */
  stage?: { dir: string; runId: string; owner: Owner; pgdata: string; keepWal?: boolean };
};

/** At most this many checked segments are kept from the preflight for replay (2 GiB of 16 MiB ones). */
const KEEP_WAL_MAX = 128;
/** Free space left untouched beside the data directory when segments are kept, beyond the backup. */
const KEEP_WAL_SLACK = 2 * 1024 ** 3;

/** Plan the recovery, reading the chosen backup and the WAL path with their checksums; progress in bytes read. */
export async function proveRecoverable(o: ProveOptions): Promise<RecoveryPlan> {
  const { repo, catalog, server, report } = o;
  let plannedBytes = 0;
  let doneBytes = 0;
  const tick = (n: number) => {
    doneBytes += n;
    report.progress({ done: doneBytes, total: Math.max(plannedBytes, doneBytes), unit: 'bytes' });
  };
  const keep = o.stage?.keepWal ? new KeptWal(path.join(o.stage.dir, KEPT_WAL_DIR), o.stage.owner) : undefined;
  return planRecovery({
    store: repo.store,
    keepSegment: keep ? (file, name) => keep.take(file, name) : undefined,
    workParent: keep ? path.dirname(o.stage!.pgdata) : undefined,
    catalog,
    target: o.target,
    exclusive: o.exclusive,
    timeline: o.timeline,
    backupId: o.backupId,
    signal: o.signal,
    log: (m, level) => report.log(m, level),
    progress: (u) => report.progress(u),
    readBackup: async ({ meta }, signal) => {
      // Identity before bytes: never unpack another cluster's backup over this one.
      if (server.systemIdentifier && meta.systemIdentifier && server.systemIdentifier !== meta.systemIdentifier) throw otherCluster(`base backup ${meta.id}`, meta.systemIdentifier, server);
      const objs = [meta.objects?.data, meta.objects?.manifest].filter((o): o is NonNullable<typeof o> => Boolean(o));
      plannedBytes = objs.reduce((n, o) => n + o.size, 0);
      const data = meta.objects?.data;
      if (o.stage && data) {
        await stageBackup({ ...o, signal }, meta.id, data, meta.objects?.manifest, Number(meta.uncompressedSize ?? meta.size ?? 0), tick, keep);
        return;
      }
      report.log(`reading base backup ${meta.id} (${formatBytes(plannedBytes)}) to check its checksums before anything is touched`);
      for (const obj of objs) {
        const body = await repo.getVerified(obj.key, obj.sha256, signal);
        for await (const chunk of body) tick((chunk as Buffer).length);
      }
      report.check('base backup checksums', true, `${meta.id}: ${objs.map((x) => x.key).join(', ')}`);
    },
    onWalSegment: (name, count) => {
      plannedBytes += catalog.segmentSize;
      tick(catalog.segmentSize);
      if (count % 16 === 0) report.log(`checked ${count} WAL segments (at ${name})`);
    },
  });
}

type StoredObject = { key: string; size: number; sha256: string };

/** The one read of the base backup: its manifest object checked, its data unpacked into the staging directory as its checksums are checked. */
async function stageBackup(
  o: ProveOptions,
  id: string,
  data: StoredObject & { compression: string },
  manifest: StoredObject | undefined,
  unpacked: number,
  tick: (n: number) => void,
  keep?: KeptWal,
): Promise<void> {
  const { repo, report, stage } = o;
  if (!stage) return;
  const space = await freeSpaceFor(stage.pgdata, unpacked);
  if (space) report.check('free space', true, `${formatBytes(space.free)} free beside ${stage.pgdata} for about ${formatBytes(unpacked)}`);
  const keepBudget = space ? Math.max(0, Math.min(KEEP_WAL_MAX, Math.floor((space.free - unpacked * 1.1 - KEEP_WAL_SLACK) / o.catalog.segmentSize))) : 0;
  report.log(`unpacking base backup ${id} (${formatBytes(data.size)}, ${data.compression}) into ${stage.dir}, beside the data directory, checking its checksums as it streams; the server and its data directory are not touched`);
  let made = false;
  try {
    if (manifest) {
      const body = await repo.getVerified(manifest.key, manifest.sha256, o.signal);
      for await (const chunk of body) tick((chunk as Buffer).length);
    }
    await makeRestoreDir(stage.dir, stage.runId, stage.owner);
    made = true;
    if (keep && keepBudget > 0) await keep.open(keepBudget);
    let last = 0;
    const body = await repo.getVerified(data.key, data.sha256, o.signal);
    const { files } = await unpackTar(body, {
      dir: stage.dir,
      compression: data.compression,
      owner: stage.owner,
      signal: o.signal,
      onBytes: (done) => {
        tick(done - last);
        last = done;
      },
    });
    report.check('base backup checksums', true, `${id}: SHA-256 of ${[data.key, manifest?.key].filter(Boolean).join(', ')}${data.compression === 'zstd' ? ' and zstd\'s content checksum' : ''}; unpacked into ${stage.dir} (${files} files, fsynced)`);
  } catch (err) {
    await keep?.close();
    if (made) await removeStaged(stage.dir);
    throw err;
  }
}

/**
 * The checked WAL segments pitr keeps in its staging directory for replay, in path order, from
 * when the directory exists (the backup's read, which runs alongside the walk, makes it) while the
 * budget the free space allows lasts. Keeping saves a fetch; it is never a condition of the plan:
 * a segment that cannot be moved in is left to the walk, which removes it, and replay fetches it
 * from the repository as usual. A failed keep must not fail the walk: when the backup's read fails
 * it removes the staging directory, and a walk failing on that (ENOENT) a moment before the
 * backup's error arrives was reported as the cause in place of the corrupt backup.
 */
export class KeptWal {
  private budget = 0;
  private accepting = false;
  /** The move under way, if any (the walk releases one segment at a time). */
  private moving: Promise<unknown> = Promise.resolve();
  readonly kept = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly owner: Owner,
  ) {}

  async open(budget: number): Promise<void> {
    await fs.promises.mkdir(this.dir, { mode: 0o700 });
    if (isRoot()) await fs.promises.chown(this.dir, this.owner.uid, this.owner.gid);
    this.budget = budget;
    this.accepting = true;
  }

  /** No more segments: the staging directory is about to be removed (after a move under way has ended). */
  async close(): Promise<void> {
    this.accepting = false;
    await this.moving;
  }

  /** Moves `file` in as segment `name`: true when kept, false when the walk should remove it. */
  take(file: string, name: string): Promise<boolean> {
    if (!this.accepting || this.kept.has(name) || this.kept.size >= this.budget) return Promise.resolve(false);
    const move = this.move(file, name);
    this.moving = move;
    return move;
  }

  private async move(file: string, name: string): Promise<boolean> {
    const dest = path.join(this.dir, name);
    try {
      await fs.promises.rename(file, dest);
    } catch {
      return false;
    }
    try {
      if (isRoot()) await fs.promises.chown(dest, this.owner.uid, this.owner.gid);
    } catch {
      await fs.promises.rm(dest, { force: true }).catch(() => {});
      return false;
    }
    this.kept.add(name);
    return true;
  }
}

/** The staging directory this run made (it never holds anything else): removed when the run cannot use it. */
export async function removeStaged(dir: string): Promise<void> {
  await fs.promises.rm(dir, { recursive: true, force: true }).catch(() => {});
}
