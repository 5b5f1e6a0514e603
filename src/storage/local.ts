// Local directory driver (the default).
//
// Layout: the object `a/b/c` is the file `<root>/a/b/c`. Internal files share the reserved name
// prefix '.pgrunbook-' (keys may not use it) and are never listed:
//   <dir>/.pgrunbook-tmp-<random>         an object (or sidecar) being written
//   <dir>/.pgrunbook-meta-<name>.json     the metadata of object <name>, only when it has any
//
// put: write the temp file, fsync it; write the sidecar the same way (temp, fsync) and rename it
// into place; rename the object's temp file to its final name; fsync the directory. So nothing
// half-written is ever visible under a final name, and the sidecar is in place before its object
// appears. On a failure or abort the temp files are removed; after a crash they may remain (hidden,
// harmless). Overwriting an existing key (the repository writes each object once) leaves a short
// window in which the old bytes are paired with the new metadata.
//
// A key cannot be both an object and a "directory" of other keys here ('a' and 'a/b'); the
// repository layout never needs that.

import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, chown, copyFile, link, mkdir, open, readdir, readFile, rename, rmdir, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { hashFile, HashingStream } from './checksum.js';
import { fileLocation, type FileLocation } from './local-location.js';
import { StoreBase } from './store-base.js';
import {
  isAbortError,
  ObjectNotFoundError,
  RESERVED_NAME_PREFIX,
  StorageError,
  type GetOptions,
  type GetResult,
  type ListEntry,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
} from './types.js';

const TMP_PREFIX = `${RESERVED_NAME_PREFIX}tmp-`;
const META_PREFIX = `${RESERVED_NAME_PREFIX}meta-`;
const FILE_MODE = 0o640;
/** putIfAbsent's small records: wal-push (as postgres) and backups (as another user) both read them. */
const SHARED_FILE_MODE = 0o644;
const DIR_MODE = 0o750;

export function createStore(loc: FileLocation): ObjectStore {
  return new LocalStore(loc.root, fileLocation.describe(loc));
}

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? ((err as NodeJS.ErrnoException).code ?? undefined) : undefined;
}

