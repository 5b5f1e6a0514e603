// `pgrunbook catalog --verify` on a real repository: a sandbox cluster archiving through
// `pgrunbook wal-push`, a base backup and a dump taken by the real procedures, the CLI as a
// subprocess. One flipped byte in a WAL segment, a base backup object or a dump is exit 3
// naming the object; a missing segment is a gap; a killed backup is incomplete, not corrupt.
// `status` shows the last verify: its age and result, critical after a failing one.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli, serverWritableDir, tempDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { openRepository, type Repository } from '../src/repo/repository.js';
import { openProfileStore } from '../src/config/store.js';
import type { Catalog } from '../src/repo/catalog.js';
import type { VerifyResult } from '../src/repo/verify.js';
import { sha256Hex } from '../src/storage/checksum.js';
import { compressBuffer, decompressBuffer } from '../src/repo/codec.js';
import type { StatusReport } from '../src/monitoring/types.js';

const DAY = 86_400_000;

/** Flips one byte of a file in place (keeping its mtime); returns how to put it back. */
function flipByte(file: string, at?: number): () => void {
  const st = fs.statSync(file);
  const pos = at ?? Math.floor(st.size / 2);
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  try {
    fs.readSync(fd, b, 0, 1, pos);
    const original = b[0];
    fs.writeSync(fd, Buffer.from([original ^ 0xff]), 0, 1, pos);
    fs.utimesSync(file, st.atime, st.mtime);
    return () => {
      const f = fs.openSync(file, 'r+');
      try {
        fs.writeSync(f, Buffer.from([original]), 0, 1, pos);
      } finally {
        fs.closeSync(f);
      }
      fs.utimesSync(file, st.atime, st.mtime);
    };
  } finally {
    fs.closeSync(fd);
  }
}

