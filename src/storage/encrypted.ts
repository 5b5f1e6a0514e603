// Client-side encryption as an ObjectStore decorator: every object is sealed with AES-256-GCM on
// its way in (after compression, which happens above the store) and opened on its way out, in
// chunks, so that a multi-gigabyte base backup still streams in flat memory.
//
// An encrypted object is:
//
//   header   'PGRBENC1' (8 bytes) + a random per-object nonce prefix (8 bytes)
//   chunk i  AES-256-GCM(plaintext[i*C, (i+1)*C)) + its 16-byte tag, for i = 0 .. n-1
//
// C is the chunk size (1 MiB). Every object has at least one chunk (an empty object is one empty
// final chunk), and the last chunk holds 1..C bytes (0 only for an empty object), so the
// plaintext size follows from the stored size: list() and head() report plaintext sizes.
// Chunk i's nonce is the prefix followed by i (32 bits, big endian); its additional data binds the
// object's key (objects cannot be swapped), i (chunks cannot be reordered) and whether it is the
// last one (an object cut at a chunk boundary fails). Anything that does not authenticate is a
// ChecksumMismatchError naming the object: damaged data, exit 3 wherever it surfaces.
//
// Checksums stay the plaintext's: put() returns the SHA-256 of the bytes it was given, and
// get({ expectedSha256 }) checks the decrypted bytes, as the drivers do for plain objects.
// User metadata is stored as given (in clear): keep secrets out of it.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { HashingStream, sha256Hex, verifyingStream } from './checksum.js';
import {
  ChecksumMismatchError,
  StorageError,
  validateRange,
  type GetOptions,
  type GetResult,
  type ListEntry,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
} from './types.js';

export const ENCRYPTION_MAGIC = Buffer.from('PGRBENC1', 'ascii');
const PREFIX_BYTES = 8;
export const HEADER_BYTES = ENCRYPTION_MAGIC.length + PREFIX_BYTES;
export const TAG_BYTES = 16;
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
const AAD_LABEL = 'pgrunbook/aes-256-gcm/v1';

/** The stored size of a plaintext of `plain` bytes. */
export function cipherSize(plain: number, chunkSize = DEFAULT_CHUNK_SIZE): number {
  const chunks = Math.max(1, Math.ceil(plain / chunkSize));
  return HEADER_BYTES + chunks * TAG_BYTES + plain;
}

/** The plaintext size of a stored object of `stored` bytes (0 for one too short to be valid: its get fails). */
export function plainSize(stored: number, chunkSize = DEFAULT_CHUNK_SIZE): number {
  const payload = stored - HEADER_BYTES;
  if (payload < TAG_BYTES) return 0;
  const chunks = Math.ceil(payload / (chunkSize + TAG_BYTES));
  return Math.max(0, payload - chunks * TAG_BYTES);
}

/** A stored object that does not decrypt: damaged, cut, reordered, moved, or sealed with another key. */
export class DecryptionError extends ChecksumMismatchError {
  constructor(key: string, why: string, store: string, expected?: string) {
    super(key, expected ?? 'an object sealed under this key with this repository key', `not authentic (${why})`, store);
    this.message =
      `object '${key}' in ${store} is corrupt: ${why}; it does not decrypt and authenticate with the repository key ` +
      `(AES-256-GCM), so it was changed after it was written. Do not use it; restore from another copy or another backup.`;
    this.name = 'DecryptionError';
  }
}

function aad(key: string, index: number, final: boolean): Buffer {
  const tail = Buffer.alloc(5);
  tail.writeUInt32BE(index, 0);
  tail[4] = final ? 1 : 0;
  return Buffer.concat([Buffer.from(`${AAD_LABEL}\0${key}\0`, 'utf8'), tail]);
}

function nonce(prefix: Buffer, index: number): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0);
  n.writeUInt32BE(index, PREFIX_BYTES);
  return n;
}

export interface EncryptedStoreOptions {
  /** Keys stored as they are (the repository's format record, which holds the salt). */
  plaintextKeys?: string[];
  chunkSize?: number;
}

/** Seals `chunk` as chunk `index` of `key`. */
function seal(dataKey: Buffer, prefix: Buffer, key: string, index: number, final: boolean, chunk: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', dataKey, nonce(prefix, index));
  c.setAAD(aad(key, index, final));
  const out = Buffer.concat([c.update(chunk), c.final(), c.getAuthTag()]);
  return out;
}

/** seal(), as the ciphertext and then the tag (the same bytes, without copying them into one buffer). */
function sealParts(dataKey: Buffer, prefix: Buffer, key: string, index: number, final: boolean, chunk: Buffer): Buffer[] {
  const c = createCipheriv('aes-256-gcm', dataKey, nonce(prefix, index));
  c.setAAD(aad(key, index, final));
  const body = c.update(chunk);
  const rest = c.final();
  return rest.length ? [body, rest, c.getAuthTag()] : [body, c.getAuthTag()];
}

