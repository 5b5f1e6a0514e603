import { existsSync, readFileSync } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  PG_BINDIR_ENV,
  PgBinaryNotFoundError,
  clearPgBinaryCache,
  findPgBinary,
  parsePgVersionOutput,
  pgBinaryVersion,
} from '../src/postgres/binaries.js';
import { PgConnectionError, connectPg, describeTarget, withPg } from '../src/postgres/client.js';
import { CommandError, isRoot, lookupUser, runCommand } from '../src/postgres/osuser.js';
import { pgCtlStatus } from '../src/postgres/pgctl.js';
import { createSandboxCluster, findFreePort } from '../src/postgres/sandbox.js';
import { sharedCluster, useTemporaryCluster, withTemporaryCluster } from './helpers/cluster.js';

/** The error a promise rejects with (fails the test if it resolves). */
async function rejectionOf<E extends Error = Error>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (e) {
    return e as E;
  }
  throw new Error('expected the promise to reject');
}

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

describe('binaries', () => {
  const savedEnv = process.env[PG_BINDIR_ENV];
  afterEach(() => {
    if (savedEnv === undefined) delete process.env[PG_BINDIR_ENV];
    else process.env[PG_BINDIR_ENV] = savedEnv;
    clearPgBinaryCache();
  });

  it('finds initdb and pg_ctl, and reads their version', async () => {
    const initdb = await findPgBinary('initdb');
    expect(path.isAbsolute(initdb)).toBe(true);
    expect(existsSync(initdb)).toBe(true);
    expect(await findPgBinary('initdb')).toBe(initdb); // cached
    expect(existsSync(await findPgBinary('pg_ctl'))).toBe(true);
    const v = await pgBinaryVersion('initdb');
    expect(v.major).toBeGreaterThanOrEqual(10);
    expect(v.full.startsWith(String(v.major))).toBe(true);
  });

  it('prefers $PGRUNBOOK_PG_BINDIR', async () => {
    const real = path.dirname(await realpath(await findPgBinary('initdb')));
    process.env[PG_BINDIR_ENV] = real;
    expect(await findPgBinary('initdb')).toBe(path.join(real, 'initdb'));
  });

  it('names what to install when a program is missing', async () => {
    const err = await rejectionOf(findPgBinary('pg_no_such_program'));
    expect(err).toBeInstanceOf(PgBinaryNotFoundError);
    expect((err as Error).message).toMatch(/^pg_no_such_program not found \(looked in .*PATH, pg_config --bindir, \/usr\/lib\/postgresql\/\*\/bin\)/);
    expect((err as Error).message).toContain('apt-get install -y postgresql');
    expect((err as Error).message).toContain(`set ${PG_BINDIR_ENV} to the directory holding pg_no_such_program`);
    expect(new PgBinaryNotFoundError('initdb', ['PATH', 'pg_config --bindir', '/usr/lib/postgresql/*/bin']).message).toBe(
      'initdb not found (looked in PATH, pg_config --bindir, /usr/lib/postgresql/*/bin). ' +
        'Install the PostgreSQL server: apt-get install -y postgresql (Debian/Ubuntu), ' +
        `or set ${PG_BINDIR_ENV} to the directory holding initdb.`,
    );
    expect(new PgBinaryNotFoundError('pg_dump', ['PATH']).message).toContain('apt-get install -y postgresql-client');
  });

  it('parses version strings', () => {
    expect(parsePgVersionOutput('initdb (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)')).toEqual({ major: 15, full: '15.4' });
    expect(parsePgVersionOutput('pg_dump (PostgreSQL) 17beta2')).toEqual({ major: 17, full: '17beta2' });
    expect(parsePgVersionOutput('psql (PostgreSQL) 9.6.24')).toEqual({ major: 9.6, full: '9.6.24' });
    expect(parsePgVersionOutput('nonsense')).toBeUndefined();
  });
});

