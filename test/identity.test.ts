// A repository belongs to one cluster, backups never collide, a full disk is said clearly. Real
// sandbox clusters, the built CLI as a subprocess, file:// and S3 (s3rver) repositories.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, jsonLines, runCli, startCli, tempDir } from './helpers/cli.js';
import { startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot } from '../src/postgres/osuser.js';
import { openStore } from '../src/storage/url.js';
import { readCatalog } from '../src/repo/catalog.js';
import { IDENTITY_KEY, readRepositoryIdentity, systemIdentifierFromSegment } from '../src/repo/identity.js';
import { acquireLock, LockHeldError, lockKey, readLock } from '../src/repo/lock.js';
import { waitFor } from './helpers/wait.js';
import type { ObjectStore } from '../src/storage/types.js';

const made: string[] = [];
const madeDir = (prefix: string) => {
  const d = tempDir(prefix);
  made.push(d);
  return d;
};
const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(madeDir('pgrunbook-id-state-'), 'state') };
const connFlags = (c: SandboxCluster) => ['--host', c.host, '--port', String(c.port), '--user', 'postgres'];
const summaryOf = (stdout: string) => jsonLines(stdout).at(-1)!.summary;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const BASE_LOCK = lockKey('backup-base');

let A: SandboxCluster;
let B: SandboxCluster;
let sysA: string;
let sysB: string;
let s3: StorageServer;

async function sysidOf(c: SandboxCluster): Promise<string> {
  const [{ id }] = await c.query<{ id: string }>(`SELECT system_identifier::text AS id FROM pg_control_system()`);
  return id;
}

/** A finished WAL segment of `c`, copied out of pg_wal. */
async function segmentOf(c: SandboxCluster): Promise<string> {
  await c.query(`CREATE TABLE IF NOT EXISTS w (v text); INSERT INTO w SELECT md5(g::text) FROM generate_series(1, 1000) g`);
  const [{ name }] = await c.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
  const copy = path.join(madeDir('pgrunbook-id-seg-'), name);
  fs.copyFileSync(path.join(c.dataDir, 'pg_wal', name), copy);
  return copy;
}

