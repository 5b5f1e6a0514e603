// The ObjectStore contract every storage driver passes, as a function: call it with a driver's name
// and a factory for a backend under test (test/storage.contract.test.ts runs it for file, S3 and
// Azure; test/storage-fake-backend.test.ts for an in-memory driver registered by the test).

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer as readAll } from 'node:stream/consumers';
import { inspect, promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/storage/checksum.js';
import {
  ChecksumMismatchError,
  ObjectNotFoundError,
  StorageError,
  type ObjectStore,
  type StoreOptions,
} from '../../src/storage/types.js';
import { openStore } from '../../src/storage/url.js';
import { compileFixtures, type CompiledFixtures } from '../fixtures/compile-fixtures.js';
import { prngSha256, prngStream } from '../fixtures/prng-stream.js';
import { AZURITE_ACCOUNT, AZURITE_KEY, type StorageServer } from './storage-servers.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const BIG = 200 * MiB;
const RSS_LIMIT_KIB = 150 * 1024;
/** Short retries so that failures surface within seconds. */
export const FAST: StoreOptions = { retry: { maxAttempts: 2, baseDelayMs: 20, maxDelayMs: 200 } };

export interface ContractOptions {
  /** The driver can be opened by URL in a fresh node process (false for one a test registers). */
  childProcess?: boolean;
}

let compiled: Promise<CompiledFixtures> | undefined;
let bigSha: Promise<string> | undefined;

/** The storage code compiled to JavaScript for child processes, once per test file. */
export function compiledFixtures(): Promise<CompiledFixtures> {
  compiled ??= compileFixtures();
  return compiled;
}

afterAll(async () => {
  await (await compiled)?.remove();
});

function bigSha256(): Promise<string> {
  bigSha ??= prngSha256(BIG);
  return bigSha;
}

function prngBuffer(size: number, seed = 'small'): Promise<Buffer> {
  return readAll(prngStream(size, { seed }));
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Resolves once `predicate` holds, polling a condition (with a deadline), never a fixed sleep. */
async function until(predicate: () => boolean, what: string, deadlineMs = 60_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A backend under test, with raw access that bypasses the driver. */
export interface Harness {
  url: string;
  env: Record<string, string>;
  /** Flips one stored byte of `key` behind the driver's back, keeping the object's metadata. */
  flipByte(key: string, offset: number): Promise<void>;
  server?: StorageServer;
  restart?(): Promise<void>;
  /** Every name the backend holds under a "directory", internal files included (local only). */
  rawNames?(dir: string): Promise<string[]>;
  dispose(): Promise<void>;
}

export function objectStoreContract(name: string, harness: () => Promise<Harness>, options: ContractOptions = {}): void {
describe(`ObjectStore contract: ${name}`, () => {
  let h: Harness;
  let store: ObjectStore;

  beforeAll(async () => {
    h = await harness();
    store = await openStore(h.url, h.env, FAST);
  });

  afterAll(async () => {
    await store?.close();
    await h?.dispose();
  });

  it('round-trips an empty and a small streamed object, with metadata', async () => {
    expect(store.kind).toBe(name);
    const empty = await store.put('rt/empty', Buffer.alloc(0));
    expect(empty).toEqual({ key: 'rt/empty', size: 0, sha256: sha256Hex('') });
    const e = await store.get('rt/empty', { expectedSha256: sha256Hex('') });
    expect((await readAll(e.body)).length).toBe(0);
    expect(e.info.size).toBe(0);

    const data = await prngBuffer(300 * 1024 + 7);
    const sha = sha256Hex(data);
    const metadata = { sha256: sha, kind: 'test', note: 'Hello, world 1' };
    // A stream of unknown length, in odd-sized chunks.
    const chunks = [data.subarray(0, 1000), data.subarray(1000, 70_001), data.subarray(70_001)];
    const put = await store.put('rt/small.bin', Readable.from(chunks), { metadata });
    expect(put).toEqual({ key: 'rt/small.bin', size: data.length, sha256: sha });

    const got = await store.get('rt/small.bin', { expectedSha256: sha });
    expect(sha256Hex(await readAll(got.body))).toBe(sha);
    expect(got.info).toMatchObject({ key: 'rt/small.bin', size: data.length, metadata });
    expect(got.info.lastModified).toBeInstanceOf(Date);

    const head = await store.head('rt/small.bin');
    expect(head).toMatchObject({ key: 'rt/small.bin', size: data.length, metadata });

    // Replacing an object replaces its metadata too.
    await store.put('rt/small.bin', data.subarray(0, 10));
    expect(await store.head('rt/small.bin')).toMatchObject({ size: 10, metadata: {} });

    // A known contentLength is checked.
    await expect(store.put('rt/short', Buffer.from('abc'), { contentLength: 4 })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
    expect(await store.head('rt/short')).toBeUndefined();
  });

  it.runIf(options.childProcess ?? true)(
    'round-trips a 200 MiB stream of unknown length with flat memory (child process)',
    async () => {
      const compiled = await compiledFixtures();
      const t0 = Date.now();
      const { stdout } = await run(
        process.execPath,
        [compiled.path('test/fixtures/storage-rss.ts'), h.url, String(BIG)],
        { env: { ...process.env, ...h.env }, maxBuffer: 1024 * 1024 },
      );
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, number | string>;
      const expected = await bigSha256();
      console.log(
        `[${name}] 200 MiB put ${r.putMs} ms, get ${r.getMs} ms, peak RSS ${Math.round(
          Number(r.maxRssKiB) / 1024,
        )} MiB (after put ${Math.round(Number(r.maxRssKiBAfterPut) / 1024)} MiB), child ${Date.now() - t0} ms`,
      );
      expect(r.kind).toBe(name);
      expect(r.putSize).toBe(BIG);
      expect(r.infoSize).toBe(BIG);
      expect(r.readSize).toBe(BIG);
      expect(r.putSha256).toBe(expected);
      expect(r.readSha256).toBe(expected);
      expect(Number(r.maxRssKiB)).toBeLessThan(RSS_LIMIT_KIB);
    },
    120_000,
  );

  it('serves byte ranges', async () => {
    const data = await prngBuffer(MiB + 7, 'ranges');
    await store.put('ranges/obj', data);
    const range = async (start: number, end?: number): Promise<Buffer> => {
      const { body, info } = await store.get('ranges/obj', { range: { start, end } });
      expect(info.size).toBe(data.length); // the whole object's size, even for a range
      return readAll(body);
    };
    expect(await range(0, 0)).toEqual(data.subarray(0, 1));
    expect(await range(1000, 1999)).toEqual(data.subarray(1000, 2000));
    expect(await range(data.length - 10)).toEqual(data.subarray(data.length - 10));
    expect(await range(data.length - 5, data.length + 100)).toEqual(data.subarray(data.length - 5));
    expect((await range(data.length)).length).toBe(0);
    await expect(
      store.get('ranges/obj', { range: { start: 0, end: 9 }, expectedSha256: sha256Hex(data) }),
    ).rejects.toMatchObject({ code: 'invalid-argument' });
  });

  it('lists more than 1000 keys page by page, in order, and nothing outside the prefix', async () => {
    const keys = Array.from({ length: 1100 }, (_, i) => `many/k${String(i).padStart(5, '0')}`);
    const queue = [...keys, 'manyy/x', 'manyx', 'man', 'manz'];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let k = queue.shift(); k !== undefined; k = queue.shift()) await store.put(k, Buffer.from(k));
      }),
    );
    const listed = await collect(store.list('many/'));
    expect(listed.map((e) => e.key)).toEqual(keys);
    expect(listed[0].size).toBe(Buffer.byteLength(keys[0]));
    expect(listed[0].lastModified).toBeInstanceOf(Date);

    // A plain string prefix, not only a "directory".
    const loose = (await collect(store.list('many'))).map((e) => e.key);
    expect(loose).toEqual([...keys, 'manyx', 'manyy/x']);

    expect(await collect(store.list('nothing-here/'))).toEqual([]);

    // Byte order across "directories": '-' (0x2d) < '/' (0x2f) < '0' (0x30). Not on s3rver, which
    // walks its directories instead (and then even skips keys when paginating); S3 sorts by key.
    if (name !== 's3') {
      for (const k of ['order/a0', 'order/a/x', 'order/a-b']) await store.put(k, Buffer.from(k));
      expect((await collect(store.list('order/'))).map((e) => e.key)).toEqual(['order/a-b', 'order/a/x', 'order/a0']);
    }
  });

  it('detects a flipped byte on read', async () => {
    const data = await prngBuffer(256 * 1024, 'corrupt');
    const sha = sha256Hex(data);
    await store.put('corrupt/obj', data, { metadata: { sha256: sha } });
    await h.flipByte('corrupt/obj', 12_345);

    const info = await store.head('corrupt/obj');
    expect(info?.metadata.sha256).toBe(sha); // the recorded checksum survived
    expect(info?.size).toBe(data.length);
    const { body } = await store.get('corrupt/obj', { expectedSha256: info!.metadata.sha256 });
    const err = await readAll(body).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ChecksumMismatchError);
    expect(err).toMatchObject({ code: 'checksum-mismatch', key: 'corrupt/obj', expected: sha });
    expect((err as ChecksumMismatchError).actual).not.toBe(sha);
  });

  it('stores a local file with putFile where the driver has it: bytes, metadata, checked length', async (ctx) => {
    if (!store.putFile) return ctx.skip();
    const dir = await mkdtemp(join(tmpdir(), 'putfile-'));
    try {
      const data = await prngBuffer(3 * MiB + 11, 'putfile');
      const sha = sha256Hex(data);
      const file = join(dir, 'seg.zst');
      await writeFile(file, data, { mode: 0o600 });
      const put = await store.putFile('putfile/obj', file, { contentLength: data.length, metadata: { sha256: sha } });
      expect(put).toEqual({ key: 'putfile/obj', size: data.length, sha256: sha });
      const got = await store.get('putfile/obj', { expectedSha256: sha });
      expect(sha256Hex(await readAll(got.body))).toBe(sha);
      expect(got.info.metadata).toEqual({ sha256: sha });

      // From another file system (no hard link there: the kernel's copy), the same bytes.
      if (existsSync('/dev/shm')) {
        const shm = await mkdtemp('/dev/shm/putfile-');
        try {
          await writeFile(join(shm, 'seg.zst'), data, { mode: 0o600 });
          // recordSha256: the driver records the hash it took of what it stored (the caller took none).
          expect(await store.putFile('putfile/copied', join(shm, 'seg.zst'), { metadata: { compression: 'zstd' }, recordSha256: true })).toEqual({ key: 'putfile/copied', size: data.length, sha256: sha });
          const copied = await store.get('putfile/copied', { expectedSha256: sha });
          expect(sha256Hex(await readAll(copied.body))).toBe(sha);
          expect(copied.info.metadata).toEqual({ compression: 'zstd', sha256: sha });
          await store.delete('putfile/copied');
        } finally {
          await rm(shm, { recursive: true, force: true });
        }
      }

      // A length that does not match stores nothing and leaves no temp file behind.
      await expect(store.putFile('putfile/short', file, { contentLength: data.length + 1 })).rejects.toMatchObject({ code: 'invalid-argument' });
      expect(await store.head('putfile/short')).toBeUndefined();
      if (h.rawNames) expect((await h.rawNames('putfile')).sort()).toEqual(['.pgrunbook-meta-obj.json', 'obj']);

      // A missing source file fails the put and stores nothing.
      await expect(store.putFile('putfile/missing', join(dir, 'nope'))).rejects.toThrow();
      expect(await store.head('putfile/missing')).toBeUndefined();

      // An aborted put stores nothing.
      const ac = new AbortController();
      ac.abort(new Error('stopped by the test'));
      await expect(store.putFile('putfile/aborted', file, { signal: ac.signal })).rejects.toThrow('stopped by the test');
      expect(await store.head('putfile/aborted')).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fails a put whose body fails with the body\'s own error, storing nothing', async () => {
    const boom = new Error('pg_basebackup exited with status 1');
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(3 * MiB, 1);
      yield Buffer.alloc(3 * MiB, 2);
      throw boom;
    }
    await expect(store.put('failing/body', Readable.from(failing()))).rejects.toBe(boom);
    expect(await store.head('failing/body')).toBeUndefined();
    expect(await collect(store.list('failing/'))).toEqual([]);
  });

  it('reports missing keys', async () => {
    expect(await store.head('missing/key')).toBeUndefined();
    await expect(store.get('missing/key')).rejects.toBeInstanceOf(ObjectNotFoundError);
    await expect(store.get('missing/key')).rejects.toMatchObject({ code: 'not-found', key: 'missing/key' });
    await expect(store.delete('missing/key')).resolves.toBeUndefined();
    await store.put('missing/then-deleted', Buffer.from('x'));
    await store.delete('missing/then-deleted');
    expect(await store.head('missing/then-deleted')).toBeUndefined();
    expect(await collect(store.list('missing/'))).toEqual([]);
  });

  it('rejects invalid keys and metadata', async () => {
    for (const key of ['', '/abs', 'a//b', 'a/../b', 'trailing/', '.pgrunbook-tmp-x', 'a\\b']) {
      await expect(store.put(key, Buffer.from('x'))).rejects.toMatchObject({ code: 'invalid-argument' });
    }
    await expect(store.put('k', Buffer.from('x'), { metadata: { 'Bad-Key': 'v' } })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
    await expect(store.put('k', Buffer.from('x'), { metadata: { ok: 'caf\u00e9' } })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
  });

  it.runIf(name === 's3' || name === 'azure')('fails with access-denied on bad credentials, without leaking them', async () => {
    const secret = 'SecretXyz0123456789+/AbCdEfGhIjKlMnOpQrStUv==';
    const env: Record<string, string> =
      name === 's3'
        ? // s3rver checks the key id but not SigV4 signatures: an unknown key id gets the 403.
          { AWS_ACCESS_KEY_ID: 'PGRUNBOOK-TEST-UNKNOWN-KEY-ID', AWS_SECRET_ACCESS_KEY: secret }
        : { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: Buffer.from(secret).toString('base64') };
    const bad = await openStore(h.url, env, FAST);
    try {
      const err = await bad.put('denied/x', Buffer.from('x')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      expect(err).toMatchObject({ code: 'access-denied', statusCode: 403 });
      const printed = `${String(err)}\n${inspect(err, { depth: 10 })}\n${JSON.stringify(err)}\n${bad.describe()}`;
      for (const s of Object.values(env)) if (s.length > 20) expect(printed).not.toContain(s);
      expect(await store.head('denied/x')).toBeUndefined();
    } finally {
      await bad.close();
    }
    if (name === 'azure') {
      const sig = 'SECRETSIGNATURE0123456789abcdef%3D';
      const sas = await openStore(
        h.url,
        { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_SAS_TOKEN: `sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=${sig}` },
        FAST,
      );
      const err = await sas.get('rt/small.bin').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      expect(`${String(err)} ${inspect(err)} ${sas.describe()}`).not.toContain('SECRETSIGNATURE');
      await sas.close();
    }
  });

  it.runIf(name === 'azure')('opens Azure from AZURE_STORAGE_CONNECTION_STRING', async () => {
    const cs =
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
      `BlobEndpoint=${h.server!.endpoint};`;
    const viaCs = await openStore(`azure://${h.server!.bucket}/repo`, { AZURE_STORAGE_CONNECTION_STRING: cs }, FAST);
    expect(viaCs.describe()).not.toContain(AZURITE_KEY);
    await viaCs.put('cs/x', Buffer.from('via connection string'));
    expect(await store.head('cs/x')).toMatchObject({ size: 21 });
    await viaCs.close();
  });

  it(
    'leaves nothing under the name when an upload is interrupted mid-way',
    async () => {
      const key = 'interrupted/big.bin';
      let read = 0;
      const source = prngStream(2048 * MiB, { seed: 'interrupted', onRead: (n) => (read = n) });
      const controller = new AbortController();
      const t0 = Date.now();
      const outcome = store.put(key, source, { signal: controller.signal }).then(
        () => 'stored' as const,
        (e: unknown) => e,
      );
      // Well into the upload: several parts/blocks have been sent.
      await until(() => read >= 48 * MiB, '48 MiB of the upload to be read');
      if (h.server) await h.server.kill();
      else controller.abort();
      const err = await outcome;
      const elapsed = Date.now() - t0;
      console.log(`[${name}] interrupted upload failed after ${elapsed} ms: ${String(err).slice(0, 300)}`);
      expect(err).not.toBe('stored');
      expect(elapsed).toBeLessThan(60_000);
      if (!h.server) {
        expect((err as Error).name).toBe('AbortError');
        // Neither the final name nor a temp file, as far as the backend shows them.
        if (h.rawNames) expect(await h.rawNames('interrupted')).toEqual([]);
      } else {
        expect(err).toBeInstanceOf(StorageError);
        expect((err as StorageError).message).toContain('Nothing was stored under this name');
        await h.restart!();
      }
      const after = await openStore(h.url, h.env, FAST);
      try {
        expect(await after.head(key)).toBeUndefined();
        expect(await collect(after.list('interrupted/'))).toEqual([]);
        await expect(after.get(key)).rejects.toBeInstanceOf(ObjectNotFoundError);
      } finally {
        await after.close();
      }
    },
    90_000,
  );
});
}
