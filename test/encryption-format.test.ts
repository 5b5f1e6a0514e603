// The encrypted object format (src/storage/encrypted.ts) and the repository key (src/repo/encryption.ts)
// on the in-memory backend: sizes, streaming, ranges, and every way stored bytes can be tampered
// with (a flipped byte, a cut, reordered chunks, an object swapped for another, another key).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, describe, expect, it } from 'vitest';
import { registerDriver } from '../src/storage/registry.js';
import { openStore } from '../src/storage/url.js';
import { ChecksumMismatchError, type ObjectStore } from '../src/storage/types.js';
import { sha256Hex } from '../src/storage/checksum.js';
import { DEFAULT_CHUNK_SIZE, DecryptionError, EncryptedStore, HEADER_BYTES, TAG_BYTES, cipherSize, plainSize } from '../src/storage/encrypted.js';
import { RepoKeyError, readRepoKey, withRepositoryKey } from '../src/repo/encryption.js';
import { ensureRepositoryIdentity, readRepositoryIdentity } from '../src/repo/identity.js';
import { objectStoreContract, type Harness } from './helpers/store-contract.js';
import { memoryBuckets, memoryLocation, createStore as createMemoryStore, type MemoryLocation } from './fixtures/memory-store.js';
import { tempDir } from './helpers/temp.js';

const C = 1024; // a small chunk size keeps the chunk-boundary cases small
const names: string[] = [];
afterAll(() => {
  for (const n of names) memoryBuckets.delete(n);
});

function bucket(): { name: string; inner: ObjectStore; raw: (key: string) => Buffer; setRaw: (key: string, b: Buffer) => void } {
  const name = `enc-${randomBytes(4).toString('hex')}`;
  names.push(name);
  const inner = createMemoryStore({ kind: 'memory', name, tuning: {} } as unknown as MemoryLocation);
  const objects = () => memoryBuckets.get(name)!;
  return {
    name,
    inner,
    raw: (key) => objects().get(key)!.bytes,
    setRaw: (key, b) => {
      objects().get(key)!.bytes = b;
    },
  };
}

const keyA = randomBytes(32);
const read = async (store: ObjectStore, key: string, expectedSha256?: string) => buffer((await store.get(key, { expectedSha256 })).body);
const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

