// The backup repository on top of an ObjectStore: where things go, how a backup is
// committed (its metadata file written last, after every data object), and how objects are
// read back with their checksums checked. Procedures use this, never the drivers directly.
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { openRepoStore } from './encryption.js';
import type { ObjectStore, PutResult } from '../storage/types.js';
import { readCatalog, type BaseBackupMeta, type Catalog, type DumpMeta } from './catalog.js';
import { BACKUP_META, BASEBACKUP_PREFIX, DUMP_META, DUMP_PREFIX, WAL_PREFIX } from './layout.js';
import { sha256Hex } from '../storage/checksum.js';

export class RepositoryError extends Error {}

/** Object name safe on every driver: letters, digits, '.', '_', '-'. */
export function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** Backup ids sort by time: 20261124T031500Z, plus a suffix when two land in one second. */
export function backupId(now = new Date(), suffix?: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return suffix ? `${stamp}-${suffix}` : stamp;
}

/**
 * A backup id no other run picks: the time (second, then millisecond) plus a random part, e.g.
 * 20261124T031500Z-042-9f3c1a. Ids still sort by time; two runs in one millisecond still differ.
 */
export function uniqueBackupId(now = new Date()): string {
  const ms = String(now.getUTCMilliseconds()).padStart(3, '0');
  return backupId(now, `${ms}-${randomBytes(3).toString('hex')}`);
}

export interface ObjectRecord {
  key: string;
  size: number;
  sha256: string;
}

export class Repository {
  constructor(readonly store: ObjectStore) {}

  describe(): string {
    return this.store.describe();
  }

  baseBackupKey(id: string, name: string): string {
    return `${BASEBACKUP_PREFIX}${safeName(id)}/${name}`;
  }

  dumpKey(database: string, id: string, name: string): string {
    return `${DUMP_PREFIX}${safeName(database)}/${safeName(id)}/${name}`;
  }

  /** Stream an object in; its SHA-256 is recorded in the object's metadata and returned for the manifest. */
  async putObject(key: string, body: Readable | Buffer, opts: { signal?: AbortSignal; sizeHint?: number; metadata?: Record<string, string> } = {}): Promise<ObjectRecord> {
    const r: PutResult = await this.store.put(key, body, { signal: opts.signal, sizeHint: opts.sizeHint, metadata: opts.metadata });
    return { key: r.key, size: r.size, sha256: r.sha256 };
  }

  /** Read an object, failing at the end of the stream if it does not hash to `sha256`. */
  async getVerified(key: string, sha256: string | undefined, signal?: AbortSignal): Promise<Readable> {
    const { body } = await this.store.get(key, { expectedSha256: sha256, signal });
    return body;
  }

  private async putJson(key: string, value: unknown): Promise<void> {
    const body = Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
    await this.store.put(key, body, { contentLength: body.length, metadata: { sha256: sha256Hex(body) } });
  }

  /** Written last: until it exists, the backup is incomplete and never offered for restore. */
  async commitBaseBackup(meta: BaseBackupMeta): Promise<void> {
    if (await this.store.head(this.baseBackupKey(meta.id, BACKUP_META))) throw new RepositoryError(`base backup ${meta.id} is already committed in ${this.describe()}`);
    await this.putJson(this.baseBackupKey(meta.id, BACKUP_META), meta);
  }

  async commitDump(meta: DumpMeta): Promise<void> {
    if (await this.store.head(this.dumpKey(meta.database, meta.id, DUMP_META))) throw new RepositoryError(`dump ${meta.database}/${meta.id} is already committed in ${this.describe()}`);
    await this.putJson(this.dumpKey(meta.database, meta.id, DUMP_META), meta);
  }

  /** Remove every object under a backup's prefix, metadata first, so it stops being offered before its data goes. */
  async deleteBaseBackup(id: string): Promise<number> {
    return this.deletePrefix(`${BASEBACKUP_PREFIX}${safeName(id)}/`, BACKUP_META);
  }

  async deleteDump(database: string, id: string): Promise<number> {
    return this.deletePrefix(`${DUMP_PREFIX}${safeName(database)}/${safeName(id)}/`, DUMP_META);
  }

  private async deletePrefix(prefix: string, metaName: string): Promise<number> {
    await this.store.delete(prefix + metaName);
    let n = 1;
    for await (const entry of this.store.list(prefix)) {
      await this.store.delete(entry.key);
      n++;
    }
    return n;
  }

  /**
   * Delete WAL files, a few at a time, roughly in the order given (oldest first keeps what is
   * left gap-free if this stops half-way). Only keys under wal/, and never a timeline history
   * file: recovery needs those to follow timelines, whatever else expires.
   */
  async deleteWalFiles(
    keys: Iterable<string> | AsyncIterable<string>,
    opts: { concurrency?: number; signal?: AbortSignal; onDeleted?: (key: string) => void } = {},
  ): Promise<number> {
    const limit = Math.max(1, opts.concurrency ?? 8);
    const inFlight = new Set<Promise<void>>();
    let deleted = 0;
    let failure: unknown;
    for await (const key of keys) {
      if (failure) break;
      if (opts.signal?.aborted) {
        failure = opts.signal.reason ?? new Error('aborted');
        break;
      }
      if (!key.startsWith(WAL_PREFIX) || /\.history(\.gz|\.zst)?$/.test(key) === true) {
        failure = new RepositoryError(`refusing to delete ${key}: not a WAL segment under ${WAL_PREFIX} (history files are never deleted)`);
        break;
      }
      const p: Promise<void> = this.store.delete(key).then(
        () => {
          deleted++;
          opts.onDeleted?.(key);
        },
        (err: unknown) => {
          failure ??= err;
        },
      );
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= limit) await Promise.race(inFlight);
    }
    // Let every started delete settle before reporting, so the count is exact.
    await Promise.all(inFlight);
    if (failure) throw failure;
    return deleted;
  }

  catalog(): Promise<Catalog> {
    return readCatalog(this.store);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/** Open the repository named by a URL; the error says how to name one when none is given. */
export async function openRepository(url: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<Repository> {
  if (!url) {
    // Bad usage (exit 2), not a failure of the run: nothing was tried.
    throw Object.assign(new RepositoryError('no backup repository: pass --repo URL (file:///var/backups/pg, s3://bucket/prefix, azure://container/prefix), set PGRUNBOOK_REPO, or save one in the profile'), { procedureExitCode: 2 });
  }
  return new Repository(await openRepoStore(url, env));
}
