// Honest words: status knows a recovery paused at its target; verify fails on FATAL and PANIC
// lines by default (ERROR counted and shown); moved-aside data directories are listed with their
// origin and age, and `retention --data-dirs` removes old ones after their names are typed; hints
// print the command that runs this install.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, jsonLines, runCli, serverWritableDir, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { withPg } from '../src/postgres/client.js';
import { createSandboxCluster, findFreePort, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser, runCommand } from '../src/postgres/osuser.js';
import { pgCtlStart, pgCtlStop } from '../src/postgres/pgctl.js';
import { claimRestoreDir } from '../src/restore/datadir.js';
import { scanServerLog, serverLogVerdict } from '../src/postgres/server-log-scan.js';
import { dataLostSeconds } from '../src/procedures/drill.js';

type Check = { id: string; status: string; summary: string; hint?: string };

describe('a recovery paused at its target, and the server log', () => {
  let primary: SandboxCluster;
  let work: string;
  let restored: string;
  let port: number;
  let socketDir: string;
  let started = false;

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-honest-');
    const archive = path.join(work, 'archive');
    fs.mkdirSync(archive);
    const owner = isRoot() ? await lookupUser('postgres') : undefined;
    if (owner) fs.chownSync(archive, owner.uid, owner.gid);
    primary = await createSandboxCluster({ name: 'honest-primary', settings: { archive_mode: 'on', archive_command: `cp %p ${archive}/%f` } });

    // A base backup, then a restore point, then WAL after it: a PITR to the restore point.
    restored = path.join(work, 'restored');
    const bb = await runCommand(path.join(primary.binDir, 'pg_basebackup'), ['-D', restored, '-h', primary.host, '-p', String(primary.port), '-U', 'postgres', '-X', 'stream', '-c', 'fast'], {
      as: owner ? { uid: owner.uid, gid: owner.gid, home: owner.home } : undefined,
    });
    expect(bb.failed, bb.failure).toBe(false);
    await primary.psql(`CREATE TABLE kept AS SELECT 1 AS x; SELECT pg_create_restore_point('honest'); CREATE TABLE after_target AS SELECT 2 AS x`);
    const [{ name }] = await primary.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name');
    await waitFor('the restore point archived', () => fs.existsSync(path.join(archive, name)), 60_000);

    port = await findFreePort();
    socketDir = path.join(work, 'sock');
    fs.mkdirSync(socketDir);
    if (owner) fs.chownSync(socketDir, owner.uid, owner.gid);
    fs.appendFileSync(
      path.join(restored, 'postgresql.auto.conf'),
      [
        `port = ${port}`,
        `unix_socket_directories = '${socketDir}'`,
        `restore_command = 'cp ${archive}/%f %p'`,
        `recovery_target_name = 'honest'`,
        `recovery_target_action = 'pause'`,
        '',
      ].join('\n'),
    );
    fs.writeFileSync(path.join(restored, 'recovery.signal'), '');
    if (owner) fs.chownSync(path.join(restored, 'recovery.signal'), owner.uid, owner.gid);
    await pgCtlStart({ pgdata: restored, logFile: path.join(work, 'restored.log') });
    started = true;
    await waitFor('replay paused at the restore point', async () => {
      const rows = await withPg({ host: socketDir, port, user: 'postgres', database: 'postgres' }, async (c) => (await c.query('SELECT pg_is_wal_replay_paused() AS p')).rows);
      return rows[0].p === true;
    }, 60_000);
  });

  afterAll(async () => {
    if (started) await pgCtlStop({ pgdata: restored, mode: 'immediate' }).catch(() => undefined);
    await primary?.remove();
  });

  it('status says the recovery is paused at its target (promote or run pitr again), not that it is a standby', async () => {
    const repo = tempDir('pgrunbook-honest-repo-');
    const r = await runCli(['status', '--repo', `file://${repo}`, '--host', socketDir, '--port', String(port), '--user', 'postgres', '--json']);
    const report = JSON.parse(r.stdout) as { checks: Check[] };
    const server = report.checks.find((c) => c.id === 'server')!;
    expect(server.summary).toContain('recovery paused at its target (restore point honest');
    expect(server.summary).toContain('promote or run pitr again');
    expect(server.status).toBe('warning');
    expect(server.hint).toContain('pgrunbook --procedure promote');
    const archiver = report.checks.find((c) => c.id === 'wal_archiver')!;
    expect(archiver.summary).toContain('paused at its target');
    expect(JSON.stringify(report.checks)).not.toMatch(/standby/);
    // The text report too.
    const text = await runCli(['status', '--repo', `file://${repo}`, '--host', socketDir, '--port', String(port), '--user', 'postgres']);
    expect(text.stdout).toContain('recovery paused at its target');
  });

  it('verify: ERROR lines are counted and shown without failing; a FATAL line fails by default; --log-fail-level panic lets it pass', async () => {
    const conn = ['--host', primary.host, '--port', String(primary.port), '--user', 'postgres', '--databases', 'postgres', '--server-log', primary.logFile];
    const since = new Date(Date.now() - 1000).toISOString();
    await expect(primary.query('SELECT * FROM honest_no_such_table')).rejects.toThrow();
    const errorOnly = await runCli(['--procedure', 'verify', ...conn, '--since', since]);
    expect(errorOnly.exitCode, errorOnly.stdout).toBe(0);
    expect(errorOnly.stdout).toMatch(/server log: 0 PANIC, 0 FATAL, 1 ERROR \(shown, not failing\)/);
    expect(errorOnly.stdout).toContain('honest_no_such_table');

    await expect(withPg({ host: primary.host, port: primary.port, user: 'postgres', database: 'honest_no_such_db' }, async () => undefined)).rejects.toThrow();
    await waitFor('the FATAL line in the log', () => fs.readFileSync(primary.logFile, 'utf8').includes('honest_no_such_db'), 10_000);
    const fatal = await runCli(['--procedure', 'verify', ...conn, '--since', since, '--json']);
    expect(fatal.exitCode).toBe(3);
    const check = jsonLines(fatal.stdout).at(-1)!.summary.checks.find((c: { name: string }) => c.name === 'server log');
    expect(check.ok).toBe(false);
    expect(check.detail).toMatch(/0 PANIC, 1 FATAL, 1 ERROR \(shown, not failing\).*first: .*FATAL: .*honest_no_such_db/);
    const lenient = await runCli(['--procedure', 'verify', ...conn, '--since', since, '--log-fail-level', 'panic']);
    expect(lenient.exitCode, lenient.stdout).toBe(0);
  });
});