describe('osuser', () => {
  it('looks users up in /etc/passwd', async () => {
    const root = await lookupUser('root');
    expect(root.uid).toBe(0);
    await expect(lookupUser('no-such-user-pgrunbook')).rejects.toThrow(/not found in \/etc\/passwd/);
  });

  it('runs programs without throwing unless asked, with stderr in errors', async () => {
    const ok = await runCommand('sh', ['-c', 'echo out; echo err >&2']);
    expect(ok).toMatchObject({ stdout: 'out', stderr: 'err', exitCode: 0, failed: false });
    const bad = await runCommand('sh', ['-c', 'echo boom >&2; exit 3']);
    expect(bad).toMatchObject({ exitCode: 3, failed: true });
    expect(bad.failure).toContain('boom');
    const err = await rejectionOf<CommandError>(runCommand('sh', ['-c', 'echo boom >&2; exit 3'], { reject: true }));
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).stderr).toBe('boom');
    const missing = await runCommand('/nonexistent/program', []);
    expect(missing.failed).toBe(true);
    expect(missing.failure).toMatch(/does not exist/);
  });

  it('cancels a running program with an AbortSignal', async () => {
    const ac = new AbortController();
    const started = Date.now();
    const p = runCommand('sleep', ['30'], { signal: ac.signal });
    ac.abort();
    const r = await p;
    expect(r.canceled).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it.runIf(isRoot())('runs as another user when root', async () => {
    const pgUser = await lookupUser('postgres');
    const r = await runCommand('id', ['-u'], { as: pgUser });
    expect(r.stdout).toBe(String(pgUser.uid));
  });
});

