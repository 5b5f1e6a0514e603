// Servers start with a clean environment. wal-archiving into S3 (s3rver) from an environment that
// holds AWS credentials and PGPASSWORD: after its restart the postmaster's /proc/PID/environ holds
// neither, the credentials are in a 0600 env file owned by the server's OS user that archive_command
// names, and archiving still works after a plain restart from an environment holding only PATH.
// wal-push refuses an env file others may read; the profile's start/stop commands and sandbox
// clusters get the minimal environment too.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, jsonLines, runCli, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { startS3rver, S3RVER_SECRET, type StorageServer } from './helpers/storage-servers.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { serverEnvironment } from '../src/postgres/server-env.js';
import { startServer, stopServer } from '../src/postgres/server-control.js';
import { openStore } from '../src/storage/url.js';
import { serverEnvFileVars, walCommandLine, writeServerEnvFile } from '../src/procedures/pgrunbook-command.js';

const PGPASSWORD_VALUE = 'pgpw-distinct-5d81c0e2';

function postmasterPid(dataDir: string): number {
  return Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function environOf(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
}

function environNames(pid: number): string[] {
  return environOf(pid)
    .split('\0')
    .filter(Boolean)
    .map((e) => e.slice(0, e.indexOf('=')));
}

describe('wal-archiving into S3 leaves the server a clean environment and a credentials file', () => {
  let server: StorageServer;
  let cluster: SandboxCluster;
  let stateDir: string;
  let envFile: string;
  let cliEnv: Record<string, string>;
  let pgIds: { uid: number; gid: number } | undefined;

  beforeAll(async () => {
    server = await startS3rver({ prefix: 'clean-env' });
    cluster = await createSandboxCluster({ name: 'clean-env', settings: { archive_mode: 'off' } });
    stateDir = path.join(tempDir('pgrunbook-cleanenv-'), 'state');
    // Not inside the data directory (base backups copy it): next to it.
    envFile = path.join(path.dirname(cluster.dataDir), 'pgrunbook-data.env');
    // s3rver accepts only its fixed key pair, so the secret's value is S3RVER; PGPASSWORD is distinctive.
    cliEnv = { ...server.env, PGPASSWORD: PGPASSWORD_VALUE, PGRUNBOOK_STATE_DIR: stateDir };
    if (isRoot()) pgIds = await lookupUser('postgres');
  });

  afterAll(async () => {
    await cluster?.remove();
    await server?.stop();
    if (stateDir) fs.rmSync(path.dirname(stateDir), { recursive: true, force: true });
  });

  const procedure = (...extra: string[]) =>
    runCli(
      ['--procedure', 'wal-archiving', '--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres', '--pgdata', cluster.dataDir, '--repo', server.url, '--json', ...extra],
      cliEnv,
    );

  function assertNoSecrets(text: string, where: string): void {
    expect(text.includes(S3RVER_SECRET), `${where} holds the AWS secret`).toBe(false);
    expect(text.includes(PGPASSWORD_VALUE), `${where} holds PGPASSWORD's value`).toBe(false);
  }

  it('the dry run names the env file and the variables, writes nothing and shows no secret', async () => {
    const r = await procedure('--dry-run');
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    const logs = jsonLines(r.stdout)
      .filter((e) => e.type === 'log')
      .map((e) => e.message as string);
    const owner = pgIds ? 'postgres:postgres' : 'this user';
    const write = logs.find((l) => l.startsWith(`would: write ${envFile} (mode 0600, owner ${owner}): `));
    expect(write, logs.join('\n')).toBeDefined();
    expect(write!.split(': ').at(-1)!.split(', ')).toEqual(expect.arrayContaining(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']));
    expect(write).not.toContain('PGPASSWORD');
    expect(logs.some((l) => l.includes(`wal-push --env-file ${envFile} `) && l.includes(' --repo '))).toBe(true);
    assertNoSecrets(r.stdout + r.stderr, 'the dry run output');
    expect(fs.existsSync(envFile)).toBe(false);
  });

  it('after its restart the postmaster holds neither secret; the env file is 0600 and the server user\'s; archive_command names only its path', async () => {
    const pidBefore = postmasterPid(cluster.dataDir);
    const r = await procedure('--yes', '--confirm', 'data');
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    const end = jsonLines(r.stdout).at(-1)!;
    expect(end.summary.checks.find((c: { name: string }) => c.name === 'segment archived').ok).toBe(true);

    // Restarted by pgrunbook: a new postmaster, whose environment is the minimal one.
    const pid = postmasterPid(cluster.dataDir);
    expect(pid).not.toBe(pidBefore);
    const environ = environOf(pid);
    expect(environ).toMatch(/(^|\0)PATH=/); // we did read it
    const names = environNames(pid);
    for (const n of ['AWS_SECRET_ACCESS_KEY', 'AWS_ACCESS_KEY_ID', 'PGPASSWORD', 'PGRUNBOOK_STATE_DIR']) expect(names).not.toContain(n);
    assertNoSecrets(environ, "the postmaster's environment");

    // The env file: mode 0600, owned by the server's OS user, only the repository's variables.
    const st = fs.statSync(envFile);
    expect(st.mode & 0o777).toBe(0o600);
    if (pgIds) expect([st.uid, st.gid]).toEqual([pgIds.uid, pgIds.gid]);
    else expect(st.uid).toBe(process.getuid!());
    const text = fs.readFileSync(envFile, 'utf8');
    expect(text).toContain(`AWS_SECRET_ACCESS_KEY=${S3RVER_SECRET}\n`);
    expect(text).toContain('AWS_ACCESS_KEY_ID=');
    expect(text).not.toContain('PGPASSWORD');
    expect(text).not.toContain('PGRUNBOOK_STATE_DIR');

    // archive_command (what ps shows while it runs) carries the file's path, no secret.
    const [{ archive_command: command }] = await cluster.query<{ archive_command: string }>('SHOW archive_command');
    expect(command).toContain(` wal-push --env-file ${envFile} `);
    expect(command).toContain(' --repo ');
    assertNoSecrets(command, 'archive_command');
    const [{ archive_mode: mode }] = await cluster.query<{ archive_mode: string }>('SHOW archive_mode');
    expect(mode).toBe('on');

    // Nor in the output or the journal.
    assertNoSecrets(r.stdout + r.stderr, 'the output');
    const runs = path.join(stateDir, 'runs');
    const journals = fs.readdirSync(runs);
    expect(journals.length).toBeGreaterThan(0);
    for (const j of journals) assertNoSecrets(fs.readFileSync(path.join(runs, j), 'utf8'), `journal ${j}`);
  });

  it('after a plain restart from an environment holding only PATH, archiving into S3 still works', async () => {
    const pidBefore = postmasterPid(cluster.dataDir);
    const pgCtl = path.join(cluster.binDir, 'pg_ctl');
    const restart = await execa(pgCtl, ['restart', '-D', cluster.dataDir, '-m', 'fast', '-w', '-t', '60', '-l', cluster.logFile], {
      reject: false,
      extendEnv: false,
      env: { PATH: '/usr/bin:/bin' },
      cwd: '/',
      stdin: 'ignore',
      ...(pgIds ? { uid: pgIds.uid, gid: pgIds.gid } : {}),
    });
    expect(restart.exitCode, String(restart.stderr)).toBe(0);
    const pid = postmasterPid(cluster.dataDir);
    expect(pid).not.toBe(pidBefore);
    expect(environNames(pid).filter((n) => n.startsWith('AWS_') || n === 'PGPASSWORD')).toEqual([]);

    const [before] = await cluster.query<{ failed: string; last: string | null }>('SELECT failed_count::text AS failed, last_archived_wal AS last FROM pg_stat_archiver');
    await cluster.query('SELECT pg_current_xact_id()');
    const [{ seg }] = await cluster.query<{ seg: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS seg');
    const store = await openStore(server.url, { ...process.env, ...server.env });
    try {
      await waitFor(`${seg} in the S3 bucket`, async () => Boolean(await store.head(`wal/${seg}.zst`)), 60_000, 200);
      const [after] = await waitFor(
        'pg_stat_archiver to report the segment',
        async () => {
          const rows = await cluster.query<{ failed: string; last: string | null }>('SELECT failed_count::text AS failed, last_archived_wal AS last FROM pg_stat_archiver');
          return rows[0].last !== null && rows[0].last >= seg ? rows : undefined;
        },
        30_000,
        200,
      );
      expect(after.last! >= seg).toBe(true);
      expect(after.last).not.toBe(before.last);
      expect(after.failed).toBe(before.failed);
    } finally {
      await store.close();
    }

    // wal-fetch with only the env file (no AWS_* in its environment) gets the segment back.
    const out = path.join(tempDir('pgrunbook-cleanenv-fetch-'), seg);
    const fetched = await execa('node', [CLI, 'wal-fetch', '--env-file', envFile, '--repo', server.url, seg, out], {
      reject: false,
      extendEnv: false,
      env: cleanEnv({ AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined }),
      stdin: 'ignore',
    });
    expect(fetched.exitCode, String(fetched.stderr)).toBe(0);
    expect(fs.statSync(out).size).toBe(16 * 1024 * 1024);
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
  });

  it('a changed environment rewrites the env file with a reload, no restart; an env file inside the data directory is refused', async () => {
    const pid = postmasterPid(cluster.dataDir);
    const [{ command: commandBefore }] = await cluster.query<{ command: string }>('SELECT current_setting(\'archive_command\') AS command');
    const r = await runCli(
      ['--procedure', 'wal-archiving', '--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres', '--pgdata', cluster.dataDir, '--repo', server.url, '--yes', '--json'],
      { ...cliEnv, AWS_DEFAULT_REGION: 'us-east-1' },
    );
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    const events = jsonLines(r.stdout);
    expect(events.some((e) => e.type === 'log' && e.stepId === 'apply' && String(e.message).startsWith(`wrote ${envFile} (mode 0600`))).toBe(true);
    expect(events.some((e) => e.type === 'confirm-request' && e.destructive)).toBe(false);
    expect(fs.readFileSync(envFile, 'utf8')).toContain('AWS_DEFAULT_REGION=us-east-1\n');
    expect(fs.statSync(envFile).mode & 0o777).toBe(0o600);
    expect(postmasterPid(cluster.dataDir)).toBe(pid); // no restart
    const [{ command }] = await cluster.query<{ command: string }>('SELECT current_setting(\'archive_command\') AS command');
    expect(command).toBe(commandBefore);

    const inside = path.join(cluster.dataDir, 'creds.env');
    const refused = await runCli(
      ['--procedure', 'wal-archiving', '--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres', '--pgdata', cluster.dataDir, '--repo', server.url, '--server-env-file', inside, '--yes', '--json'],
      cliEnv,
    );
    expect(refused.exitCode, refused.stdout.slice(-3000) + refused.stderr).toBe(1);
    expect(jsonLines(refused.stdout).at(-1)!.summary.error).toContain(`--server-env-file ${inside} is inside the data directory`);
    expect(fs.existsSync(inside)).toBe(false);
    expect((await cluster.query<{ command: string }>('SELECT current_setting(\'archive_command\') AS command'))[0].command).toBe(commandBefore);
  });
});

describe('env files', () => {
  it('wal-push --env-file refuses a file group or others may read, saying to chmod 600; wal-fetch loads a 0600 one', async () => {
    const dir = tempDir('pgrunbook-envfile-');
    try {
      const file = path.join(dir, 'server.env');
      const repoDir = path.join(dir, 'repo');
      fs.mkdirSync(repoDir);
      fs.writeFileSync(file, `# test\nAWS_SECRET_ACCESS_KEY=envfile-secret-93b1\nPGRUNBOOK_REPO=file://${repoDir}\n`, { mode: 0o644 });
      fs.chmodSync(file, 0o644);
      const wal = path.join(dir, '000000010000000000000001');
      fs.writeFileSync(wal, Buffer.alloc(1024));
      const push = await execa('node', [CLI, 'wal-push', '--env-file', file, wal], { reject: false, extendEnv: false, env: cleanEnv(), stdin: 'ignore' });
      expect(push.exitCode).toBe(2);
      expect(String(push.stderr)).toContain(`env file ${file} is readable by group or others (mode 0644)`);
      expect(String(push.stderr)).toContain(`chmod 600 ${file}`);
      expect(String(push.stderr)).not.toContain('envfile-secret-93b1');
      expect(fs.readdirSync(repoDir)).toEqual([]);

      // 0600: loaded, and its PGRUNBOOK_REPO is the repository (a missing segment: exit 1, quietly).
      fs.chmodSync(file, 0o600);
      const fetch = await execa('node', [CLI, 'wal-fetch', '--env-file', file, '000000010000000000000009', path.join(dir, 'out')], {
        reject: false,
        extendEnv: false,
        env: cleanEnv(),
        stdin: 'ignore',
      });
      expect(fetch.exitCode, String(fetch.stderr)).toBe(1);
      expect(String(fetch.stderr)).not.toContain('no repository');
      const noFile = await execa('node', [CLI, 'wal-fetch', '000000010000000000000009', path.join(dir, 'out')], { reject: false, extendEnv: false, env: cleanEnv(), stdin: 'ignore' });
      expect(noFile.exitCode).toBe(2);
      expect(String(noFile.stderr)).toContain('no repository');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writeServerEnvFile writes only the repository kind\'s variables, mode 0600; nothing for file://', async () => {
    const dir = tempDir('pgrunbook-envfile-');
    try {
      const env = { AWS_ACCESS_KEY_ID: 'id', AWS_SECRET_ACCESS_KEY: 'sec', AZURE_STORAGE_KEY: 'az', PGPASSWORD: 'pw', PGRUNBOOK_WAL_COMPRESS: 'none', HOME: '/root' };
      expect(Object.keys(serverEnvFileVars('s3://b/p', env)!)).toEqual(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'PGRUNBOOK_WAL_COMPRESS']);
      expect(Object.keys(serverEnvFileVars('azure://c/p', env)!)).toEqual(['AZURE_STORAGE_KEY', 'PGRUNBOOK_WAL_COMPRESS']);
      expect(await writeServerEnvFile(path.join(dir, 'f.env'), 'file:///x', env)).toBeUndefined();
      expect(fs.existsSync(path.join(dir, 'f.env'))).toBe(false);
      const written = await writeServerEnvFile(path.join(dir, 's3.env'), 's3://b/p', env);
      expect(written).toBe(path.join(dir, 's3.env'));
      expect(fs.statSync(written!).mode & 0o777).toBe(0o600);
      const text = fs.readFileSync(written!, 'utf8');
      expect(text).toContain('AWS_SECRET_ACCESS_KEY=sec\n');
      expect(text).not.toMatch(/PGPASSWORD|AZURE|HOME/);
      expect(walCommandLine('wal-fetch', 's3://b/p', {}, { envFile: written }).command).toMatch(new RegExp(` wal-fetch --env-file ${written} --repo s3://b/p %f %p$`));
      expect(walCommandLine('wal-push', 's3://b/p', {}).command).toMatch(/ wal-push --repo s3:\/\/b\/p %p$/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('server control and sandboxes start servers with a minimal environment', () => {
  it('serverEnvironment keeps PATH (bindir first), locale, TZ and passEnv names, nothing else', () => {
    const env = serverEnvironment({
      binDir: '/opt/pg/bin',
      passEnv: ['HTTPS_PROXY'],
      from: { LANG: 'C.UTF-8', LC_MESSAGES: 'C', TZ: 'UTC', HTTPS_PROXY: 'http://proxy', PGPASSWORD: 'x', AWS_SECRET_ACCESS_KEY: 'y', HOME: '/root', PATH: '/evil' },
    });
    expect(env.PATH.split(':')[0]).toBe('/opt/pg/bin');
    expect(env.PATH).toContain('/usr/bin');
    expect(env.PATH).not.toContain('/evil');
    expect(env).toMatchObject({ LANG: 'C.UTF-8', LC_MESSAGES: 'C', TZ: 'UTC', HTTPS_PROXY: 'http://proxy' });
    expect(Object.keys(env).sort()).toEqual(['HTTPS_PROXY', 'LANG', 'LC_MESSAGES', 'PATH', 'TZ']);
  });

  it("the profile's start and stop commands run without pgrunbook's environment, with the passEnv names", async () => {
    const dir = tempDir('pgrunbook-cmdenv-');
    const saved = { pw: process.env.PGPASSWORD, pass: process.env.PGRUNBOOK_PASS_ME };
    process.env.PGPASSWORD = PGPASSWORD_VALUE;
    process.env.PGRUNBOOK_PASS_ME = 'passed-through';
    try {
      const startOut = path.join(dir, 'start.env');
      const stopOut = path.join(dir, 'stop.env');
      const spec = { method: 'commands' as const, start: `env > ${startOut}`, stop: `env > ${stopOut}`, passEnv: ['PGRUNBOOK_PASS_ME'] };
      await startServer(spec);
      await stopServer(spec);
      for (const f of [startOut, stopOut]) {
        const text = fs.readFileSync(f, 'utf8');
        expect(text).toMatch(/^PATH=/m);
        expect(text).toContain('PGRUNBOOK_PASS_ME=passed-through');
        expect(text).not.toContain('PGPASSWORD');
        expect(text).not.toContain(PGPASSWORD_VALUE);
      }
    } finally {
      if (saved.pw === undefined) delete process.env.PGPASSWORD;
      else process.env.PGPASSWORD = saved.pw;
      if (saved.pass === undefined) delete process.env.PGRUNBOOK_PASS_ME;
      else process.env.PGRUNBOOK_PASS_ME = saved.pass;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a sandbox cluster's postmaster does not inherit the caller's environment", async () => {
    const saved = process.env.PGRUNBOOK_SANDBOX_SECRET;
    process.env.PGRUNBOOK_SANDBOX_SECRET = 'sandbox-secret-4e2a';
    let cluster: SandboxCluster | undefined;
    try {
      cluster = await createSandboxCluster({ name: 'clean-env-sandbox' });
      const pid = postmasterPid(cluster.dataDir);
      const environ = environOf(pid);
      expect(environ).toMatch(/(^|\0)PATH=/);
      expect(environ).not.toContain('PGRUNBOOK_SANDBOX_SECRET');
      expect(environ).not.toContain('sandbox-secret-4e2a');
      // A stop and start (as the drill does) stays clean.
      await cluster.stop();
      await cluster.start();
      expect(environOf(postmasterPid(cluster.dataDir))).not.toContain('sandbox-secret-4e2a');
    } finally {
      if (saved === undefined) delete process.env.PGRUNBOOK_SANDBOX_SECRET;
      else process.env.PGRUNBOOK_SANDBOX_SECRET = saved;
      await cluster?.remove();
    }
  });
});
