// How the S3 driver sizes parts, retries requests and reads the SDK's errors. Nothing here loads
// the SDK; s3.ts is the driver itself.

import { backoffDelay } from './retry.js';
import type { RetryOptions } from './types.js';

const MiB = 1024 * 1024;
export const S3_DEFAULT_PART_SIZE = 5 * MiB;
export const S3_DEFAULT_QUEUE_SIZE = 2;
/** Bodies of known length up to this go in one PutObject. */
export const S3_SINGLE_PUT_MAX = 32 * MiB;
const S3_MIN_PART_SIZE = 5 * MiB;
export const S3_MAX_PARTS = 10_000;
const S3_MAX_PART_SIZE = 5 * 1024 * MiB;

/** Part size for an upload: the configured one, grown when the (approximate) size needs it. */
export function choosePartSize(configured: number | undefined, contentLength?: number, sizeHint?: number): number {
  if (contentLength !== undefined && contentLength <= S3_SINGLE_PUT_MAX) {
    return Math.max(S3_MIN_PART_SIZE, contentLength); // one part: lib-storage sends a plain PutObject
  }
  let part = configured ?? S3_DEFAULT_PART_SIZE;
  const expected = contentLength ?? (sizeHint !== undefined ? sizeHint * 1.25 : undefined);
  if (expected !== undefined && expected > 0) {
    const parts = contentLength !== undefined ? S3_MAX_PARTS : S3_MAX_PARTS * 0.9;
    part = Math.max(part, Math.ceil(expected / parts / MiB) * MiB);
  }
  return Math.min(part, S3_MAX_PART_SIZE);
}

interface RetryTokenLike {
  getRetryCount(): number;
  getRetryDelay(): number;
}

/** The SDK's retry strategy interface (V2) with our backoff: exponential, full jitter, capped, and
 *  honouring Retry-After. Client errors (4xx other than throttling) are not retried. */
export class BackoffRetryStrategy {
  readonly mode = 'standard';
  constructor(private readonly retry: RetryOptions) {}

  private static token(count: number, delayMs: number): RetryTokenLike {
    return { getRetryCount: () => count, getRetryDelay: () => delayMs };
  }

  async acquireInitialRetryToken(_scope: string): Promise<RetryTokenLike> {
    return BackoffRetryStrategy.token(0, 0);
  }

  async refreshRetryTokenForRetry(
    token: RetryTokenLike,
    info: { errorType: string; retryAfterHint?: Date },
  ): Promise<RetryTokenLike> {
    const count = token.getRetryCount() + 1;
    if (info.errorType === 'CLIENT_ERROR' || count >= this.retry.maxAttempts) {
      throw new Error('no more retries');
    }
    let wait = backoffDelay(count, this.retry);
    if (info.retryAfterHint) {
      wait = Math.min(this.retry.maxDelayMs, Math.max(wait, info.retryAfterHint.getTime() - Date.now()));
    }
    return BackoffRetryStrategy.token(count, wait);
  }

  recordSuccess(_token: RetryTokenLike): void {}
}

type SdkError = Error & {
  name: string;
  Code?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
};

export function statusOf(err: unknown): number | undefined {
  return (err as SdkError)?.$metadata?.httpStatusCode;
}

export function nameOf(err: unknown): string {
  const e = err as SdkError;
  return e?.Code ?? e?.code ?? e?.name ?? 'Error';
}

export function isNotFound(err: unknown): boolean {
  const n = nameOf(err);
  return n === 'NoSuchKey' || n === 'NotFound' || (statusOf(err) === 404 && n !== 'NoSuchBucket');
}
