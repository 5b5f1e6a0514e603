// Azure Blob driver (block blobs; Azurite for tests).
//
// Uploads use BlockBlobClient.uploadStream: the body is cut into blocks of `partSize` (5 MiB unless
// the URL/options or a known/hinted size ask for more) held in at most `queueSize` (2) reusable
// buffers, so memory stays flat (measured: ~130 MiB peak RSS for a 200 MiB put+get, of which Node
// + the SDK are ~65 MiB and V8's lag in collecting dead buffers ~40 MiB). Blocks are staged (each
// retried by the SDK's retry policy, configured from our RetryOptions) and only the final
// commitBlockList makes the blob visible: a failed or aborted upload leaves only uncommitted
// blocks, which are invisible and which Azure discards after a week. 50,000 blocks of 5 MiB allow
// 244 GiB of unknown length; PutOptions.sizeHint or ?partSize= make blocks bigger.
// Downloads stream through the SDK's retriable stream, which resumes a broken download at its
// offset, pinned to the ETag.

import {
  AnonymousCredential,
  BlobServiceClient,
  StorageSharedKeyCredential,
  type BlobDownloadResponseParsed,
  type ContainerClient,
  type StoragePipelineOptions,
} from '@azure/storage-blob';
import { Readable } from 'node:stream';
import { hashedBody } from './checksum.js';
import { isTransientError } from './retry.js';
import { azureLocation, type AzureLocation } from './azure-location.js';
import { redactSecrets } from './location.js';
import { StoreBase } from './store-base.js';
import {
  ObjectNotFoundError,
  StorageError,
  isAbortError,
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

const MiB = 1024 * 1024;
export const AZURE_DEFAULT_BLOCK_SIZE = 5 * MiB;
export const AZURE_DEFAULT_CONCURRENCY = 2;
const AZURE_MAX_BLOCKS = 50_000;
const AZURE_MAX_BLOCK_SIZE = 4000 * MiB;

export function createStore(loc: AzureLocation): ObjectStore {
  return new AzureStore(loc);
}

export function chooseBlockSize(configured: number | undefined, contentLength?: number, sizeHint?: number): number {
  let block = configured ?? AZURE_DEFAULT_BLOCK_SIZE;
  const expected = contentLength ?? (sizeHint !== undefined ? sizeHint * 1.25 : undefined);
  if (expected !== undefined && expected > 0) {
    const blocks = contentLength !== undefined ? AZURE_MAX_BLOCKS : AZURE_MAX_BLOCKS * 0.9;
    block = Math.max(block, Math.ceil(expected / blocks / MiB) * MiB);
  }
  return Math.min(block, AZURE_MAX_BLOCK_SIZE);
}

type AzureError = Error & {
  statusCode?: number;
  code?: string;
  details?: { errorCode?: string };
};

function statusOf(err: unknown): number | undefined {
  return (err as AzureError)?.statusCode;
}

function codeOf(err: unknown): string {
  const e = err as AzureError;
  return e?.details?.errorCode ?? e?.code ?? e?.name ?? 'Error';
}

export class AzureStore extends StoreBase implements ObjectStore {
  readonly kind = 'azure' as const;
  readonly container: ContainerClient;
  private readonly secrets: string[];

  constructor(private readonly loc: AzureLocation) {
    super(azureLocation.describe(loc), loc.prefix);
    this.secrets = azureLocation.secrets(loc);
    const r = loc.tuning.retry;
    const pipelineOptions: StoragePipelineOptions = {
      retryOptions: { maxTries: r.maxAttempts, retryDelayInMs: r.baseDelayMs, maxRetryDelayInMs: r.maxDelayMs },
      keepAliveOptions: { enable: true },
      userAgentOptions: { userAgentPrefix: 'pgrunbook' },
    };
    const auth = loc.auth;
    const url = auth.type === 'sas' ? `${loc.serviceUrl}?${auth.sasToken}` : loc.serviceUrl;
    const credential =
      auth.type === 'shared-key' ? new StorageSharedKeyCredential(auth.account, auth.accountKey) : new AnonymousCredential();
    const service = new BlobServiceClient(url, credential, pipelineOptions);
    this.container = service.getContainerClient(loc.container);
  }

  private error(operation: string, key: string | undefined, err: unknown, extra = ''): StorageError {
    const status = statusOf(err);
    const name = codeOf(err);
    // The first line of the service message; the rest is request ids and timestamps.
    const rawMessage = redactSecrets(((err as Error)?.message ?? String(err)).split('\n')[0], this.secrets);
    let code: StorageErrorCode = 'failed';
    let hint = '';
    if (name === 'ContainerNotFound') {
      code = 'container-not-found';
      hint = ` The container '${this.loc.container}' does not exist in this storage account.`;
    } else if (status === 403 || /^(AuthenticationFailed|AuthorizationFailure|AuthorizationPermissionMismatch)/.test(name)) {
      code = 'access-denied';
      hint =
        ' Check the credentials (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN: ' +
        'not expired, with read/write/list/delete permissions) and the account name.';
    } else if (isTransientError(err) || /ECONNREFUSED|ENOTFOUND|ECONNRESET|ETIMEDOUT|EPIPE/.test(rawMessage)) {
      code = 'unreachable';
      hint = ` Cannot reach ${this.loc.serviceUrl} (${this.loc.tuning.retry.maxAttempts} attempts).`;
    }
    return this.serviceError('Azure', operation, key, { name, status, message: rawMessage, code, hint }, extra);
  }

  protected async write(name: string, key: string, body: Readable | Buffer, opts: PutOptions): Promise<PutResult> {
    const t = this.loc.tuning;
    const { hasher, stop } = hashedBody(body, opts);
    try {
      await this.container
        .getBlockBlobClient(name)
        .uploadStream(
          hasher,
          chooseBlockSize(t.partSize, opts.contentLength, opts.sizeHint),
          t.queueSize ?? AZURE_DEFAULT_CONCURRENCY,
          {
            metadata: opts.metadata && Object.keys(opts.metadata).length ? { ...opts.metadata } : undefined,
            blobHTTPHeaders: { blobContentType: 'application/octet-stream' },
            abortSignal: opts.signal,
          },
        );
      return { key, size: hasher.byteCount, sha256: hasher.sha256 };
    } catch (err) {
      // Stop reading: other blocks may still be in flight, but nothing more is staged or committed.
      const own = stop(err);
      if (own !== undefined) throw own;
      throw this.error('put', key, err, ' Nothing was stored under this name.');
    }
  }

  /** Creates a small blob only if absent: If-None-Match: * (409 BlobAlreadyExists when taken). */
  async putIfAbsent(key: string, body: Buffer): Promise<boolean> {
    const name = this.keyOf(key);
    try {
      await this.container.getBlockBlobClient(name).upload(body, body.length, {
        conditions: { ifNoneMatch: '*' },
        blobHTTPHeaders: { blobContentType: 'application/octet-stream' },
      });
      return true;
    } catch (err) {
      const status = statusOf(err);
      if (status === 409 || status === 412 || codeOf(err) === 'BlobAlreadyExists' || codeOf(err) === 'ConditionNotMet') return false;
      throw this.error('put', key, err);
    }
  }

  protected async read(name: string, key: string, opts: GetOptions): Promise<GetResult> {
    const start = opts.range?.start ?? 0;
    const end = opts.range?.end;
    const count = end !== undefined ? end - start + 1 : undefined;
    let res: BlobDownloadResponseParsed;
    try {
      res = await this.container.getBlobClient(name).download(start, count, {
        abortSignal: opts.signal,
        maxRetryRequests: this.loc.tuning.retry.maxAttempts,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (statusOf(err) === 404 && codeOf(err) !== 'ContainerNotFound') throw new ObjectNotFoundError(key, this.description);
      if (statusOf(err) === 416 || codeOf(err) === 'InvalidRange') {
        return this.emptyRead(key);
      }
      throw this.error('get', key, err);
    }
    const info: ObjectInfo = {
      key,
      size: totalFromContentRange(res.contentRange) ?? res.contentLength ?? 0,
      lastModified: res.lastModified ?? new Date(0),
      metadata: { ...(res.metadata ?? {}) },
    };
    const raw = (res.readableStreamBody as Readable | undefined) ?? Readable.from([], { objectMode: false });
    const chunks = this.wrapErrors(raw, key);
    return this.getResult(chunks, info, opts);
  }

  /** Gives mid-stream failures (after the SDK's own resumes) an operator message. */
  private async *wrapErrors(raw: Readable, key: string): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of raw) yield chunk as Buffer;
    } catch (err) {
      if (isAbortError(err) || err instanceof StorageError) throw err;
      throw this.error('get', key, err);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const name = this.keyOf(key);
    try {
      const p = await this.container.getBlobClient(name).getProperties();
      return {
        key,
        size: p.contentLength ?? 0,
        lastModified: p.lastModified ?? new Date(0),
        metadata: { ...(p.metadata ?? {}) },
      };
    } catch (err) {
      if (statusOf(err) === 404 && codeOf(err) !== 'ContainerNotFound') return undefined;
      throw this.error('head', key, err);
    }
  }

  protected async *listFrom(prefix: string): AsyncGenerator<ListEntry> {
    const pages = this.container
      .listBlobsFlat({ prefix: this.keyPrefix + prefix })
      .byPage({ maxPageSize: this.loc.tuning.listPageSize });
    for (;;) {
      let page;
      try {
        page = await pages.next();
      } catch (err) {
        throw this.error('list', prefix || undefined, err);
      }
      if (page.done) return;
      for (const b of page.value.segment.blobItems) {
        if (!b.name.startsWith(this.keyPrefix) || b.name.endsWith('/')) continue;
        yield {
          key: b.name.slice(this.keyPrefix.length),
          size: b.properties.contentLength ?? 0,
          lastModified: b.properties.lastModified,
        };
      }
    }
  }

  async delete(key: string): Promise<void> {
    const name = this.keyOf(key);
    try {
      await this.container.getBlobClient(name).deleteIfExists({ deleteSnapshots: 'include' });
    } catch (err) {
      throw this.error('delete', key, err);
    }
  }

  async close(): Promise<void> {}
}
