// Pushing WAL files into the repository and fetching them back, following PostgreSQL's
// archive_command / restore_command contract. Written to be reused by a long-lived archiver
// (push ahead in parallel, prefetch for replay): no process state, no exits, all async.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { CODECS, compressBuffer, decompressBuffer, decompressStream, isCodecDataError } from './codec.js';
import { pipeline } from 'node:stream/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { ObjectNotFoundError, StorageError, type ObjectInfo, type ObjectStore } from '../storage/types.js';
import { hashFile, sha256Hex } from '../storage/checksum.js';
import { parseWalFileName } from './walnames.js';
import { parseWalKey, walKey, type WalCompression } from './layout.js';
import { readObject } from './objects.js';
import { checkRepositoryIdentity, ensureRepositoryIdentity, systemIdentifierFromSegment, type RepositoryIdentity } from './identity.js';

const gzip = promisify(zlib.gzip);

export { WAL_PREFIX, walKey, parseWalKey, type WalCompression } from './layout.js';

export interface WalPushOptions {
  /** zstd (the default, codec.ts), gzip or none: the key's suffix records it. */
  compression: WalCompression;
  /** gzip level 1-9, zstd 1-19; 1 is several times faster than 6 for about 10% more bytes on WAL. */
  level?: number;
  signal?: AbortSignal;
  /** A file holding the segment already compressed with `compression` (the pusher compresses
   *  several in one zstd); streamed into the store, never read whole. */
  compressedFile?: string;
  /** Repository records already read and checked, by system identifier (a long-lived pusher's). */
  identityCache?: Map<string, RepositoryIdentity>;
}

export interface WalPushResult {
  name: string;
  key: string;
  status: 'stored' | 'already-archived';
  rawSize: number;
  storedSize: number;
  /** SHA-256 of the segment's bytes as read and pushed; undefined for a segment the pusher
   *  compressed (it is not read here: zstd's frame checksum covers its bytes). */
  rawSha256?: string;
}

/** A different file is already archived under this name: PostgreSQL must not be told it worked. */
export class WalConflictError extends Error {
  constructor(name: string, key: string, store: string) {
    super(
      `${name} is already archived in ${store} (${key}) with DIFFERENT contents. Refusing to overwrite it. ` +
        `This usually means two clusters archive into the same repository, or a restored cluster kept ` +
        `archiving on the old timeline. Point this cluster at its own repository (archive_command --repo), ` +
        `or move the old archive aside after checking which copy is right.`,
    );
    this.name = 'WalConflictError';
  }
}

export class WalNameError extends Error {}

/**
 * Store one WAL file (segment, .history, .backup or .partial). Resolves only once the
 * store reports it durably written. The same content already archived is success.
 */
