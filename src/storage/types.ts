// The object store contract shared by the local, S3 and Azure drivers, and its errors.
//
// This module must stay free of SDK imports: `wal-push` loads it for every WAL segment.

import type { Readable } from 'node:stream';

/** The driver's kind (its URL scheme): the built-in ones, or one registered in registry.ts. */
export type StoreKind = 'file' | 's3' | 'azure' | (string & {});

export interface PutOptions {
  /** User metadata. Keys: lower-case ASCII letters and digits, starting with a letter (S3 lower-cases
   *  keys and Azure wants C# identifiers). Values: printable ASCII, no surrounding spaces. */
  metadata?: Record<string, string>;
  signal?: AbortSignal;
  /** Exact length when known. Checked while streaming (a mismatch fails the put) and used to size parts. */
  contentLength?: number;
  /** Approximate length when the exact one is unknown (e.g. the database size); only sizes parts. */
  sizeHint?: number;
  /** putFile only: record the SHA-256 the put computes of the stored bytes as metadata `sha256`
   *  (the caller has not hashed the file; hashing it twice cost the WAL pusher ~6 ms a segment). */
  recordSha256?: boolean;
}

export interface PutResult {
  key: string;
  size: number;
  /** Hex SHA-256 of the bytes read from the body, computed while streaming. */
  sha256: string;
}

export interface ByteRange {
  start: number;
  /** Inclusive. Omitted: to the end of the object. Past the end: clamped. */
  end?: number;
}

export interface GetOptions {
  range?: ByteRange;
  signal?: AbortSignal;
  /** Whole-object gets only: the body errors with ChecksumMismatchError at its end on a mismatch
   *  (consumers must not trust the bytes before the stream has ended without error). */
  expectedSha256?: string;
}

export interface ListEntry {
  /** Relative to the store's root/prefix. */
  key: string;
  size: number;
  lastModified: Date;
}

export interface ObjectInfo extends ListEntry {
  metadata: Record<string, string>;
}

export interface GetResult {
  body: Readable;
  /** `size` is the size of the whole object, even for a ranged get. */
  info: ObjectInfo;
}

export interface ObjectStore {
  readonly kind: StoreKind;
  /** The repository URL with every secret removed: safe for logs, errors and screens. */
  describe(): string;
  /** Stores `body` under `key`, replacing any previous object. Nothing is visible under `key` until
   *  the whole body has been stored; a put that fails leaves the previous state. */
  put(key: string, body: Readable | Buffer, opts?: PutOptions): Promise<PutResult>;
  /** Throws ObjectNotFoundError when missing. */
  get(key: string, opts?: GetOptions): Promise<GetResult>;
  /** undefined when missing. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Objects whose key starts with `prefix` (a plain string prefix, not only a "directory"), sorted by
   *  key (byte order), fetched page by page. Metadata is not listed (S3 cannot): use head(). */
  list(prefix: string): AsyncIterable<ListEntry>;
  /** A missing key is fine. */
  delete(key: string): Promise<void>;
  /** Stores a small object only when nothing exists under `key`: true when this call created it,
   *  false when the key was taken. Atomic where the backend offers it (local: link(2); S3: If-None-Match);
   *  drivers without it are handled by createIfAbsent in src/repo/lock.ts (head, put, read back). No metadata. */
  putIfAbsent?(key: string, body: Buffer): Promise<boolean>;
  /** put() of a local file's bytes, where the driver can store them without streaming them through
   *  this process (local: a hard link on the same file system, else copy_file_range). Same
   *  guarantees as put(); the file must never be written again (the object may be the same inode).
   *  Callers fall back to put() with a read stream without it. */
  putFile?(key: string, file: string, opts?: PutOptions): Promise<PutResult>;
  /** Releases sockets/agents. The store must not be used afterwards. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Tuning, shared by the drivers (the URL parser fills it from the query and openStore's options).

export interface RetryOptions {
  /** Attempts per request including the first (>= 1). */
  maxAttempts: number;
  /** First backoff delay; doubles per attempt, with full jitter. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface StoreOptions {
  retry?: Partial<RetryOptions>;
  /** TCP connect timeout for S3/Azure (ms). */
  connectTimeoutMs?: number;
  /** A socket with no traffic for this long is dropped and the request retried (ms). */
  idleTimeoutMs?: number;
  /** Part (S3) / block (Azure) size for uploads of unknown length, in bytes. */
  partSize?: number;
  /** Parts/blocks uploaded concurrently. Memory per put is about (queueSize + 1) x partSize. */
  queueSize?: number;
  /** Keys per list request (S3 caps it at 1000). */
  listPageSize?: number;
}

// ---------------------------------------------------------------------------------------------
// Errors. Messages are written for operators and never contain secrets: drivers build them from
// describe() and sanitized causes (see redactSecrets).

export type StorageErrorCode =
  | 'not-found'
  | 'checksum-mismatch'
  | 'invalid-url'
  | 'invalid-argument'
  | 'no-credentials'
  | 'access-denied'
  | 'container-not-found'
  | 'unreachable'
  | 'too-large'
  | 'io'
  | 'failed';