describe('server log verdicts', () => {
  it('routine FATALs of a planned start or stop are counted but do not fail; others do', async () => {
    const log = path.join(tempDir('pgrunbook-honest-log-'), 'postgresql.log');
    fs.writeFileSync(
      log,
      [
        '2026-01-01 00:00:00.000 UTC [1] FATAL:  old news: before the window',
        '2026-01-02 00:00:00.000 UTC [2] FATAL:  the database system is starting up',
        '2026-01-02 00:00:01.000 UTC [3] FATAL:  terminating connection due to administrator command',
        '2026-01-02 00:00:02.000 UTC [4] ERROR:  relation "x" does not exist',
        '2026-01-02 00:00:03.000 UTC [5] LOG:  checkpoint complete',
        '',
      ].join('\n'),
    );
    const since = new Date('2026-01-02T00:00:00Z');
    const found = await scanServerLog(log, since);
    const routine = serverLogVerdict(found, 'fatal', since, log);
    expect(routine.ok).toBe(true);
    expect(routine.summary).toMatch(/^0 PANIC, 2 FATAL \(2 routine: start-up or shutdown\), 1 ERROR \(shown, not failing\)/);
    fs.appendFileSync(log, '2026-01-02 00:00:04.000 UTC [6] FATAL:  could not open file "base/1/1259": No such file or directory\n');
    const real = serverLogVerdict(await scanServerLog(log, since), 'fatal', since, log);
    expect(real.ok).toBe(false);
    expect(real.failing.map((l) => l.text)).toEqual([expect.stringContaining('could not open file')]);
    expect(serverLogVerdict(await scanServerLog(log, since), 'error', since, log).failing).toHaveLength(2);
  });

  it('the drill words RPO as seconds of commits lost', () => {
    expect(dataLostSeconds(360)).toBe('0.4');
    expect(dataLostSeconds(12_340)).toBe('12.3');
    expect(dataLostSeconds(95_400)).toBe('95');
  });
});

