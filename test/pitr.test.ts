// Point-in-time recovery for real: a sandbox cluster archiving through wal-push, base
// backups taken by the backup-base procedure, and restores by the pitr procedure through
// the real CLI to each kind of target.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { openStore } from '../src/storage/url.js';
import { readCatalog } from '../src/repo/catalog.js';
import { walKey } from '../src/repo/walarchive.js';

describe('pitr', () => {
  let cluster: SandboxCluster;
  let repoUrl: string;
  let env: Record<string, string>;
  let conn: string[];
  const marks: Record<string, string> = {};
  const backups: string[] = [];

  const rows = async () => (await cluster.query<{ v: number }>('SELECT v FROM events ORDER BY v', [], 'app')).map((r) => r.v);
  const switchAndArchive = async () => {
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, async () => {
      const [s] = await cluster.query<{ last: string | null }>(`SELECT last_archived_wal AS last FROM pg_stat_archiver`);
      return s.last !== null && s.last >= name;
    }, 60_000);
  };
  const backup = async (extraEnv: Record<string, string> = {}) => {
    const r = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], { ...env, ...extraEnv });
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    const store = await openStore(repoUrl);
    const catalog = await readCatalog(store);
    await store.close();
    const ids = catalog.baseBackups.filter((b) => b.complete).map((b) => b.id);
    backups.push(ids.find((id) => !backups.includes(id))!);
  };
  const pitr = (target: string, extra: string[] = []) =>
    runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', target, '--confirm', 'data', '--json', ...extra], env);

  beforeAll(async () => {
    const work = await serverWritableDir('pgrunbook-pitr-');
    const repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    cluster = await createSandboxCluster({
      name: 'pitr',
      settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '256MB' },
    });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    await cluster.query('CREATE DATABASE app');
    await cluster.query('CREATE TABLE events (v int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 300000) g', [], 'app');
    // The older backup as the previous version wrote them (gzip): it must still restore.
    await backup({ PGRUNBOOK_COMPRESSION: 'gzip' });

    // Each target sits between two committed rows.
    const one = (v: number) => cluster.query<{ xid: string }>(`INSERT INTO events (v) VALUES (${v}) RETURNING pg_current_xact_id()::text AS xid`, [], 'app');
    await one(1);
    await cluster.query('SELECT pg_sleep(0.05)');
    marks.time = (await cluster.query<{ t: Date }>('SELECT clock_timestamp() AS t'))[0].t.toISOString();
    await cluster.query('SELECT pg_sleep(0.05)');
    marks.xid = (await one(2))[0].xid;
    await one(3);
    await cluster.query(`SELECT pg_create_restore_point('after-3')`);
    await one(4);
    marks.lsn = (await cluster.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))[0].l;
    await one(5);
    await switchAndArchive();
    await backup();
    await one(6);
    await switchAndArchive();
  });

  afterAll(async () => {
    await cluster?.remove();
  });

  it('a time between two commits restores the first and not the second, from the older of two backups (gzip, as the previous version wrote)', async () => {
    const r = await pitr(marks.time);
    expect(r.exitCode, r.stdout.slice(-4000)).toBe(0);
    const end = jsonLines(r.stdout).at(-1)!.summary;
    const chosen = end.checks.find((c: { name: string }) => c.name === 'target inside a recovery window');
    expect(chosen.detail).toContain(`from base backup ${backups[0]}`);
    const read = end.checks.find((c: { name: string }) => c.name === 'base backup checksums');
    expect(read.detail).toContain(`basebackups/${backups[0]}/base.tar.gz`);
    expect(await rows()).toEqual([1]);
    const [{ paused }] = await cluster.query<{ paused: string }>('SELECT pg_get_wal_replay_pause_state() AS paused');
    expect(paused).toBe('paused');
  });

  it('an xid target restores through that transaction', async () => {
    const r = await pitr(`xid:${marks.xid}`);
    expect(r.exitCode, r.stdout.slice(-4000)).toBe(0);
    expect(await rows()).toEqual([1, 2]);
  });

  it('an LSN target restores what committed before it (zstd); killed while the preflight unpacks, nothing is touched and it resumes', async () => {
    const before = await cluster.query<{ t: Date }>('SELECT pg_postmaster_start_time() AS t');
    const child = startCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', `lsn:${marks.lsn}`, '--confirm', 'data', '--json'], env);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const staging = () => fs.readdirSync(path.dirname(cluster.dataDir)).filter((f) => f.startsWith(`${path.basename(cluster.dataDir)}.pgrunbook-staged-`));
    await waitFor('the preflight to unpack into its staging directory', () => out.includes('beside the data directory, checking its checksums') && staging().length > 0, 60_000);
    child.kill('SIGINT');
    const first = await child;
    expect(first.exitCode, `${out.slice(-2500)}\n${String(first.stderr).slice(-1500)}`).toBe(130);
    const runId = jsonLines(out)[0].runId as string;
    // Nothing touched: the same postmaster runs on the same data directory; the staging directory is gone.
    const after = await cluster.query<{ t: Date }>('SELECT pg_postmaster_start_time() AS t');
    expect(after[0].t.getTime()).toBe(before[0].t.getTime());
    expect(staging()).toEqual([]);

    const resumed = await runCli(['--resume', runId, ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--json'], env);
    expect(resumed.exitCode, resumed.stdout.slice(-4000)).toBe(0);
    expect(await rows()).toEqual([1, 2, 3, 4]);
  });

  it('a named restore point, paused, then promoted by a second run', async () => {
    const r = await pitr('name:after-3');
    expect(r.exitCode, r.stdout.slice(-4000)).toBe(0);
    expect(await rows()).toEqual([1, 2, 3]);
    const promoted = await runCli(['--procedure', 'promote', ...conn, '--pgdata', cluster.dataDir, '--yes', '--json'], env);
    expect(promoted.exitCode, promoted.stdout.slice(-3000)).toBe(0);
    const [{ rec }] = await cluster.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    expect(rec).toBe(false);
    await cluster.query('INSERT INTO events (v) VALUES (100)', [], 'app');
  });

  it('refuses targets outside the window before touching anything', async () => {
    const before = await cluster.query<{ t: Date }>('SELECT pg_postmaster_start_time() AS t');
    const siblings = () => fs.readdirSync(path.dirname(cluster.dataDir)).filter((f) => f.includes('.pgrunbook-')).length;
    const n = siblings();
    for (const target of ['2000-01-01T00:00:00Z', new Date(Date.now() + 86_400_000).toISOString(), 'name:no-such-point']) {
      const r = await pitr(target);
      expect(r.exitCode, target).toBe(1);
      const end = jsonLines(r.stdout).at(-1)!.summary;
      expect(end.error).toMatch(/recovery windows|not found in the archived WAL/i);
    }
    const noZone = await pitr('2026-11-24T03:00:00');
    expect(noZone.exitCode).toBe(2);
    expect(noZone.stderr).toContain('add a time zone');
    // Still running, same postmaster, same data directory, nothing moved aside.
    const after = await cluster.query<{ t: Date }>('SELECT pg_postmaster_start_time() AS t');
    expect(after[0].t.getTime()).toBe(before[0].t.getTime());
    expect(siblings()).toBe(n);
    expect(await rows()).toEqual([1, 2, 3, 100]);
  });

  it('without --confirm it stops with exit 4 and changes nothing; the backup it unpacked is offered for --resume and listed by status', async () => {
    const r = await runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', marks.time, '--json'], env);
    expect(r.exitCode).toBe(4);
    const summary = jsonLines(r.stdout).at(-1)!.summary;
    expect(summary.hint).toContain('--confirm data');
    expect(await rows()).toEqual([1, 2, 3, 100]);
    // The staging directory stays for --resume: the advice says so, and how to remove it instead.
    const staged = `${cluster.dataDir}.pgrunbook-staged-${summary.runId}`;
    expect(fs.existsSync(path.join(staged, 'PG_VERSION'))).toBe(true);
    const advice = (summary.advice as { text: string; command?: string }[]).map((a) => `${a.text} ${a.command ?? ''}`).join('\n');
    expect(advice).toContain(`unpacked and checked in ${staged}`);
    expect(advice).toContain(`--resume ${summary.runId}`);
    expect(advice).toContain(`--procedure retention --data-dirs --pgdata ${cluster.dataDir} --keep-data-dir-days 0`);
    const status = await runCli(['status', '--repo', repoUrl, '--pgdata', cluster.dataDir, '--skip', 'server', '--json'], env);
    const listed = (JSON.parse(status.stdout) as { checks: { id: string; summary: string }[] }).checks.find((c) => c.id === 'moved_aside')!;
    expect(listed.summary).toContain(`${staged} (a backup unpacked for ${cluster.dataDir} by run ${summary.runId}, kept for --resume ${summary.runId}`);
    fs.rmSync(staged, { recursive: true, force: true });
  });

  it('latest replays to the end of the archive; a target past a deleted segment is refused', async () => {
    const r = await pitr('latest', ['--target-action', 'promote']);
    expect(r.exitCode, r.stdout.slice(-4000)).toBe(0);
    // latest follows the newest timeline (the one the promotion above made, with row 100),
    // never the abandoned one where rows 4..6 were.
    expect(await rows()).toEqual([1, 2, 3, 100]);
    // The segments the preflight read and checked were replayed from the spool, not fetched again,
    // and nothing of them is left in the data directory.
    const handed = jsonLines(r.stdout).find((e) => e.type === 'log' && /\d+ WAL segments checked by the preflight are waiting/.test(String(e.message)));
    expect(handed, r.stdout.slice(-4000)).toBeDefined();
    expect(fs.existsSync(path.join(cluster.dataDir, '.pgrunbook-wal'))).toBe(false);

    // Cut the archive: delete the segment holding row 8's commit, with WAL archived after it.
    await cluster.query('INSERT INTO events (v) VALUES (7)', [], 'app');
    await switchAndArchive();
    const t = (await cluster.query<{ t: Date }>('SELECT clock_timestamp() AS t'))[0].t.toISOString();
    const [{ seg }] = await cluster.query<{ seg: string }>(`WITH i AS (INSERT INTO events (v) VALUES (8) RETURNING 1) SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS seg FROM i`, [], 'app');
    await switchAndArchive();
    await cluster.query('INSERT INTO events (v) VALUES (9)', [], 'app');
    await switchAndArchive();
    const store = await openStore(repoUrl);
    for (const codec of ['zstd', 'gzip', 'none'] as const) if (await store.head(walKey(seg, codec))) await store.delete(walKey(seg, codec));
    await store.close();
    const refused = await pitr(t);
    expect(refused.exitCode).toBe(1);
    const error = jsonLines(refused.stdout).at(-1)!.summary.error as string;
    expect(error).toMatch(/recovery windows/i);
    expect(error).toContain(`WAL segment ${seg} is missing`);
    expect(await rows()).toEqual([1, 2, 3, 7, 8, 9, 100]);
  });
});
