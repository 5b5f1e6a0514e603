// `pgrunbook --resume RUN_ID` alone, against a real cluster: a point-in-time recovery
// interrupted in the middle of unpacking the base backup continues from what the journal
// recorded (server, data directory, repository, the confirmation given), and a resume naming
// another data directory is refused.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';

describe('resume from the run id alone', () => {
  let cluster: SandboxCluster;
  let repoUrl: string;
  let env: Record<string, string>;
  let conn: string[];
  let lsn: string;

  const rows = async () => (await cluster.query<{ v: number }>('SELECT v FROM events ORDER BY v', [], 'app')).map((r) => r.v);

  beforeAll(async () => {
    const work = await serverWritableDir('pgrunbook-resume-');
    const repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    cluster = await createSandboxCluster({
      name: 'resume',
      settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '256MB' },
    });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    await cluster.query('CREATE DATABASE app');
    // The filler makes the unpack long enough to be interrupted part way.
    await cluster.query('CREATE TABLE events (v int PRIMARY KEY); CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 300000) g', [], 'app');
    const backup = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], env);
    expect(backup.exitCode, backup.stdout.slice(-3000) + backup.stderr).toBe(0);
    for (const v of [1, 2, 3, 4]) await cluster.query(`INSERT INTO events (v) VALUES (${v})`, [], 'app');
    lsn = (await cluster.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))[0].l;
    await cluster.query('INSERT INTO events (v) VALUES (5)', [], 'app');
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, async () => {
      const [s] = await cluster.query<{ last: string | null }>(`SELECT last_archived_wal AS last FROM pg_stat_archiver`);
      return s.last !== null && s.last >= name;
    }, 60_000);
  });

  afterAll(async () => {
    await cluster?.remove();
  });

  it('a pitr interrupted during the unpack continues with `--resume RUN_ID` and nothing else; another --pgdata is refused', async () => {
    const child = startCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', `lsn:${lsn}`, '--confirm', 'data', '--json'], env);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    // The base backup is unpacked (staged) while the preflight checks it: interrupt it there.
    await waitFor('the staging unpack to report progress', () => out.split('\n').some((l) => l.includes('"type":"progress"') && l.includes('"stepId":"preflight"') && l.includes('"unit":"bytes"')), 60_000);
    child.kill('SIGINT');
    const first = await child;
    expect(first.exitCode, first.stderr).toBe(130);
    const events = jsonLines(out);
    const runId = events[0].runId as string;
    const end = events.at(-1)!;
    expect(end.type).toBe('run-end');
    expect(end.summary.hint).toBe(`continue with: pgrunbook --resume ${runId}`);
    expect(end.summary.steps.find((s: { id: string }) => s.id === 'preflight').status).toBe('interrupted');

    const journalFile = path.join(env.PGRUNBOOK_STATE_DIR, 'runs', `${runId}.jsonl`);
    const records = fs.readFileSync(journalFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(records[0]).toMatchObject({
      rec: 'run-start',
      procedure: 'pitr',
      params: { target: `lsn:${lsn}` },
      context: { connection: { host: cluster.host, port: cluster.port, user: 'postgres' }, pgdata: cluster.dataDir, repo: repoUrl, confirm: ['data'] },
    });
    expect(records.at(-1)).toMatchObject({ rec: 'run-end', summary: { status: 'interrupted', exitCode: 130 } });

    // Another data directory: refused before anything is touched, naming both.
    const elsewhere = path.join(path.dirname(cluster.dataDir), 'not-this-one');
    const refused = await runCli(['--resume', runId, '--pgdata', elsewhere], env);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`--pgdata ${elsewhere} differs from the data directory run ${runId} used, ${cluster.dataDir}`);
    expect(refused.stderr).toMatch(/drop the flag .*or start a new run/);
    expect(fs.existsSync(elsewhere)).toBe(false);
    expect(fs.readFileSync(journalFile, 'utf8').trim().split('\n').length).toBe(records.length);

    // Only the run id (and the state directory in the environment, as before).
    const resumed = await runCli(['--resume', runId, '--json'], env);
    expect(resumed.exitCode, resumed.stdout.slice(-4000) + resumed.stderr).toBe(0);
    const resumedEvents = jsonLines(resumed.stdout);
    expect(resumedEvents[0]).toMatchObject({ type: 'run-start', runId, resumedAt: 'preflight' });
    expect(resumedEvents.at(-1)).toMatchObject({ type: 'run-end', summary: { status: 'ok', exitCode: 0 } });
    expect(await rows()).toEqual([1, 2, 3, 4]);
  });
});
