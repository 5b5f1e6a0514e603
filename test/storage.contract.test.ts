// One contract, three drivers: the local directory, S3 (s3rver) and Azure Blob (Azurite), the
// servers being real HTTP servers started here as child processes. Large transfers and memory are
// measured in a child process running compiled JavaScript.

import { execFile } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer as readAll } from 'node:stream/consumers';
import { fileURLToPath } from 'node:url';
import { inspect, promisify } from 'node:util';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../src/storage/checksum.js';
import {
  ChecksumMismatchError,
  ObjectNotFoundError,
  StorageError,
  type ObjectStore,
  type StoreOptions,
} from '../src/storage/types.js';
import { backoffDelay, isTransientError, withRetry } from '../src/storage/retry.js';
import { describeLocation, openStore, parseRepoUrl, redactSecrets } from '../src/storage/url.js';
import { compileFixtures, type CompiledFixtures } from './fixtures/compile-fixtures.js';
import { prngSha256, prngStream } from './fixtures/prng-stream.js';
import {
  AZURITE_ACCOUNT,
  AZURITE_KEY,
  S3RVER_KEY_ID,
  S3RVER_SECRET,
  startAzurite,
  startS3rver,
  type StorageServer,
} from './helpers/storage-servers.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const BIG = 200 * MiB;
const RSS_LIMIT_KIB = 150 * 1024;
/** Short retries so that failures surface within seconds. */
const FAST: StoreOptions = { retry: { maxAttempts: 2, baseDelayMs: 20, maxDelayMs: 200 } };

let compiled: CompiledFixtures;
let bigSha256: Promise<string>;

beforeAll(async () => {
  compiled = await compileFixtures();
  bigSha256 = prngSha256(BIG);
});

afterAll(async () => {
  await compiled?.remove();
});

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
interface Harness {
  url: string;
  env: Record<string, string>;
  /** Flips one stored byte of `key` behind the driver's back, keeping the object's metadata. */
  flipByte(key: string, offset: number): Promise<void>;
  server?: StorageServer;
  restart?(): Promise<void>;
  dispose(): Promise<void>;
}

async function fileHarness(): Promise<Harness> {
  const root = await mkdtemp(join(tmpdir(), 'pgrunbook-file-'));
  return {
    url: `file://${root}`,
    env: {},
    async flipByte(key, offset) {
      const fh = await open(join(root, key), 'r+');
      try {
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, offset);
        b[0] ^= 0xff;
        await fh.write(b, 0, 1, offset);
      } finally {
        await fh.close();
      }
    },
    dispose: () => rm(root, { recursive: true, force: true }),
  };
}

async function s3Harness(): Promise<Harness> {
  const h: Harness = {
    server: await startS3rver(),
    url: '',
    env: {},
    async flipByte(key, offset) {
      const srv = h.server!;
      const raw = new S3Client({
        region: 'us-east-1',
        endpoint: srv.endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: S3RVER_KEY_ID, secretAccessKey: S3RVER_SECRET },
      });
      try {
        const Key = `repo/${key}`;
        const got = await raw.send(new GetObjectCommand({ Bucket: srv.bucket, Key }));
        const bytes = Buffer.from(await got.Body!.transformToByteArray());
        bytes[offset] ^= 0xff;
        await raw.send(new PutObjectCommand({ Bucket: srv.bucket, Key, Body: bytes, Metadata: got.Metadata }));
      } finally {
        raw.destroy();
      }
    },
    async restart() {
      const old = h.server!;
      h.server = await startS3rver({ port: old.port, directory: old.directory, bucket: old.bucket });
    },
    async dispose() {
      await h.server?.stop();
      await rm(h.server!.directory, { recursive: true, force: true });
    },
  };
  h.url = h.server!.url;
  h.env = h.server!.env;
  return h;
}

async function azureHarness(): Promise<Harness> {
  const h: Harness = {
    server: await startAzurite(),
    url: '',
    env: {},
    async flipByte(key, offset) {
      const srv = h.server!;
      const svc = new BlobServiceClient(srv.endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY));
      const blob = svc.getContainerClient(srv.bucket).getBlockBlobClient(`repo/${key}`);
      const props = await blob.getProperties();
      const bytes = await blob.downloadToBuffer();
      bytes[offset] ^= 0xff;
      await blob.uploadData(bytes, { metadata: props.metadata });
    },
    async restart() {
      const old = h.server!;
      h.server = await startAzurite({ port: old.port, directory: old.directory, bucket: old.bucket });
    },
    async dispose() {
      await h.server?.stop();
      await rm(h.server!.directory, { recursive: true, force: true });
    },
  };
  h.url = h.server!.url;
  h.env = h.server!.env;
  return h;
}