describe('client', () => {
  it('fails fast with a clear message when nothing listens on the port', async () => {
    const port = await findFreePort();
    const started = Date.now();
    const err = await rejectionOf<PgConnectionError>(connectPg({ host: '127.0.0.1', port, user: 'postgres', password: 's3cret-pw' }));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(err).toBeInstanceOf(PgConnectionError);
    expect((err as PgConnectionError).reason).toBe('refused');
    expect((err as Error).message).toBe(
      `could not connect to PostgreSQL at 127.0.0.1:${port}: connection refused. ` +
        'Is the server running and listening there? Check --host/--port or PGHOST/PGPORT.',
    );
    expect((err as Error).message).not.toContain('s3cret-pw');
  });

  it('names the socket when no server listens in a socket directory', async () => {
    const err = await rejectionOf<PgConnectionError>(connectPg({ host: os.tmpdir(), port: 1, user: 'postgres' }));
    expect(err).toBeInstanceOf(PgConnectionError);
    expect((err as PgConnectionError).reason).toBe('no-socket');
    expect(err.message).toContain(`socket ${os.tmpdir()}/.s.PGSQL.1`);
  });

  it('times out on a server that never answers, and says so', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((sock) => sockets.push(sock));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const started = Date.now();
      const err = await rejectionOf<PgConnectionError>(connectPg({ host: '127.0.0.1', port, connectTimeoutSec: 1 }));
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(err.reason).toBe('timeout');
      expect(err.message).toContain(`could not connect to PostgreSQL at 127.0.0.1:${port}: no answer within 1 s`);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('describes targets without the password', () => {
    expect(describeTarget({ host: '127.0.0.1', port: 5999, user: 'u', database: 'd', password: 'pw' })).toBe(
      '127.0.0.1:5999 (database "d", user "u")',
    );
    expect(describeTarget({ host: '/run/postgresql', port: 5432, user: 'postgres', database: 'x' })).toBe(
      'socket /run/postgresql/.s.PGSQL.5432 (database "x", user "postgres")',
    );
  });
});

describe('shared cluster from global setup', () => {
  it('answers queries over the socket and TCP', async () => {
    const shared = sharedCluster();
    expect(await shared.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    const viaTcp = await withPg(shared.tcpConnection(), async (c) => (await c.query('SELECT current_user AS u')).rows);
    expect(viaTcp).toEqual([{ u: 'postgres' }]);
    const db = await shared.createDatabase('postgres_test');
    expect(await shared.query('SELECT current_database() AS d', [], db)).toEqual([{ d: db }]);
    expect((await pgCtlStatus(shared.dataDir)).running).toBe(true);
  });

  it('reports a missing database clearly', async () => {
    const shared = sharedCluster();
    const err = await rejectionOf<PgConnectionError>(connectPg(shared.connection('no_such_db')));
    expect(err.reason).toBe('no-database');
    expect(err.message).toContain('database "no_such_db" does not exist');
  });
});

describe('sandbox cluster', () => {
  const cluster = useTemporaryCluster({ name: 'lifecycle', settings: { work_mem: '8MB' } });

  it('starts, answers queries, and has the sandbox settings', async () => {
    const c = cluster();
    expect(await c.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    expect(await c.psql("SELECT 1, NULL, 'a''b'; SELECT 2")).toBe("1||a'b\n2");
    expect(await c.psql('SHOW data_checksums; SHOW wal_level; SHOW work_mem; SHOW port')).toBe(
      `on\nreplica\n8MB\n${c.port}`,
    );
    expect(await c.psql('SHOW unix_socket_directories')).toBe(c.socketDir);
    expect((`${c.socketDir}/.s.PGSQL.65535`).length).toBeLessThanOrEqual(100);
    const viaTcp = await withPg(c.tcpConnection(), async (cl) => (await cl.query('SELECT 2 AS two')).rows);
    expect(viaTcp).toEqual([{ two: 2 }]);
    if (isRoot()) {
      const pgUser = await lookupUser('postgres');
      expect((await stat(c.dataDir)).uid).toBe(pgUser.uid);
    }
  });

  it('stops and starts, and pg_ctl status follows', async () => {
    const c = cluster();
    const before = await pgCtlStatus(c.dataDir);
    expect(before.running).toBe(true);
    expect(before.pid).toBeGreaterThan(0);
    await c.stop();
    expect(await pgCtlStatus(c.dataDir)).toEqual({ running: false });
    const err = await rejectionOf<PgConnectionError>(connectPg(c.tcpConnection()));
    expect(err.reason).toBe('refused');
    await c.stop(); // stopping a stopped server is fine
    await c.start();
    const after = await pgCtlStatus(c.dataDir);
    expect(after.running).toBe(true);
    expect(after.pid).not.toBe(before.pid);
    expect(await c.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    await c.stop('immediate');
    await c.start(); // crash recovery after immediate shutdown
    expect(await c.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
  });

  it('reports a missing data directory clearly', async () => {
    await expect(pgCtlStatus('/nonexistent/pgrunbook/data')).rejects.toThrow(
      'data directory /nonexistent/pgrunbook/data does not exist',
    );
  });
});

describe('sandbox lifecycle edge cases', () => {
  it('remove() deletes everything, and is safe to call twice', async () => {
    const c = await createSandboxCluster({ name: 'removal' });
    const pid = (await pgCtlStatus(c.dataDir)).pid!;
    expect(existsSync(c.baseDir)).toBe(true);
    await c.remove();
    expect(existsSync(c.baseDir)).toBe(false);
    expect(existsSync(c.socketDir)).toBe(false);
    expect(gone(pid)).toBe(true); // the postmaster is gone, not just its pid file
    await c.remove();
  });

  it('start: false creates without starting; remove() works on it', async () => {
    await withTemporaryCluster(
      async (c) => {
        expect(await pgCtlStatus(c.dataDir)).toEqual({ running: false });
        expect(await readFile(path.join(c.dataDir, 'postgresql.conf'), 'utf8')).toContain(`port = ${c.port}`);
      },
      { start: false },
    );
  });

  it('a failed start explains itself with the server log, and leaves nothing behind', async () => {
    const err = await rejectionOf(createSandboxCluster({ settings: { shared_buffers: 'lots' } }));
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/could not start PostgreSQL for data directory .*pgrunbook-sandbox-/);
    expect(err.message).toContain('last lines of the server log');
    expect(err.message).toMatch(/shared_buffers/);
    const baseDir = /data directory (\S+)\/data/.exec(err.message)?.[1];
    expect(baseDir).toBeTruthy();
    expect(existsSync(baseDir!)).toBe(false);
  });

  it('moves to another port when its port was taken before the server started', async () => {
    await withTemporaryCluster(
      async (c) => {
        const taken = c.port;
        const blocker = net.createServer();
        await new Promise<void>((resolve) => blocker.listen(taken, '127.0.0.1', resolve));
        try {
          await c.start();
        } finally {
          await new Promise((resolve) => blocker.close(resolve));
        }
        expect(c.port).not.toBe(taken);
        expect(await c.psql('SHOW port')).toBe(String(c.port));
        expect(await readFile(c.logFile, 'utf8')).toContain('Address already in use');
      },
      { start: false },
    );
  });

  it('a taken fixed port gives the bind error', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const err = await rejectionOf(createSandboxCluster({ port }));
      expect(err).toBeInstanceOf(Error);
      expect(err.message).toMatch(/Address already in use|could not create any TCP\/IP sockets/);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});
