// SHA-256 while streaming: on the way in (PutResult.sha256) and on the way out (expectedSha256).

import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Readable, Transform, addAbortSignal, type TransformCallback } from 'node:stream';
import { ChecksumMismatchError, StorageError } from './types.js';

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** 1 MiB read buffers kept for the next hashFile: a fresh one per call costs page faults, and a long-lived pusher hashes every segment. */
const hashBuffers: Buffer[] = [];

/** Size and SHA-256 of a file, read through one reused 1 MiB buffer; with `headBytes`, a copy of its first bytes too. */
export async function hashFile(file: string, headBytes = 0): Promise<{ size: number; sha256: string; head: Buffer }> {
  const fh = await open(file, 'r');
  const buf = hashBuffers.pop() ?? Buffer.allocUnsafeSlow(1024 * 1024);
  try {
    const hash = createHash('sha256');
    let size = 0;
    let head: Buffer | undefined;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      if (!head && headBytes > 0) head = Buffer.from(buf.subarray(0, Math.min(bytesRead, headBytes)));
      hash.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { size, sha256: hash.digest('hex'), head: head ?? Buffer.alloc(0) };
  } finally {
    if (hashBuffers.length < 16) hashBuffers.push(buf);
    await fh.close();
  }
}

/**
 * Pass-through that hashes and counts what flows through it. With `expectedLength` it fails as
 * soon as more arrives, or at the end when less did, so that a wrong length never gets stored.
 * (No `size`/`length`/`byteLength` property: lib-storage would take it for the body's length.)
 */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private digestHex: string | undefined;

  constructor(private readonly expectedLength?: number) {
    super();
  }

  override _transform(chunk: Buffer | string, _enc: BufferEncoding, cb: TransformCallback): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.bytes += buf.length;
    if (this.expectedLength !== undefined && this.bytes > this.expectedLength) {
      cb(lengthError(this.expectedLength, this.bytes, 'more'));
      return;
    }
    this.hash.update(buf);
    cb(null, buf);
  }

  override _flush(cb: TransformCallback): void {
    if (this.expectedLength !== undefined && this.bytes !== this.expectedLength) {
      cb(lengthError(this.expectedLength, this.bytes, 'less'));
      return;
    }
    this.digestHex = this.hash.digest('hex');
    cb();
  }

  get byteCount(): number {
    return this.bytes;
  }

  /** Only once the stream has ended. */
  get sha256(): string {
    if (this.digestHex === undefined) throw new Error('HashingStream: digest read before the end');
    return this.digestHex;
  }
}

function lengthError(expected: number, got: number, moreOrLess: string): StorageError {
  return new StorageError(
    `the body has ${moreOrLess} bytes than the announced contentLength (${expected}, got ${got}${
      moreOrLess === 'more' ? ' or more' : ''
    })`,
    { code: 'invalid-argument', operation: 'put' },
  );
}

/**
 * Re-emits `source` and, if `expectedSha256` is given, errors with ChecksumMismatchError at the end
 * when the bytes do not hash to it. Destroying the result destroys `source`.
 */
export function verifyingStream(
  source: AsyncIterable<Buffer>,
  key: string,
  expectedSha256: string | undefined,
  store: string,
): Readable {
  if (expectedSha256 === undefined) {
    return source instanceof Readable ? source : Readable.from(source, { objectMode: false });
  }
  async function* verify(): AsyncGenerator<Buffer> {
    const hash = createHash('sha256');
    for await (const chunk of source) {
      hash.update(chunk);
      yield chunk;
    }
    const actual = hash.digest('hex');
    if (actual !== expectedSha256) throw new ChecksumMismatchError(key, expectedSha256!, actual, store);
  }
  return Readable.from(verify(), { objectMode: false });
}

/**
 * A put's body, hashed on its way into a driver's upload. Errors of the source itself are kept
 * apart and rethrown as they are: the storage did not fail when, say, pg_basebackup died.
 */
export function hashedBody(body: Readable | Buffer, opts: { contentLength?: number; signal?: AbortSignal }): HashedBody {
  const hasher = new HashingStream(opts.contentLength);
  const source = Buffer.isBuffer(body) ? Readable.from([body], { objectMode: false }) : body;
  let sourceError: unknown;
  source.on('error', (err) => {
    sourceError ??= err;
    hasher.destroy(err);
  });
  source.pipe(hasher);
  if (opts.signal) addAbortSignal(opts.signal, hasher);
  return {
    hasher,
    stop(err: unknown): unknown {
      if (!source.destroyed) source.destroy();
      if (!hasher.destroyed) hasher.destroy();
      if (opts.signal?.aborted) return opts.signal.reason ?? err;
      if (sourceError !== undefined) return sourceError;
      if (err instanceof StorageError) return err;
      return undefined;
    },
  };
}

export interface HashedBody {
  hasher: HashingStream;
  /**
   * After a failed upload: stops reading the body, and returns what to rethrow as it is (the
   * abort, the body's own error, a StorageError already worded), or undefined when the storage
   * failed and the driver should say how.
   */
  stop(err: unknown): unknown;
}
