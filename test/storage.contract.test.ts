// One contract, three drivers: the local directory, S3 (s3rver) and Azure Blob (Azurite), the
// servers being real HTTP servers started here as child processes. The contract itself is
// test/helpers/store-contract.ts (also run for an in-memory driver, storage-fake-backend.test.ts).
// Large transfers and memory are measured in a child process running compiled JavaScript.

import { execFile } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../src/storage/types.js';
import { backoffDelay, isTransientError, withRetry } from '../src/storage/retry.js';
import { describeLocation, openStore, parseRepoUrl, redactSecrets } from '../src/storage/url.js';
import { compiledFixtures, objectStoreContract, type Harness } from './helpers/store-contract.js';
import {
  AZURITE_ACCOUNT,
  AZURITE_KEY,
  S3RVER_KEY_ID,
  S3RVER_SECRET,
  startAzurite,
  startS3rver,
} from './helpers/storage-servers.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

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
    rawNames: (dir) => readdir(join(root, dir)).catch(() => []),
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

for (const { name, harness } of drivers) objectStoreContract(name, harness);

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
    const compiled = await compiledFixtures();
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