async function withStore<T>(url: string, env: Record<string, string>, fn: (s: ObjectStore) => Promise<T>): Promise<T> {
  const store = await openStore(url, { ...process.env, ...env });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const keysOf = (url: string, env: Record<string, string>) =>
  withStore(url, env, async (s) => {
    const keys: string[] = [];
    for await (const e of s.list('')) keys.push(e.key);
    return keys;
  });

async function readAll(store: ObjectStore, key: string): Promise<Buffer> {
  const { body } = await store.get(key);
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function wal(args: string[], env: Record<string, string>) {
  return execa('node', [CLI, ...args], { reject: false, extendEnv: false, env: cleanEnv(env), stdin: 'ignore' }).then((r) => ({
    exitCode: r.exitCode ?? -1,
    stderr: String(r.stderr),
  }));
}

beforeAll(async () => {
  [A, B, s3] = await Promise.all([
    createSandboxCluster({ name: 'id-a', settings: { wal_keep_size: '256MB' } }),
    createSandboxCluster({ name: 'id-b', settings: { wal_keep_size: '256MB' } }),
    startS3rver({ prefix: 'id' }),
  ]);
  [sysA, sysB] = await Promise.all([sysidOf(A), sysidOf(B)]);
  expect(sysA).not.toBe(sysB);
});

afterAll(async () => {
  await A?.remove();
  await B?.remove();
  await s3?.stop();
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

describe('the WAL page header', () => {
  it('systemIdentifierFromSegment reads the cluster of a real segment, and nothing from bytes without a long header', async () => {
    const seg = fs.readFileSync(await segmentOf(A));
    const id = systemIdentifierFromSegment(seg);
    expect(id).toEqual({ systemIdentifier: sysA, segmentSize: 16 * 1024 * 1024, pageMagic: expect.any(Number) });
    expect(id!.pageMagic).toBe(0xd110); // PostgreSQL 15's XLOG_PAGE_MAGIC
    expect(systemIdentifierFromSegment(Buffer.alloc(1024 * 1024, 7))).toBeUndefined();
    expect(systemIdentifierFromSegment(seg.subarray(0, 30))).toBeUndefined();
    const short = Buffer.from(seg.subarray(0, 64));
    short.writeUInt16LE(short.readUInt16LE(2) & ~0x0002, 2); // a short header carries no identifier
    expect(systemIdentifierFromSegment(short)).toBeUndefined();
  });
});

describe.each(['file', 's3'] as const)('one repository, one cluster (%s)', (kind) => {
  let url: string;
  let env: Record<string, string>;

  beforeAll(() => {
    if (kind === 'file') {
      url = `file://${path.join(madeDir('pgrunbook-id-repo-'), 'repo')}`;
      env = {};
    } else {
      url = s3.url.replace('/id?', '/id-owner?');
      env = s3.env;
    }
  });

  it("the first backup adopts the repository: A's system identifier, major version and WAL segment size in pgrunbook.json", async () => {
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(A), '--repo', url, '--checkpoint', 'fast', '--json'], { ...stateEnv, ...env });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const record = await withStore(url, env, readRepositoryIdentity);
    expect(record).toMatchObject({ formatVersion: 1, systemIdentifier: sysA, pgMajor: 15, walSegmentSize: 16 * 1024 * 1024 });
    expect(Date.parse(record!.createdAt)).toBeGreaterThan(Date.now() - 10 * 60_000);
    // The lock is gone with the run.
    expect(await keysOf(url, env)).not.toContain(BASE_LOCK);
    // A's own WAL goes in.
    const push = await wal(['wal-push', '--repo', url, await segmentOf(A)], env);
    expect(push.exitCode, push.stderr).toBe(0);
  });

  it("cluster B's backup-base is refused before anything is written: exit 1, both system identifiers named", async () => {
    const before = await keysOf(url, env);
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(B), '--repo', url, '--checkpoint', 'fast', '--json'], { ...stateEnv, ...env });
    expect(r.exitCode, r.stdout).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(summary.steps.map((s: any) => s.status)).toEqual(['failed', 'pending', 'pending', 'pending']);
    expect(summary.error).toContain(sysA);
    expect(summary.error).toContain(sysB);
    expect(summary.error).toContain('use another --repo');
    expect(await keysOf(url, env)).toEqual(before);
    const catalog = await withStore(url, env, readCatalog);
    expect(catalog.baseBackups.filter((b) => b.complete).map((b) => b.meta!.systemIdentifier)).toEqual([sysA]);
  });

  it("a WAL segment of B pushed into A's repository: exit 1, both identifiers named, nothing stored", async () => {
    const before = await keysOf(url, env);
    const seg = await segmentOf(B);
    const r = await wal(['wal-push', '--repo', url, seg], env);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(sysA);
    expect(r.stderr).toContain(sysB);
    expect(r.stderr).toContain('use another --repo');
    expect(await keysOf(url, env)).toEqual(before);
    expect(before.some((k) => k.startsWith(`wal/${path.basename(seg)}`))).toBe(false);
  });

  it("cluster B's backup-logical is refused too; A's records the system identifier and database OID in dump.json", async () => {
    const before = await keysOf(url, env);
    const refused = await runCli(['--procedure', 'backup-logical', ...connFlags(B), '--databases', 'postgres', '--repo', url, '--json'], { ...stateEnv, ...env });
    expect(refused.exitCode, refused.stdout).toBe(1);
    const error = summaryOf(refused.stdout).error as string;
    expect(error).toContain(sysA);
    expect(error).toContain(sysB);
    expect(await keysOf(url, env)).toEqual(before);

    const ok = await runCli(['--procedure', 'backup-logical', ...connFlags(A), '--databases', 'postgres', '--repo', url, '--json'], { ...stateEnv, ...env });
    expect(ok.exitCode, ok.stdout).toBe(0);
    const [{ oid }] = await A.query<{ oid: string }>(`SELECT oid::text FROM pg_database WHERE datname = 'postgres'`);
    const dumps = (await withStore(url, env, readCatalog)).dumps.filter((d) => d.complete);
    expect(dumps).toHaveLength(1);
    expect(dumps[0].meta).toMatchObject({ systemIdentifier: sysA, databaseOid: Number(oid) });
  });
});

