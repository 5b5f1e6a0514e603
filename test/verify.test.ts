// `verify` against the run's shared sandbox cluster, through the real CLI and health-check.sh.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, jsonLines, ROOT, runCli, tempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';
import { findFreePort } from '../src/postgres/sandbox.js';

const HEALTH_CHECK = path.join(ROOT, 'scripts', 'disaster-recovery', 'health-check.sh');

describe('verify procedure', () => {
  const cluster = sharedCluster();
  let db: string;
  let conn: string[];
  let env: Record<string, string>;

  beforeAll(async () => {
    db = await cluster.createDatabase('verify');
    await cluster.query(`CREATE TABLE public.users (id int PRIMARY KEY, name text); INSERT INTO public.users SELECT g, 'u' || g FROM generate_series(1, 3) g`, [], db);
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', cluster.user];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
  });

  it('--json prints parseable JSON lines ending in a summary, exit 0 when all is well', async () => {
    const r = await runCli(['--procedure', 'verify', ...conn, '--databases', `${db},postgres`, '--critical-tables', `${db}:public.users:3`, '--server-log', cluster.logFile, '--log-fail-level', 'panic', '--json'], env);
    // The shared cluster's log holds other test files' FATAL lines (verify fails on them by default; its own test is below).
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const events = jsonLines(r.stdout);
    expect(events[0].type).toBe('run-start');
    const end = events.at(-1)!;
    expect(end.type).toBe('run-end');
    expect(end.summary).toMatchObject({ procedure: 'verify', status: 'ok', exitCode: 0 });
    const names = end.summary.checks.map((c: { name: string }) => c.name);
    expect(names).toEqual(['server reachable', `database ${db}`, 'database postgres', `table ${db}:public.users`, 'server log']);
    expect(end.summary.checks.find((c: { name: string }) => c.name === `table ${db}:public.users`).detail).toBe('3 rows (expected at least 3)');
    expect(fs.existsSync(end.summary.journalPath)).toBe(true);
  });

  it('a missing critical table exits 3 and names the table', async () => {
    const r = await runCli(['--procedure', 'verify', ...conn, '--databases', db, '--critical-tables', `${db}:public.orders,${db}:public.users`, '--json'], env);
    expect(r.exitCode).toBe(3);
    const end = jsonLines(r.stdout).at(-1)!;
    expect(end.summary.status).toBe('verification-failed');
    expect(end.summary.error).toContain(`table ${db}:public.orders: missing: table public.orders does not exist in database ${db}`);
  });

  it('a count below the expected one exits 3 and names the table and both numbers', async () => {
    const r = await runCli(['--procedure', 'verify', ...conn, '--databases', db, '--critical-tables', `${db}:public.users:1000`], env);
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toContain(`table ${db}:public.users: 3 rows, expected at least 1000`);
    expect(r.stdout).toContain('VERIFICATION FAILED');
  });

  it('a database that does not exist fails its check', async () => {
    const r = await runCli(['--procedure', 'verify', ...conn, '--databases', 'no_such_db'], env);
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toContain('database no_such_db: does not exist');
  });

  it('an unreachable server exits 1 with a clear message', async () => {
    const port = await findFreePort();
    const r = await runCli(['--procedure', 'verify', '--host', '127.0.0.1', '--port', String(port), '--user', 'postgres'], env);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain(`127.0.0.1:${port}`);
    expect(r.stdout).toMatch(/connection refused/i);
    expect(r.stdout).toMatch(/next: /);
  });

  it('unknown procedure and bad params exit 2 naming the valid choices', async () => {
    const unknown = await runCli(['--procedure', 'verfy', ...conn], env);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain('valid procedures: verify');
    const bad = await runCli(['--procedure', 'verify', ...conn, '--log-fail-level', 'loud', '--critical-tables', 'users'], env);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('--log-fail-level: "loud" is not one of: error, fatal, panic');
    expect(bad.stderr).toContain('should look like DATABASE:SCHEMA.TABLE');
    const badPort = await runCli(['--procedure', 'verify', '--port', 'fivefourthreetwo'], env);
    expect(badPort.exitCode).toBe(2);
    expect(badPort.stderr).toContain('--port: port must be a number');
  });

  it('finds ERROR lines in the server log since a time, and fails on them at --log-fail-level error', async () => {
    const since = new Date(Date.now() - 1000).toISOString();
    await expect(cluster.query(`SELECT * FROM verify_no_such_table_${db}`, [], db)).rejects.toThrow();
    const r = await runCli(['--procedure', 'verify', ...conn, '--databases', db, '--server-log', cluster.logFile, '--since', since, '--log-fail-level', 'error'], env);
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toContain(`verify_no_such_table_${db}`);
    // The shared cluster's log may get FATAL lines from other test files; at panic only PANIC fails.
    // (The default, fatal, is tested on a cluster of its own: test/honest-words.test.ts.)
    const lenient = await runCli(['--procedure', 'verify', ...conn, '--databases', db, '--server-log', cluster.logFile, '--since', since, '--log-fail-level', 'panic'], env);
    expect(lenient.exitCode).toBe(0);
    expect(lenient.stdout).toMatch(/server log: 0 PANIC, \d+ FATAL.*, [1-9]\d* ERROR \(shown, not failing\)/);
  });

  it('uses a saved profile, with PG* variables overriding it; a profile with a password is refused, one with a secret is mode 0600', async () => {
    const configDir = tempDir();
    const penv = { ...env, PGRUNBOOK_CONFIG_DIR: configDir };
    const saved = await runCli(['profile', 'save', 'shared', '--host', cluster.host, '--port', '1', '--user', cluster.user, '--databases', db, '--critical-tables', `${db}:public.users:1`], penv);
    expect(saved.exitCode, saved.stderr).toBe(0);
    // The profile's port is wrong on purpose: PGPORT overrides it.
    const r = await runCli(['--procedure', 'verify', '--profile', 'shared', '--json'], { ...penv, PGPORT: String(cluster.port) });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(jsonLines(r.stdout).at(-1)!.summary.checks.map((c: { name: string }) => c.name)).toContain(`table ${db}:public.users`);

    // A password is refused (it belongs in a password file), and the refusal does not show it.
    const refused = await runCli(['profile', 'save', 'secret', '--dbname', `postgresql://app:Pa55word!@127.0.0.1:5432/app`], penv);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/~\/\.pgpass, or the file PGPASSFILE names/);
    expect(refused.stderr + refused.stdout).not.toContain('Pa55word!');
    const withSecret = await runCli(['profile', 'save', 'secret', '--dbname', `postgresql://app@127.0.0.1:5432/app`, '--repo', 's3://b/p?accessKeyId=AKEXAMPLE&secretAccessKey=Pa55word!'], penv);
    expect(withSecret.exitCode, withSecret.stderr).toBe(0);
    const file = fs.readdirSync(configDir).find((f) => f.endsWith('.json'))!;
    expect(fs.statSync(path.join(configDir, file)).mode & 0o777).toBe(0o600);
    const shown = await runCli(['profile', 'show', 'secret'], penv);
    expect(shown.stdout).not.toContain('Pa55word!');

    const missing = await runCli(['--procedure', 'verify', '--profile', 'nope'], penv);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('no profile named "nope"');
    expect(missing.stderr).toContain('Profiles: secret, shared');
  });

  it('health-check.sh exits 0 when healthy and 3 when a critical table is missing', async () => {
    const run = (args: string[]) => execa('bash', [HEALTH_CHECK, ...args], { reject: false, extendEnv: false, env: cleanEnv(env), stdin: 'ignore' });
    const good = await run([...conn, '--databases', db, '--critical-tables', `${db}:public.users:3`]);
    expect(good.exitCode, String(good.stdout)).toBe(0);
    const bad = await run([...conn, '--databases', db, '--critical-tables', `${db}:public.gone`]);
    expect(bad.exitCode).toBe(3);
    expect(String(bad.stdout)).toContain(`${db}:public.gone`);
  });
});