describe('encrypted object format', () => {
  it('round-trips empty, short, exact-multiple and odd sizes, streamed or whole, and reports plaintext sizes', async () => {
    const b = bucket();
    const store = new EncryptedStore(b.inner, keyA, { chunkSize: C });
    for (const n of [0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 5]) {
      const data = randomBytes(n);
      const pieces = [data.subarray(0, 7), data.subarray(7, 700), data.subarray(700)];
      for (const [how, body] of [['buffer', data], ['stream', Readable.from(pieces)]] as const) {
        const key = `sizes/${how}/${n}`;
        const put = await store.put(key, body);
        expect(put).toEqual({ key, size: n, sha256: sha256Hex(data) });
        expect(b.raw(key).length).toBe(cipherSize(n, C));
        expect(plainSize(cipherSize(n, C), C)).toBe(n);
        expect((await read(store, key, sha256Hex(data))).equals(data)).toBe(true);
        expect((await store.head(key))?.size).toBe(n);
      }
    }
    const listed = [];
    for await (const e of store.list('sizes/stream/')) listed.push([e.key, e.size]);
    expect(listed).toContainEqual(['sizes/stream/3077', 3 * C + 5]);
    // An empty object is a header and one empty final chunk; a multiple of the chunk size has no extra chunk.
    expect(b.raw('sizes/buffer/0').length).toBe(HEADER_BYTES + TAG_BYTES);
    expect(b.raw(`sizes/stream/${2 * C}`).length).toBe(HEADER_BYTES + 2 * (C + TAG_BYTES));
  });

  it('stores no plaintext, and two puts of the same bytes differ (a random nonce prefix per object)', async () => {
    const b = bucket();
    const store = new EncryptedStore(b.inner, keyA, { chunkSize: C });
    const data = Buffer.from('MARKER-plaintext-'.repeat(200));
    await store.put('a', data);
    await store.put('b', data);
    expect(b.raw('a').includes(Buffer.from('MARKER-plaintext'))).toBe(false);
    expect(b.raw('a').subarray(HEADER_BYTES).equals(b.raw('b').subarray(HEADER_BYTES))).toBe(false);
  });

  it('serves byte ranges across chunk boundaries', async () => {
    const b = bucket();
    const store = new EncryptedStore(b.inner, keyA, { chunkSize: C });
    const data = randomBytes(5 * C + 3);
    await store.put('r', data);
    const range = async (start: number, end?: number) => buffer((await store.get('r', { range: { start, end } })).body);
    for (const [s, e] of [[0, 0], [C - 1, C], [C, 2 * C - 1], [10, 4 * C + 2], [5 * C, 5 * C + 2], [5 * C + 2, undefined]] as const) {
      expect((await range(s, e)).equals(data.subarray(s, e === undefined ? undefined : e + 1))).toBe(true);
    }
    expect((await range(5 * C + 3)).length).toBe(0);
    expect((await store.get('r', { range: { start: 1 } })).info.size).toBe(data.length);
  });

  describe('tampering is corruption naming the object', () => {
    async function sealed(n: number) {
      const b = bucket();
      const store = new EncryptedStore(b.inner, keyA, { chunkSize: C });
      const data = randomBytes(n);
      await store.put('obj', data, { metadata: { sha256: sha256Hex(data) } });
      return { b, store, data, bytes: Buffer.from(b.raw('obj')) };
    }
    const expectCorrupt = async (store: ObjectStore, key = 'obj') => {
      const err = await failure(read(store, key));
      expect(err).toBeInstanceOf(DecryptionError);
      expect(err).toBeInstanceOf(ChecksumMismatchError); // corrupt: true, exit 3 wherever it surfaces
      expect((err as DecryptionError).corrupt).toBe(true);
      expect((err as Error).message).toContain(`object '${key}'`);
      return err as DecryptionError;
    };

    it('a flipped byte anywhere: header prefix, a chunk, a tag', async () => {
      const { b, store, bytes } = await sealed(3 * C);
      for (const at of [HEADER_BYTES - 1, HEADER_BYTES + 5, HEADER_BYTES + C + 3, bytes.length - 1]) {
        const bad = Buffer.from(bytes);
        bad[at] ^= 0x01;
        b.setRaw('obj', bad);
        await expectCorrupt(store);
      }
    });

    it('cut at a chunk boundary, mid-chunk, or to the header', async () => {
      const { b, store, bytes } = await sealed(3 * C);
      for (const len of [HEADER_BYTES + 2 * (C + TAG_BYTES), HEADER_BYTES + C + 40, HEADER_BYTES, 5]) {
        b.setRaw('obj', bytes.subarray(0, len));
        await expectCorrupt(store);
      }
    });

    it('an exact multiple of the chunk size cut by its whole last chunk', async () => {
      const { b, store, bytes } = await sealed(2 * C);
      b.setRaw('obj', bytes.subarray(0, HEADER_BYTES + C + TAG_BYTES));
      expect((await expectCorrupt(store)).message).toContain('the last');
    });

    it('reordered chunks', async () => {
      const { b, store, bytes } = await sealed(3 * C + 10);
      const block = C + TAG_BYTES;
      const c0 = bytes.subarray(HEADER_BYTES, HEADER_BYTES + block);
      const c1 = bytes.subarray(HEADER_BYTES + block, HEADER_BYTES + 2 * block);
      b.setRaw('obj', Buffer.concat([bytes.subarray(0, HEADER_BYTES), c1, c0, bytes.subarray(HEADER_BYTES + 2 * block)]));
      await expectCorrupt(store);
    });

    it('an object swapped for another one of the same repository', async () => {
      const { b, store } = await sealed(100);
      await store.put('other', randomBytes(100));
      b.setRaw('obj', Buffer.from(b.raw('other')));
      await expectCorrupt(store);
    });

    it('an empty object with a damaged tag, and a plain object where a sealed one belongs', async () => {
      const { b, store, bytes } = await sealed(0);
      const bad = Buffer.from(bytes);
      bad[bad.length - 1] ^= 0x80;
      b.setRaw('obj', bad);
      await expectCorrupt(store);
      b.setRaw('obj', Buffer.from('plain text, never sealed'));
      expect((await expectCorrupt(store)).message).toContain('header');
    });

    it('another key', async () => {
      const { b } = await sealed(C + 1);
      await expectCorrupt(new EncryptedStore(b.inner, randomBytes(32), { chunkSize: C }));
    });
  });

  it('uses 1 MiB chunks by default (exact multiples included)', async () => {
    const b = bucket();
    const store = new EncryptedStore(b.inner, keyA);
    const data = randomBytes(2 * DEFAULT_CHUNK_SIZE);
    await store.put('big', Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]));
    expect(b.raw('big').length).toBe(HEADER_BYTES + 2 * (DEFAULT_CHUNK_SIZE + TAG_BYTES));
    expect((await read(store, 'big', sha256Hex(data))).equals(data)).toBe(true);
  });
});