export class EncryptedStore implements ObjectStore {
  readonly kind: ObjectStore['kind'];
  readonly chunkSize: number;
  private readonly clear: Set<string>;
  /** Present when the inner store has it: the sealed body goes through the same atomic create. */
  putIfAbsent?: (key: string, body: Buffer) => Promise<boolean>;

  constructor(
    readonly inner: ObjectStore,
    private readonly dataKey: Buffer,
    opts: EncryptedStoreOptions = {},
  ) {
    if (dataKey.length !== 32) throw new Error('internal: an AES-256 key is 32 bytes');
    this.kind = inner.kind;
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.clear = new Set(opts.plaintextKeys ?? []);
    if (inner.putIfAbsent) {
      const create = inner.putIfAbsent.bind(inner);
      this.putIfAbsent = (key, body) => create(key, this.clear.has(key) ? body : this.sealAll(key, body));
    }
  }

  describe(): string {
    return this.inner.describe();
  }

  /** A whole small object sealed at once. */
  sealAll(key: string, body: Buffer): Buffer {
    const prefix = randomBytes(PREFIX_BYTES);
    const parts = [ENCRYPTION_MAGIC, prefix];
    const n = Math.max(1, Math.ceil(body.length / this.chunkSize));
    for (let i = 0; i < n; i++) parts.push(seal(this.dataKey, prefix, key, i, i === n - 1, body.subarray(i * this.chunkSize, (i + 1) * this.chunkSize)));
    return Buffer.concat(parts);
  }

  async put(key: string, body: Readable | Buffer, opts: PutOptions = {}): Promise<PutResult> {
    if (this.clear.has(key)) return this.inner.put(key, body, opts);
    const want = opts.contentLength;
    if (Buffer.isBuffer(body)) {
      if (want !== undefined && want !== body.length) {
        throw new StorageError(`put '${key}': the body is ${body.length} bytes, contentLength says ${want}`, { code: 'invalid-argument', operation: 'put', key });
      }
      const sealed = this.sealAll(key, body);
      await this.inner.put(key, sealed, { ...opts, contentLength: sealed.length, sizeHint: undefined });
      return { key, size: body.length, sha256: sha256Hex(body) };
    }
    const hasher = new HashingStream(want);
    let sourceError: unknown;
    let lengthError: unknown;
    body.on('error', (err) => {
      sourceError ??= err;
      hasher.destroy(err);
    });
    hasher.on('error', (err) => {
      if (err instanceof StorageError) lengthError ??= err;
    });
    body.pipe(hasher);
    const sealed = Readable.from(this.sealStream(key, hasher), { objectMode: false });
    try {
      await this.inner.put(key, sealed, {
        ...opts,
        contentLength: want === undefined ? undefined : cipherSize(want, this.chunkSize),
        sizeHint: opts.sizeHint === undefined ? undefined : cipherSize(opts.sizeHint, this.chunkSize),
      });
    } catch (err) {
      if (!body.destroyed) body.destroy();
      if (opts.signal?.aborted) throw err;
      throw sourceError ?? lengthError ?? err;
    }
    return { key, size: hasher.byteCount, sha256: hasher.sha256 };
  }

  /** Seals a stream chunk by chunk; a chunk is final only once the source has ended. */
  private async *sealStream(key: string, source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    const prefix = randomBytes(PREFIX_BYTES);
    yield Buffer.concat([ENCRYPTION_MAGIC, prefix]);
    const size = this.chunkSize;
    // One chunk buffer, filled by copying each piece once (the cipher's output is a new buffer, so
    // it is reused); the ciphertext and its tag go out as they are: no concatenation per chunk.
    const chunk = Buffer.allocUnsafe(size);
    let fill = 0;
    let index = 0;
    for await (const piece of source) {
      let off = 0;
      while (off < piece.length) {
        // A full chunk is sealed only once more bytes come: the chunk that ends the object must be sealed as final.
        if (fill === size) {
          yield* sealParts(this.dataKey, prefix, key, index++, false, chunk);
          fill = 0;
        }
        const n = Math.min(size - fill, piece.length - off);
        piece.copy(chunk, fill, off, off + n);
        fill += n;
        off += n;
      }
    }
    yield* sealParts(this.dataKey, prefix, key, index, true, chunk.subarray(0, fill));
  }

  async get(key: string, opts: GetOptions = {}): Promise<GetResult> {
    if (this.clear.has(key)) return this.inner.get(key, opts);
    validateRange(opts.range, opts.expectedSha256);
    if (opts.range) return this.getRange(key, opts);
    const { body, info } = await this.inner.get(key, { signal: opts.signal });
    const plain = this.openStream(key, body, info.size, opts.expectedSha256);
    return { body: verifyingStream(plain, key, opts.expectedSha256, this.describe()), info: this.plainInfo(info) };
  }

