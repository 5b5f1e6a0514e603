// backup-base for real: pg_basebackup of sandbox clusters streamed into a file:// repository and
// into S3 (s3rver), through the built CLI. Each backup is taken back out of the repository, passes
// pg_verifybackup and starts as a cluster that holds the rows written before it (and not those
// written after). A backup interrupted by SIGINT or by the S3 server dying is never listed as
// complete, and the next run succeeds; a cluster that cannot be backed up is refused before
// anything is written.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { decompressStream } from '../src/repo/codec.js';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { createSandboxCluster, findFreePort, type SandboxCluster } from '../src/postgres/sandbox.js';
import { findPgBinary } from '../src/postgres/binaries.js';
import { isRoot, lookupUser, runCommand, type OsIds } from '../src/postgres/osuser.js';
import { pgCtlStart, pgCtlStop } from '../src/postgres/pgctl.js';
import { withPg } from '../src/postgres/client.js';
import { openRepository } from '../src/repo/repository.js';
import { readCatalog, type BaseBackupEntry, type BaseBackupMeta } from '../src/repo/catalog.js';
import { parseLsn } from '../src/repo/walnames.js';
import { Crc32c, ManifestError, ManifestReader, manifestChecksummer, nativeCrc32c } from '../src/postgres/formats/backup_manifest.js';
import { startPgBasebackup } from '../src/postgres/programs/pg_basebackup.js';
import { manifestChecksums, StreamCheck } from '../src/services/base-backup-check.js';
import { TarFormatError, TarReader, type TarEntry } from '../src/postgres/formats/tar.js';
import { createHash } from 'node:crypto';

/** Directories this file made: removed at the end (repositories hold backups of whole clusters). */
const made: string[] = [];
const madeDir = (prefix: string) => {
  const dir = tempDir(prefix);
  made.push(dir);
  return dir;
};
const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(madeDir('pgrunbook-bb-state-'), 'state') };
let pgIds: OsIds | undefined;

const connFlags = (c: SandboxCluster, user = 'postgres') => ['--host', c.host, '--port', String(c.port), '--user', user];
const summaryOf = (stdout: string) => jsonLines(stdout).at(-1)!.summary;

/** A directory the postgres OS user owns (the tests run as root, PostgreSQL must not). */
function postgresDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (pgIds) fs.chownSync(dir, pgIds.uid, pgIds.gid);
  fs.chmodSync(dir, 0o700);
  return dir;
}

function fileRepo(): string {
  return `file://${path.join(madeDir('pgrunbook-bb-repo-'), 'repo')}`;
}

async function backupsIn(url: string, env: Record<string, string> = {}): Promise<BaseBackupEntry[]> {
  const repo = await openRepository(url, { ...process.env, ...env });
  try {
    return (await readCatalog(repo.store)).baseBackups;
  } finally {
    await repo.close();
  }
}

async function keysIn(url: string, env: Record<string, string> = {}): Promise<string[]> {
  const repo = await openRepository(url, { ...process.env, ...env });
  try {
    const keys: string[] = [];
    for await (const e of repo.store.list('')) keys.push(e.key);
    return keys;
  } finally {
    await repo.close();
  }
}

/** Reads a running CLI's JSON lines as they come. */
function followJson(child: ResultPromise) {
  let buf = '';
  const events: Record<string, any>[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) events.push(JSON.parse(line));
    }
  });
  return events;
}

/**
 * What an operator does with a base backup: take base.tar.zst out of the repository (checksum
 * checked), unpack it as postgres into an empty directory, put backup_manifest beside it, run
 * pg_verifybackup (which also parses the WAL in pg_wal/), then start it on a port and socket of its
 * own and ask it for `sql`.
 */