export interface StorageErrorDetails {
  code: StorageErrorCode;
  /** e.g. 'put', 'get', 'list'. */
  operation?: string;
  key?: string;
  /** describe() of the store. */
  store?: string;
  /** HTTP status of the failing request, when there was one. */
  statusCode?: number;
  /** The backend's or system's error code (e.g. 'NoSuchBucket', 'ECONNREFUSED'). */
  causeCode?: string;
}

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  readonly operation?: string;
  readonly key?: string;
  readonly store?: string;
  readonly statusCode?: number;
  readonly causeCode?: string;

  constructor(message: string, details: StorageErrorDetails) {
    super(message);
    this.name = 'StorageError';
    this.code = details.code;
    this.operation = details.operation;
    this.key = details.key;
    this.store = details.store;
    this.statusCode = details.statusCode;
    this.causeCode = details.causeCode;
  }
}

export class ObjectNotFoundError extends StorageError {
  constructor(key: string, store?: string) {
    super(`object '${key}' does not exist${store ? ` in ${store}` : ''}`, {
      code: 'not-found',
      operation: 'get',
      key,
      store,
    });
    this.name = 'ObjectNotFoundError';
  }
}

export class ChecksumMismatchError extends StorageError {
  /** Damaged bytes: a failed verification (exit 3) wherever it surfaces. */
  readonly corrupt = true;
  readonly expected: string;
  readonly actual: string;

  constructor(key: string, expected: string, actual: string, store?: string) {
    super(
      `object '${key}'${store ? ` in ${store}` : ''} is corrupt: its SHA-256 is ${actual}, ` +
        `${expected} was recorded when it was written. Do not use it; restore from another copy ` +
        `or another backup.`,
      { code: 'checksum-mismatch', operation: 'get', key, store },
    );
    this.name = 'ChecksumMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

export function isAbortError(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    ((err as { name?: unknown }).name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
  );
}

// ---------------------------------------------------------------------------------------------
// Validation, identical for every driver so that a repository can move between backends.

/** Prefix of the local driver's internal files (temp files, metadata sidecars). Reserved in keys. */
export const RESERVED_NAME_PREFIX = '.pgrunbook-';

const MAX_KEY_BYTES = 900; // S3 allows 1024 for the whole key, the store prefix included
const MAX_SEGMENT_BYTES = 200; // leaves room for the local driver's sidecar names within NAME_MAX

/** Keys are relative paths with '/' separators: no empty, '.' or '..' segments, no backslashes or
 *  control characters, no segment starting with the reserved '.pgrunbook-'. */
export function validateKey(key: string): void {
  const bad = (why: string): never => {
    throw new StorageError(`invalid object key ${JSON.stringify(key)}: ${why}`, {
      code: 'invalid-argument',
      key,
    });
  };
  if (typeof key !== 'string' || key.length === 0) bad('empty');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) bad(`longer than ${MAX_KEY_BYTES} bytes`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(key)) bad('control characters and backslashes are not allowed');
  for (const seg of key.split('/')) {
    if (seg === '') bad('empty path segment (leading, trailing or double slash)');
    if (seg === '.' || seg === '..') bad(`'${seg}' segments are not allowed`);
    if (seg.startsWith(RESERVED_NAME_PREFIX)) bad(`segments starting with '${RESERVED_NAME_PREFIX}' are reserved`);
    if (Buffer.byteLength(seg) > MAX_SEGMENT_BYTES) bad(`a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
  }
}

/** list() prefixes: like a key but may be empty and may end with '/'. */
export function validatePrefix(prefix: string): void {
  if (prefix === '') return;
  validateKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
}

const MAX_METADATA_BYTES = 2000; // S3: 2 KiB for all user metadata

export function validateMetadata(metadata: Record<string, string> | undefined): void {
  if (!metadata) return;
  let total = 0;
  for (const [k, v] of Object.entries(metadata)) {
    if (!/^[a-z][a-z0-9]*$/.test(k)) {
      throw new StorageError(
        `invalid metadata key ${JSON.stringify(k)}: use lower-case letters and digits, starting with a letter`,
        { code: 'invalid-argument' },
      );
    }
    if (typeof v !== 'string' || !/^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/.test(v)) {
      throw new StorageError(
        `invalid value for metadata '${k}': printable ASCII only, without leading or trailing spaces`,
        { code: 'invalid-argument' },
      );
    }
    total += k.length + v.length;
  }
  if (total > MAX_METADATA_BYTES) {
    throw new StorageError(`metadata too large (${total} bytes, at most ${MAX_METADATA_BYTES})`, {
      code: 'invalid-argument',
    });
  }
}

export function validateRange(range: ByteRange | undefined, expectedSha256: string | undefined): void {
  if (range) {
    const okStart = Number.isSafeInteger(range.start) && range.start >= 0;
    const okEnd = range.end === undefined || (Number.isSafeInteger(range.end) && range.end >= range.start);
    if (!okStart || !okEnd) {
      throw new StorageError(`invalid byte range ${JSON.stringify(range)}`, { code: 'invalid-argument' });
    }
    if (expectedSha256 !== undefined) {
      throw new StorageError('expectedSha256 can only be checked on a whole-object get, not a ranged one', {
        code: 'invalid-argument',
      });
    }
  }
  if (expectedSha256 !== undefined && !/^[0-9a-f]{64}$/.test(expectedSha256)) {
    throw new StorageError('expectedSha256 must be 64 lower-case hex digits', { code: 'invalid-argument' });
  }
}

/** "bytes 0-9/1234" -> { start: 0, end: 9, total: 1234 } */
export function parseContentRange(
  contentRange: string | undefined,
): { start: number; end: number; total: number | undefined } | undefined {
  const m = contentRange ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(contentRange) : null;
  return m ? { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) } : undefined;
}

/** "bytes 0-9/1234" -> 1234 */
export function totalFromContentRange(contentRange: string | undefined): number | undefined {
  return parseContentRange(contentRange)?.total;
}