const drivers = [
  { name: 'file', harness: fileHarness },
  { name: 's3', harness: s3Harness },
  { name: 'azure', harness: azureHarness },
] as const;

describe.each(drivers)('ObjectStore contract: $name', ({ name, harness }) => {
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

  it(
    'round-trips a 200 MiB stream of unknown length with flat memory (child process)',
    async () => {
      const t0 = Date.now();
      const { stdout } = await run(
        process.execPath,
        [compiled.path('test/fixtures/storage-rss.ts'), h.url, String(BIG)],
        { env: { ...process.env, ...h.env }, maxBuffer: 1024 * 1024 },
      );
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, number | string>;
      const expected = await bigSha256;
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

  it.skipIf(name === 'file')('fails with access-denied on bad credentials, without leaking them', async () => {
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
      if (name === 'file') controller.abort();
      else await h.server!.kill();
      const err = await outcome;
      const elapsed = Date.now() - t0;
      console.log(`[${name}] interrupted upload failed after ${elapsed} ms: ${String(err).slice(0, 300)}`);
      expect(err).not.toBe('stored');
      expect(elapsed).toBeLessThan(60_000);
      if (name === 'file') {
        expect((err as Error).name).toBe('AbortError');
        const dir = join(fileURLToPath(h.url), 'interrupted');
        const left = await readdir(dir).catch(() => []);
        expect(left).toEqual([]); // neither the final name nor a temp file
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

describe('retry policy', () => {
  it('backs off exponentially with jitter, and retries only transient errors', async () => {
    const r = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(1, r, () => 0)).toBe(50);
    expect(backoffDelay(1, r, () => 1)).toBe(100);
    expect(backoffDelay(3, r, () => 1)).toBe(400);
    expect(backoffDelay(10, r, () => 1)).toBe(1000);
    const fast = { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2 };
    let calls = 0;
    const flaky = () =>
      withRetry(async () => {
        calls++;
        if (calls < 3) throw Object.assign(new Error('reset'), { code: 'ECONNRESET' });
        return 'ok';
      }, fast);
    await expect(flaky()).resolves.toBe('ok');
    expect(calls).toBe(3);
    calls = 0;
    const denied = Object.assign(new Error('denied'), { $metadata: { httpStatusCode: 403 } });
    await expect(withRetry(async () => { calls++; throw denied; }, fast)).rejects.toBe(denied);
    expect(calls).toBe(1);
    expect(isTransientError({ $metadata: { httpStatusCode: 503 } })).toBe(true);
    expect(isTransientError({ name: 'AbortError' })).toBe(false);
  });
});

describe('repository URLs', () => {
  it('parses file URLs and absolute paths', () => {
    expect(parseRepoUrl('file:///var/backups/pg/main')).toMatchObject({ kind: 'file', root: '/var/backups/pg/main' });
    expect(parseRepoUrl('/var/backups/pg/main/')).toMatchObject({ kind: 'file', root: '/var/backups/pg/main' });
    expect(parseRepoUrl('file:///srv/a%20b')).toMatchObject({ kind: 'file', root: '/srv/a b' });
    expect(describeLocation(parseRepoUrl('/srv/a b'))).toBe('file:///srv/a%20b');
    for (const bad of ['backups/pg', './x', 'file://host/x', 'ftp://x/y', 'file:///x?y=1', '']) {
      expect(() => parseRepoUrl(bad)).toThrow(StorageError);
    }
  });

  it('parses s3 URLs from the query, then the environment', () => {
    const loc = parseRepoUrl(
      's3://my-bucket/pg/main?endpoint=http://127.0.0.1:9000&region=eu-west-1&forcePathStyle=true&sse=aws:kms&kmsKeyId=arn:aws:kms:eu-west-1:111122223333:key/abcd',
      {},
    );
    expect(loc).toMatchObject({
      kind: 's3',
      bucket: 'my-bucket',
      prefix: 'pg/main/',
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-1',
      forcePathStyle: true,
      sse: 'aws:kms',
      kmsKeyId: 'arn:aws:kms:eu-west-1:111122223333:key/abcd',
    });

    const env = {
      AWS_REGION: 'us-west-2',
      AWS_ENDPOINT_URL_S3: 'https://s3.example.net',
      AWS_ACCESS_KEY_ID: 'TEST-KEY-ID-EXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'test-secret-not-a-real-key',
      AWS_SESSION_TOKEN: 'FwoGZXIvYXdzEXAMPLEtoken',
    };
    const fromEnv = parseRepoUrl('s3://b', env);
    expect(fromEnv).toMatchObject({
      prefix: '',
      region: 'us-west-2',
      endpoint: 'https://s3.example.net',
      forcePathStyle: true,
      credentials: { accessKeyId: 'TEST-KEY-ID-EXAMPLE', secretAccessKey: env.AWS_SECRET_ACCESS_KEY, sessionToken: env.AWS_SESSION_TOKEN },
    });
    expect(parseRepoUrl('s3://b/p?region=ap-south-1&forcePathStyle=false', env)).toMatchObject({
      region: 'ap-south-1',
      forcePathStyle: false,
    });
    expect(parseRepoUrl('s3://b/p?sse=AES256', {})).toMatchObject({ sse: 'AES256', region: undefined, endpoint: undefined });
    expect(parseRepoUrl('s3://b/p?partSize=64MiB&queueSize=4', {}).tuning).toMatchObject({
      partSize: 64 * MiB,
      queueSize: 4,
    });

    const described = describeLocation(fromEnv);
    expect(described).toBe('s3://b?endpoint=https://s3.example.net&region=us-west-2&forcePathStyle=true');
    for (const bad of ['s3://', 's3://b/p?bogus=1', 's3://b/p?sse=rot13', 's3://b/p?forcePathStyle=maybe', 's3://b/a%2F..%2Fx']) {
      expect(() => parseRepoUrl(bad, {})).toThrow(StorageError);
    }
  });

  it('parses azure URLs with a connection string, an account key or a SAS token', () => {
    const key = 'c2VjcmV0LWFjY291bnQta2V5LWZvci10ZXN0cw==';
    const cs = `DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=${key};EndpointSuffix=core.windows.net`;
    expect(parseRepoUrl('azure://backups/pg/main', { AZURE_STORAGE_CONNECTION_STRING: cs })).toMatchObject({
      kind: 'azure',
      container: 'backups',
      prefix: 'pg/main/',
      serviceUrl: 'https://acct.blob.core.windows.net',
      auth: { type: 'shared-key', account: 'acct', accountKey: key },
    });
    const sas = '?sv=2022-11-02&ss=b&sp=rwdl&sig=SIGNATUREsecret%2Fvalue%3D';
    const viaSas = parseRepoUrl('azure://backups', { AZURE_STORAGE_ACCOUNT: 'acct', AZURE_STORAGE_SAS_TOKEN: sas });
    expect(viaSas).toMatchObject({ serviceUrl: 'https://acct.blob.core.windows.net', auth: { type: 'sas', sasToken: sas.slice(1) } });
    const azurite = parseRepoUrl('azure://c1c/p?endpoint=http://127.0.0.1:10000/devstoreaccount1', {
      AZURE_STORAGE_KEY: key,
    });
    expect(azurite).toMatchObject({
      serviceUrl: 'http://127.0.0.1:10000/devstoreaccount1',
      auth: { type: 'shared-key', account: 'devstoreaccount1', accountKey: key },
    });
    expect(parseRepoUrl('azure://backups', { AZURE_STORAGE_CONNECTION_STRING: 'UseDevelopmentStorage=true' })).toMatchObject({
      serviceUrl: 'http://127.0.0.1:10000/devstoreaccount1',
      auth: { type: 'shared-key', account: 'devstoreaccount1' },
    });
    expect(() => parseRepoUrl('azure://backups', {})).toThrow(/AZURE_STORAGE_CONNECTION_STRING/);
    expect(() => parseRepoUrl('azure://Bad_Name', { AZURE_STORAGE_ACCOUNT: 'a', AZURE_STORAGE_KEY: key })).toThrow(
      StorageError,
    );

    for (const loc of [
      parseRepoUrl('azure://backups/pg/main', { AZURE_STORAGE_CONNECTION_STRING: cs }),
      viaSas,
      azurite,
      parseRepoUrl(`azure://backups/p?account=acct&accountKey=${encodeURIComponent(key)}`, {}),
      parseRepoUrl(`azure://backups/p?sas=${encodeURIComponent(sas)}&endpoint=https://acct.blob.core.windows.net`, {}),
    ]) {
      const d = describeLocation(loc);
      expect(d).toMatch(/^azure:\/\/backups|^azure:\/\/c1c/);
      expect(d).not.toContain(key);
      expect(d).not.toContain('SIGNATURE');
      expect(d).not.toContain('sig=');
    }
  });

  it('never puts secrets in describe() or in URL errors', async () => {
    const secretUrl = 's3://b/p?accessKeyId=TEST-KEY-ID-QUERY&secretAccessKey=TopSecretFromQuery123&sessionToken=TokenFromQuery456';
    const loc = parseRepoUrl(secretUrl, {});
    expect(loc).toMatchObject({ credentials: { secretAccessKey: 'TopSecretFromQuery123' } });
    const store = await openStore(secretUrl, {});
    for (const text of [store.describe(), String(store), describeLocation(loc)]) {
      expect(text).not.toContain('TopSecretFromQuery123');
      expect(text).not.toContain('TokenFromQuery456');
    }
    await store.close();
    const err = (() => {
      try {
        parseRepoUrl(`${secretUrl}&bogus=1`, {});
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).toBeInstanceOf(StorageError);
    expect(err!.message).not.toContain('TopSecretFromQuery123');
    expect(() => parseRepoUrl('s3://TESTKEY:hunter2hunter2@b/p', {})).toThrow(StorageError);
    try {
      parseRepoUrl('s3://TESTKEY:hunter2hunter2@b/p', {});
    } catch (e) {
      expect((e as Error).message).not.toContain('hunter2');
    }
    expect(
      redactSecrets('GET https://a.blob.core.windows.net/c/x?sv=1&sig=abc%2Fdef AccountKey=zzz;', ['nothing']),
    ).toBe('GET https://a.blob.core.windows.net/c/x?sv=1&sig=*** AccountKey=***;');
  });
});

describe('driver loading', () => {
  async function openInChild(url: string, env: Record<string, string> = {}): Promise<{ out: unknown; sdk: string[]; ms: number }> {
    const trace = join(compiled.dir, `trace-${Date.now()}-${Math.random().toString(36).slice(2)}.txt`);
    const t0 = Date.now();
    const { stdout } = await run(
      process.execPath,
      [
        '--import',
        fileURLToPath(new URL('./fixtures/storage-trace-register.mjs', import.meta.url)),
        compiled.path('test/fixtures/storage-open.ts'),
        url,
      ],
      { env: { ...process.env, ...env, PGRUNBOOK_TRACE_FILE: trace } },
    );
    const ms = Date.now() - t0;
    const sdk = (await readFile(trace, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    return { out: JSON.parse(stdout.trim()), sdk, ms };
  }

  it('a file:// repository loads neither the AWS nor the Azure SDK', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgrunbook-load-'));
    try {
      const local = await openInChild(`file://${root}`);
      console.log(`[file] open + put + get in a fresh node process: ${local.ms} ms`);
      expect(local.out).toMatchObject({ kind: 'file', roundTrip: true });
      expect(local.sdk).toEqual([]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
    // The trace does see the SDKs when they are used.
    const s3 = await openInChild('s3://b/p?endpoint=http://127.0.0.1:9&region=us-east-1', { AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' });
    expect(s3.out).toMatchObject({ kind: 's3' });
    expect(s3.sdk.some((u) => u.includes('@aws-sdk/client-s3'))).toBe(true);
    expect(s3.sdk.some((u) => u.includes('@azure/'))).toBe(false);
    const az = await openInChild('azure://c1c/p?endpoint=http://127.0.0.1:9/devstoreaccount1', { AZURE_STORAGE_KEY: AZURITE_KEY });
    expect(az.out).toMatchObject({ kind: 'azure' });
    expect(az.sdk.some((u) => u.includes('@azure/storage-blob'))).toBe(true);
    expect(az.sdk.some((u) => u.includes('@aws-sdk/'))).toBe(false);
  });
});
