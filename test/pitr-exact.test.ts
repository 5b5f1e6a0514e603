// PITR's word against its deeds: corrupt objects and another cluster's backup refused before
// anything moves; a time target kept to the microsecond; timelines followed as PostgreSQL's
// history says; gaps refused; a segment that vanishes after preflight stops the run with exit 3
// and the server paused, never promoted; a scan of a busy archive in bounded memory.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { openStore } from '../src/storage/url.js';
import { readCatalog } from '../src/repo/catalog.js';
import { walKey } from '../src/repo/walarchive.js';

describe('pitr: exact and refusing', () => {
  let cluster: SandboxCluster;
  let repoDir: string;
  let repoUrl: string;
  let env: Record<string, string>;
  let conn: string[];

  const rows = async () => (await cluster.query<{ v: number }>('SELECT v FROM events ORDER BY v', [], 'app')).map((r) => r.v);
  const insert = async (v: number) => {
    const [{ xid }] = await cluster.query<{ xid: string }>(`INSERT INTO events (v) VALUES (${v}) RETURNING xmin::text AS xid`, [], 'app');
    return { xid, ts: await commitTs(v) };
  };
  const commitTs = async (v: number) =>
    (await cluster.query<{ ts: string }>(`SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts FROM events WHERE v = ${v}`, [], 'app'))[0].ts;
  /** Switch WAL and wait until the finished segment is in the repository; its name. */
  const switchAndArchive = async () => {
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, () => fs.existsSync(walFile(name)), 60_000);
    return name;
  };
  const pitr = (target: string, extra: string[] = [], extraEnv: Record<string, string> = {}) =>
    runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', target, '--confirm', 'data', '--json', ...extra], { ...env, ...extraEnv });
  const startTime = async () => (await cluster.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t'))[0].t;
  const asides = () => fs.readdirSync(path.dirname(cluster.dataDir)).filter((f) => f.includes('.pgrunbook-')).length;
  const walFile = (name: string) => path.join(repoDir, walKey(name, 'zstd'));
  const histories = () => fs.readdirSync(path.join(repoDir, 'wal')).filter((f) => f.includes('.history')).sort();
  /** Flip one byte in the middle of a file; returns the function that puts it back. */
  const flip = (file: string) => {
    const orig = fs.readFileSync(file);
    const bad = Buffer.from(orig);
    bad[Math.floor(bad.length / 2)] ^= 0xff;
    fs.writeFileSync(file, bad);
    return () => fs.writeFileSync(file, orig);
  };
  const summaryOf = (stdout: string) => jsonLines(stdout).at(-1)!.summary as { exitCode: number; error?: string; facts?: { label: string; value: string }[]; checks: { name: string; ok: boolean; detail?: string }[] };

  beforeAll(async () => {
    const work = await serverWritableDir('pgrunbook-pitrx-');
    repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    cluster = await createSandboxCluster({
      name: 'pitrx',
      settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '512MB', track_commit_timestamp: 'on', max_wal_size: '1GB' },
    });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    await cluster.query('CREATE DATABASE app');
    await cluster.query('CREATE TABLE events (v int PRIMARY KEY); CREATE UNLOGGED TABLE scratch (x int)', [], 'app');
    const r = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], env);
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    for (const v of [1, 2, 3]) await insert(v);
    await switchAndArchive();
  });

  afterAll(async () => {
    await cluster?.remove();
  });

  it('a flipped byte in a WAL segment latest needs, in the base backup, and in a segment an lsn: target needs: exit 3 naming it, nothing touched', async () => {
    const before = await startTime();
    const n = asides();
    const [{ lsn, seg }] = await cluster.query<{ lsn: string; seg: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_insert_lsn()) AS seg');
    await insert(4);
    const last = await switchAndArchive();

    let put = flip(walFile(last));
    let r = await pitr('latest');
    put();
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(3);
    expect(summaryOf(r.stdout).error).toContain(last);

    const store = await openStore(repoUrl);
    const catalog = await readCatalog(store);
    await store.close();
    const dataKey = catalog.baseBackups.find((b) => b.complete)!.meta!.objects!.data!.key;
    put = flip(path.join(repoDir, dataKey));
    r = await pitr('latest');
    put();
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(3);
    expect(summaryOf(r.stdout).error).toContain(dataKey);

    put = flip(walFile(seg));
    r = await pitr(`lsn:${lsn}`);
    put();
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(3);
    expect(summaryOf(r.stdout).error).toContain(seg);

    expect(await startTime()).toBe(before);
    expect(asides()).toBe(n);
    expect(await rows()).toEqual([1, 2, 3, 4]);
  });

  it("pitr onto a data directory of another cluster is refused before anything moves, running or stopped", async () => {
    const other = await createSandboxCluster({ name: 'pitrx-other' });
    try {
      const otherConn = ['--host', other.host, '--port', String(other.port), '--user', 'postgres'];
      const [{ sysid }] = await other.query<{ sysid: string }>('SELECT system_identifier::text AS sysid FROM pg_control_system()');
      const before = (await other.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t'))[0].t;
      const args = ['--procedure', 'pitr', ...otherConn, '--pgdata', other.dataDir, '--repo', repoUrl, '--target', 'latest', '--confirm', path.basename(other.dataDir), '--json'];
      const r = await runCli(args, env);
      expect(r.exitCode, r.stdout.slice(-3000)).toBe(1);
      expect(summaryOf(r.stdout).error).toContain(sysid);
      expect(summaryOf(r.stdout).error).toMatch(/another cluster/);
      expect((await other.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t'))[0].t).toBe(before);
      await other.stop();
      const down = await runCli(args, env);
      expect(down.exitCode, down.stdout.slice(-3000)).toBe(1);
      expect(summaryOf(down.stdout).error).toContain(sysid);
      expect(fs.existsSync(path.join(other.dataDir, 'PG_VERSION'))).toBe(true);
      expect(fs.readdirSync(path.dirname(other.dataDir)).filter((f) => f.includes('.pgrunbook-'))).toEqual([]);
    } finally {
      await other.remove();
    }
  });

  it('a time target on a busy archive (pgbench, 8+ segments): the scan streams in bounded memory and leaves no temporary directory', async () => {
    const pgbench = path.join(cluster.binDir, 'pgbench');
    const bench = await execa(pgbench, ['-i', '-s', '12', '-q', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'app'], { reject: false });
    expect(bench.exitCode, String(bench.stderr)).toBe(0);
    await execa(pgbench, ['-T', '3', '-c', '2', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'app'], { reject: false });
    await switchAndArchive();
    const store = await openStore(repoUrl);
    const catalog = await readCatalog(store);
    await store.close();
    expect(catalog.wal.timelines[0].segments).toBeGreaterThanOrEqual(8);
    await insert(5);
    await cluster.query('SELECT pg_sleep(0.01)');
    const t = (await cluster.query<{ t: string }>(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`))[0].t;
    await cluster.query('SELECT pg_sleep(0.01)');
    await insert(6);
    await switchAndArchive();

    const tmp = tempDir('pgrunbook-pitrx-tmp-');
    const child = startCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', t, '--target-action', 'promote', '--confirm', 'data', '--json'], { ...env, TMPDIR: tmp });
    let peakKb = 0;
    const sampler = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakKb = Math.max(peakKb, Number(m[1]));
      } catch {
        /* exited */
      }
    }, 50);
    const r = await child.finally(() => clearInterval(sampler));
    expect(r.exitCode, String(r.stdout).slice(-3000)).toBe(0);
    expect(peakKb).toBeGreaterThan(0);
    expect(peakKb / 1024).toBeLessThan(200);
    expect((await rows()).filter((v) => v >= 4)).toEqual([4, 5]);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('pgrunbook-walscan'))).toEqual([]);
    const s = summaryOf(String(r.stdout));
    expect(s.facts!.find((f) => f.label.startsWith('Unlogged tables'))?.value).toContain('app:public.scratch');
  });

  let tsA = '';
  let xidB = '';
  it('a time equal to a commit time keeps that commit and loses the next one, to the microsecond; --target-action pause --yes stays paused', async () => {
    const a = await insert(10);
    const b = await insert(11);
    tsA = a.ts;
    xidB = b.xid;
    expect(tsA).toMatch(/\.\d{6}Z$/);
    expect(b.ts > a.ts).toBe(true);
    await cluster.query('SELECT pg_sleep(0.02)');
    await insert(12);
    await switchAndArchive();
    expect(await commitTs(10)).toBe(tsA);

    const r = await runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', tsA, '--target-action', 'pause', '--yes', '--confirm', 'data', '--json'], env);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    const v = await rows();
    expect(v).toContain(10);
    expect(v).not.toContain(11);
    const [{ rec, paused }] = await cluster.query<{ rec: boolean; paused: string }>('SELECT pg_is_in_recovery() AS rec, pg_get_wal_replay_pause_state() AS paused');
    expect(rec).toBe(true);
    expect(paused).toBe('paused');
    const facts = summaryOf(r.stdout).facts!;
    expect(facts.find((f) => f.label === 'Recovery point')!.value).toContain(tsA);
  });

  it('PITR, then writes on the new timeline (none of its segments archived yet), then latest: the new rows are there, the removed ones are not', async () => {
    const first = await pitr(tsA, ['--target-action', 'promote']);
    expect(first.exitCode, first.stdout.slice(-3000)).toBe(0);
    await insert(50);
    // The promotion archives its history file; the new timeline has no segment archived yet.
    // The timeline the server writes now (pg_control's checkpoint lags behind a promotion).
    const [{ seg }] = await cluster.query<{ seg: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS seg');
    const newest = seg.slice(0, 8);
    await waitFor(`${newest}.history archived`, () => histories().includes(`${newest}.history.zst`), 60_000);
    expect(fs.readdirSync(path.join(repoDir, 'wal')).filter((f) => new RegExp(`^${newest}[0-9A-F]{16}`).test(f))).toEqual([]);
    const latest = await pitr('latest', ['--target-action', 'promote']);
    expect(latest.exitCode, latest.stdout.slice(-3000)).toBe(0);
    const v = await rows();
    expect(v).toContain(10);
    expect(v).toContain(50);
    expect(v).not.toContain(11);
    expect(v).not.toContain(12);
  });

  it('an xid that committed only on the abandoned branch is named as such and needs --timeline', async () => {
    const before = await startTime();
    const r = await pitr(`xid:${xidB}`);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(1);
    const s = summaryOf(r.stdout) as { error?: string; hint?: string };
    expect(s.error).toMatch(/lies on timeline \d+ .*abandoned/);
    expect(s.hint).toMatch(/--timeline \d+/);
    expect(await startTime()).toBe(before);
  });

  it('a gap in the middle of the archive refuses latest before anything is touched, naming the segment', async () => {
    await insert(60);
    const middle = await switchAndArchive();
    await insert(61);
    await switchAndArchive();
    const before = await startTime();
    const n = asides();
    const saved = fs.readFileSync(walFile(middle));
    fs.rmSync(walFile(middle));
    try {
      const r = await pitr('latest');
      expect(r.exitCode, r.stdout.slice(-3000)).toBe(1);
      expect(summaryOf(r.stdout).error).toContain(`WAL segment ${middle} is missing`);
      expect(await startTime()).toBe(before);
      expect(asides()).toBe(n);
    } finally {
      fs.writeFileSync(walFile(middle), saved);
    }
  });

  it('a segment removed after preflight: exit 3, the server left paused in recovery, no promotion, no new history; put back, --resume completes', async () => {
    await insert(70);
    const victim = await switchAndArchive();
    await insert(71);
    await switchAndArchive();
    const historiesBefore = histories();
    const child = startCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', 'latest', '--target-action', 'promote', '--confirm', 'data', '--json'], env);
    let out = '';
    let saved: Buffer | undefined;
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (!saved && out.includes('"type":"step-end","time"') && /"stepId":"preflight","status":"ok"/.test(out)) {
        saved = fs.readFileSync(walFile(victim));
        fs.rmSync(walFile(victim));
      }
    });
    const r = await child;
    expect(saved, out.slice(-2000)).toBeDefined();
    expect(r.exitCode, out.slice(-3000)).toBe(3);
    const s = summaryOf(out);
    expect(s.error).toContain(victim);
    const [{ rec }] = await cluster.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    expect(rec).toBe(true);
    expect(histories()).toEqual(historiesBefore);

    fs.writeFileSync(walFile(victim), saved!);
    const runId = jsonLines(out)[0].runId as string;
    const resumed = await runCli(['--resume', runId, ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--confirm', 'data', '--json'], env);
    expect(resumed.exitCode, resumed.stdout.slice(-3000)).toBe(0);
    const v = await rows();
    expect(v).toContain(70);
    expect(v).toContain(71);
  });
});