async function restoreAndQuery(url: string, env: Record<string, string>, meta: BaseBackupMeta, sql: string, database: string): Promise<{ rows: any[]; verifyOutput: string; systemIdentifier: string }> {
  const base = postgresDir('pgrunbook-bb-restore-');
  const dataDir = path.join(base, 'data');
  const sockDir = postgresDir('pgrb-sock-');
  fs.mkdirSync(dataDir, { mode: 0o700 });
  if (pgIds) fs.chownSync(dataDir, pgIds.uid, pgIds.gid);
  const repo = await openRepository(url, { ...process.env, ...env });
  let started = false;
  try {
    const data = meta.objects!.data!;
    const tar = execa('tar', ['-xf', '-', '-C', dataDir], { stdin: 'pipe', reject: false, ...(pgIds ? { uid: pgIds.uid, gid: pgIds.gid } : {}) });
    await pipeline(await repo.getVerified(data.key, data.sha256), decompressStream(data.compression), tar.stdin!);
    const untar = await tar;
    expect(untar.exitCode, String(untar.stderr)).toBe(0);
    const man = meta.objects!.manifest!;
    const manifestPath = path.join(dataDir, 'backup_manifest');
    await pipeline(await repo.getVerified(man.key, man.sha256), fs.createWriteStream(manifestPath));
    if (pgIds) fs.chownSync(manifestPath, pgIds.uid, pgIds.gid);

    const verify = await runCommand(await findPgBinary('pg_verifybackup'), [dataDir], { as: pgIds });
    expect(verify.exitCode, verify.failure).toBe(0);

    const port = await findFreePort();
    fs.rmSync(path.join(dataDir, 'postmaster.pid'), { force: true });
    fs.appendFileSync(
      path.join(dataDir, 'postgresql.auto.conf'),
      `\n# restore test\nport = ${port}\nunix_socket_directories = '${sockDir}'\nlisten_addresses = ''\narchive_mode = off\n`,
    );
    await pgCtlStart({ pgdata: dataDir, logFile: path.join(base, 'server.log'), timeoutSec: 60 });
    started = true;
    const conn = { host: sockDir, port, user: 'postgres', database };
    const rows = await withPg(conn, async (c) => (await c.query(sql)).rows);
    const [{ system_identifier }] = await withPg(conn, async (c) => (await c.query(`SELECT system_identifier::text FROM pg_control_system()`)).rows);
    return { rows, verifyOutput: verify.stdout, systemIdentifier: system_identifier };
  } finally {
    if (started) await pgCtlStop({ pgdata: dataDir, mode: 'immediate', timeoutSec: 30 }).catch(() => {});
    await repo.close();
    fs.rmSync(base, { recursive: true, force: true });
    fs.rmSync(sockDir, { recursive: true, force: true });
  }
}

async function systemIdentifierOf(c: SandboxCluster): Promise<string> {
  const [{ id }] = await c.query<{ id: string }>(`SELECT system_identifier::text AS id FROM pg_control_system()`);
  return id;
}