describe('adoption by wal-push', () => {
  it('a repository without a record (made before records existed) is adopted by the first segment pushed; history files are not checked', async () => {
    const dir = path.join(madeDir('pgrunbook-id-adopt-'), 'repo');
    const url = `file://${dir}`;
    // An "old" repository: WAL already there, no record.
    fs.mkdirSync(path.join(dir, 'wal'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'wal', '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    const hist = path.join(madeDir('pgrunbook-id-hist-'), '00000003.history');
    fs.writeFileSync(hist, '1\t0/3000000\tno recovery target specified\n2\t0/5000000\tbefore 2026\n');
    const h = await wal(['wal-push', '--repo', url, hist], {});
    expect(h.exitCode, h.stderr).toBe(0);
    expect(fs.existsSync(path.join(dir, IDENTITY_KEY))).toBe(false);

    const r = await wal(['wal-push', '--repo', url, await segmentOf(B)], {});
    expect(r.exitCode, r.stderr).toBe(0);
    const record = JSON.parse(fs.readFileSync(path.join(dir, IDENTITY_KEY), 'utf8'));
    expect(record).toMatchObject({ formatVersion: 1, systemIdentifier: sysB, walSegmentSize: 16 * 1024 * 1024 });
    // From now on, A is refused; the record is unchanged.
    const a = await wal(['wal-push', '--repo', url, await segmentOf(A)], {});
    expect(a.exitCode).toBe(1);
    expect(a.stderr).toContain(`belongs to the cluster with system identifier ${sysB}`);
    expect(JSON.parse(fs.readFileSync(path.join(dir, IDENTITY_KEY), 'utf8'))).toEqual(record);
  });
});

describe.each(['file', 's3'] as const)('backups never collide (%s)', (kind) => {
  const repoUrl = (name: string) => (kind === 'file' ? `file://${path.join(madeDir('pgrunbook-id-lock-'), 'repo')}` : s3.url.replace('/id?', `/${name}?`));
  const envOf = () => (kind === 'file' ? {} : s3.env);

  it('two backup-base runs started together: never two exit 0 over one id; one may exit 75 naming the holder; every committed object matches its SHA-256', async () => {
    const url = repoUrl('together');
    const env = envOf();
    const args = ['--procedure', 'backup-base', ...connFlags(A), '--repo', url, '--checkpoint', 'fast', '--json'];
    const [r1, r2] = await Promise.all([startCli(args, { ...stateEnv, ...env }), startCli(args, { ...stateEnv, ...env })]);
    const runs = [r1, r2].map((r) => ({ exitCode: r.exitCode, summary: summaryOf(String(r.stdout)), events: jsonLines(String(r.stdout)) }));
    for (const run of runs) expect([0, 75], JSON.stringify(run.summary)).toContain(run.exitCode);
    const ok = runs.filter((r) => r.exitCode === 0);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    for (const locked of runs.filter((r) => r.exitCode === 75)) {
      expect(locked.summary.error).toContain(BASE_LOCK);
      expect(locked.summary.error).toMatch(/locked .* by run backup-base-\S+ .*pid \d+/);
      expect(locked.summary.error).toContain(os.hostname());
      expect(locked.summary.steps.find((s: any) => s.id === 'backup').status).toBe('failed');
    }
    const catalog = await withStore(url, env, readCatalog);
    const complete = catalog.baseBackups.filter((b) => b.complete);
    expect(complete.length).toBe(ok.length);
    expect(new Set(complete.map((b) => b.id)).size).toBe(complete.length);
    expect(catalog.baseBackups.filter((b) => !b.complete)).toEqual([]);
    await withStore(url, env, async (store) => {
      for (const b of complete) {
        for (const o of [b.meta!.objects!.data!, b.meta!.objects!.manifest!]) {
          const bytes = await readAll(store, o.key);
          expect(sha(bytes), o.key).toBe(o.sha256);
          expect(bytes.length).toBe(o.size);
        }
      }
      expect(await store.head(BASE_LOCK)).toBeUndefined();
    });
    // Every backup listed complete passes a full verify (manifest, checksums, WAL it needs).
    const verified = await runCli(['catalog', '--verify', '--repo', url], { ...stateEnv, ...env });
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
  });

  it('a lock held by a live run refuses with exit 75 naming it, writing nothing; an expired one is taken over with a warning', async () => {
    const url = repoUrl('held');
    const env = envOf();
    const now = Date.now();
    const holder = {
      owner: 'someone',
      host: 'db-backup-host-7',
      pid: 4242,
      runId: 'backup-base-20261124-031500-abcd',
      procedure: 'backup-base',
      token: 'f'.repeat(32),
      acquiredAt: new Date(now - 60_000).toISOString(),
      refreshedAt: new Date(now - 10_000).toISOString(),
      expiresAt: new Date(now + 10 * 60_000).toISOString(),
    };
    await withStore(url, env, (s) => s.put(BASE_LOCK, Buffer.from(JSON.stringify(holder))));
    const held = await runCli(['--procedure', 'backup-base', ...connFlags(A), '--repo', url, '--checkpoint', 'fast', '--json'], { ...stateEnv, ...env });
    expect(held.exitCode, held.stdout).toBe(75);
    const summary = summaryOf(held.stdout);
    expect(summary.error).toContain('db-backup-host-7');
    expect(summary.error).toContain('pid 4242');
    expect(summary.error).toContain(holder.runId);
    expect(summary.hint).toContain('taken over automatically after');
    expect(await keysOf(url, env)).toEqual([BASE_LOCK]);

    // The holder died: its lock expired a minute ago.
    const stale = { ...holder, expiresAt: new Date(now - 60_000).toISOString() };
    await withStore(url, env, (s) => s.put(BASE_LOCK, Buffer.from(JSON.stringify(stale))));
    const taken = await runCli(['--procedure', 'backup-base', ...connFlags(A), '--repo', url, '--checkpoint', 'fast', '--json'], { ...stateEnv, ...env });
    expect(taken.exitCode, taken.stdout).toBe(0);
    const warnings = jsonLines(taken.stdout).filter((e) => e.type === 'log' && e.level === 'warn').map((e) => e.message);
    expect(warnings.some((m: string) => m.includes('taking over the expired lock') && m.includes('db-backup-host-7'))).toBe(true);
    const keys = await keysOf(url, env);
    expect(keys).not.toContain(BASE_LOCK);
    expect(keys.filter((k) => k.endsWith('/backup.json'))).toHaveLength(1);
  });
});

describe('the lock itself (file://)', () => {
  it('is refreshed while held, released at the end; a lock of an earlier attempt of the same run whose process is gone is taken over at once', async () => {
    const url = `file://${path.join(madeDir('pgrunbook-id-lockunit-'), 'repo')}`;
    await withStore(url, {}, async (store) => {
      const lock = await acquireLock(store, BASE_LOCK, { runId: 'run-1', procedure: 'backup-base', ttlMs: 4000 });
      const first = (await readLock(store, BASE_LOCK))!;
      expect(first.runId).toBe('run-1');
      lock.startRefreshing(300);
      await waitFor('the lock to be refreshed', async () => Date.parse((await readLock(store, BASE_LOCK))!.expiresAt) > Date.parse(first.expiresAt), 5000);
      // A second taker is refused while it is fresh, and told who holds it.
      const refused = await acquireLock(store, BASE_LOCK, { runId: 'run-2' }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(LockHeldError);
      expect((refused as LockHeldError).procedureExitCode).toBe(75);
      expect((refused as LockHeldError).message).toContain('run run-1 (backup-base)');
      await lock.release();
      expect(await store.head(BASE_LOCK)).toBeUndefined();

      // Left behind by a process of run-3 that is gone (not expired): run-3 resumed takes it over.
      const dead = execa('true');
      await dead;
      const left = { ...first, runId: 'run-3', pid: dead.pid!, token: 'e'.repeat(32), expiresAt: new Date(Date.now() + 600_000).toISOString() };
      await store.put(BASE_LOCK, Buffer.from(JSON.stringify(left)));
      const other = await acquireLock(store, BASE_LOCK, { runId: 'run-4' }).catch((e: unknown) => e);
      expect(other).toBeInstanceOf(LockHeldError);
      const warnings: string[] = [];
      const resumed = await acquireLock(store, BASE_LOCK, { runId: 'run-3', onWarn: (m) => warnings.push(m) });
      expect(warnings.join('\n')).toContain('left by an earlier attempt of this run');
      expect((await readLock(store, BASE_LOCK))!.token).toBe(resumed.token);
      await resumed.release();
    });
  });
});

describe('a repository on a file system that fills up', () => {
  const mountDir = tempDir('pgrunbook-id-tmpfs-');
  let mounted = false;
  const root = isRoot();

  afterAll(async () => {
    if (mounted) await execa('umount', [mountDir], { reject: false });
    fs.rmSync(mountDir, { recursive: true, force: true });
  });

  // Mounting a tmpfs needs root; as another user there is no small file system to fill.
  it.skipIf(!root)('backup-base into a 20 MB tmpfs: exit 1, the message names the path and the space, nothing left behind', async () => {
    const m = await execa('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mountDir], { reject: false });
    expect(m.exitCode, String(m.stderr)).toBe(0);
    mounted = true;
    // About 70 MB of md5 text: gzip -1 leaves well over 20 MB.
    await A.query(`CREATE TABLE IF NOT EXISTS filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a FROM generate_series(1, 700000) g; CHECKPOINT`);
    const url = `file://${mountDir}`;
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(A), '--repo', url, '--checkpoint', 'fast', '--json'], stateEnv);
    expect(r.exitCode, r.stdout).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(summary.error).not.toContain('The operation was aborted');
    expect(summary.error).toContain('no space left');
    expect(summary.error).toContain(mountDir);
    expect(summary.error).toMatch(/written/);
    expect(summary.error).toMatch(/free there when it failed/);
    expect(summary.error).toContain('nothing was committed');
    // Nothing left: no object, no temporary file, no lock.
    const files = (fs.readdirSync(mountDir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(mountDir, f)).isFile());
    expect(files).toEqual([]);
  });
});