describe('the repository key', () => {
  const env = (key?: string): NodeJS.ProcessEnv => (key === undefined ? {} : { PGRUNBOOK_REPO_KEY: key });
  const cluster = { systemIdentifier: '7000000000000000001', pgMajor: 15, walSegmentSize: 16 * 1024 * 1024 };

  it('a key makes a new repository encrypted; the format record stays readable and holds salt and check value only', async () => {
    const b = bucket();
    const store = await withRepositoryKey(b.inner, env('correct horse'));
    expect(store).toBeInstanceOf(EncryptedStore);
    await store.put('basebackups/x/data', Buffer.from('MARKER'));
    await ensureRepositoryIdentity(store, cluster);
    const record = JSON.parse(b.raw('pgrunbook.json').toString());
    expect(record.encryption).toMatchObject({ cipher: 'aes-256-gcm', chunkSize: DEFAULT_CHUNK_SIZE, kdf: { name: 'scrypt' } });
    expect(JSON.stringify(record)).not.toContain('correct horse');
    expect(b.raw('basebackups/x/data').includes(Buffer.from('MARKER'))).toBe(false);
    expect(await readRepositoryIdentity(store)).toMatchObject({ systemIdentifier: cluster.systemIdentifier });

    // Opened again with the same key: the same data key.
    const again = await withRepositoryKey(b.inner, env('correct horse'));
    expect((await read(again, 'basebackups/x/data')).toString()).toBe('MARKER');
    await ensureRepositoryIdentity(again, cluster);
  });

  it('refuses a wrong key, no key, and a key for an unencrypted or pre-record repository, before reading or writing', async () => {
    const b = bucket();
    await ensureRepositoryIdentity(await withRepositoryKey(b.inner, env('right')), cluster);
    await expect(withRepositoryKey(b.inner, env('wrong'))).rejects.toThrow(/does not open the repository/);
    const noKey = await failure(withRepositoryKey(b.inner, env()));
    expect(noKey).toBeInstanceOf(RepoKeyError);
    expect(noKey).toMatchObject({ procedureExitCode: 2 });
    expect((noKey as RepoKeyError).hint).toMatch(/--repo-key-file/);

    const plain = bucket();
    await ensureRepositoryIdentity(plain.inner, cluster);
    await expect(withRepositoryKey(plain.inner, env('k'))).rejects.toThrow(/is not encrypted/);
    expect(await withRepositoryKey(plain.inner, env())).toBe(plain.inner);

    const legacy = bucket();
    await legacy.inner.put('wal/000000010000000000000001', Buffer.from('old'));
    await expect(withRepositoryKey(legacy.inner, env('k'))).rejects.toBeInstanceOf(RepoKeyError);
  });

  it('reads the passphrase from a private file, and refuses a shared one, an empty one, or both sources', async () => {
    const dir = tempDir('enc-key-');
    const file = path.join(dir, 'key');
    fs.writeFileSync(file, 'from a file\n', { mode: 0o600 });
    expect(readRepoKey({ PGRUNBOOK_REPO_KEY_FILE: file })).toBe('from a file');
    fs.chmodSync(file, 0o644);
    expect(() => readRepoKey({ PGRUNBOOK_REPO_KEY_FILE: file })).toThrow(/read by other users/);
    fs.writeFileSync(file, '');
    fs.chmodSync(file, 0o600);
    expect(() => readRepoKey({ PGRUNBOOK_REPO_KEY_FILE: file })).toThrow(/empty/);
    expect(() => readRepoKey({ PGRUNBOOK_REPO_KEY_FILE: file, PGRUNBOOK_REPO_KEY: 'x' })).toThrow(/both/);
    expect(() => readRepoKey({ PGRUNBOOK_REPO_KEY_FILE: path.join(dir, 'missing') })).toThrow(RepoKeyError);
  });
});

// The shared ObjectStore contract, through the decorator: an encrypted store is still a store.
const memencLocation = {
  ...memoryLocation,
  parse: (url: URL, e: Record<string, string | undefined>, o: object) => ({ ...memoryLocation.parse(url, e, o), kind: 'memenc' }),
  describe: (loc: MemoryLocation) => `memenc://${loc.name}`,
} as unknown as typeof memoryLocation;
registerDriver('memenc', memencLocation, async () => ({
  createStore: (loc: MemoryLocation) => {
    const enc = new EncryptedStore(createMemoryStore(loc), keyA);
    return Object.assign(Object.create(enc) as EncryptedStore, { kind: 'memenc' });
  },
}));

async function encHarness(): Promise<Harness> {
  const name = `contract-enc-${randomBytes(4).toString('hex')}`;
  names.push(name);
  await (await openStore(`memenc://${name}`, {})).close();
  return {
    url: `memenc://${name}`,
    env: {},
    async flipByte(key, offset) {
      const o = memoryBuckets.get(name)?.get(key);
      if (!o) throw new Error(`no object '${key}'`);
      const bytes = Buffer.from(o.bytes);
      bytes[offset] ^= 0xff;
      o.bytes = bytes;
    },
    dispose: async () => {
      memoryBuckets.delete(name);
    },
  };
}

objectStoreContract('memenc', encHarness, { childProcess: false });