/** Checks what every good run must leave: one complete backup, with consistent metadata. */
function expectCompleteBackup(entries: BaseBackupEntry[], systemIdentifier: string): BaseBackupMeta {
  const complete = entries.filter((e) => e.complete);
  expect(complete).toHaveLength(1);
  const meta = complete[0].meta!;
  expect(meta.startLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  expect(meta.stopLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  expect(parseLsn(meta.stopLsn) > parseLsn(meta.startLsn)).toBe(true);
  expect(meta.timeline).toBe(1);
  expect(meta.includesWal).toBe(true);
  expect(meta.systemIdentifier).toBe(systemIdentifier);
  expect(meta.serverVersion).toMatch(/^15\./);
  expect(Date.parse(meta.stopTime)).toBeGreaterThanOrEqual(Date.parse(meta.startTime));
  expect(meta.objects?.data?.sha256).toMatch(/^[0-9a-f]{64}$/);
  expect(meta.objects?.manifest?.sha256).toMatch(/^[0-9a-f]{64}$/);
  expect(meta.size).toBe(meta.objects!.data!.size + meta.objects!.manifest!.size);
  expect(complete[0].objects).toBe(3); // base.tar.zst, backup_manifest, backup.json
  return meta;
}

beforeAll(async () => {
  if (isRoot()) pgIds = await lookupUser('postgres');
});

afterAll(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

describe('backup-base of a small cluster', () => {
  let small: SandboxCluster;
  let s3: StorageServer;
  const db = 'app';

  beforeAll(async () => {
    [small, s3] = await Promise.all([createSandboxCluster({ name: 'bb-small' }), startS3rver({ prefix: 'bb-small' })]);
    await small.query(`CREATE DATABASE ${db}`);
    await small.query(`CREATE TABLE marker (id int PRIMARY KEY, note text); INSERT INTO marker VALUES (1, 'before the backup'), (2, 'also before')`, [], db);
  });

  afterAll(async () => {
    await small?.remove();
    await s3?.stop();
    if (s3) made.push(s3.directory);
  });

  it('file://, through the CLI: listed complete with its LSNs; restored, it passes pg_verifybackup and starts with the rows written before it', async () => {
    const url = fileRepo();
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(small), '--repo', url, '--checkpoint', 'fast', '--json'], stateEnv);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const events = jsonLines(r.stdout);
    const summary = events.at(-1)!.summary;
    expect(summary.steps.map((s: any) => [s.id, s.status])).toEqual([
      ['preflight', 'ok'],
      ['backup', 'ok'],
      ['verify', 'ok'],
      ['commit', 'ok'],
    ]);
    const checks = Object.fromEntries(summary.checks.map((c: any) => [c.name, c.ok]));
    expect(checks).toMatchObject({ 'files against backup_manifest': true, 'WAL inside the backup': true, 'base.tar.zst': true, backup_manifest: true });
    const progress = events.filter((e) => e.type === 'progress' && e.stepId === 'backup');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((e) => e.unit === 'bytes' && (e.total === undefined || e.total >= e.done))).toBe(true);

    // Written after the backup: must not be in the restored cluster.
    await small.query(`INSERT INTO marker VALUES (3, 'after the backup')`, [], db);

    const catalog = await runCli(['catalog', '--repo', url, '--json'], stateEnv);
    expect(catalog.exitCode, catalog.stderr).toBe(0);
    const listed = JSON.parse(catalog.stdout);
    const meta = expectCompleteBackup(listed.baseBackups, await systemIdentifierOf(small));
    expect(listed.windows).toEqual([expect.objectContaining({ backupId: meta.id, fromLsn: meta.stopLsn })]);
    expect(listed.windows[0].unusable).toBeUndefined();

    const restored = await restoreAndQuery(url, {}, meta, `SELECT id, note FROM marker ORDER BY id`, db);
    expect(restored.verifyOutput).toContain('backup successfully verified');
    expect(restored.rows).toEqual([
      { id: 1, note: 'before the backup' },
      { id: 2, note: 'also before' },
    ]);
    expect(restored.systemIdentifier).toBe(meta.systemIdentifier);
  });

  it('S3, through the CLI, with gzip as before zstd (PGRUNBOOK_COMPRESSION=gzip): the backup restores and starts', async () => {
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(small), '--repo', s3.url, '--checkpoint', 'fast', '--json'], { ...stateEnv, ...s3.env, PGRUNBOOK_COMPRESSION: 'gzip' });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const meta = expectCompleteBackup(await backupsIn(s3.url, s3.env), await systemIdentifierOf(small));
    expect(meta.objects!.data!.key).toMatch(/\/base\.tar\.gz$/);
    expect(meta.objects!.data!.compression).toBe('gzip');
    const restored = await restoreAndQuery(s3.url, s3.env, meta, `SELECT count(*)::int AS n FROM marker WHERE note = 'before the backup'`, db);
    expect(restored.verifyOutput).toContain('backup successfully verified');
    expect(restored.rows).toEqual([{ n: 1 }]);
  });

  it('--dry-run: the plan (pg_basebackup command, objects), and nothing written', async () => {
    const url = fileRepo();
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(small), '--repo', url, '--dry-run'], stateEnv);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain('pg_basebackup --pgdata=- --format=tar --wal-method=fetch --checkpoint=spread');
    expect(r.stdout).toContain('basebackups/<id>/base.tar.zst');
    expect(r.stdout).toContain('basebackups/<id>/backup.json');
    expect(fs.existsSync(new URL(url).pathname) ? await keysIn(url) : []).toEqual([]);
  });

  it('a role without REPLICATION is refused up front, saying what to grant; nothing is written', async () => {
    await small.query(`CREATE ROLE no_repl LOGIN`);
    const url = fileRepo();
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(small, 'no_repl'), '--dbname', 'postgres', '--repo', url, '--json'], stateEnv);
    expect(r.exitCode, r.stdout).toBe(3);
    const summary = summaryOf(r.stdout);
    expect(summary.steps.map((s: any) => s.status)).toEqual(['failed', 'pending', 'pending', 'pending']);
    expect(summary.error).toContain('role "no_repl" has neither REPLICATION nor SUPERUSER');
    expect(summary.error).toContain('ALTER ROLE no_repl REPLICATION');
    expect(await keysIn(url)).toEqual([]);
  });

  it('a tablespace outside the data directory is refused up front, naming it; nothing is written', async () => {
    const location = postgresDir('pgrunbook-bb-ts-');
    await small.query(`CREATE TABLESPACE bb_elsewhere LOCATION '${location}'`);
    try {
      const url = fileRepo();
      const r = await runCli(['--procedure', 'backup-base', ...connFlags(small), '--repo', url, '--json'], stateEnv);
      expect(r.exitCode, r.stdout).toBe(3);
      expect(summaryOf(r.stdout).error).toContain(`tablespaces: the cluster has tablespaces outside the data directory: bb_elsewhere (${location})`);
      expect(await keysIn(url)).toEqual([]);
    } finally {
      await small.query(`DROP TABLESPACE bb_elsewhere`);
      fs.rmSync(location, { recursive: true, force: true });
    }
  });

  it('an unreachable repository stops the run before pg_basebackup starts: exit 1, naming it', async () => {
    const port = await findFreePort();
    const url = `s3://nowhere/prefix?endpoint=http://127.0.0.1:${port}&region=us-east-1&forcePathStyle=true&maxAttempts=1`;
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(small), '--repo', url, '--json'], { ...stateEnv, ...s3.env });
    expect(r.exitCode, r.stdout).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(summary.steps.map((st: any) => st.status)).toEqual(['failed', 'pending', 'pending', 'pending']);
    expect(summary.error).toContain(`the repository s3://nowhere/prefix?endpoint=http://127.0.0.1:${port}`);
    expect(summary.error).toContain('is not reachable');
  });

  it('the check made as the tar streams (one pass) catches a file changed on the way by its manifest checksum, and a file missing', async () => {
    // A real pg_basebackup tar with the manifest checksums the backup step asks for (CRC-32C in hardware, else SHA-256).
    const bb = await startPgBasebackup({ connection: small.connection(), label: 'stream-check-test', checkpoint: 'fast', manifestChecksums: manifestChecksums(), env: process.env });
    const chunks: Buffer[] = [];
    for await (const c of bb.stdout!) chunks.push(c as Buffer);
    expect((await bb.done).ok).toBe(true);
    const tar = Buffer.concat(chunks);
    const checkOf = (bytes: Buffer, skip?: string) => {
      const check = new StreamCheck();
      const reader = new TarReader((entry) => (entry.name === skip ? undefined : check.sink(entry)));
      for (let off = 0; off < bytes.length; off += 65536) reader.write(bytes.subarray(off, off + 65536));
      reader.end();
      return check.result(bytes.length, 16 * 1024 * 1024);
    };
    const clean = checkOf(tar);
    expect(clean.manifestOk).toBe(true);
    expect(clean.problemCount, clean.problems.join('; ')).toBe(0);
    expect(clean.checksummed).toBe(clean.listed);
    expect(clean.missingWal).toEqual([]);
    expect(clean.neededWal.length).toBeGreaterThan(0);

    // "15" -> "25" in PG_VERSION: same size, only the checksum can tell.
    const tampered = Buffer.from(tar);
    let at = -1;
    for (let off = 0; off + 512 <= tampered.length; off += 512) {
      if (tampered.subarray(off, off + 11).toString('latin1') === 'PG_VERSION\0') {
        at = off + 512;
        break;
      }
    }
    expect(at).toBeGreaterThan(0);
    tampered[at] = tampered[at] === 0x31 ? 0x32 : 0x31;
    const bad = checkOf(tampered);
    expect(bad.problemCount).toBe(1);
    expect(bad.problems[0]).toMatch(/^PG_VERSION: (SHA256 [0-9a-f]{64}, backup_manifest says [0-9a-f]{64}|CRC32C [0-9a-f]{8}, backup_manifest says [0-9a-f]{8})$/);

    const missing = checkOf(tar, 'global/pg_control');
    expect(missing.problems).toContain('global/pg_control: in backup_manifest but not in the tar');
  });

  // Last in this block: it restarts the cluster with wal_level = minimal.
  it('wal_level = minimal is refused up front, saying what to set; nothing is written', async () => {
    await small.query(`ALTER SYSTEM SET wal_level = 'minimal'`);
    await small.query(`ALTER SYSTEM SET max_wal_senders = 0`);
    await small.stop();
    await small.start();
    const url = fileRepo();
    const r = await runCli(['--procedure', 'backup-base', ...connFlags(small), '--repo', url, '--json'], stateEnv);
    expect(r.exitCode, r.stdout).toBe(3);
    const summary = summaryOf(r.stdout);
    expect(summary.error).toContain(`wal_level is "minimal"; a base backup needs "replica"`);
    expect(summary.error).toContain(`ALTER SYSTEM SET wal_level = 'replica'`);
    expect(summary.error).toContain('max_wal_senders is 0');
    expect(await keysIn(url)).toEqual([]);
  });
});

