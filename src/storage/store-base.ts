// What the drivers (local, S3, Azure) do alike around their own I/O: naming objects, checking
// arguments before any I/O, handing out a verified get body, and wording a service failure.

import { Readable, addAbortSignal } from 'node:stream';
import { verifyingStream } from './checksum.js';
import {
  ObjectNotFoundError,
  StorageError,
  validateKey,
  validateMetadata,
  validatePrefix,
  validateRange,
  type GetOptions,
  type GetResult,
  type ListEntry,
  type ObjectInfo,
  type PutOptions,
  type PutResult,
  type StorageErrorCode,
} from './types.js';

/** How a driver classified a failed request (see serviceError). */
export interface ServiceFailure {
  /** The service's error code or name ('NoSuchBucket', 'AuthenticationFailed'...). */
  name: string;
  status: number | undefined;
  /** The service's message, secrets already removed. */
  message: string;
  code: StorageErrorCode;
  /** What to do about it, a sentence starting with a space, or ''. */
  hint: string;
}

export abstract class StoreBase {
  constructor(
    protected readonly description: string,
    /** Put before every key: the repository's folder in a bucket or container ('' for none). */
    protected readonly keyPrefix = '',
  ) {}

  describe(): string {
    return this.description;
  }

  toString(): string {
    return this.description;
  }

  /** The backend's name for `key`, once the key is known to be valid. */
  protected keyOf(key: string): string {
    validateKey(key);
    return this.keyPrefix + key;
  }

  /** Every driver checks the same things before any I/O: the key, the metadata, an abort. */
  async put(key: string, body: Readable | Buffer, opts: PutOptions = {}): Promise<PutResult> {
    return this.write(this.checkPut(key, opts), key, body, opts);
  }

  /** The backend's name for `key` once the put's arguments are checked (and no abort came). */
  protected checkPut(key: string, opts: PutOptions): string {
    const name = this.keyOf(key);
    validateMetadata(opts.metadata);
    opts.signal?.throwIfAborted();
    return name;
  }

  /** The driver's put, under the backend's `name` for `key`, the arguments checked. */
  protected abstract write(name: string, key: string, body: Readable | Buffer, opts: PutOptions): Promise<PutResult>;

  async get(key: string, opts: GetOptions = {}): Promise<GetResult> {
    const name = this.keyOf(key);
    validateRange(opts.range, opts.expectedSha256);
    opts.signal?.throwIfAborted();
    return this.read(name, key, opts);
  }

  /** The driver's get, under the backend's `name` for `key`, the arguments checked. */
  protected abstract read(name: string, key: string, opts: GetOptions): Promise<GetResult>;

  list(prefix: string): AsyncIterable<ListEntry> {
    validatePrefix(prefix);
    return this.listFrom(prefix);
  }

  /** The driver's listing, `prefix` already validated. */
  protected abstract listFrom(prefix: string): AsyncIterable<ListEntry>;

  abstract head(key: string): Promise<ObjectInfo | undefined>;

  /** A get's result: the body checked against opts.expectedSha256 and stopped by opts.signal. */
  protected getResult(chunks: AsyncIterable<Buffer>, info: ObjectInfo, opts: GetOptions): GetResult {
    const body = verifyingStream(chunks, info.key, opts.expectedSha256, this.description);
    if (opts.signal) {
      addAbortSignal(opts.signal, body);
      // An abort can land before the caller has piped the body anywhere (between the get and its
      // pipeline, across an await): the body then errors with nobody listening, which would crash
      // the process instead of ending the run as interrupted. Consumers still get every error
      // through their own listeners (pipeline attaches one).
      body.on('error', () => undefined);
    }
    return { body, info };
  }

  /** A range that starts at or past the end: an empty body, the same in every driver. */
  protected async emptyRead(key: string): Promise<GetResult> {
    const info = await this.head(key);
    if (!info) throw new ObjectNotFoundError(key, this.description);
    return { body: Readable.from([], { objectMode: false }), info };
  }

  /** "<service> <operation> '<key>' in <store> failed: <message> (<name>, HTTP <status>).<hint><extra>" */
  protected serviceError(service: string, operation: string, key: string | undefined, f: ServiceFailure, extra = ''): StorageError {
    const what = key === undefined ? '' : ` '${key}'`;
    return new StorageError(
      `${service} ${operation}${what} in ${this.description} failed: ${f.message} (${f.name}${
        f.status ? `, HTTP ${f.status}` : ''
      }).${f.hint}${extra}`,
      { code: f.code, operation, key, store: this.description, statusCode: f.status, causeCode: f.name },
    );
  }
}