describe('moved-aside data directories', () => {
  it('status lists them with origin and age; retention --data-dirs removes the old ones only after their names are typed', async () => {
    const parent = tempDir('pgrunbook-aside-');
    const pgdata = path.join(parent, 'data');
    const mk = (name: string, file = 'PG_VERSION', body = '15\n') => {
      fs.mkdirSync(path.join(parent, name));
      fs.writeFileSync(path.join(parent, name, file), body);
    };
    mk('data');
    mk('data.pgrunbook-20260101T000000Z'); // old: expires
    const young = `data.pgrunbook-${new Date(Date.now() - 3_600_000).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
    mk(young);
    mk('data.pgrunbook-20250101T000000Z', 'postmaster.pid', `${process.pid}\n${parent}\n`); // a server "runs" in it
    mk('data.other'); // not ours
    // pitr staging directories (unpack.ts stagedDirName, marker from datadir.ts makeRestoreDir):
    // one a run abandoned long ago (expires), one whose run is still going (this process: kept).
    const abandoned = 'pitr-20260101T000000Z-a1b2c3';
    const going = 'pitr-20250101T000000Z-d4e5f6';
    mk(`data.pgrunbook-staged-${abandoned}`, `.pgrunbook-restoring-${abandoned}`, `${os.hostname()} 999999999\n`);
    mk(`data.pgrunbook-staged-${going}`, `.pgrunbook-restoring-${going}`, `${os.hostname()} ${process.pid}\n`);
    mk('data.pgrunbook-staged-not-a-run-id'); // not ours
    // One whose run was resumed by another process (this one): the resumed run claims it.
    const resumed = 'pitr-20250101T000000Z-a7b8c9';
    mk(`data.pgrunbook-staged-${resumed}`, `.pgrunbook-restoring-${resumed}`, `${os.hostname()} 999999998\n`);
    await claimRestoreDir(path.join(parent, `data.pgrunbook-staged-${resumed}`), resumed);
    const env = { PGRUNBOOK_STATE_DIR: path.join(parent, 'state') };
    const repo = tempDir('pgrunbook-aside-repo-');

    const status = await runCli(['status', '--repo', `file://${repo}`, '--pgdata', pgdata, '--skip', 'server', '--json'], env);
    const moved = (JSON.parse(status.stdout) as { checks: Check[] }).checks.find((c) => c.id === 'moved_aside')!;
    expect(moved.summary).toMatch(/^6: /);
    expect(moved.summary).toContain(`${parent}/data.pgrunbook-20260101T000000Z (from ${pgdata}, moved aside `);
    expect(moved.summary).toMatch(/from .*, moved aside (59|60) min ago/);
    expect(moved.summary).toContain('in use: a server runs in it');
    expect(moved.summary).toContain(`${parent}/data.pgrunbook-staged-${abandoned} (a backup unpacked for ${pgdata} by run ${abandoned}, kept for --resume ${abandoned}; started `);
    expect(moved.summary).toContain(`in use: its run ${going} is still going (process ${process.pid})`);
    expect(moved.summary).toContain(`in use: its run ${resumed} is still going (process ${process.pid})`);
    expect(moved.hint).toContain(`--procedure retention --data-dirs --pgdata ${pgdata}`);

    const args = ['--procedure', 'retention', '--data-dirs', '--pgdata', pgdata, '--json'];
    const refused = await runCli(args, env);
    expect(refused.exitCode).toBe(4);
    expect(fs.existsSync(path.join(parent, 'data.pgrunbook-20260101T000000Z'))).toBe(true);
    const wrong = await runCli([...args, '--confirm', 'data'], env);
    expect(wrong.exitCode).toBe(4);
    expect(fs.existsSync(path.join(parent, 'data.pgrunbook-20260101T000000Z'))).toBe(true);

    expect(refused.stdout).toContain(`--confirm 'data.pgrunbook-20260101T000000Z data.pgrunbook-staged-${abandoned}'`);
    const done = await runCli([...args, '--confirm', `data.pgrunbook-20260101T000000Z data.pgrunbook-staged-${abandoned}`], env);
    expect(done.exitCode, done.stdout.slice(-2000) + done.stderr).toBe(0);
    expect(fs.readdirSync(parent).sort()).toEqual(
      ['data', 'data.other', 'data.pgrunbook-20250101T000000Z', young, 'state', `data.pgrunbook-staged-${going}`, `data.pgrunbook-staged-${resumed}`, 'data.pgrunbook-staged-not-a-run-id'].sort(),
    );
    // Nothing old is left that may go: the next run removes nothing and asks nothing.
    const again = await runCli(args, env);
    expect(again.exitCode, again.stdout.slice(-2000)).toBe(0);
  });
});

