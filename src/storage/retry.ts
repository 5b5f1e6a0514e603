// Backoff and retry policy.
//
// Single requests are retried by the SDKs themselves (configured from RetryOptions: S3 standard
// retry mode with `maxAttempts`, Azure's exponential StorageRetryPolicy). What they cannot retry is
// retried here: an S3 download that breaks mid-stream is resumed with a ranged GET pinned to the
// object's ETag (see s3.ts). Uploads are never retried as a whole: their body is a one-shot stream;
// each part/block is retried by the SDK from the buffer it holds.

import type { RetryOptions } from './types.js';

export const DEFAULT_RETRY: RetryOptions = { maxAttempts: 5, baseDelayMs: 200, maxDelayMs: 20_000 };

export function resolveRetry(partial?: Partial<RetryOptions>): RetryOptions {
  const r = { ...DEFAULT_RETRY, ...stripUndefined(partial ?? {}) };
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1) throw new RangeError('retry.maxAttempts must be >= 1');
  if (!(r.baseDelayMs >= 0) || !(r.maxDelayMs >= r.baseDelayMs)) throw new RangeError('invalid retry delays');
  return r;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Delay before retry number `attempt` (1 = first retry): exponential with full jitter. */
export function backoffDelay(attempt: number, retry: RetryOptions, random: () => number = Math.random): number {
  const cap = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(cap / 2 + (random() * cap) / 2);
}

/** Waits `ms` (a backoff, not a synchronisation); rejects with the signal's reason on abort. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'InternalError',
  'ServiceUnavailable',
  'ThrottlingException',
  'OperationTimedOut',
  'ServerBusy',
]);

/** Network failures, timeouts, throttling and 5xx answers. */
export function isTransientError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as {
    name?: string;
    code?: string;
    $metadata?: { httpStatusCode?: number };
    statusCode?: number;
    $retryable?: unknown;
    message?: string;
  };
  if (e.name === 'AbortError') return false;
  if (e.$retryable) return true;
  if ((e.code && TRANSIENT_CODES.has(e.code)) || (e.name && TRANSIENT_CODES.has(e.name))) return true;
  const status = e.$metadata?.httpStatusCode ?? e.statusCode;
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) return true;
  return e.message === 'aborted' || e.message === 'socket hang up';
}

/** Runs `fn` until it succeeds, fails with a non-transient error, or attempts run out. */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  retry: RetryOptions,
  opts: { signal?: AbortSignal; isRetryable?: (err: unknown) => boolean } = {},
): Promise<T> {
  const retryable = opts.isRetryable ?? isTransientError;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= retry.maxAttempts || opts.signal?.aborted || !retryable(err)) throw err;
      await delay(backoffDelay(attempt, retry), opts.signal);
    }
  }
}