describe('catalog --verify on a repository filled by wal-push, backup-base and backup-logical', () => {
  let work: string;
  let repoDir: string;
  let repoUrl: string;
  let stateEnv: Record<string, string>;
  let cluster: SandboxCluster;
  let repo: Repository;
  let conn: string[];
  let catalog: Catalog;

  const verify = async (args: string[] = [], env: Record<string, string> = {}) => {
    const r = await runCli(['catalog', '--verify', '--repo', repoUrl, ...args], { ...stateEnv, ...env });
    return r;
  };
  const verifyJson = async (args: string[] = []) => {
    const r = await verify([...args, '--json']);
    return { ...r, result: JSON.parse(r.stdout) as VerifyResult };
  };
  const statusJson = async (args: string[] = [], env: Record<string, string> = {}) => {
    const r = await runCli(['status', '--repo', repoUrl, ...conn, '--json', ...args], { ...stateEnv, ...env });
    return { ...r, report: JSON.parse(r.stdout) as StatusReport };
  };
  const lastVerifyCheck = (r: StatusReport) => r.checks.find((c) => c.id === 'last_verify')!;

  async function switchAndWaitArchived(): Promise<string> {
    await cluster.query(`CREATE TABLE IF NOT EXISTS churn (v text); INSERT INTO churn SELECT md5(g::text) FROM generate_series(1, 200) g`);
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(
      `${name} archived`,
      async () => {
        const [s] = await cluster.query<{ last_archived_wal: string | null; last_failed_wal: string | null }>(`SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver`);
        if (s.last_failed_wal === name) throw new Error(`archiving ${name} failed: ${fs.readFileSync(cluster.logFile, 'utf8').slice(-2000)}`);
        return s.last_archived_wal !== null && s.last_archived_wal >= name;
      },
      60_000,
    );
    return name;
  }

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-verify-');
    repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    stateEnv = { PGRUNBOOK_STATE_DIR: path.join(tempDir('pgrunbook-verify-state-'), 'state') };
    const wrapper = path.join(work, 'archive.sh');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' '${CLI}' wal-push --repo '${repoUrl}' "$1"\n`, { mode: 0o755 });
    cluster = await createSandboxCluster({ name: 'verify', settings: { archive_mode: 'on', archive_command: `${wrapper} %p`, wal_keep_size: '256MB' } });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    await cluster.query(`CREATE DATABASE app`);
    await cluster.query(`CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g`, [], 'app');
    await switchAndWaitArchived();
    const base = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], stateEnv);
    if (base.exitCode !== 0) throw new Error(`backup-base failed: ${base.stderr}${base.stdout.slice(-3000)}`);
    const dump = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', 'app', '--repo', repoUrl, '--json'], stateEnv);
    if (dump.exitCode !== 0) throw new Error(`backup-logical failed: ${dump.stderr}${dump.stdout.slice(-3000)}`);
    for (let i = 0; i < 3; i++) await switchAndWaitArchived();
    repo = await openRepository(repoUrl, {});
    catalog = await repo.catalog();
  });

  afterAll(async () => {
    await repo?.close();
    await cluster?.remove();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const fileOf = (key: string) => path.join(repoDir, ...key.split('/'));
  const baseMeta = () => catalog.baseBackups.find((b) => b.complete)!.meta!;
  const dumpKey = () => {
    const d = catalog.dumps.find((x) => x.complete)!;
    return `dumps/${d.database}/${d.id}/${d.meta!.object}`;
  };
  /** A segment in the middle of the archive (not the first, not the last). */
  const middleSegment = () => {
    const t = catalog.wal.timelines[0];
    const keys = fs.readdirSync(path.join(repoDir, 'wal')).filter((n) => /^[0-9A-F]{24}(\.gz|\.zst)?$/.test(n)).sort();
    expect(keys.length, `segments archived: ${keys.join(' ')}`).toBeGreaterThanOrEqual(3);
    expect(t.gaps).toEqual([]);
    return `wal/${keys[Math.floor(keys.length / 2)]}`;
  };

  it('an intact repository: exit 0, every object checked, progress on stderr, the result recorded as verify/last.json', async () => {
    expect(catalog.baseBackups.filter((b) => b.complete)).toHaveLength(1);
    expect(catalog.dumps.filter((d) => d.complete)).toHaveLength(1);

    const text = await verify();
    expect(text.exitCode, text.stdout + text.stderr).toBe(0);
    expect(text.stdout.split('\n')[0]).toBe(`OK: repository ${repoUrl} verified`);
    expect(text.stderr).toMatch(/^verify: \d+\/\d+ objects, .+ of .+$/m);
    const finalProgress = text.stderr.trim().split('\n').filter((l) => l.startsWith('verify: ')).at(-1)!;
    const m = /^verify: (\d+)\/(\d+) objects/.exec(finalProgress)!;
    expect(m[1]).toBe(m[2]);

    const { exitCode, result } = await verifyJson(['--parallel', '2']);
    expect(exitCode).toBe(0);
    expect(result.ok).toBe(true);
    expect(result.bad).toEqual([]);
    expect(result.parallel).toBe(2);
    expect(result.counts.baseBackups).toBe(1);
    expect(result.counts.dumps).toBe(1);
    expect(result.counts.walFiles).toBeGreaterThanOrEqual(4);
    expect(result.counts.unverified).toBe(0);
    // Every file of the base backup's data directory was checked against backup_manifest.
    expect(result.counts.manifestFiles).toBeGreaterThan(100);
    expect(result.counts.verified).toBe(result.counts.objects);
    expect(result.scope).toEqual({ all: true });

    const recorded = JSON.parse(fs.readFileSync(path.join(repoDir, 'verify', 'last.json'), 'utf8')) as VerifyResult;
    expect(recorded).toMatchObject({ ok: true, finishedAt: result.finishedAt, counts: result.counts });
  });

  it('status shows the last verify: intact and its age; a warning once older than --max-verify-age-days (flag or profile)', async () => {
    const { exitCode, report } = await statusJson();
    expect(exitCode, JSON.stringify(report.checks, null, 2)).toBe(0);
    const c = lastVerifyCheck(report);
    expect(c).toMatchObject({ status: 'ok', unit: 'seconds', warningAt: 8 * 86_400 });
    expect(c.summary).toMatch(/^intact \d+ s ago \(.+Z\): \d+ objects \(warning over 8 d\)$/);
    expect(report.measurements.verify).toMatchObject({ exists: true, ok: true, badObjects: 0 });

    const text = await runCli(['status', '--repo', repoUrl, ...conn], stateEnv);
    expect(text.stdout).toMatch(/✓ OK\s+last verify\s+intact \d+ s ago/);
    const prom = await runCli(['status', '--repo', repoUrl, ...conn, '--prometheus'], stateEnv);
    expect(prom.stdout).toMatch(/^pgrunbook_last_verify_ok 1$/m);
    expect(prom.stdout).toMatch(/^pgrunbook_last_verify_age_seconds \d+$/m);
    expect(prom.stdout).toMatch(/^pgrunbook_threshold_verify_age_seconds 691200$/m);

    // Nine days on (the backups' own alerts muted): the verify is stale.
    const later = new Date(Date.now() + 9 * DAY).toISOString();
    const mute = ['--max-dump-age-hours', '1000', '--max-base-backup-age-hours', '1000', '--max-restore-test-age-days', '1000', '--skip', 'server'];
    const stale = await statusJson([...mute, '--now', later]);
    expect(stale.exitCode, JSON.stringify(stale.report.checks, null, 2)).toBe(1);
    expect(lastVerifyCheck(stale.report)).toMatchObject({ status: 'warning', summary: expect.stringMatching(/^intact 9 d ago/) });
    expect(stale.report.headline).toMatch(/^WARNING: last verify 9 d old/);
    expect((await statusJson([...mute, '--now', later, '--max-verify-age-days', '30'])).exitCode).toBe(0);

    const configDir = tempDir('pgrunbook-verify-profile-');
    try {
      const store = await openProfileStore({ PGRUNBOOK_CONFIG_DIR: configDir });
      store.set('mon', { repo: repoUrl, monitoring: { maxVerifyAgeDays: 30, maxDumpAgeHours: 1000, maxBaseBackupAgeHours: 1000, maxRestoreTestAgeDays: 1000 } });
      const viaProfile = await runCli(['status', '--profile', 'mon', '--skip', 'server', '--now', later, '--json'], { ...stateEnv, PGRUNBOOK_CONFIG_DIR: configDir });
      expect(viaProfile.exitCode, viaProfile.stdout).toBe(0);
      expect(lastVerifyCheck(JSON.parse(viaProfile.stdout))).toMatchObject({ status: 'ok', warningAt: 30 * 86_400 });
    } finally {
      fs.rmSync(configDir, { recursive: true, force: true });
    }
  });

  it('one flipped byte in a WAL segment: exit 3 naming it; status turns critical and names it until a clean verify', async () => {
    const key = middleSegment();
    const restore = flipByte(fileOf(key));
    try {
      const text = await verify();
      expect(text.exitCode, text.stdout + text.stderr).toBe(3);
      expect(text.stdout.split('\n')[0]).toBe(`CORRUPT: 1 bad object in ${repoUrl}`);
      expect(text.stdout).toMatch(new RegExp(`^BAD ${key}: checksum-mismatch: SHA-256 of the stored bytes is [0-9a-f]{64}, wal-push recorded [0-9a-f]{64}$`, 'm'));
      const { exitCode, result } = await verifyJson();
      expect(exitCode).toBe(3);
      expect(result.ok).toBe(false);
      expect(result.bad).toEqual([{ key, problem: 'checksum-mismatch', detail: expect.any(String) }]);

      const { exitCode: statusExit, report } = await statusJson();
      expect(statusExit).toBe(2);
      expect(lastVerifyCheck(report)).toMatchObject({ status: 'critical', summary: expect.stringContaining(`${key} (checksum-mismatch)`) });
      expect(report.headline).toContain(`last verify found 1 bad object: ${key}`);
      const text2 = await runCli(['status', '--repo', repoUrl, ...conn], stateEnv);
      expect(text2.exitCode).toBe(2);
      expect(text2.stdout).toMatch(new RegExp(`✗ CRITICAL\\s+last verify\\s+CORRUPTION: .*${key}`));
      const prom = await runCli(['status', '--repo', repoUrl, ...conn, '--prometheus'], stateEnv);
      expect(prom.stdout).toMatch(/^pgrunbook_last_verify_ok 0$/m);
      expect(prom.stdout).toMatch(/^pgrunbook_last_verify_bad_objects 1$/m);
      expect(prom.stdout).toMatch(/^pgrunbook_check_status\{check="last_verify"\} 2$/m);
    } finally {
      restore();
    }
    expect((await verify()).exitCode).toBe(0);
    const { exitCode, report } = await statusJson();
    expect(exitCode).toBe(0);
    expect(lastVerifyCheck(report).status).toBe('ok');
  });

  it('one flipped byte in the base backup data, or in its backup_manifest: exit 3 naming the object', async () => {
    const meta = baseMeta();
    const dataKey = meta.objects!.data!.key;
    const manifestKey = meta.objects!.manifest!.key;
    let restore = flipByte(fileOf(dataKey));
    try {
      const { exitCode, result, stderr } = await verifyJson();
      expect(exitCode, stderr).toBe(3);
      expect(result.bad).toEqual([{ key: dataKey, problem: 'checksum-mismatch', detail: expect.stringMatching(/^SHA-256 is [0-9a-f]{64}, backup.json recorded [0-9a-f]{64}/) }]);
    } finally {
      restore();
    }
    restore = flipByte(fileOf(manifestKey), 40);
    try {
      const text = await verify();
      expect(text.exitCode).toBe(3);
      expect(text.stdout).toMatch(new RegExp(`^BAD ${manifestKey}: checksum-mismatch: `, 'm'));
      expect(text.stdout).not.toContain(`BAD ${dataKey}`);
    } finally {
      restore();
    }
    expect((await verify()).exitCode).toBe(0);
  });

  it('a file inside the base backup that differs from backup_manifest (the object itself matching backup.json): exit 3, corrupt, the file named', async () => {
    // As if the bytes had gone bad before they were stored: the tar is rewritten with one byte of
    // PG_VERSION changed, and backup.json records the new object's SHA-256, so only the check of
    // the tar's contents against backup_manifest can tell.
    const meta = baseMeta();
    const dataKey = meta.objects!.data!.key;
    const metaKey = `basebackups/${meta.id}/backup.json`;
    const originals = await Promise.all([dataKey, metaKey].map(async (key) => ({ key, info: (await repo.store.head(key))!, bytes: fs.readFileSync(fileOf(key)) })));
    try {
      const codec = meta.objects!.data!.compression;
      expect(codec).toBe('zstd');
      const tar = await decompressBuffer(codec, originals[0].bytes);
      let at = -1;
      for (let off = 0; off + 512 <= tar.length; off += 512) {
        const name = tar.subarray(off, off + 100).toString('latin1').replace(/\0.*$/s, '');
        if (name === 'PG_VERSION' || name === './PG_VERSION') {
          at = off + 512;
          break;
        }
      }
      expect(at, 'PG_VERSION in the tar').toBeGreaterThan(0);
      tar[at] ^= 0x01;
      const tampered = await compressBuffer(codec, tar);
      await repo.store.put(dataKey, tampered, { metadata: originals[0].info.metadata });
      const newMeta = { ...meta, objects: { ...meta.objects, data: { ...meta.objects!.data!, sha256: sha256Hex(tampered), size: tampered.length } } };
      const body = Buffer.from(`${JSON.stringify(newMeta, null, 2)}\n`);
      await repo.store.put(metaKey, body, { metadata: { sha256: sha256Hex(body) } });

      const { exitCode, result } = await verifyJson();
      expect(exitCode).toBe(3);
      expect(result.bad).toEqual([{ key: dataKey, problem: 'corrupt', detail: expect.stringMatching(/^1 file\(s\) do not match backup_manifest: PG_VERSION: (SHA256 [0-9a-f]{64}, backup_manifest says [0-9a-f]{64}|CRC32C [0-9a-f]{8}, backup_manifest says [0-9a-f]{8})$/) }]);
    } finally {
      for (const o of originals) await repo.store.put(o.key, o.bytes, { metadata: o.info.metadata });
    }
    expect((await verify()).exitCode).toBe(0);
  });

  it('one flipped byte in a dump: exit 3 naming it', async () => {
    const key = dumpKey();
    const restore = flipByte(fileOf(key));
    try {
      const text = await verify();
      expect(text.exitCode).toBe(3);
      expect(text.stdout).toMatch(new RegExp(`^BAD ${key}: checksum-mismatch: SHA-256 is [0-9a-f]{64}, dump.json recorded [0-9a-f]{64}$`, 'm'));
      expect(text.stdout.match(/^BAD /gm)).toHaveLength(1);
    } finally {
      restore();
    }
    expect((await verify()).exitCode).toBe(0);
  });

  it('a missing segment is a gap, a missing dump object is missing; a killed backup (no backup.json) is incomplete, not corrupt', async () => {
    // A backup killed before its commit: reported as incomplete, and the repository is still OK.
    await repo.putObject(repo.baseBackupKey('20260101T000000Z-killed', 'base.tar.gz'), Buffer.alloc(4096, 7));
    const incomplete = await verifyJson();
    expect(incomplete.exitCode, JSON.stringify(incomplete.result.bad)).toBe(0);
    expect(incomplete.result.incomplete).toEqual([expect.objectContaining({ kind: 'base-backup', id: '20260101T000000Z-killed', objects: 1 })]);
    expect(incomplete.result.counts.incomplete).toBe(1);
    const text = await verify();
    expect(text.stdout).toMatch(/^incomplete base-backup 20260101T000000Z-killed: no metadata file .*not corruption/m);
    await repo.deleteBaseBackup('20260101T000000Z-killed');

    const key = middleSegment();
    const aside = path.join(work, 'aside');
    fs.renameSync(fileOf(key), aside);
    try {
      const { exitCode, result } = await verifyJson();
      expect(exitCode).toBe(3);
      const name = key.slice('wal/'.length).replace(/\.(gz|zst)$/, '');
      expect(result.bad).toEqual([{ key: `wal/${name}`, problem: 'gap', detail: expect.stringMatching(new RegExp(`^timeline 1: ${name} missing \\(1 segment\\)`)) }]);
      expect(result.counts.gaps).toBe(1);
    } finally {
      fs.renameSync(aside, fileOf(key));
    }

    const dump = dumpKey();
    fs.renameSync(fileOf(dump), aside);
    try {
      const text2 = await verify();
      expect(text2.exitCode).toBe(3);
      expect(text2.stdout).toMatch(new RegExp(`^BAD ${dump}: missing: dump.json names it, but the repository does not have it$`, 'm'));
    } finally {
      fs.renameSync(aside, fileOf(dump));
    }
    expect((await verify()).exitCode).toBe(0);
  });

  it('--since reads only newer objects and is recorded; bad usage is exit 2; an unreadable repository is exit 1 and nothing is written', async () => {
    const since = new Date(Date.now() - 1000).toISOString();
    await switchAndWaitArchived();
    const { exitCode, result } = await verifyJson(['--since', since]);
    expect(exitCode).toBe(0);
    expect(result.scope).toEqual({ all: false, since });
    expect(result.counts.baseBackups).toBe(0);
    expect(result.counts.dumps).toBe(0);
    expect(result.counts.walFiles).toBeGreaterThanOrEqual(1);
    expect(result.counts.walFiles).toBeLessThan(catalog.wal.files);
    const recorded = JSON.parse(fs.readFileSync(path.join(repoDir, 'verify', 'last.json'), 'utf8')) as VerifyResult;
    expect(recorded.scope).toEqual({ all: false, since });
    const { report } = await statusJson();
    expect(lastVerifyCheck(report).summary).toContain(`objects since ${since}`);
    // A duration works too.
    expect((await verifyJson(['--since', '7d'])).result.counts.baseBackups).toBe(1);

    for (const args of [['--parallel', '0'], ['--parallel', 'many'], ['--since', 'last tuesday'], ['--bogus'], ['extra']]) {
      const r = await verify(args);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^pgrunbook catalog: .+\nhint: .*pgrunbook catalog/);
    }
    const noRepo = await runCli(['catalog', '--verify'], stateEnv);
    expect(noRepo.exitCode).toBe(2);
    expect(noRepo.stderr).toContain('no repository: pass --repo URL');

    const gone = path.join(work, 'not-mounted');
    const unreadable = await runCli(['catalog', '--verify', '--repo', `file://${gone}`], stateEnv);
    expect(unreadable.exitCode).toBe(1);
    expect(unreadable.stderr).toMatch(/directory .*not-mounted does not exist \(is the backup volume mounted\?/);
    expect(unreadable.stderr).toContain('Nothing was verified');
    expect(fs.existsSync(gone)).toBe(false);
  });
});