export async function pushWal(store: ObjectStore, sourcePath: string, opts: WalPushOptions): Promise<WalPushResult> {
  const name = path.basename(sourcePath);
  const parsed = parseWalFileName(name);
  if (!parsed) {
    throw new WalNameError(`"${name}" is not a WAL file name (expected e.g. 000000010000000000000001, 00000002.history); archive_command should pass %p`);
  }
  // Already compressed (the pusher's batches): zstd read the segment itself, and its frame carries
  // a checksum of the uncompressed bytes (XXH64, checked by every zstd -d), while the stored
  // bytes get their SHA-256 below. Reading and hashing the 16 MiB here as well cost ~25 ms of CPU
  // per segment, a third of a backlog's budget on 2 cores (bench/README.md): only the first page
  // (the cluster's identifier) and the size are read.
  const raw = opts.compressedFile ? undefined : await fsp.readFile(sourcePath);
  const digest: { sha256?: string; size: number; head: Buffer } = raw
    ? { sha256: sha256Hex(raw), size: raw.length, head: raw.subarray(0, WAL_HEAD_BYTES) }
    : await readHead(sourcePath, WAL_HEAD_BYTES);
  // A segment names its cluster in its first page: the repository must belong to that cluster
  // (adopted by the first writer). History and .backup files carry no identifier.
  if (parsed.kind === 'segment' || parsed.kind === 'partial') {
    const id = systemIdentifierFromSegment(digest.head);
    if (id) {
      // The record is written once and never changes: a long-lived pusher reads it once.
      const record =
        opts.identityCache?.get(id.systemIdentifier) ??
        (await ensureRepositoryIdentity(store, { systemIdentifier: id.systemIdentifier, walSegmentSize: id.segmentSize, compression: opts.compression }));
      checkRepositoryIdentity(store, record, id.systemIdentifier, { walSegmentSize: id.segmentSize });
      opts.identityCache?.set(id.systemIdentifier, record);
    }
  }
  const rawSha = digest.sha256;
  const key = walKey(name, opts.compression);

  const existing = await findArchived(store, name, opts.compression);
  if (existing) {
    if (await sameContent(store, existing.key, existing.info, raw ?? sourcePath, rawSha)) {
      return { name, key: existing.key, status: 'already-archived', rawSize: digest.size, storedSize: existing.info.size, rawSha256: rawSha };
    }
    throw new WalConflictError(name, existing.key, store.describe());
  }

  const metadata: Record<string, string> = { rawsize: String(digest.size), compression: opts.compression };
  if (rawSha) metadata.rawsha256 = rawSha;
  if (opts.compressedFile) {
    if (store.putFile) {
      // The store hashes the bytes it stored (once, through a reused buffer) and records that hash.
      const put = await store.putFile(key, opts.compressedFile, { signal: opts.signal, metadata, recordSha256: true });
      return { name, key, status: 'stored', rawSize: digest.size, storedSize: put.size, rawSha256: rawSha };
    }
    // Hashed, then streamed through small chunks: a fresh multi-MiB Buffer per segment costs more
    // in page faults here than the read itself (bench/README.md).
    const stored = await hashFile(opts.compressedFile);
    opts.signal?.throwIfAborted();
    const putOpts = { contentLength: stored.size, signal: opts.signal, metadata: { sha256: stored.sha256, ...metadata } };
    const put = await store.put(key, fs.createReadStream(opts.compressedFile, { highWaterMark: 1024 * 1024 }), putOpts);
    // The file changed between its hash and its upload: what is stored must be what the metadata says.
    if (put.sha256 !== stored.sha256) throw new Error(`${opts.compressedFile} changed while it was stored as ${key}; pushing it again`);
    return { name, key, status: 'stored', rawSize: digest.size, storedSize: stored.size, rawSha256: rawSha };
  }
  const body =
    opts.compression === 'gzip' ? await gzipParallel(raw!, opts.level ?? 1) : opts.compression === 'zstd' ? await compressBuffer('zstd', raw!, { level: opts.level ?? 1 }) : raw!;
  opts.signal?.throwIfAborted();
  await store.put(key, body, { contentLength: body.length, signal: opts.signal, metadata: { sha256: sha256Hex(body), ...metadata } });
  return { name, key, status: 'stored', rawSize: digest.size, storedSize: body.length, rawSha256: rawSha };
}

/** Enough of a segment's first page for its long header (the cluster's identifier). */
const WAL_HEAD_BYTES = 64;

/** A file's size and first bytes, without reading the rest. */
async function readHead(file: string, bytes: number): Promise<{ size: number; head: Buffer }> {
  const fh = await fsp.open(file, 'r');
  try {
    const head = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(head, 0, bytes, 0);
    return { size: (await fh.stat()).size, head: head.subarray(0, bytesRead) };
  } finally {
    await fh.close();
  }
}

/**
 * gzip in independent members compressed at the same time on libuv's thread pool: one
 * segment uses every core instead of one. Concatenated members are a valid gzip stream
 * (RFC 1952), which gunzip and our fetch read as one.
 */
