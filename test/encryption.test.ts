// An encrypted repository end to end, through the real CLI: backup-base, backup-logical and
// WAL archiving (archive_command = wal-push --repo-key-file) into file:// and S3 (s3rver); no
// stored object holds a plaintext marker from the database; PITR, logical and table restore work
// from it; a wrong key is refused (exit 2) before anything is touched; one flipped byte is exit 3
// naming the object.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, serverOwnedRepoDir, serverWritableDir, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { openRepoStore } from '../src/repo/encryption.js';
import { readObject } from '../src/repo/objects.js';

const MARKER = `PGRB-SECRET-MARKER-${randomBytes(6).toString('hex')}`;
const PASSPHRASE = `correct horse battery ${randomBytes(8).toString('hex')}`;

/** Every file under `dir` (recursively) whose bytes contain `needle`, relative to dir. */
function filesContaining(dir: string, needle: string, skip: (rel: string) => boolean = () => false): { hits: string[]; scanned: number } {
  const hits: string[] = [];
  let scanned = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.isFile()) {
        const rel = path.relative(dir, full);
        if (skip(rel)) continue;
        scanned++;
        if (fs.readFileSync(full).includes(needle)) hits.push(rel);
      }
    }
  };
  walk(dir);
  return { hits, scanned };
}

async function keyFileFor(dir: string, name: string, passphrase: string): Promise<string> {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `${passphrase}\n`, { mode: 0o600 });
  if (isRoot()) {
    const pg = await lookupUser('postgres');
    fs.chownSync(file, pg.uid, pg.gid);
  }
  return file;
}

