// Real storage servers for tests: s3rver and Azurite as child processes on 127.0.0.1.
//
// Each start picks a free port (listen on 127.0.0.1:0) unless one is given (to restart a killed
// server at the same address), waits until the server answers HTTP (with a deadline), and creates
// the bucket/container. Every child is SIGKILLed when the test process exits, whatever happened,
// and the data directories this helper created are removed then (not at stop/kill: a restart on
// the same directory must find its data).

import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);

export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
export const S3RVER_KEY_ID = 'S3RVER';
export const S3RVER_SECRET = 'S3RVER';

export interface StorageServer {
  /** Repository URL of the bucket/container with `prefix` (no secrets in it). */
  url: string;
  /** Environment the store needs (credentials). */
  env: Record<string, string>;
  port: number;
  /** s3rver's --directory or Azurite's --location. */
  directory: string;
  bucket: string;
  endpoint: string;
  child: ChildProcess;
  /** SIGTERM, then wait for the exit (SIGKILL after a deadline). */
  stop(): Promise<void>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
}

export interface ServerOptions {
  port?: number;
  /** Reuse a data directory (restart after a kill). */
  directory?: string;
  bucket?: string;
  prefix?: string;
}

const live = new Set<ChildProcess>();
const ownedDirs = new Set<string>();
process.on('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  for (const d of ownedDirs) {
    try {
      rmSync(d, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      /* best effort */
    }
  }
});

async function dataDir(given: string | undefined, kind: string): Promise<string> {
  if (given) return given;
  const dir = await mkdtemp(join(tmpdir(), `pgrunbook-${kind}-`));
  ownedDirs.add(dir);
  return dir;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves with the status code of one GET, or rejects on a connection error. */
function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** Polls `url` until the server answers at all, or the child dies, or the deadline passes. */
async function waitForHttp(url: string, child: ChildProcess, output: () => string, deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited (${child.exitCode ?? child.signalCode}) before answering:\n${output()}`);
    }
    try {
      await httpStatus(url, 2000);
      return;
    } catch (err) {
      lastErr = err;
    }
    // Poll interval between connection attempts, not a synchronisation point.
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server at ${url} did not answer within ${deadlineMs} ms (${String(lastErr)}):\n${output()}`);
}

function spawnServer(args: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-8000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', () => live.delete(child));
  return { child, output: () => out };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function stopper(child: ChildProcess): Pick<StorageServer, 'stop' | 'kill'> {
  const kill = async (): Promise<void> => {
    const done = exited(child);
    child.kill('SIGKILL');
    await done;
  };
  const stop = async (): Promise<void> => {
    const done = exited(child);
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(timer);
  };
  return { stop, kill };
}

export async function startS3rver(opts: ServerOptions = {}): Promise<StorageServer> {
  const port = opts.port ?? (await freePort());
  const directory = await dataDir(opts.directory, 's3rver');
  const bucket = opts.bucket ?? 'pgrunbook-test';
  const bin = require.resolve('s3rver/bin/s3rver.js');
  const { child, output } = spawnServer([
    // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in its
    // legacy provider: without it every paginated listing fails with HTTP 500.
    '--openssl-legacy-provider',
    bin,
    '--directory',
    directory,
    '--address',
    '127.0.0.1',
    '--port',
    String(port),
    '--silent',
    '--configure-bucket',
    bucket,
  ]);
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${endpoint}/`, child, output);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const prefix = opts.prefix ?? 'repo';
  return {
    url: `s3://${bucket}/${prefix}?endpoint=${endpoint}&region=us-east-1&forcePathStyle=true`,
    env: { AWS_ACCESS_KEY_ID: S3RVER_KEY_ID, AWS_SECRET_ACCESS_KEY: S3RVER_SECRET },
    port,
    directory,
    bucket,
    endpoint,
    child,
    ...stopper(child),
  };
}

export async function startAzurite(opts: ServerOptions = {}): Promise<StorageServer> {
  const port = opts.port ?? (await freePort());
  const directory = await dataDir(opts.directory, 'azurite');
  const container = opts.bucket ?? 'pgrunbook-test';
  const bin = require.resolve('azurite/dist/src/blob/main.js');
  const { child, output } = spawnServer([
    bin,
    '--blobHost',
    '127.0.0.1',
    '--blobPort',
    String(port),
    '--location',
    directory,
    '--silent',
    '--skipApiVersionCheck',
    '--disableTelemetry',
  ]);
  const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  try {
    await waitForHttp(`${endpoint}?comp=list`, child, output);
    // Idempotent: after a SIGKILL, Azurite may have lost a container created less than its
    // metadata autosave interval ago.
    const { BlobServiceClient, StorageSharedKeyCredential } = await import('@azure/storage-blob');
    const svc = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY));
    await svc.getContainerClient(container).createIfNotExists();
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const prefix = opts.prefix ?? 'repo';
  return {
    url: `azure://${container}/${prefix}?endpoint=${endpoint}`,
    env: { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: AZURITE_KEY },
    port,
    directory,
    bucket: container,
    endpoint,
    child,
    ...stopper(child),
  };
}