function isMissing(err: unknown): boolean {
  const c = errno(err);
  return c === 'ENOENT' || c === 'ENOTDIR';
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function unlinkQuiet(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

function formatBytesShort(n: number): string {
  if (!Number.isFinite(n)) return `${n} bytes`;
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[u]} (${n} bytes)`;
}

export class LocalStore extends StoreBase implements ObjectStore {
  readonly kind = 'file' as const;

  constructor(
    readonly root: string,
    description: string,
  ) {
    super(description);
  }

  /**
   * Who new files and directories belong to: the owner of the repository's root when we run as
   * root and it is someone else (normally postgres, whose archive_command writes here too), so
   * that a run as root never leaves behind what the owner cannot read, replace or delete.
   * Undefined: leave them to whoever creates them. Looked up once per store.
   */
  private ownerLookup?: Promise<{ uid: number; gid: number } | undefined>;

  private repoOwner(): Promise<{ uid: number; gid: number } | undefined> {
    this.ownerLookup ??= (async () => {
      if (process.getuid?.() !== 0) return undefined;
      const st = await stat(this.root).catch(() => undefined);
      return st && (st.uid !== 0 || st.gid !== 0) ? { uid: st.uid, gid: st.gid } : undefined;
    })();
    return this.ownerLookup;
  }

  private pathOf(key: string): string {
    return this.fileOf(this.keyOf(key));
  }

  /** The file of an object, by its already validated name. */
  private fileOf(name: string): string {
    return join(this.root, ...name.split('/'));
  }

  private static sidecarOf(path: string): string {
    return join(dirname(path), `${META_PREFIX}${basename(path)}.json`);
  }

  private ioError(operation: string, key: string | undefined, err: unknown): StorageError {
    const code = errno(err);
    const hint =
      code === 'ENOSPC'
        ? ' (the file system is full)'
        : code === 'EACCES' || code === 'EPERM'
          ? ' (check the directory permissions for this user)'
          : code === 'EROFS'
            ? ' (the file system is read-only)'
            : '';
    const what = key === undefined ? '' : ` '${key}'`;
    return new StorageError(
      `cannot ${operation}${what} in ${this.description}: ${(err as Error)?.message ?? String(err)}${hint}`,
      {
        code: code === 'EACCES' || code === 'EPERM' ? 'access-denied' : 'io',
        operation,
        key,
        store: this.description,
        causeCode: code,
      },
    );
  }

  /**
   * A full or forbidden file system, said so an operator can act on it: the directory, what was
   * written and what was expected (when known), and what is free there now.
   */
  private async writeError(operation: string, key: string, err: unknown, dir: string, written?: number, expected?: number): Promise<StorageError> {
    const code = errno(err);
    if (code !== 'ENOSPC' && code !== 'EDQUOT') return this.ioError(operation, key, err);
    let free = '';
    for (const at of [dir, this.root]) {
      try {
        const fsInfo = await statfs(at);
        free = `, ${formatBytesShort(Number(fsInfo.bavail) * Number(fsInfo.bsize))} free there when it failed`;
        break;
      } catch {
        // gone or unavailable: try the root, else say what is known
      }
    }
    const done = written === undefined ? '' : `; ${formatBytesShort(written)} of it written`;
    const want = expected === undefined ? '' : ` (the writer expected up to about ${formatBytesShort(expected)})`;
    return new StorageError(
      `cannot ${operation} '${key}' in ${this.description}: no space left on the file system of ${dir} (${code === 'EDQUOT' ? 'disk quota exceeded' : 'ENOSPC'})` +
        `${done}${want}${free}. The partial file was removed. Free space there (df -h ${this.root}) or use a repository with more room, then run again`,
      { code: 'io', operation, key, store: this.description, causeCode: code },
    );
  }

  /** mkdir -p, fsyncing the parent of every directory it created. */
  private async ensureDir(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true, mode: DIR_MODE });
    if (first === undefined) return;
    const chain: string[] = [];
    const made: string[] = [];
    for (let d = dir; ; d = dirname(d)) {
      chain.push(dirname(d));
      made.push(d);
      if (d === first || dirname(d) === d) break;
    }
    const owner = await this.repoOwner();
    // The same modes whoever writes: PostgreSQL runs archive_command with umask 077.
    // A directory another run removes at the same moment is that run's business (ENOENT).
    const quiet = (err: unknown) => (isMissing(err) ? undefined : Promise.reject(err));
    for (const d of made) {
      await chmod(d, DIR_MODE).catch(quiet);
      if (owner) await chown(d, owner.uid, owner.gid).catch(quiet);
    }
    for (const d of chain.reverse()) await fsyncDir(d);
  }

  /** Creates a fresh temp file in `dir` (re-creating `dir` if a concurrent delete pruned it). */
  private async openTemp(dir: string): Promise<{ path: string; fh: FileHandle }> {
    for (let attempt = 1; ; attempt++) {
      await this.ensureDir(dir);
      const path = join(dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
      try {
        const fh = await open(path, 'wx', FILE_MODE);
        const owner = await this.repoOwner();
        await (async () => {
          await fh.chmod(FILE_MODE);
          if (owner) await fh.chown(owner.uid, owner.gid);
        })().catch(async (err) => {
          await fh.close();
          await unlinkQuiet(path);
          throw err;
        });
        return { path, fh };
      } catch (err) {
        if (errno(err) !== 'ENOENT' || attempt >= 5) throw err;
      }
    }
  }

  protected async write(name: string, key: string, body: Readable | Buffer, opts: PutOptions): Promise<PutResult> {
    const finalPath = this.fileOf(name);
    const dir = dirname(finalPath);
    const temps: string[] = [];
    let sourceError: unknown;
    let fsError: unknown;
    let written: number | undefined;
    if (!Buffer.isBuffer(body)) body.once('error', (err) => (sourceError ??= err));
    try {
      const tmp = await this.openTemp(dir);
      temps.push(tmp.path);
      const hasher = new HashingStream(opts.contentLength);
      try {
        const source = Buffer.isBuffer(body) ? Readable.from([body], { objectMode: false }) : body;
        await pipeline(
          source,
          hasher,
          async (chunks: AsyncIterable<Buffer>) => {
            for await (const chunk of chunks) {
              try {
                await tmp.fh.write(chunk);
              } catch (err) {
                fsError ??= err;
                throw err;
              }
            }
          },
          { signal: opts.signal },
        );
        await tmp.fh.sync().catch((err: unknown) => {
          fsError ??= err;
          throw err;
        });
      } finally {
        written = hasher.byteCount;
        await tmp.fh.close();
      }

      await this.commitTemp(tmp.path, finalPath, opts.metadata ?? {}, temps);
      return { key, size: hasher.byteCount, sha256: hasher.sha256 };
    } catch (err) {
      // Measured before the temp files go: what was free when the write failed.
      let failure: unknown;
      if (err instanceof StorageError) failure = err;
      else if (opts.signal?.aborted) failure = opts.signal.reason ?? err;
      // The file system failed (ENOSPC, EACCES...): that is the cause, even though the pipeline then
      // destroyed the body with an AbortError ("The operation was aborted").
      else if (fsError !== undefined) failure = await this.writeError('put', key, fsError, dir, written, opts.contentLength ?? opts.sizeHint);
      else if (sourceError !== undefined && !isAbortError(sourceError)) failure = sourceError; // the body failed, not the file system
      else if (errno(err) !== undefined || sourceError === undefined) failure = await this.writeError('put', key, err, dir, written, opts.contentLength ?? opts.sizeHint);
      else failure = sourceError;
      await Promise.all(temps.map(unlinkQuiet));
      throw failure;
    }
  }

  /**
   * The temp file `tmp` (written and fsynced) becomes `finalPath`: the sidecar first (temp, fsync,
   * rename), then the object by rename, then the directory fsynced. `temps` is emptied once nothing
   * is left to remove on failure.
   */
  private async commitTemp(tmp: string, finalPath: string, metadata: Record<string, string>, temps: string[]): Promise<void> {
    const dir = dirname(finalPath);
    const sidecar = LocalStore.sidecarOf(finalPath);
    if (Object.keys(metadata).length > 0) {
      const metaTmp = join(dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
      temps.push(metaTmp);
      const fh = await open(metaTmp, 'wx', FILE_MODE);
      try {
        const owner = await this.repoOwner();
        await fh.chmod(FILE_MODE);
        if (owner) await fh.chown(owner.uid, owner.gid);
        await fh.writeFile(JSON.stringify({ version: 1, metadata }));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(metaTmp, sidecar);
    } else {
      await unlink(sidecar).catch((err) => {
        if (!isMissing(err)) throw err;
      });
    }
    await rename(tmp, finalPath);
    temps.length = 0;
    await fsyncDir(dir);
  }

  /**
   * put() of a local file the caller is done with, linked or copied by the kernel (copy_file_range)
   * into the temp file instead of streamed through this process: for the pusher's compressed segments that took the put from
   * ~25 to ~10 ms of CPU here. The temp file is then read back once, through one reused buffer,
   * for the size and SHA-256 of exactly what is stored.
   */
  async putFile(key: string, file: string, opts: PutOptions = {}): Promise<PutResult> {
    const finalPath = this.fileOf(this.checkPut(key, opts));
    const dir = dirname(finalPath);
    const temps: string[] = [];
    let size: number | undefined;
    try {
      // On the same file system the file itself becomes the object (a hard link: no copy at all);
      // the caller hands it over and never writes it again. Elsewhere, or where linking is not
      // allowed (protected_hardlinks), a copy by the kernel.
      const linked = await this.linkTemp(dir, file);
      const tmp = linked ? { path: linked, fh: await open(linked, 'r+') } : await this.openTemp(dir);
      temps.push(tmp.path);
      let sha256: string;
      try {
        if (linked) {
          const owner = await this.repoOwner();
          if (owner) await tmp.fh.chown(owner.uid, owner.gid);
        } else {
          await copyFile(file, tmp.path);
        }
        // The file or the copy has the source's mode; the repository's objects keep theirs.
        await tmp.fh.chmod(FILE_MODE);
        opts.signal?.throwIfAborted();
        ({ size, sha256 } = await hashFile(tmp.path));
        if (opts.contentLength !== undefined && size !== opts.contentLength) {
          throw new StorageError(`put '${key}': the file ${file} holds ${size} bytes, contentLength says ${opts.contentLength}`, { code: 'invalid-argument', operation: 'put', key });
        }
        await tmp.fh.sync();
      } finally {
        await tmp.fh.close();
      }
      await this.commitTemp(tmp.path, finalPath, opts.recordSha256 ? { ...opts.metadata, sha256 } : (opts.metadata ?? {}), temps);
      return { key, size, sha256 };
    } catch (err) {
      let failure: unknown = err;
      if (opts.signal?.aborted) failure = opts.signal.reason ?? err;
      else if (!(err instanceof StorageError) && errno(err) !== undefined) failure = await this.writeError('put', key, err, dir, size, opts.contentLength);
      await Promise.all(temps.map(unlinkQuiet));
      throw failure;
    }
  }

  /** A new temp name in `dir` hard-linked to `file`, or undefined when it cannot be linked there. */
  private async linkTemp(dir: string, file: string): Promise<string | undefined> {
    await this.ensureDir(dir);
    const path = join(dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
    try {
      await link(file, path);
      return path;
    } catch {
      return undefined; // EXDEV, EPERM, a missing file: the copy says what is wrong, if anything
    }
  }

  /** Creates `key` only if it does not exist, atomically: the bytes go to a temp file that is then
   *  hard-linked to the final name (link(2) fails with EEXIST instead of replacing). */
  async putIfAbsent(key: string, body: Buffer): Promise<boolean> {
    const finalPath = this.pathOf(key);
    const dir = dirname(finalPath);
    let tmpPath: string | undefined;
    try {
      const tmp = await this.openTemp(dir);
      tmpPath = tmp.path;
      try {
        // Records every user of the repository reads (the format record, locks): not secret.
        await tmp.fh.chmod(SHARED_FILE_MODE);
        await tmp.fh.writeFile(body);
        await tmp.fh.sync();
      } finally {
        await tmp.fh.close();
      }
      try {
        await link(tmp.path, finalPath);
      } catch (err) {
        if (errno(err) === 'EEXIST') return false;
        throw err;
      }
      await fsyncDir(dir);
      return true;
    } catch (err) {
      if (err instanceof StorageError) throw err;
      throw await this.writeError('put', key, err, dir, undefined, body.length);
    } finally {
      if (tmpPath) await unlinkQuiet(tmpPath);
    }
  }

  private async readMetadata(path: string): Promise<Record<string, string>> {
    try {
      const parsed = JSON.parse(await readFile(LocalStore.sidecarOf(path), 'utf8')) as {
        metadata?: Record<string, string>;
      };
      return parsed.metadata ?? {};
    } catch (err) {
      if (isMissing(err)) return {};
      throw err;
    }
  }

  protected async read(name: string, key: string, opts: GetOptions): Promise<GetResult> {
    const path = this.fileOf(name);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if (isMissing(err)) throw new ObjectNotFoundError(key, this.description);
      throw this.ioError('read', key, err);
    }
    let info: ObjectInfo;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new ObjectNotFoundError(key, this.description);
      info = { key, size: st.size, lastModified: st.mtime, metadata: await this.readMetadata(path) };
    } catch (err) {
      await fh.close();
      if (err instanceof StorageError) throw err;
      throw this.ioError('read', key, err);
    }
    const start = opts.range?.start ?? 0;
    const end = Math.min(opts.range?.end ?? Infinity, info.size - 1);
    let raw: Readable;
    if (start > end) {
      await fh.close();
      raw = Readable.from([], { objectMode: false });
    } else {
      raw = fh.createReadStream({ start, end, autoClose: true, highWaterMark: 256 * 1024 });
    }
    return this.getResult(raw, info, opts);
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const path = this.pathOf(key);
    try {
      const st = await stat(path);
      if (!st.isFile()) return undefined;
      return { key, size: st.size, lastModified: st.mtime, metadata: await this.readMetadata(path) };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw this.ioError('stat', key, err);
    }
  }

  protected listFrom(prefix: string): AsyncIterable<ListEntry> {
    const cut = prefix.lastIndexOf('/') + 1;
    const dirKey = prefix.slice(0, cut); // '' or 'a/b/'
    const namePrefix = prefix.slice(cut);
    const startDir = dirKey === '' ? this.root : join(this.root, ...dirKey.slice(0, -1).split('/'));
    return this.walk(startDir, dirKey, namePrefix);
  }

  /** Depth-first, each directory sorted so that keys come out in byte order ('a-b' < 'a/x'). */
  private async *walk(dir: string, keyPrefix: string, namePrefix: string): AsyncGenerator<ListEntry> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return;
      throw this.ioError('list', keyPrefix || undefined, err);
    }
    const items = entries
      .filter((e) => !e.name.startsWith(RESERVED_NAME_PREFIX) && e.name.startsWith(namePrefix))
      .filter((e) => e.isFile() || e.isDirectory())
      .map((e) => ({ name: e.name, isDir: e.isDirectory(), sortKey: Buffer.from(e.isDirectory() ? `${e.name}/` : e.name) }))
      .sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));
    for (const item of items) {
      const path = join(dir, item.name);
      if (item.isDir) {
        yield* this.walk(path, `${keyPrefix}${item.name}/`, '');
        continue;
      }
      let st;
      try {
        st = await stat(path);
      } catch (err) {
        if (isMissing(err)) continue; // deleted meanwhile
        throw this.ioError('list', `${keyPrefix}${item.name}`, err);
      }
      yield { key: `${keyPrefix}${item.name}`, size: st.size, lastModified: st.mtime };
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.pathOf(key);
    const dir = dirname(path);
    try {
      await unlink(path).catch((err) => {
        if (!isMissing(err) && errno(err) !== 'EISDIR') throw err;
      });
      await unlink(LocalStore.sidecarOf(path)).catch((err) => {
        if (!isMissing(err)) throw err;
      });
      await fsyncDir(dir).catch((err) => {
        if (!isMissing(err)) throw err;
      });
    } catch (err) {
      throw this.ioError('delete', key, err);
    }
    // Prune directories left empty, up to the root (S3 and Azure have no directories either).
    for (let d = dir; d !== this.root && d.startsWith(this.root); d = dirname(d)) {
      try {
        await rmdir(d);
      } catch {
        break; // not empty (or gone, or raced with a put): stop
      }
    }
  }

  async close(): Promise<void> {}
}