async function gzipParallel(raw: Buffer, level: number): Promise<Buffer> {
  const members = raw.length >= 4 * 1024 * 1024 ? 4 : 1;
  const size = Math.ceil(raw.length / members);
  const parts = await Promise.all(Array.from({ length: members }, (_, i) => gzip(raw.subarray(i * size, Math.min(raw.length, (i + 1) * size)), { level })));
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

async function findArchived(store: ObjectStore, name: string, preferred: WalCompression): Promise<{ key: string; info: ObjectInfo } | undefined> {
  for (const compression of codecOrder(preferred)) {
    const key = walKey(name, compression);
    const info = await store.head(key);
    if (info) return { key, info };
  }
  return undefined;
}

async function sameContent(store: ObjectStore, key: string, info: ObjectInfo, raw: Buffer | string, rawSha: string | undefined): Promise<boolean> {
  if (info.metadata.rawsha256) return info.metadata.rawsha256 === (rawSha ?? (await hashFile(raw as string)).sha256);
  // Written by something else, or by the pusher (no raw SHA-256), or metadata lost: compare the bytes themselves.
  const fetched = await readObject(store, key);
  const codec = parseWalKey(key)?.compression ?? 'none';
  const plain = codec === 'none' ? fetched : await decompressBuffer(codec, fetched);
  return plain.equals(typeof raw === 'string' ? await fsp.readFile(raw) : raw);
}

/** Every codec a WAL file may be stored with, `preferred` (what this pusher writes) first. */
function codecOrder(preferred: WalCompression | undefined): WalCompression[] {
  const first = preferred ?? 'zstd';
  return [first, ...CODECS.filter((c) => c !== first)];
}

export interface WalFetchOptions {
  /** Try this compression's key first (what wal-push is configured with). */
  preferred?: WalCompression;
  signal?: AbortSignal;
}

export interface WalFetchResult {
  status: 'fetched' | 'missing';
  key?: string;
  rawSize?: number;
  /** The bytes written matched the SHA-256 recorded at push, or the stored bytes matched theirs
   *  and zstd checked its content checksum (false: nothing was recorded to check against). */
  verified?: boolean;
}

/** The archived copy does not match the checksums recorded when it was pushed. */
export class WalCorruptError extends Error {
  /** Damaged bytes: a failed verification (exit 3) wherever it surfaces. */
  readonly corrupt = true;
  constructor(name: string, key: string, store: string, which: string) {
    super(
      `${name} in ${store} (${key}) is corrupt: its ${which} SHA-256 does not match the one recorded when it was archived. ` +
        `Recovery cannot use it. Look for another copy of this WAL file (the old primary's pg_wal, another repository), ` +
        `or recover to a point before it.`,
    );
    this.name = 'WalCorruptError';
  }
}

/**
 * Fetch one WAL file into `destPath` (written to a temporary name, fsynced, then renamed, so
 * PostgreSQL never reads a half-written file). `missing` when the archive does not have it:
 * PostgreSQL asks for files that do not exist as a matter of course.
 */
export async function fetchWal(store: ObjectStore, name: string, destPath: string, opts: WalFetchOptions = {}): Promise<WalFetchResult> {
  if (!parseWalFileName(name)) throw new WalNameError(`"${name}" is not a WAL file name; restore_command should pass %f %p`);
  for (const compression of codecOrder(opts.preferred)) {
    const key = walKey(name, compression);
    let got;
    try {
      got = await store.get(key, { signal: opts.signal });
    } catch (err) {
      if (err instanceof ObjectNotFoundError) continue;
      throw err;
    }
    const tmp = `${destPath}.pgrunbook-tmp-${process.pid}`;
    const storedHash = new HashTap();
    const rawHash = new HashTap();
    const stages: NodeJS.ReadWriteStream[] = [storedHash];
    if (compression !== 'none') stages.push(decompressStream(compression));
    stages.push(rawHash);
    const out = fs.createWriteStream(tmp, { mode: 0o600 });
    try {
      const streams: (NodeJS.ReadableStream | NodeJS.ReadWriteStream | NodeJS.WritableStream)[] = [got.body, ...stages, out];
      await pipeline(streams, { signal: opts.signal });
      const meta = got.info.metadata;
      if (meta.sha256 && meta.sha256 !== storedHash.hex()) throw new WalCorruptError(name, key, store.describe(), 'stored');
      if (meta.rawsha256 && meta.rawsha256 !== rawHash.hex()) throw new WalCorruptError(name, key, store.describe(), 'uncompressed');
      const fd = await fsp.open(tmp, 'r');
      try {
        await fd.sync();
      } finally {
        await fd.close();
      }
      await fsp.rename(tmp, destPath);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      // zlib's errors (Z_DATA_ERROR, Z_BUF_ERROR: "incorrect data check", "unexpected end of file") and zstd's mean damaged bytes.
      if (err instanceof Error && !(err instanceof StorageError) && isCodecDataError(err)) {
        throw new WalCorruptError(name, key, store.describe(), `stored (${err.message})`);
      }
      throw err;
    }
    return { status: 'fetched', key, rawSize: rawHash.bytes, verified: walContentProven(got.info.metadata, compression) };
  }
  return { status: 'missing' };
}

/**
 * Whether reading a WAL object (fetch, prefetch, pitr's walk, `verify`) proved its content, once
 * every checksum it records matched: the uncompressed bytes' SHA-256 recorded at push, or (the
 * pusher records none for segments zstd read itself) the stored bytes' SHA-256 with a codec that
 * checks a content checksum of its own while decompressing (zstd's XXH64; an uncompressed object
 * is its stored bytes). Not gzip's CRC-32 alone: gzip objects have always recorded the raw SHA-256.
 * One rule, so that fetch and verify never disagree on what "verified" means.
 */
export function walContentProven(metadata: Record<string, string>, codec: WalCompression): boolean {
  return Boolean(metadata.rawsha256) || (Boolean(metadata.sha256) && codec !== 'gzip');
}

class HashTap extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;
  private digest?: string;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.digest = this.hash.digest('hex');
    cb();
  }
  hex(): string {
    return this.digest ?? '';
  }
}
