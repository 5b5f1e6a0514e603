// wal-archiving through the real CLI against its own sandbox cluster (it restarts it): from
// archive_mode=off to a segment proven in the repository; refused confirmations, dry runs and bad
// input change nothing (settings, postgresql.auto.conf, postmaster start time); an already-right
// cluster is only proven; a failing archive_command is reported with the server log's lines.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, tempDir } from './helpers/cli.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { openStore } from '../src/storage/url.js';

interface Snapshot {
  archiveMode: string;
  archiveCommand: string;
  autoConf: string;
  started: string;
}

describe('wal-archiving procedure', () => {
  let cluster: SandboxCluster;
  let work: string;
  let repoDir: string;
  let repoUrl: string;
  let env: Record<string, string>;
  let pgIds: { uid: number; gid: number } | undefined;
  // The data directory's base name: the sandbox sets no cluster_name.
  const confirmName = 'data';

  beforeAll(async () => {
    cluster = await createSandboxCluster({ name: 'wal-archiving', settings: { archive_mode: 'off' } });
    // The server (the postgres OS user when we are root) must reach and write the repository.
    work = tempDir('pgrunbook-walarch-');
    fs.chmodSync(work, 0o755);
    repoDir = path.join(work, 'repo');
    fs.mkdirSync(repoDir);
    if (isRoot()) {
      pgIds = await lookupUser('postgres');
      fs.chownSync(repoDir, pgIds.uid, pgIds.gid);
    }
    repoUrl = `file://${repoDir}`;
    env = { PGRUNBOOK_STATE_DIR: path.join(work, 'state') };
  });

  afterAll(async () => {
    await cluster?.remove();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const args = (...extra: string[]) => [
    '--procedure',
    'wal-archiving',
    '--host',
    cluster.host,
    '--port',
    String(cluster.port),
    '--user',
    'postgres',
    ...extra,
  ];
  const withData = (...extra: string[]) => args('--pgdata', cluster.dataDir, ...extra);

  async function snapshot(): Promise<Snapshot> {
    const [mode] = await cluster.query<{ archive_mode: string }>('SHOW archive_mode');
    const [command] = await cluster.query<{ archive_command: string }>('SHOW archive_command');
    const [started] = await cluster.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t');
    return {
      archiveMode: mode.archive_mode,
      archiveCommand: command.archive_command,
      autoConf: fs.readFileSync(path.join(cluster.dataDir, 'postgresql.auto.conf'), 'utf8'),
      started: started.t,
    };
  }

  const endOf = (stdout: string) => jsonLines(stdout).at(-1)!;
  const walFiles = () => (fs.existsSync(path.join(repoDir, 'wal')) ? fs.readdirSync(path.join(repoDir, 'wal')).filter((f) => !f.startsWith('.')) : []);

  it('bad input stops it before any change: an unwritable repository, no --pgdata for a pg_ctl restart', async () => {
    const before = await snapshot();
    const rootOwned = path.join(work, 'root-owned');
    fs.mkdirSync(rootOwned, { mode: 0o755 });
    const unwritable = await runCli(withData('--repo', `file://${rootOwned}`, '--yes', '--confirm', confirmName, '--json'), env);
    expect(unwritable.exitCode, unwritable.stdout + unwritable.stderr).toBe(1);
    const end = endOf(unwritable.stdout);
    if (isRoot()) {
      expect(end.summary.error).toContain(`is not writable by postgres`);
      expect(end.summary.error).toContain(`chown -R postgres:postgres ${rootOwned}`);
    }

    const noPgdata = await runCli(args('--repo', repoUrl, '--yes', '--confirm', confirmName, '--json'), env);
    expect(noPgdata.exitCode, noPgdata.stdout + noPgdata.stderr).toBe(1);
    expect(endOf(noPgdata.stdout).summary.error).toContain('pass --pgdata DIR');
    expect(endOf(noPgdata.stdout).summary.error).toContain(`data_directory = ${cluster.dataDir}`);

    expect(await snapshot()).toEqual(before);
    expect(fs.readdirSync(rootOwned)).toEqual([]);
  });

  it('--dry-run shows the plan, the confirmation it would ask for, and changes nothing', async () => {
    const before = await snapshot();
    expect(before.archiveMode).toBe('off');
    const r = await runCli(withData('--repo', repoUrl, '--dry-run', '--json'), env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const events = jsonLines(r.stdout);
    expect(events.at(-1)!.summary.status).toBe('planned');
    const logs = events.filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(logs).toContain("archive_mode = off: needs on (takes effect only after a restart): without it PostgreSQL never runs archive_command");
    expect(logs).toContain("would: ALTER SYSTEM SET archive_mode = 'on'");
    expect(logs).toContain("would: ALTER SYSTEM SET archive_timeout = '60s'");
    // Asynchronous by default: the shell fast path for segments the pusher has pushed ahead, then wal-push --spool.
    const spool = path.join(path.dirname(cluster.dataDir), 'pgrunbook-data.spool');
    expect(logs.some((l) => l.startsWith(`would: ALTER SYSTEM SET archive_command = 'test ${spool}/push/ok/%f -nt %p || { test -e ${spool}/push/pusher.pid && for i in `) && l.includes(` wal-push --spool ${spool} --repo `))).toBe(true);
    expect(logs.some((l) => l.includes(`would ask to confirm: restart PostgreSQL ${cluster.dataDir} (connections are dropped)`) && l.includes(`--confirm ${confirmName}`))).toBe(true);
    expect(await snapshot()).toEqual(before);
    expect(walFiles()).toEqual([]);
  });

  it('without a matching --confirm the restart is refused (exit 4) and nothing changes', async () => {
    const before = await snapshot();
    const r = await runCli(withData('--repo', repoUrl, '--yes', '--json'), env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(4);
    const events = jsonLines(r.stdout);
    const end = events.at(-1)!;
    expect(end.summary.status).toBe('refused');
    expect(end.summary.error).toContain(`restart PostgreSQL ${cluster.dataDir} (connections are dropped)`);
    expect(end.summary.hint).toContain(`--confirm ${confirmName}`);
    // The settings were proposed and allowed (--yes), but nothing was written before the typed confirmation.
    expect(events.some((e) => e.type === 'confirm-answer' && e.stepId === 'propose' && e.allowed)).toBe(true);
    expect(events.some((e) => e.type === 'log' && /ALTER SYSTEM/.test(e.message) && (e.stepId === 'apply' || e.stepId === 'apply-restart'))).toBe(false);

    // Resuming it against another repository must not apply a proposal made for this one.
    const elsewhere = `${repoUrl}-elsewhere`;
    const resumed = await runCli(withData('--resume', end.summary.runId, '--repo', elsewhere, '--yes', '--confirm', confirmName, '--json'), env);
    expect(resumed.exitCode, resumed.stdout + resumed.stderr).toBe(2);
    expect(resumed.stdout + resumed.stderr).toContain(elsewhere);

    const wrong = await runCli(withData('--repo', repoUrl, '--yes', '--confirm', 'main', '--json'), env);
    expect(wrong.exitCode).toBe(4);
    expect(endOf(wrong.stdout).summary.error).toContain(`does not match; to allow it pass exactly --confirm ${confirmName}`);

    expect(await snapshot()).toEqual(before);
    expect(walFiles()).toEqual([]);
  });

  it('a restart that fails before the server stops rolls the ALTER SYSTEM back: nothing changes', async () => {
    const before = await snapshot();
    const profileEnv = { ...env, PGRUNBOOK_CONFIG_DIR: path.join(work, 'config') };
    const saved = await runCli(
      ['profile', 'save', 'broken-stop', '--server-control', 'commands', '--stop-command', 'echo "simulated: cannot stop" >&2; exit 1', '--start-command', 'true'],
      profileEnv,
    );
    expect(saved.exitCode, saved.stderr).toBe(0);
    const r = await runCli(withData('--profile', 'broken-stop', '--repo', repoUrl, '--yes', '--confirm', confirmName, '--json'), profileEnv);
    expect(r.exitCode, r.stdout + r.stderr).toBe(1);
    const events = jsonLines(r.stdout);
    // It did write the settings (after the typed confirmation), then took them back.
    expect(events.some((e) => e.type === 'log' && e.stepId === 'apply-restart' && e.message.startsWith('ALTER SYSTEM SET archive_mode'))).toBe(true);
    expect(events.some((e) => e.type === 'log' && e.message === 'rolled back: ALTER SYSTEM RESET archive_mode')).toBe(true);
    const error = endOf(r.stdout).summary.error as string;
    expect(error).toContain("the profile's stop command failed");
    expect(error).toContain('simulated: cannot stop');
    expect(error).toContain('the new ones were rolled back, so nothing changed');
    expect(await snapshot()).toEqual(before);
  });

  it('with --yes and --confirm it takes archive_mode=off to archiving, proven by a segment in the repository', async () => {
    const before = await snapshot();
    const r = await runCli(withData('--repo', repoUrl, '--yes', '--confirm', confirmName, '--json'), env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const events = jsonLines(r.stdout);
    const end = events.at(-1)!;
    expect(end.summary.status).toBe('ok');
    expect(end.summary.checks.map((c: { name: string }) => c.name)).toEqual([
      'server reachable',
      'wal_level',
      'archive_mode',
      'archive_command',
      'archive_timeout',
      'segment archived',
    ]);

    // The typed confirmation came before the first ALTER SYSTEM.
    const confirmAt = events.findIndex((e) => e.type === 'confirm-request' && e.destructive?.expected === confirmName);
    const alterAt = events.findIndex((e) => e.type === 'log' && e.stepId === 'apply-restart' && e.message.startsWith('ALTER SYSTEM SET'));
    expect(confirmAt).toBeGreaterThan(-1);
    expect(alterAt).toBeGreaterThan(confirmAt);

    const after = await snapshot();
    expect(after.archiveMode).toBe('on');
    const spool = path.join(path.dirname(cluster.dataDir), 'pgrunbook-data.spool');
    // The fast path; while the pusher runs, up to a second's wait in the shell for its ok file; then wal-push.
    const slow = after.archiveCommand.slice(after.archiveCommand.lastIndexOf('; exec ') + '; exec '.length);
    expect(after.archiveCommand).toBe(
      `test ${spool}/push/ok/%f -nt %p || { test -e ${spool}/push/pusher.pid && for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 0.05; test ${spool}/push/ok/%f -nt %p && exit 0; done; exec ${slow}`,
    );
    expect(slow).toMatch(/^\S+node\S* \S+\/dist\/cli\.js wal-push --spool \S+ --repo file:\/\/\S+ %p; }$/);
    // The spool is the server's own, mode 0700; the first wal-push started the pusher there.
    const st = fs.statSync(spool);
    expect(st.mode & 0o777).toBe(0o700);
    if (pgIds) expect([st.uid, st.gid]).toEqual([pgIds.uid, pgIds.gid]);
    expect(fs.readFileSync(path.join(spool, 'push', 'pusher.log'), 'utf8')).toContain('started for');
    expect(after.archiveCommand).toContain(`--repo ${repoUrl} %p`);
    expect(after.autoConf).toContain("archive_mode = 'on'");
    expect(after.autoConf).toContain("archive_timeout = '60s'");
    expect(after.started).not.toBe(before.started); // restarted

    const detail = end.summary.checks.find((c: { name: string }) => c.name === 'segment archived').detail as string;
    const seg = /^([0-9A-F]{24}) arrived in /.exec(detail)?.[1];
    expect(seg, detail).toBeDefined();
    expect(walFiles()).toContain(`${seg}.zst`);
    const [archiver] = await cluster.query<{ last_archived_wal: string }>('SELECT last_archived_wal FROM pg_stat_archiver');
    expect(archiver.last_archived_wal >= seg!).toBe(true);
  });

  it('an already-correct cluster is reported fine and only proves that a segment arrives (no restart)', async () => {
    const before = await snapshot();
    const filesBefore = walFiles();
    const r = await runCli(withData('--repo', repoUrl, '--yes', '--json'), env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const events = jsonLines(r.stdout);
    const logs = events.filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(logs).toContain('the archiving settings are right; nothing to change (the last step still proves a segment arrives)');
    const skipped = events.filter((e) => e.type === 'step-end' && e.status === 'skipped').map((e) => e.stepId);
    expect(skipped).toEqual(['propose', 'apply', 'apply-restart']);
    expect(events.some((e) => e.type === 'confirm-request')).toBe(false);
    expect(events.at(-1)!.summary.checks.every((c: { ok: boolean }) => c.ok)).toBe(true);

    expect(await snapshot()).toEqual(before); // same settings, same postmaster
    expect(walFiles().length).toBeGreaterThan(filesBefore.length);
  });

  it('--no-async-archive sets the plain synchronous wal-push (a reload, no restart), and it archives', async () => {
    const before = await snapshot();
    const r = await runCli(withData('--repo', repoUrl, '--no-async-archive', '--yes', '--json'), env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const after = await snapshot();
    expect(after.archiveCommand).toMatch(/^\S+node\S* \S+\/dist\/cli\.js wal-push --repo file:\/\/\S+ %p$/);
    expect(after.started).toBe(before.started);
    const bad = await runCli(withData('--repo', repoUrl, '--no-async-archive', '--spool-dir', path.join(work, 'spool'), '--yes', '--json'), env);
    expect(bad.exitCode).toBe(2);
  });

  it('a failing archive_command fails the proof (exit 3) with the server log lines and what to do; a missing repository directory is created for the server', async () => {
    const newRepo = path.join(work, 'fresh', 'repo');
    const failing = `sh -c 'echo "simulated: repository unreachable for $0" >&2; exit 1' %p`;
    const r = await runCli(withData('--repo', `file://${newRepo}`, '--archive-command', failing, '--yes', '--json'), env);
    expect(r.exitCode, r.stdout + r.stderr).toBe(3);
    const events = jsonLines(r.stdout);
    // Only archive_command changed: applied with a reload, no restart and no typed confirmation.
    expect(events.some((e) => e.type === 'step-end' && e.stepId === 'apply' && e.status === 'ok')).toBe(true);
    expect(events.some((e) => e.type === 'step-end' && e.stepId === 'apply-restart' && e.status === 'skipped')).toBe(true);

    const proof = events.at(-1)!.summary.checks.find((c: { name: string }) => c.name === 'segment archived');
    expect(proof.ok).toBe(false);
    expect(proof.detail).toMatch(/archive_command failed \d+ times since the switch/);
    // The command's own words (not a PostgreSQL log line) and PostgreSQL's verdict are quoted.
    expect(proof.detail).toContain('simulated: repository unreachable for pg_wal/');
    expect(proof.detail).toContain('LOG: archive command failed with exit code 1');
    expect(proof.detail).toContain('What to do:');
    const errorLogs = events.filter((e) => e.type === 'log' && e.level === 'error').map((e) => e.message as string);
    expect(errorLogs.some((l) => /archive command failed with exit code 1/.test(l))).toBe(true);

    const st = fs.statSync(newRepo);
    expect(st.isDirectory()).toBe(true);
    if (pgIds) expect([st.uid, st.gid]).toEqual([pgIds.uid, pgIds.gid]);
    const [command] = await cluster.query<{ archive_command: string }>('SHOW archive_command');
    expect(command.archive_command).toBe(failing);
  });
});

describe('wal-archiving into S3', () => {
  let cluster: SandboxCluster;
  let server: StorageServer;

  beforeAll(async () => {
    server = await startS3rver({ prefix: 'walarch' });
    cluster = await createSandboxCluster({ name: 'wal-archiving-s3', settings: { archive_mode: 'off' } });
  });

  afterAll(async () => {
    await cluster?.remove();
    await server?.stop();
  });

  it('takes archive_mode=off to archiving into an S3 repository, proven by a segment there', async () => {
    // The restarted server does not inherit this environment: wal-archiving writes the credentials
    // to an env file (mode 0600, the server's OS user's) that archive_command names.
    const env = { ...server.env, PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    const r = await runCli(
      ['--procedure', 'wal-archiving', '--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres', '--pgdata', cluster.dataDir, '--repo', server.url, '--yes', '--confirm', 'data', '--json'],
      env,
    );
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    const detail = jsonLines(r.stdout).at(-1)!.summary.checks.find((c: { name: string }) => c.name === 'segment archived').detail as string;
    const seg = /^([0-9A-F]{24}) arrived in /.exec(detail)?.[1];
    expect(seg, detail).toBeDefined();
    const store = await openStore(server.url, { ...process.env, ...server.env });
    try {
      expect(await store.head(`wal/${seg}.zst`)).toBeDefined();
    } finally {
      await store.close();
    }
    // The credentials are in the server's environment, never in its settings.
    const [{ archive_command: command }] = await cluster.query<{ archive_command: string }>('SHOW archive_command');
    expect(command).not.toMatch(/AWS_SECRET|S3RVER/);
    expect(command).toContain(` wal-push --env-file ${path.join(path.dirname(cluster.dataDir), 'pgrunbook-data.env')} --spool ${path.join(path.dirname(cluster.dataDir), 'pgrunbook-data.spool')} --repo `);
  });
});