  /** Opens a whole stored object as it streams; the last chunk is known when the source ends. */
  private async *openStream(key: string, source: AsyncIterable<Buffer>, storedSize: number, expected?: string): AsyncGenerator<Buffer> {
    const block = this.chunkSize + TAG_BYTES;
    const store = this.describe();
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let prefix: Buffer | undefined;
    let index = 0;
    let seen = 0;
    for await (const piece of source) {
      seen += piece.length;
      pending.push(piece);
      pendingBytes += piece.length;
      if (!prefix) {
        if (pendingBytes < HEADER_BYTES) continue;
        const all = Buffer.concat(pending);
        prefix = this.readHeader(key, all, expected);
        pending = [all.subarray(HEADER_BYTES)];
        pendingBytes = all.length - HEADER_BYTES;
      }
      // A full block followed by more bytes is not the last chunk. Joined once per block, not per piece.
      if (pendingBytes > block) {
        let all = Buffer.concat(pending);
        while (all.length > block) {
          yield this.open(key, prefix, index++, false, all.subarray(0, block), expected);
          all = all.subarray(block);
        }
        pending = [all];
        pendingBytes = all.length;
      }
    }
    const buf = Buffer.concat(pending);
    if (!prefix) throw new DecryptionError(key, `it is ${seen} bytes, shorter than the ${HEADER_BYTES}-byte header of an encrypted object`, store);
    if (seen !== storedSize && storedSize >= 0) throw new DecryptionError(key, `${seen} bytes were read, the store reported ${storedSize}`, store, expected);
    yield this.open(key, prefix, index, true, buf, expected);
  }

  private readHeader(key: string, buf: Buffer, expected?: string): Buffer {
    if (!buf.subarray(0, ENCRYPTION_MAGIC.length).equals(ENCRYPTION_MAGIC)) {
      throw new DecryptionError(key, 'it does not start with the header of an encrypted object (was it written without the key, or replaced?)', this.describe(), expected);
    }
    return Buffer.from(buf.subarray(ENCRYPTION_MAGIC.length, HEADER_BYTES));
  }

  private open(key: string, prefix: Buffer, index: number, final: boolean, block: Buffer, expected?: string): Buffer {
    if (block.length < TAG_BYTES) throw new DecryptionError(key, `chunk ${index} is cut short (${block.length} bytes)`, this.describe(), expected);
    const d = createDecipheriv('aes-256-gcm', this.dataKey, nonce(prefix, index));
    d.setAAD(aad(key, index, final));
    d.setAuthTag(block.subarray(block.length - TAG_BYTES));
    const out = d.update(block.subarray(0, block.length - TAG_BYTES));
    try {
      d.final();
    } catch {
      throw new DecryptionError(key, `chunk ${index}${final ? ' (the last)' : ''} fails authentication`, this.describe(), expected);
    }
    return out;
  }

  /** A byte range: the chunks that hold it are fetched, opened and cut to the range. */
  private async getRange(key: string, opts: GetOptions): Promise<GetResult> {
    const range = opts.range!;
    const head = await this.inner.get(key, { range: { start: 0, end: HEADER_BYTES - 1 }, signal: opts.signal });
    const headerBytes = await collect(head.body);
    const info = this.plainInfo(head.info);
    const total = info.size;
    const end = Math.min(range.end ?? total - 1, total - 1);
    if (range.start >= total || end < range.start) return { body: Readable.from([], { objectMode: false }), info };
    if (headerBytes.length < HEADER_BYTES) throw new DecryptionError(key, 'its header is cut short', this.describe());
    const prefix = this.readHeader(key, headerBytes);
    const block = this.chunkSize + TAG_BYTES;
    const first = Math.floor(range.start / this.chunkSize);
    const last = Math.floor(end / this.chunkSize);
    const chunks = Math.max(1, Math.ceil((head.info.size - HEADER_BYTES) / block));
    const self = this;
    async function* pieces(): AsyncGenerator<Buffer> {
      const part = await self.inner.get(key, { range: { start: HEADER_BYTES + first * block, end: HEADER_BYTES + (last + 1) * block - 1 }, signal: opts.signal });
      let buf: Buffer = Buffer.alloc(0);
      let index = first;
      const emit = (plain: Buffer, i: number): Buffer => {
        const from = i === first ? range.start - first * self.chunkSize : 0;
        const to = i === last ? end - i * self.chunkSize + 1 : plain.length;
        return plain.subarray(from, to);
      };
      for await (const piece of part.body as AsyncIterable<Buffer>) {
        buf = buf.length ? Buffer.concat([buf, piece]) : piece;
        while (buf.length >= block && index < last) {
          yield emit(self.open(key, prefix, index, index === chunks - 1, buf.subarray(0, block)), index);
          buf = buf.subarray(block);
          index++;
        }
      }
      yield emit(self.open(key, prefix, index, index === chunks - 1, buf), index);
    }
    const body = Readable.from(pieces(), { objectMode: false });
    return { body, info };
  }

  private plainInfo<T extends ListEntry>(entry: T): T {
    return this.clear.has(entry.key) ? entry : { ...entry, size: plainSize(entry.size, this.chunkSize) };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const info = await this.inner.head(key);
    return info && this.plainInfo(info);
  }

  async *list(prefix: string): AsyncIterable<ListEntry> {
    for await (const entry of this.inner.list(prefix)) yield this.plainInfo(entry);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

async function collect(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of body) parts.push(p);
  return Buffer.concat(parts);
}
