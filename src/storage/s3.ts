// S3 driver (AWS S3 and S3-compatible stores: MinIO, Ceph, R2, s3rver...).
//
// Uploads go through @aws-sdk/lib-storage's Upload: a body of unknown length is cut into parts of
// `partSize` (5 MiB, S3's minimum, unless the URL/options or a known/hinted size ask for more),
// `queueSize` (2) of them in flight. lib-storage holds about (queueSize + 1) x partSize plus the
// source chunks of the part being assembled, so memory stays flat whatever the object size
// (measured: 130-140 MiB peak RSS for a 200 MiB put+get, of which Node + the SDK are ~65 MiB and
// V8's lag in collecting dead buffers ~40 MiB; 8 MiB parts measured up to 158 MiB). A body of
// known length up to 32 MiB (a WAL segment) goes in a single PutObject. Each part is retried by
// the SDK (our backoff strategy, s3-policy.ts). When any part fails for good, the body is destroyed at
// once (otherwise the other uploaders would keep consuming it) and the multipart upload is
// aborted, so nothing appears under the key. Downloads stream; a download that breaks mid-way is
// resumed with a ranged GET pinned to the ETag.
//
// Size limit: S3 allows 10,000 parts, so 5 MiB parts take at most 48 GiB of unknown length. Pass
// PutOptions.sizeHint (e.g. the database size) or contentLength and parts grow to fit (memory
// grows with them), or set ?partSize= in the repository URL.

import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Readable } from 'node:stream';
import { hashedBody } from './checksum.js';
import { backoffDelay, delay, isTransientError } from './retry.js';
import {
  BackoffRetryStrategy,
  S3_DEFAULT_QUEUE_SIZE,
  S3_MAX_PARTS,
  choosePartSize,
  isNotFound,
  nameOf,
  statusOf,
} from './s3-policy.js';
import { s3Location, type S3Location } from './s3-location.js';
import { redactSecrets } from './location.js';
import { StoreBase } from './store-base.js';
import {
  ObjectNotFoundError,
  StorageError,
  parseContentRange,
  totalFromContentRange,
  type GetOptions,
  type GetResult,
  type ListEntry,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  type StorageErrorCode,
} from './types.js';

export function createStore(loc: S3Location): ObjectStore {
  return new S3Store(loc);
}

/** Follows one put's multipart upload through the client's middleware. */
interface UploadTracker {
  onPartFailure(err: unknown): void;
  uploadId?: string;
  abortError?: unknown;
}

export class S3Store extends StoreBase implements ObjectStore {
  readonly kind = 's3' as const;
  readonly client: S3Client;
  private readonly bucket: string;
  private readonly secrets: string[];
  private readonly trackers = new Map<string, Set<UploadTracker>>();