describe('backup-base of a ~100 MB cluster, interrupted', () => {
  let big: SandboxCluster;
  let s3: StorageServer;

  beforeAll(async () => {
    [big, s3] = await Promise.all([createSandboxCluster({ name: 'bb-big' }), startS3rver({ prefix: 'bb-big' })]);
    // md5 text compresses to about half: the upload takes several 5 MiB parts.
    await big.query(`CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a FROM generate_series(1, 900000) g; CHECKPOINT`);
  });

  afterAll(async () => {
    await big?.remove();
    await s3?.stop();
    if (s3) made.push(s3.directory);
  });

  it('SIGINT during the backup: exit 130, pg_basebackup stopped, nothing left in the repository', async () => {
    const [{ n }] = await big.query<{ n: string }>(`SELECT pg_database_size('postgres') AS n`);
    expect(Number(n)).toBeGreaterThan(85 * 1024 * 1024);
    const url = fileRepo();
    const tmpBefore = fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('pgrunbook-basebackup-'));
    const child = startCli(['--procedure', 'backup-base', ...connFlags(big), '--repo', url, '--checkpoint', 'fast', '--json'], stateEnv);
    const events = followJson(child);
    await waitFor('10 MiB streamed', () => events.some((e) => e.type === 'progress' && e.stepId === 'backup' && e.done >= 10 * 1024 * 1024), 60_000);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    const summary = events.at(-1)!.summary;
    expect(summary.status).toBe('interrupted');
    expect(summary.steps.find((s: any) => s.id === 'backup').status).toBe('interrupted');
    expect(summary.hint).toContain('--resume');

    expect((await backupsIn(url)).filter((b) => b.complete)).toEqual([]);
    expect(await keysIn(url)).toEqual([]);
    expect(fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('pgrunbook-basebackup-'))).toEqual(tmpBefore);
    // The server sees its WAL sender go: pg_basebackup was stopped, not left running.
    await waitFor('the backup\'s WAL sender to go', async () => (await big.query(`SELECT count(*)::int AS n FROM pg_stat_replication`))[0].n === 0, 15_000);
  });

  it('the server ends the backup half-way (walsender terminated): exit 1 with pg_basebackup\'s own error, nothing left in the repository', async () => {
    const url = fileRepo();
    const child = startCli(['--procedure', 'backup-base', ...connFlags(big), '--repo', url, '--checkpoint', 'fast', '--json'], stateEnv);
    const events = followJson(child);
    await waitFor('10 MiB streamed', () => events.some((e) => e.type === 'progress' && e.stepId === 'backup' && e.done >= 10 * 1024 * 1024), 60_000);
    await big.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_replication`);
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(1);
    const summary = events.at(-1)!.summary;
    expect(summary.error).toMatch(/pg_basebackup failed \(exit code 1\): .*(terminat|unexpected|connection)/is);
    expect(summary.error).toContain('Nothing was committed');
    expect(await keysIn(url)).toEqual([]);
  });

  it('S3 server killed mid-upload: exit 1 with a clear message, nothing complete; after a restart the next run succeeds', async () => {
    const child = startCli(['--procedure', 'backup-base', ...connFlags(big), '--repo', s3.url, '--checkpoint', 'fast', '--json'], { ...stateEnv, ...s3.env });
    const events = followJson(child);
    await waitFor(
      '20 MiB streamed into the upload',
      () => events.some((e) => e.type === 'progress' && e.stepId === 'backup' && e.done >= 20 * 1024 * 1024),
      60_000,
    );
    await s3.kill();
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(1);
    const summary = events.at(-1)!.summary;
    expect(summary.steps.find((s: any) => s.id === 'backup').status).toBe('failed');
    expect(summary.error).toMatch(/storing the backup failed: S3 put 'basebackups\/[\w-]+\/base.tar.zst' in s3:\/\/.*ECONNREFUSED/);
    expect(summary.error).toContain('pg_basebackup was stopped; nothing was committed (no backup.json)');
    expect(summary.hint).toContain(`--resume ${summary.runId}`);

    s3 = await startS3rver({ directory: s3.directory, port: s3.port, prefix: 'bb-big' });
    const afterKill = await backupsIn(s3.url, s3.env);
    expect(afterKill.filter((b) => b.complete)).toEqual([]);

    // The run's own advice: --resume. It removes what the failed attempt left, then backs up anew.
    // (--resume takes the parameters from the journal; the connection and the repository are given again.)
    const again = await runCli(['--resume', summary.runId, ...connFlags(big), '--repo', s3.url, '--json'], { ...stateEnv, ...s3.env });
    expect(again.exitCode, again.stderr + again.stdout).toBe(0);
    const entries = await backupsIn(s3.url, s3.env);
    expect(entries.filter((b) => !b.complete)).toEqual([]);
    const meta = expectCompleteBackup(entries, await systemIdentifierOf(big));
    expect(afterKill.map((b) => b.id)).not.toContain(meta.id);
    expect(meta.uncompressedSize).toBeGreaterThan(85 * 1024 * 1024);
    expect(meta.objects!.data!.size).toBeGreaterThan(15 * 1024 * 1024); // several multipart parts
  });
});

describe('formats read on the fly', () => {
  it('TarReader follows GNU tar output (long names, empty files, a symlink) fed one byte at a time, and catches truncation and corruption', async () => {
    const dir = madeDir('pgrunbook-bb-tar-');
    const long = `${'d'.repeat(60)}/${'f'.repeat(70)}.dat`;
    fs.mkdirSync(path.join(dir, 'src', 'd'.repeat(60)), { recursive: true });
    fs.writeFileSync(path.join(dir, 'src', long), Buffer.alloc(1000, 7));
    fs.writeFileSync(path.join(dir, 'src', 'empty'), '');
    fs.writeFileSync(path.join(dir, 'src', 'odd'), 'x'.repeat(513));
    fs.symlinkSync('odd', path.join(dir, 'src', 'link'));
    const archive = Buffer.from((await execa('tar', ['-cf', '-', '-C', path.join(dir, 'src'), '.'], { encoding: 'buffer' })).stdout);

    const seen: (TarEntry & { bytes: number; crc?: string })[] = [];
    const reader = new TarReader((e) => {
      const rec = { ...e, bytes: 0, crc: undefined as string | undefined };
      seen.push(rec);
      const crc = new Crc32c();
      return { data: (c) => { rec.bytes += c.length; crc.update(c); }, end: () => { rec.crc = crc.digestHex(); } };
    });
    for (let i = 0; i < archive.length; i++) reader.write(archive.subarray(i, i + 1));
    reader.end();
    expect(reader.complete).toBe(true);
    const byName = Object.fromEntries(seen.map((e) => [e.name, e]));
    expect(byName[long]).toMatchObject({ type: 'file', size: 1000, bytes: 1000 });
    expect(byName[long].crc).toBe(new Crc32c().update(Buffer.alloc(1000, 7)).digestHex());
    expect(byName.empty).toMatchObject({ type: 'file', size: 0, bytes: 0 });
    expect(byName.odd).toMatchObject({ type: 'file', size: 513, bytes: 513 });
    expect(byName.link).toMatchObject({ type: 'symlink', linkName: 'odd' });
    expect(byName['d'.repeat(60)]).toMatchObject({ type: 'directory' });

    const truncated = new TarReader(() => undefined);
    truncated.write(archive.subarray(0, 3000));
    expect(() => truncated.end()).toThrow(TarFormatError);
    const corrupt = Buffer.from(archive);
    corrupt[5] ^= 0x20; // inside the first header's name
    expect(() => new TarReader(() => undefined).write(corrupt)).toThrow(/wrong checksum/);
  });

  it('CRC-32C matches the standard check value, and ManifestReader rejects a manifest whose contents changed', () => {
    expect(new Crc32c().update(Buffer.from('1234')).update(Buffer.from('56789')).digestHex()).toBe('839206e3'); // 0xE3069283, little-endian
    // The hardware one (the addon) gives the same digests, in pieces too.
    expect(nativeCrc32c()).toBeDefined();
    const hw = manifestChecksummer('CRC32C')!;
    hw.update(Buffer.from('1234'));
    hw.update(Buffer.from('56789'));
    expect(hw.digestHex()).toBe('839206e3');
    const big = Buffer.alloc(3_000_001, 0).map((_, i) => (i * 31) & 0xff);
    const js = new Crc32c();
    const native = manifestChecksummer('CRC32C')!;
    for (let off = 0; off < big.length; off += 65537) {
      js.update(Buffer.from(big.subarray(off, off + 65537)));
      native.update(Buffer.from(big.subarray(off, off + 65537)));
    }
    expect(native.digestHex()).toBe(js.digestHex());
    const body =
      '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-24 16:24:12 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "8a744722" }\n],\n' +
      '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n';
    const manifest = (text: string) => `${text}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`;
    const ok = new ManifestReader({ keepFiles: true });
    ok.write(Buffer.from(manifest(body)));
    expect(ok.end()).toMatchObject({ version: 1, fileCount: 1, totalSize: 3, walRanges: [{ timeline: 1, startLsn: '0/2000028', endLsn: '0/2000100' }] });
    expect(ok.files.get('PG_VERSION')).toMatchObject({ size: 3, algorithm: 'CRC32C', checksum: '8a744722' });
    expect(new Crc32c().update(Buffer.from('15\n')).digestHex()).toBe('8a744722');

    const bad = new ManifestReader();
    bad.write(Buffer.from(manifest(body.replace('"Size": 3', '"Size": 4'))));
    expect(() => bad.end()).toThrow(ManifestError);
  });
});