describe('hints print the command that runs this install', () => {
  async function failedHint(env: Record<string, string>): Promise<string> {
    const port = await findFreePort();
    const r = await runCli(['--procedure', 'verify', '--host', '127.0.0.1', '--port', String(port), '--user', 'postgres', '--json'], {
      PGRUNBOOK_STATE_DIR: path.join(tempDir('pgrunbook-hint-state-'), 'state'),
      ...env,
    });
    expect(r.exitCode).toBe(1);
    return String(jsonLines(r.stdout).at(-1)!.summary.hint);
  }

  it('node /abs/dist/cli.js when pgrunbook is not on PATH or is another program; pgrunbook when PATH leads to this install', async () => {
    const realCli = fs.realpathSync(CLI);
    const nodeDir = path.dirname(process.execPath);
    const bare = await failedHint({ PGRUNBOOK_COMMAND: '', PATH: `${nodeDir}:/usr/bin:/bin` });
    expect(bare).toMatch(new RegExp(`continue with: (node|${process.execPath}) ${realCli.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} --resume verify-`));

    const bin = tempDir('pgrunbook-hint-bin-');
    fs.writeFileSync(path.join(bin, 'pgrunbook'), '#!/bin/sh\necho another program\n', { mode: 0o755 });
    const other = await failedHint({ PGRUNBOOK_COMMAND: '', PATH: `${bin}:${nodeDir}:/usr/bin:/bin` });
    expect(other).toContain(`${realCli} --resume verify-`);

    const linked = tempDir('pgrunbook-hint-link-');
    // What npm link / npm install -g . make: a link to dist/cli.js, which npm makes executable.
    fs.chmodSync(CLI, 0o755);
    fs.symlinkSync(CLI, path.join(linked, 'pgrunbook'));
    const onPath = await failedHint({ PGRUNBOOK_COMMAND: '', PATH: `${linked}:${nodeDir}:/usr/bin:/bin` });
    expect(onPath).toMatch(/continue with: pgrunbook --resume verify-/);

    const wrapped = await failedHint({ PGRUNBOOK_COMMAND: 'sudo -u postgres pgrunbook' });
    expect(wrapped).toMatch(/continue with: sudo -u postgres pgrunbook --resume verify-/);
  });
});
