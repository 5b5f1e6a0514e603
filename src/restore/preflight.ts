// What pitr proves before it touches anything: which cluster lives at --pgdata (asked of the
// running server, else read from pg_control), and that the target is recoverable from the
// repository: the chosen base backup and every WAL segment on the way read with their checksums.
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
  return e instanceof RepositoryCorruptError || e instanceof ChecksumMismatchError || /checksum|sha-?256/i.test(String((e as Error)?.message ?? ''));
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
};

/** Plan the recovery, reading the chosen backup and the WAL path with their checksums; progress in bytes read. */
export async function proveRecoverable(o: ProveOptions): Promise<RecoveryPlan> {
  const { repo, catalog, server, report } = o;
  let plannedBytes = 0;
  let doneBytes = 0;
  const tick = (n: number) => {
    doneBytes += n;
    report.progress({ done: doneBytes, total: Math.max(plannedBytes, doneBytes), unit: 'bytes' });
  };
  return planRecovery({
    store: repo.store,
    catalog,
    target: o.target,
    exclusive: o.exclusive,
    timeline: o.timeline,
    backupId: o.backupId,
    signal: o.signal,
    log: (m, level) => report.log(m, level),
    progress: (u) => report.progress(u),
    readBackup: async ({ meta }) => {
      // Identity before bytes: never unpack another cluster's backup over this one.
      if (server.systemIdentifier && meta.systemIdentifier && server.systemIdentifier !== meta.systemIdentifier) throw otherCluster(`base backup ${meta.id}`, meta.systemIdentifier, server);
      const objs = [meta.objects?.data, meta.objects?.manifest].filter((o): o is NonNullable<typeof o> => Boolean(o));
      plannedBytes = objs.reduce((n, o) => n + o.size, 0);
      report.log(`reading base backup ${meta.id} (${formatBytes(plannedBytes)}) to check its checksums before anything is touched`);
      for (const obj of objs) {
        const body = await repo.getVerified(obj.key, obj.sha256, o.signal);
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