describe('encrypted repository', () => {
  let cluster: SandboxCluster;
  let s3: StorageServer;
  let work: string;
  let repoDir: string;
  let repoUrl: string;
  let keyFile: string;
  let conn: string[];
  let env: Record<string, string>;
  const key = () => ['--repo-key-file', keyFile];
  const q = (sql: string, db = 'app') => cluster.query<Record<string, unknown>>(sql, [], db);
  const switchAndArchive = async () => {
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, async () => {
      const [s] = await cluster.query<{ last: string | null }>(`SELECT last_archived_wal AS last FROM pg_stat_archiver`);
      return s.last !== null && s.last >= name;
    }, 60_000);
  };
  const ok = (r: { exitCode: number; stdout: string; stderr: string }) => expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-enc-');
    repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    keyFile = await keyFileFor(work, 'repo.key', PASSPHRASE);
    // WAL stored uncompressed: the marker would be there in clear without encryption (see the control below).
    const archive = walCommandLine('wal-push', repoUrl, { PGRUNBOOK_REPO_KEY_FILE: keyFile }).command.replace(/ %p$/, ' --compress none %p');
    expect(archive).toContain(`--repo-key-file ${keyFile}`);
    expect(archive).not.toContain(PASSPHRASE);
    cluster = await createSandboxCluster({ name: 'enc', settings: { archive_mode: 'on', archive_command: archive, wal_keep_size: '128MB' } });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    await cluster.query('CREATE DATABASE app');
    await q(`CREATE TABLE secrets (id int PRIMARY KEY, note text); INSERT INTO secrets SELECT g, '${MARKER} ' || g FROM generate_series(1, 200) g`);
    ok(await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, ...key(), '--checkpoint', 'fast', '--json'], env));
    ok(await runCli(['--procedure', 'backup-logical', ...conn, '--databases', 'app', '--repo', repoUrl, ...key(), '--json'], env));
    await q(`INSERT INTO secrets VALUES (1000, '${MARKER} after the backups')`);
    await switchAndArchive();
    s3 = await startS3rver();
  }, 240_000);

  afterAll(async () => {
    await cluster?.remove();
    await s3?.stop();
  });

  it('file://: no stored object but pgrunbook.json holds the marker; the record holds salt and check value, not the key', async () => {
    const { hits, scanned } = filesContaining(repoDir, MARKER);
    expect(hits).toEqual([]);
    const walFiles = fs.readdirSync(path.join(repoDir, 'wal')).filter((f) => !f.startsWith('.'));
    expect(walFiles.length).toBeGreaterThan(0);
    expect(scanned).toBeGreaterThan(walFiles.length + 3);
    const record = JSON.parse(fs.readFileSync(path.join(repoDir, 'pgrunbook.json'), 'utf8'));
    expect(record.encryption).toMatchObject({ cipher: 'aes-256-gcm', kdf: { name: 'scrypt' } });
    expect(fs.readFileSync(path.join(repoDir, 'pgrunbook.json'), 'utf8')).not.toContain(PASSPHRASE);

    // Control: through the key, the archived WAL does hold the marker (the scan above could fail).
    const store = await openRepoStore(repoUrl, { PGRUNBOOK_REPO_KEY_FILE: keyFile });
    try {
      let found = false;
      for await (const e of store.list('wal/')) if ((await readObject(store, e.key)).includes(MARKER)) found = true;
      expect(found).toBe(true);
    } finally {
      await store.close();
    }

    const cat = await runCli(['catalog', '--repo', repoUrl, ...key(), '--verify', '--json'], env);
    expect(cat.exitCode, cat.stdout + cat.stderr).toBe(0);
    expect(cat.stdout + cat.stderr).not.toContain(PASSPHRASE);
  });

  it('refuses a wrong key or no key with exit 2, touching neither the server nor its data directory', async () => {
    const wrong = await keyFileFor(work, 'wrong.key', 'not the passphrase');
    const before = fs.readdirSync(cluster.dataDir).sort();
    const pgVersion = fs.statSync(path.join(cluster.dataDir, 'PG_VERSION')).mtimeMs;
    const r = await runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--repo-key-file', wrong, '--target', 'latest', '--confirm', path.basename(cluster.dataDir), '--json'], env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(2);
    expect(r.stderr).toMatch(/does not open the repository/);
    expect(r.stderr).toMatch(/hint: .*--repo-key-file/);
    expect(fs.readdirSync(cluster.dataDir).sort()).toEqual(before);
    expect(fs.statSync(path.join(cluster.dataDir, 'PG_VERSION')).mtimeMs).toBe(pgVersion);
    expect(await q('SELECT count(*)::int AS n FROM secrets')).toEqual([{ n: 201 }]); // still up, same data

    const none = await runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', 'latest', '--confirm', path.basename(cluster.dataDir), '--json'], env);
    expect(none.exitCode, none.stdout + none.stderr).toBe(2);
    expect(none.stdout + none.stderr).toMatch(/is encrypted and no key was given/);
    expect(fs.readdirSync(cluster.dataDir).sort()).toEqual(before);
    expect(await q('SELECT count(*)::int AS n FROM secrets')).toEqual([{ n: 201 }]);

    const cat = await runCli(['catalog', '--repo', repoUrl], env);
    expect(cat.exitCode).toBe(2);
    expect(cat.stderr).toMatch(/hint: give its key with --repo-key-file/);
    // The passphrase in the environment (not argv) works the same as the file, and a wrong one is refused the same way.
    expect((await runCli(['catalog', '--repo', repoUrl], { ...env, PGRUNBOOK_REPO_KEY: PASSPHRASE })).exitCode).toBe(0);
    expect((await runCli(['catalog', '--repo', repoUrl], { ...env, PGRUNBOOK_REPO_KEY: 'nope' })).exitCode).toBe(2);
    // And a key for an unencrypted repository.
    const plain = await serverOwnedRepoDir(work, 'plain');
    fs.writeFileSync(path.join(plain, 'pgrunbook.json'), JSON.stringify({ formatVersion: 1, systemIdentifier: '1', createdAt: new Date().toISOString() }));
    const unenc = await runCli(['catalog', '--repo', `file://${plain}`, ...key()], env);
    expect(unenc.exitCode).toBe(2);
    expect(unenc.stderr).toMatch(/is not encrypted/);
  });

  it('logical restore and table restore from the encrypted dump', async () => {
    const workDir = tempDir('enc-work-');
    const lr = await runCli(['--procedure', 'logical-restore', ...conn, '--database', 'app', '--new-database', 'app_back', '--repo', repoUrl, ...key(), '--work-dir', workDir, '--json'], env);
    ok(lr);
    expect(await q(`SELECT count(*)::int AS n FROM secrets WHERE note LIKE '${MARKER}%'`, 'app_back')).toEqual([{ n: 200 }]);
    await q('DROP TABLE secrets', 'app_back');
    const tr = await runCli(['--procedure', 'table-restore', ...conn, '--database', 'app', '--table', 'public.secrets', '--new-table', 'secrets_back', '--repo', repoUrl, ...key(), '--work-dir', workDir, '--json'], env);
    ok(tr);
    expect(await q('SELECT count(*)::int AS n FROM secrets_back')).toEqual([{ n: 200 }]);
  }, 180_000);

  it('one flipped byte is exit 3 naming the object', async () => {
    const copy = path.join(work, 'copy');
    fs.cpSync(repoDir, copy, { recursive: true });
    const dumpDir = path.join(copy, 'dumps', 'app');
    const id = fs.readdirSync(dumpDir)[0];
    const data = fs.readdirSync(path.join(dumpDir, id)).find((f) => f !== 'dump.json' && !f.startsWith('.'))!;
    const file = path.join(dumpDir, id, data);
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    fs.writeFileSync(file, bytes);
    const objectKey = `dumps/app/${id}/${data}`;
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', 'app', '--new-database', 'app_flip', '--repo', `file://${copy}`, ...key(), '--work-dir', tempDir('enc-flip-'), '--json'], env);
    expect(r.exitCode, r.stdout.slice(-2000) + r.stderr).toBe(3);
    expect(r.stdout + r.stderr).toContain(objectKey);
    const v = await runCli(['catalog', '--verify', '--repo', `file://${copy}`, ...key()], env);
    expect(v.exitCode, v.stdout + v.stderr).toBe(3);
    expect(v.stdout + v.stderr).toContain(objectKey);
  }, 120_000);

  it('S3: backup-base, backup-logical and wal-push store no plaintext; a logical restore reads it back', async () => {
    const url = s3.url;
    const s3env = { ...env, ...s3.env };
    ok(await runCli(['--procedure', 'backup-base', ...conn, '--repo', url, ...key(), '--checkpoint', 'fast', '--json'], s3env));
    ok(await runCli(['--procedure', 'backup-logical', ...conn, '--databases', 'app', '--repo', url, ...key(), '--json'], s3env));
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS name`);
    const segments = fs.readdirSync(path.join(cluster.dataDir, 'pg_wal')).filter((f) => /^[0-9A-F]{24}$/.test(f) && f <= name).sort().slice(-3);
    for (const seg of segments) {
      const w = await runCli(['wal-push', '--repo', url, ...key(), '--compress', 'none', path.join(cluster.dataDir, 'pg_wal', seg)], s3.env);
      expect(w.exitCode, w.stderr).toBe(0);
    }
    const { hits, scanned } = filesContaining(s3.directory, MARKER, (rel) => rel.endsWith('pgrunbook.json') || rel.includes('pgrunbook.json'));
    expect(hits).toEqual([]);
    expect(scanned).toBeGreaterThan(segments.length + 3);
    const store = await openRepoStore(url, { ...s3.env, PGRUNBOOK_REPO_KEY_FILE: keyFile });
    try {
      let found = false;
      for await (const e of store.list('wal/')) if ((await readObject(store, e.key)).includes(MARKER)) found = true;
      expect(found).toBe(true);
    } finally {
      await store.close();
    }
    const lr = await runCli(['--procedure', 'logical-restore', ...conn, '--database', 'app', '--new-database', 'app_s3', '--repo', url, ...key(), '--work-dir', tempDir('enc-s3-'), '--json'], s3env);
    ok(lr);
    expect(await q(`SELECT count(*)::int AS n FROM secrets WHERE note LIKE '${MARKER}%'`, 'app_s3')).toEqual([{ n: 201 }]);
  }, 240_000);

  it('PITR to latest from the encrypted base backup and WAL (restore_command with --repo-key-file)', async () => {
    await q(`INSERT INTO secrets VALUES (2000, 'last row')`);
    await switchAndArchive();
    const r = await runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, ...key(), '--target', 'latest', '--target-action', 'promote', '--confirm', path.basename(cluster.dataDir), '--json'], env);
    ok(r);
    expect(r.stdout + r.stderr).not.toContain(PASSPHRASE);
    expect(await q('SELECT count(*)::int AS n FROM secrets')).toEqual([{ n: 202 }]);
    expect(await q('SELECT note FROM secrets WHERE id = 2000')).toEqual([{ note: 'last row' }]);
    for (const f of fs.readdirSync(cluster.dataDir).filter((n) => n.endsWith('.conf') || n.endsWith('.signal'))) {
      expect(fs.readFileSync(path.join(cluster.dataDir, f), 'utf8')).not.toContain(PASSPHRASE);
    }
  }, 240_000);
});
