// find-target against a real cluster whose WAL wal-push archives while pgbench writes: a window
// holding a DROP TABLE, a TRUNCATE and a DELETE of 500 rows (and a rolled-back DELETE) lists
// exactly those three, named, with their xids; pitr to each suggested target brings the table
// back as it was just before. The scanner's rules are also checked on pg_waldump lines.
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, serverOwnedRepoDir, serverWritableDir, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { withPg } from '../src/postgres/client.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { walKey } from '../src/repo/walarchive.js';
import { IncidentScanner } from '../src/restore/incident-scan.js';
import type { WalRecordLine } from '../src/postgres/programs/waldump.js';

describe('find-target: the incidents of a window among pgbench noise', () => {
  let cluster: SandboxCluster;
  let repoDir: string;
  let repoUrl: string;
  let env: Record<string, string>;
  let conn: string[];
  let since = '';
  let pgbench: ResultPromise | undefined;
  const xids: Record<string, string> = {};
  const before: Record<string, string> = {};

  const md5 = async (table: string) =>
    (await cluster.query<{ m: string | null }>(`SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) AS m FROM ${table} t`, [], 'app'))[0].m ?? 'empty';
  /** Run statements in one transaction in database app; its xid. */
  const inTransaction = (sql: string[], end = 'COMMIT') =>
    withPg(cluster.connection('app'), async (c) => {
      await c.query('BEGIN');
      for (const s of sql) await c.query(s);
      const x = (await c.query<{ x: string }>('SELECT pg_current_xact_id()::text AS x')).rows[0].x;
      await c.query(end);
      return x;
    });
  const switchAndArchive = async () => {
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, () => fs.existsSync(path.join(repoDir, walKey(name, 'zstd'))), 60_000);
  };
  const findTarget = (extra: string[] = []) => runCli(['find-target', ...conn, '--repo', repoUrl, '--since', since, ...extra], env);

  beforeAll(async () => {
    const work = await serverWritableDir('pgrunbook-findt-');
    repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    cluster = await createSandboxCluster({
      name: 'findt',
      settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '256MB', autovacuum: 'off' },
    });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    await cluster.query('CREATE DATABASE app');
    const bin = path.join(cluster.binDir, 'pgbench');
    const init = await execa(bin, ['-i', '-s', '1', '-q', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'app'], { reject: false });
    expect(init.exitCode, String(init.stderr)).toBe(0);
    await cluster.query(
      `CREATE TABLE delme (id int PRIMARY KEY, v text); INSERT INTO delme SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
       CREATE TABLE truncme (id int PRIMARY KEY, v text); INSERT INTO truncme SELECT g, md5(g::text) FROM generate_series(1, 200) g;
       CREATE TABLE dropme (id int PRIMARY KEY, v text); INSERT INTO dropme SELECT g, md5(g::text) FROM generate_series(1, 300) g;`,
      [],
      'app',
    );
    // The dump names the table once it is dropped; the base backup is what pitr restores.
    let r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', 'app', '--repo', repoUrl, '--json'], env);
    expect(r.exitCode, r.stdout.slice(-2000)).toBe(0);
    r = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], env);
    expect(r.exitCode, r.stdout.slice(-2000)).toBe(0);
    await switchAndArchive();
    since = (await cluster.query<{ t: string }>(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`))[0].t;

    // pgbench's small updates go on through all of it (-n: no VACUUM and no TRUNCATE of its own).
    pgbench = execa(bin, ['-n', '-T', '300', '-c', '2', '-j', '1', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'app'], { reject: false });
    const history = async () => Number((await cluster.query<{ n: string }>('SELECT count(*)::text AS n FROM pgbench_history', [], 'app'))[0].n);
    await waitFor('pgbench writing', async () => (await history()) > 50, 30_000);

    // Rolled back: not an incident.
    await inTransaction(['DELETE FROM delme WHERE id > 700'], 'ROLLBACK');
    await cluster.query(`UPDATE delme SET v = 'last before the delete' WHERE id = 1000`, [], 'app');
    before.delme = await md5('delme');
    xids.delete = await inTransaction(['DELETE FROM delme WHERE id <= 500']);
    await waitFor('more pgbench', async () => (await history()) > 150, 30_000);
    await cluster.query(`INSERT INTO truncme VALUES (999, 'last before the truncate')`, [], 'app');
    before.truncme = await md5('truncme');
    xids.truncate = await inTransaction(['TRUNCATE truncme']);
    await waitFor('more pgbench', async () => (await history()) > 250, 30_000);
    await cluster.query(`INSERT INTO dropme VALUES (999, 'last before the drop')`, [], 'app');
    before.dropme = await md5('dropme');
    xids.drop = await inTransaction(['DROP TABLE dropme']);
    await waitFor('more pgbench', async () => (await history()) > 350, 30_000);
    pgbench.kill('SIGINT');
    await pgbench;
    pgbench = undefined;
    await switchAndArchive();
  }, 240_000);

  afterAll(async () => {
    pgbench?.kill('SIGKILL');
    await pgbench?.catch(() => {});
    await cluster?.remove();
  });

  let incidents: Record<string, any>[] = [];

  it('lists exactly the DROP TABLE, the TRUNCATE and the DELETE of 500 rows, newest first, named, with their xids; no pgbench transaction', async () => {
    const r = await findTarget(['--json']);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    incidents = jsonLines(r.stdout);
    expect(incidents.map((i) => [i.kind, i.database, i.relation, i.xid, i.rows])).toEqual([
      ['drop-table', 'app', 'public.dropme', xids.drop, null],
      ['truncate', 'app', 'public.truncme', xids.truncate, null],
      ['delete', 'app', 'public.delme', xids.delete, 500],
    ]);
    for (const i of incidents) {
      expect(i.target).toMatch(/^lsn:[0-9A-F]+\/[0-9A-F]+$/);
      expect(i.time >= since).toBe(true);
      expect(i.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    }
    // pgbench's transactions touch one row of a table each: with --min-rows 1 they show up.
    const noisy = jsonLines((await findTarget(['--json', '--min-rows', '1'])).stdout);
    expect(noisy.filter((i) => String(i.relation).startsWith('public.pgbench_')).length).toBeGreaterThan(10);
  });

  it('--table narrows; the text form names the target; bad input is exit 2', async () => {
    const text = await findTarget(['--table', 'truncme']);
    expect(text.exitCode, text.stderr).toBe(0);
    expect(text.stdout).toContain(`truncate      public.truncme in app  xid ${xids.truncate}`);
    expect(text.stdout).toContain(`target ${incidents[1].target}`);
    expect(text.stdout).not.toContain('delme');
    expect(text.stdout).not.toContain('dropme');
    const bad = await runCli(['find-target', ...conn, '--repo', repoUrl, '--since', '2026-01-01T00:00:00'], env);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('add a time zone');
  });

  // Promoted, not paused: replay stops inside the incident's transaction, and a paused server
  // still holds the AccessExclusiveLock its DROP or TRUNCATE took until promotion ends it.
  const pitr = (target: string) =>
    runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', target, '--target-action', 'promote', '--confirm', 'data', '--json'], env);

  it('pitr to each suggested target brings the table back exactly as it was just before', async () => {
    expect(incidents).toHaveLength(3);
    const [drop, truncate, del] = incidents;
    let r = await pitr(drop.target);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    expect(await md5('dropme')).toBe(before.dropme);
    r = await pitr(truncate.target);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    expect(await md5('truncme')).toBe(before.truncme);
    r = await pitr(del.target);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    expect(await md5('delme')).toBe(before.delme);
    expect((await cluster.query<{ n: string }>('SELECT count(*)::text AS n FROM delme', [], 'app'))[0].n).toBe('1000');
  }, 480_000);
});

describe('find-target: the scanner on pg_waldump lines', () => {
  let lsn = 0x1000000;
  const line = (rmgr: string, xid: string, desc: string): WalRecordLine => {
    const prev = lsn;
    lsn += 0x40;
    const f = (n: number) => `0/${n.toString(16).toUpperCase()}`;
    return { rmgr, xid, lsn: f(lsn), prev: f(prev), desc };
  };
  const heap = (xid: string, op: string, rel = '1663/5/16400') => line('Heap', xid, `${op} off 1 flags 0x00 , blkref #0: rel ${rel} blk 0`);
  const commit = (xid: string, extra = '') => line('Transaction', xid, `COMMIT 2026-12-02 05:10:16.679840 UTC${extra}`);

  it('counts a committed transaction with its subtransactions, ignores aborted ones and rewrites, and tells TRUNCATE from DROP', () => {
    const s = new IncidentScanner(3);
    for (const l of [heap('10', 'UPDATE'), heap('11', 'HOT_UPDATE'), heap('11', 'DELETE'), commit('10', '; subxacts: 11')]) s.feed(l);
    for (const l of [heap('12', 'DELETE'), heap('12', 'DELETE'), heap('12', 'DELETE'), line('Transaction', '12', 'ABORT 2026-12-02 05:10:17.000000 UTC')]) s.feed(l);
    for (const l of [heap('13', 'DELETE'), heap('13', 'DELETE', '1663/5/16500'), heap('13', 'UPDATE'), commit('13')]) s.feed(l);
    s.feed(line('Storage', '14', 'CREATE base/5/16600'));
    s.feed(line('Storage', '14', 'CREATE base/5/16601'));
    s.feed(line('XLOG', '14', 'FPI , blkref #0: rel 1663/5/16601 blk 0 FPW'));
    s.feed(commit('14', '; rels: base/5/16400; inval msgs: catcache 55 relcache 16390'));
    s.feed(line('Storage', '15', 'CREATE base/5/16700'));
    s.feed(line('XLOG', '15', 'FPI , blkref #0: rel 1663/5/16700 blk 0 FPW, blkref #1: rel 1663/5/16700 blk 1 FPW'));
    s.feed(commit('15', '; rels: base/5/16600'));
    s.feed(commit('16', '; rels: base/5/16700 base/5/16701; inval msgs: relcache 16701 relcache 16700'));
    s.feed(line('Database', '17', 'DROP dir 1663/16384'));
    s.feed(commit('17'));
    expect(s.incidents.map((i) => [i.kind, i.xid, 'rows' in i ? i.rows : undefined, 'oids' in i ? i.oids : undefined])).toEqual([
      ['update', '10', 3, undefined],
      ['truncate', '14', undefined, ['16390']],
      ['drop', '16', undefined, ['16701', '16700']],
      ['drop-database', '17', undefined, undefined],
    ]);
    const db = s.incidents[3];
    expect(db.before).not.toBe(db.lsn);
  });
});