describe('catalog --verify on an S3 repository (s3rver)', () => {
  it('a real dump verifies; the same object overwritten with other bytes is exit 3 naming it', async () => {
    const { startS3rver } = await import('./helpers/storage-servers.js');
    const { sharedCluster } = await import('./helpers/cluster.js');
    const server = await startS3rver({ prefix: 'verify' });
    const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(tempDir('pgrunbook-verify-s3-'), 'state') };
    try {
      const cluster = sharedCluster();
      const db = await cluster.createDatabase('verify_s3');
      await cluster.query('CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 5000) g', [], db);
      const env = { ...server.env, ...stateEnv };
      const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', cluster.user];
      const dumped = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', db, '--repo', server.url, '--json'], env);
      expect(dumped.exitCode, dumped.stdout.slice(-2000)).toBe(0);
      const ok = await runCli(['catalog', '--verify', '--repo', server.url, '--json'], env);
      expect(ok.exitCode, ok.stdout + ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, counts: { dumps: 1, bad: 0 } });

      const repo = await openRepository(server.url, { ...process.env, ...server.env });
      let key: string;
      try {
        const c = await repo.catalog();
        const d = c.dumps.find((x) => x.database === db && x.complete)!;
        key = `dumps/${db}/${d.id}/${d.meta!.object}`;
        const { body } = await repo.store.get(key);
        const chunks: Buffer[] = [];
        for await (const ch of body) chunks.push(ch as Buffer);
        const bytes = Buffer.concat(chunks);
        bytes[Math.floor(bytes.length / 2)] ^= 0xff;
        await repo.store.put(key, bytes, { contentLength: bytes.length });
      } finally {
        await repo.close();
      }
      const bad = await runCli(['catalog', '--verify', '--repo', server.url], env);
      expect(bad.exitCode, bad.stdout + bad.stderr).toBe(3);
      expect(bad.stdout).toMatch(new RegExp(`^BAD ${key}: checksum-mismatch: `, 'm'));
      const status = await runCli(['status', '--repo', server.url, '--skip', 'base-backup,wal,server', '--databases', db, '--json'], env);
      expect(status.exitCode).toBe(2);
      expect(JSON.parse(status.stdout).checks.find((c: { id: string }) => c.id === 'last_verify')).toMatchObject({ status: 'critical', summary: expect.stringContaining(key) });
    } finally {
      await server.stop();
    }
  });
});

