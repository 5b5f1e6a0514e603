// A local repository written by runs as root and as postgres (archive_command): everything in it
// belongs to the owner of its root (postgres), so every later run as postgres works.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, serverOwnedRepoDir, serverWritableDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';

/** Every file and directory under `dir` (itself included) whose owner is not uid/gid. */
function foreignOwned(dir: string, uid: number, gid: number): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = fs.lstatSync(p);
    if (st.uid !== uid || st.gid !== gid) out.push(`${path.relative(dir, p) || '.'} (${st.uid}:${st.gid})`);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
  };
  walk(dir);
  return out;
}

describe.skipIf(!isRoot())('a local repository written as root and as postgres', () => {
  let work: string;
  let repo: string;
  let url: string;
  let cluster: SandboxCluster;
  let pg: { uid: number; gid: number };
  let rootState: string;
  let pgState: string;
  const conn = () => ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];

  /** The CLI as the postgres OS user (runuser keeps the environment we give it). */
  async function asPostgres(args: string[]) {
    const r = await execa('runuser', ['-u', 'postgres', '--', process.execPath, CLI, ...args], {
      reject: false,
      extendEnv: false,
      env: cleanEnv({ PGRUNBOOK_STATE_DIR: pgState, HOME: pgState }),
      stdin: 'ignore',
      cwd: '/',
    });
    return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
  }

  beforeAll(async () => {
    pg = await lookupUser('postgres');
    work = await serverWritableDir('pgrunbook-owner-');
    repo = await serverOwnedRepoDir(work);
    url = `file://${repo}`;
    rootState = path.join(work, 'state-root');
    pgState = path.join(work, 'state-postgres');
    fs.mkdirSync(pgState);
    fs.chownSync(pgState, pg.uid, pg.gid);
    // archive_command runs as postgres: wal-push writes wal/ as that user.
    cluster = await createSandboxCluster({
      name: 'repo-owner',
      settings: { archive_mode: 'on', archive_command: `'${process.execPath}' '${CLI}' wal-push --repo '${url}' %p`, wal_keep_size: '256MB' },
    });
  });

  afterAll(async () => {
    await cluster?.remove();
  });

  it('root runs (backup-base, backup-logical, catalog --verify, locks) leave only postgres-owned files; postgres runs then work', async () => {
    const stateEnv = { PGRUNBOOK_STATE_DIR: rootState };
    const base = await runCli(['--procedure', 'backup-base', ...conn(), '--repo', url, '--checkpoint', 'fast', '--json'], stateEnv);
    expect(base.exitCode, base.stdout.slice(-2000) + base.stderr).toBe(0);
    const dump = await runCli(['--procedure', 'backup-logical', ...conn(), '--databases', 'postgres', '--repo', url, '--json'], stateEnv);
    expect(dump.exitCode, dump.stdout.slice(-2000) + dump.stderr).toBe(0);
    const verified = await runCli(['catalog', '--repo', url, '--verify'], stateEnv);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
    // And postgres's archive_command wrote WAL in between.
    await cluster.query('SELECT pg_switch_wal()');
    await waitFor('a segment archived by postgres', async () => {
      const [s] = await cluster.query<{ archived_count: string; failed_count: string }>('SELECT archived_count, failed_count FROM pg_stat_archiver');
      if (Number(s.failed_count) > 0) throw new Error(`archive_command failed: ${fs.readFileSync(cluster.logFile, 'utf8').slice(-2000)}`);
      return Number(s.archived_count) > 0;
    }, 60_000);

    expect(foreignOwned(repo, pg.uid, pg.gid)).toEqual([]);
    // Directories 0750, files 0640 (records every user reads: 0644), nothing writable by others.
    const modes = new Set<string>();
    const walk = (p: string) => {
      const st = fs.lstatSync(p);
      modes.add(`${st.isDirectory() ? 'd' : 'f'}${(st.mode & 0o777).toString(8)}`);
      if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
    };
    for (const n of fs.readdirSync(repo)) walk(path.join(repo, n));
    expect([...modes].filter((m) => !['d750', 'f640', 'f644'].includes(m))).toEqual([]);

    // Every later run as postgres works on what root wrote.
    const pgBase = await asPostgres(['--procedure', 'backup-base', ...conn(), '--repo', url, '--checkpoint', 'fast', '--json']);
    expect(pgBase.exitCode, pgBase.stdout.slice(-2000) + pgBase.stderr).toBe(0);
    const pgVerify = await asPostgres(['catalog', '--repo', url, '--verify']);
    expect(pgVerify.exitCode, pgVerify.stdout + pgVerify.stderr).toBe(0);
    const retention = await asPostgres(['--procedure', 'retention', '--repo', url, '--keep-base-backups', '1', '--confirm', repo.startsWith('/') ? `file://${repo}` : url, '--json']);
    expect(retention.exitCode, retention.stdout.slice(-3000) + retention.stderr).toBe(0);
    const catalog = await asPostgres(['catalog', '--repo', url, '--json']);
    expect(catalog.exitCode, catalog.stderr).toBe(0);
    expect((JSON.parse(catalog.stdout) as { baseBackups: unknown[] }).baseBackups).toHaveLength(1);
    expect(foreignOwned(repo, pg.uid, pg.gid)).toEqual([]);
  });
});