  constructor(private readonly loc: S3Location) {
    super(s3Location.describe(loc), loc.prefix);
    this.bucket = loc.bucket;
    this.secrets = s3Location.secrets(loc);
    const t = loc.tuning;
    // This tool pins the SDK on purpose (Node 20); its "upgrade Node" notice would otherwise be
    // printed by every `wal-push` into PostgreSQL's log.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const agent = { keepAlive: true, maxSockets: 32 };
    const config: S3ClientConfig = {
      region: loc.region,
      endpoint: loc.endpoint,
      forcePathStyle: loc.forcePathStyle,
      credentials: loc.credentials,
      profile: loc.profile,
      followRegionRedirects: true,
      maxAttempts: t.retry.maxAttempts,
      retryStrategy: new BackoffRetryStrategy(t.retry),
      requestHandler: {
        connectionTimeout: t.connectTimeoutMs,
        socketTimeout: t.idleTimeoutMs,
        httpAgent: agent,
        httpsAgent: agent,
      },
    };
    this.client = new S3Client(config);
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { Bucket?: string; Key?: string };
        const set = this.trackers.get(`${input.Bucket}\0${input.Key}`);
        if (!set) return next(args);
        const command = context.commandName;
        try {
          const result = await next(args);
          if (command === 'CreateMultipartUploadCommand') {
            const id = (result.output as { UploadId?: string }).UploadId;
            for (const t of set) t.uploadId = id;
          }
          return result;
        } catch (err) {
          for (const t of set) {
            if (command === 'AbortMultipartUploadCommand') t.abortError = err;
            else t.onPartFailure(err);
          }
          throw err;
        }
      },
      { step: 'initialize', name: 'pgrunbookUploadTracker' },
    );
  }

  private error(operation: string, key: string | undefined, err: unknown, extra = ''): StorageError {
    const status = statusOf(err);
    const name = nameOf(err);
    const rawMessage = redactSecrets((err as Error)?.message ?? String(err), this.secrets);
    let code: StorageErrorCode = 'failed';
    let hint = '';
    if (name === 'NoSuchBucket') {
      code = 'container-not-found';
      hint = ` The bucket '${this.bucket}' does not exist (or is in another account/endpoint).`;
    } else if (
      status === 403 ||
      ['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken'].includes(name)
    ) {
      code = 'access-denied';
      hint =
        ' Check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE or the ' +
        'instance role) and that they may read, write, list and delete under this prefix.';
    } else if (name === 'CredentialsProviderError' || /could not load credentials/i.test(rawMessage)) {
      code = 'no-credentials';
      hint =
        ' No AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run ' +
        'with an instance/task role.';
    } else if (/region is missing/i.test(rawMessage)) {
      code = 'invalid-url';
      hint = ' Set AWS_REGION or add ?region= to the repository URL.';
    } else if (isTransientError(err) && status === undefined) {
      code = 'unreachable';
      hint = ` Cannot reach ${this.loc.endpoint ?? 'S3'} (${this.loc.tuning.retry.maxAttempts} attempts).`;
    }
    return this.serviceError('S3', operation, key, { name, status, message: rawMessage, code, hint }, extra);
  }

  protected async write(Key: string, key: string, body: Readable | Buffer, opts: PutOptions): Promise<PutResult> {
    const t = this.loc.tuning;
    const { hasher, stop } = hashedBody(body, opts);

    const trackKey = `${this.bucket}\0${Key}`;
    const tracker: UploadTracker = {
      onPartFailure: (err) => {
        if (!hasher.destroyed) hasher.destroy(err instanceof Error ? err : new Error(String(err)));
      },
    };
    let set = this.trackers.get(trackKey);
    if (!set) this.trackers.set(trackKey, (set = new Set()));
    set.add(tracker);

    const upload = new Upload({
      client: this.client,
      partSize: choosePartSize(t.partSize, opts.contentLength, opts.sizeHint),
      queueSize: t.queueSize ?? S3_DEFAULT_QUEUE_SIZE,
      leavePartsOnError: false,
      params: {
        Bucket: this.bucket,
        Key,
        Body: hasher,
        ContentType: 'application/octet-stream',
        Metadata: opts.metadata && Object.keys(opts.metadata).length ? { ...opts.metadata } : undefined,
        ServerSideEncryption: this.loc.sse,
        SSEKMSKeyId: this.loc.kmsKeyId,
      },
    });
    try {
      await upload.done();
      return { key, size: hasher.byteCount, sha256: hasher.sha256 };
    } catch (err) {
      const own = stop(err);
      if (own !== undefined) throw own;
      if (/Exceeded \d+ parts/.test((err as Error)?.message ?? '')) {
        throw new StorageError(
          `S3 put '${key}' in ${this.description} failed: the object needs more than ${S3_MAX_PARTS} parts of ` +
            `${choosePartSize(t.partSize, opts.contentLength, opts.sizeHint)} bytes. Add ?partSize=64MiB (or more) ` +
            `to the repository URL. Nothing was stored under this name.`,
          { code: 'too-large', operation: 'put', key, store: this.description },
        );
      }
      let extra = ' Nothing was stored under this name.';
      if (tracker.uploadId && tracker.abortError !== undefined) {
        extra +=
          ' Its incomplete multipart upload could not be aborted: it is invisible but occupies space until ' +
          'removed; an AbortIncompleteMultipartUpload lifecycle rule on the bucket cleans such uploads.';
      }
      throw this.error('put', key, err, extra);
    } finally {
      set.delete(tracker);
      if (set.size === 0) this.trackers.delete(trackKey);
    }
  }

  private async getObject(
    Key: string,
    range: string | undefined,
    signal: AbortSignal | undefined,
    ifMatch?: string,
  ): Promise<GetObjectCommandOutput> {
    return this.client.send(
      new GetObjectCommand({ Bucket: this.bucket, Key, Range: range, IfMatch: ifMatch }),
      { abortSignal: signal },
    );
  }

  protected async read(Key: string, key: string, opts: GetOptions): Promise<GetResult> {
    const start = opts.range?.start ?? 0;
    const rangeHeader = opts.range ? `bytes=${start}-${opts.range.end ?? ''}` : undefined;
    let res: GetObjectCommandOutput;
    try {
      res = await this.getObject(Key, rangeHeader, opts.signal);
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (isNotFound(err)) throw new ObjectNotFoundError(key, this.description);
      if (statusOf(err) === 416 || nameOf(err) === 'InvalidRange') {
        // The range starts at or past the end: an empty body, like the other drivers.
        return this.emptyRead(key);
      }
      throw this.error('get', key, err);
    }
    const size = totalFromContentRange(res.ContentRange) ?? res.ContentLength ?? 0;
    const info: ObjectInfo = {
      key,
      size,
      lastModified: res.LastModified ?? new Date(0),
      metadata: { ...(res.Metadata ?? {}) },
    };
    const last = Math.min(opts.range?.end ?? size - 1, size - 1);
    const first = (res.Body as Readable | undefined) ?? Readable.from([], { objectMode: false });
    const firstAt = parseContentRange(res.ContentRange)?.start ?? 0;
    const chunks = this.resumable(first, firstAt, key, Key, start, last, res.ETag, opts.signal);
    return this.getResult(chunks, info, opts);
  }

  /**
   * Yields bytes [pos, last] of the object from `first` (whose first byte is at offset `firstAt`),
   * resuming from where a broken download stopped. Bytes outside the range are dropped, in case a
   * server ignores or widens the Range (some S3-compatible ones do).
   */
  private async *resumable(
    first: Readable,
    firstAt: number,
    key: string,
    Key: string,
    pos: number,
    last: number,
    etag: string | undefined,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Buffer> {
    if (pos > last) {
      first.destroy();
      return;
    }
    const retry = this.loc.tuning.retry;
    let src: AsyncIterable<Buffer> = first;
    let at = firstAt;
    let failures = 0;
    for (;;) {
      const before = pos;
      try {
        for await (const chunk of src) {
          const chunkAt = at;
          at += chunk.length;
          if (at <= pos) continue;
          let piece = chunkAt < pos ? chunk.subarray(pos - chunkAt) : chunk;
          if (piece.length > last - pos + 1) piece = piece.subarray(0, last - pos + 1);
          pos += piece.length;
          yield piece;
          if (pos > last) return;
        }
        throw Object.assign(new Error(`the download ended early, at byte ${pos} of ${last + 1}`), {
          code: 'ERR_STREAM_PREMATURE_CLOSE',
        });
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (pos > before) failures = 0;
        failures++;
        if (failures >= retry.maxAttempts || !isTransientError(err)) throw this.error('get', key, err);
        await delay(backoffDelay(failures, retry), signal);
        try {
          const res = await this.getObject(Key, `bytes=${pos}-${last}`, signal, etag);
          src = (res.Body as Readable | undefined) ?? Readable.from([], { objectMode: false });
          at = parseContentRange(res.ContentRange)?.start ?? 0;
        } catch (reopenErr) {
          if (statusOf(reopenErr) === 412) {
            throw new StorageError(
              `S3 get '${key}' in ${this.description} failed: the object changed while it was being read.`,
              { code: 'failed', operation: 'get', key, store: this.description, statusCode: 412 },
            );
          }
          throw this.error('get', key, reopenErr);
        }
      }
    }
  }

  /**
   * Creates a small object only when the key is free: a head first (servers that ignore
   * If-None-Match, like s3rver, are caught here), then PutObject with If-None-Match: * (atomic on
   * AWS S3 and compatible servers: 412 when someone else created it meanwhile). Callers read the
   * object back to confirm (createIfAbsent in src/repo/lock.ts): on a server that ignores the condition, a
   * race between two creators is decided by the last writer.
   */
  async putIfAbsent(key: string, body: Buffer): Promise<boolean> {
    const Key = this.keyOf(key);
    if (await this.head(key)) return false;
    const send = (conditional: boolean) =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key,
          Body: body,
          ContentLength: body.length,
          ContentType: 'application/octet-stream',
          IfNoneMatch: conditional ? '*' : undefined,
          ServerSideEncryption: this.loc.sse,
          SSEKMSKeyId: this.loc.kmsKeyId,
        }),
      );
    try {
      await send(true);
      return true;
    } catch (err) {
      const status = statusOf(err);
      const name = nameOf(err);
      if (status === 412 || name === 'PreconditionFailed' || status === 409 || name === 'ConditionalRequestConflict') return false;
      if (status === 501 || name === 'NotImplemented') {
        // The server does not do conditional writes: the head above was the check.
        try {
          await send(false);
          return true;
        } catch (err2) {
          throw this.error('put', key, err2);
        }
      }
      throw this.error('put', key, err);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.keyOf(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return {
        key,
        size: res.ContentLength ?? 0,
        lastModified: res.LastModified ?? new Date(0),
        metadata: { ...(res.Metadata ?? {}) },
      };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.error('head', key, err);
    }
  }

  protected async *listFrom(prefix: string): AsyncGenerator<ListEntry> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.keyPrefix + prefix,
            ContinuationToken: token,
            MaxKeys: Math.min(1000, this.loc.tuning.listPageSize),
          }),
        );
      } catch (err) {
        throw this.error('list', prefix || undefined, err);
      }
      for (const o of page.Contents ?? []) {
        if (!o.Key?.startsWith(this.keyPrefix) || o.Key.endsWith('/')) continue; // skip "folder" markers
        yield { key: o.Key.slice(this.keyPrefix.length), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    const Key = this.keyOf(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }));
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.error('delete', key, err);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
