// Sandbox clusters: throwaway PostgreSQL clusters in a temp directory, with their own port and
// socket directory. Used by the tests and by the drill procedure. As root, the cluster runs as
// the `postgres` OS user. Like every server pgrunbook starts, a sandbox starts with a minimal
// environment (serverEnvironment via pgCtlStart), never the caller's.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { findPgBinary } from './binaries.js';
import { withPg, type PgConnection } from './client.js';
import { firstUntraversableDir, isRoot, lookupUser, runCommand, type OsIds } from './osuser.js';
import { PgCtlError, pgCtlStart, pgCtlStop } from './pgctl.js';
import { serverEnvironment } from './server-env.js';

export interface SandboxCluster {
  name: string;
  baseDir: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  /** Current port (may change if start() had to move to a free one). */
  port: number;
  /** The socket directory: connect here with user postgres. */
  host: string;
  /** Database superuser. */
  user: 'postgres';
  /** Directory of the PostgreSQL programs the cluster was made with. */
  binDir: string;
  /** Connection via the unix socket directory, user postgres (default database "postgres"). */
  connection(database?: string): PgConnection;
  /** Connection via TCP to 127.0.0.1:port, user postgres. */
  tcpConnection(database?: string): PgConnection;
  start(): Promise<void>;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stop (immediate) if running and delete baseDir. Safe to call twice, and after a failed start. */
  remove(): Promise<void>;
  /** Run SQL (one or more statements); rows as text like `psql -At`: columns joined by '|', rows by '\n'. */
  psql(sql: string, database?: string): Promise<string>;
  // biome-ignore lint/suspicious/noExplicitAny: rows are whatever the caller's SQL selects; callers name T
  query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
}

export interface SandboxOptions {
  /** Label for messages; default: the base directory's name. */
  name?: string;
  /** Directory to create the cluster in; must be missing or empty. Default: a fresh temp dir. */
  baseDir?: string;
  /** Fixed port; default: a free one (and another if it is taken by the time the server starts). */
  port?: number;
  /** Extra postgresql.conf settings; they override the sandbox defaults. */
  settings?: Record<string, string | number | boolean>;
  /** Extra initdb arguments. */
  initdbArgs?: string[];
  /** Start the server; default true. */
  start?: boolean;
  /** Outlive this process (a drill resumed later): not stopped and deleted when the process exits. */
  persistent?: boolean;
}

const SOCKET_PATH_MAX = 100; // sun_path is 108 bytes; keep room for "/.s.PGSQL.65535"
const CONF_BEGIN = '# --- pgrunbook sandbox settings (begin) ---';
const CONF_END = '# --- pgrunbook sandbox settings (end) ---';
const PORT_RETRIES = 5;

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not find a free TCP port'))));
    });
  });
}

function confValue(v: string | number | boolean): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function isPortConflict(text: string): boolean {
  return /Address already in use|could not create any TCP\/IP sockets|could not bind IPv4 address/i.test(text);
}

// ---- clean-up of sandboxes left running when the process ends abruptly ----

const live = new Set<SandboxClusterImpl>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => killSandboxClustersSync());
}

/** Postmaster PID from postmaster.pid, if the file exists and names a live postgres process. */
function postmasterPidSync(dataDir: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!/postgres|postmaster/.test(cmd)) return undefined; // PID reused by something else
  } catch {
    // no /proc (not Linux): trust postmaster.pid
  }
  return pid;
}

/** Whether a process exists and is not a zombie waiting to be reaped. */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return !existsSync('/proc/self');
  }
}

async function waitPidGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return !pidAlive(pid);
}

/**
 * Synchronously kill (immediate shutdown, SIGQUIT) every sandbox cluster this process created and
 * has not removed, and delete their directories. For exit and signal handlers; prefer remove().
 */
export function killSandboxClustersSync(): void {
  for (const c of [...live]) c.killSync();
}

// ---- the cluster ----

class SandboxClusterImpl implements SandboxCluster {
  readonly user = 'postgres' as const;
  port: number;
  private removed = false;
  private readonly ownsSocketDir: boolean;

  constructor(
    readonly name: string,
    readonly baseDir: string,
    readonly dataDir: string,
    readonly socketDir: string,
    readonly logFile: string,
    readonly binDir: string,
    port: number,
    private readonly fixedPort: boolean,
  ) {
    this.port = port;
    this.ownsSocketDir = path.dirname(socketDir) !== baseDir;
  }

  get host(): string {
    return this.socketDir;
  }

  private get pgCtl(): string {
    return path.join(this.binDir, 'pg_ctl');
  }

  connection(database = 'postgres'): PgConnection {
    return { host: this.socketDir, port: this.port, user: 'postgres', database, applicationName: 'pgrunbook-sandbox' };
  }

  tcpConnection(database = 'postgres'): PgConnection {
    return { host: '127.0.0.1', port: this.port, user: 'postgres', database, applicationName: 'pgrunbook-sandbox' };
  }

  /** Rewrite our block at the end of postgresql.conf. */
  async writeSettings(settings: Record<string, string | number | boolean>): Promise<void> {
    const confPath = path.join(this.dataDir, 'postgresql.conf');
    let text = await readFile(confPath, 'utf8');
    const b = text.indexOf(CONF_BEGIN);
    if (b >= 0) {
      const e = text.indexOf(CONF_END, b);
      text = text.slice(0, b) + (e >= 0 ? text.slice(e + CONF_END.length + 1) : '');
    }
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${confValue(v)}`);
    text = `${text.replace(/\n*$/, '\n')}${CONF_BEGIN}\n${lines.join('\n')}\n${CONF_END}\n`;
    await writeFile(confPath, text); // keeps the file's owner
  }

  settings: Record<string, string | number | boolean> = {};

  async start(): Promise<void> {
    if (this.removed) throw new Error(`sandbox cluster ${this.name} was removed`);
    for (let attempt = 1; ; attempt++) {
      try {
        await pgCtlStart({ pgdata: this.dataDir, logFile: this.logFile, pgCtl: this.pgCtl, timeoutSec: 60 });
        return;
      } catch (e) {
        const tail = e instanceof PgCtlError ? (e.logTail ?? '') : '';
        if (this.fixedPort || attempt >= PORT_RETRIES || !isPortConflict(tail)) throw e;
        // Someone took our port between findFreePort() and the server's bind: move.
        this.port = await findFreePort();
        this.settings.port = this.port;
        await this.writeSettings(this.settings);
      }
    }
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await pgCtlStop({ pgdata: this.dataDir, mode, pgCtl: this.pgCtl, timeoutSec: 60 });
  }

  async remove(): Promise<void> {
    if (this.removed) return;
    const pid = postmasterPidSync(this.dataDir);
    if (existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
      try {
        await pgCtlStop({ pgdata: this.dataDir, mode: 'immediate', pgCtl: this.pgCtl, timeoutSec: 30 });
      } catch {
        await this.killAndWait();
      }
    }
    // pg_ctl returns once postmaster.pid is gone, a moment before the process exits.
    if (pid && !(await waitPidGone(pid, 10_000))) await this.killAndWait(pid);
    await rm(this.baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    if (this.ownsSocketDir) await rm(this.socketDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    this.removed = true;
    live.delete(this);
  }

  /** SIGQUIT the postmaster, then SIGKILL if it is still there after 10 s. */
  private async killAndWait(knownPid?: number): Promise<void> {
    const pid = knownPid ?? postmasterPidSync(this.dataDir);
    if (!pid) return;
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      return;
    }
    if (await waitPidGone(pid, 10_000)) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    await waitPidGone(pid, 5_000);
  }

  killSync(): void {
    if (this.removed) return;
    const pid = postmasterPidSync(this.dataDir);
    if (pid) {
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {
        // gone already
      }
    }
    try {
      rmSync(this.baseDir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
      if (this.ownsSocketDir) rmSync(this.socketDir, { recursive: true, force: true });
    } catch {
      // best effort
    }
    this.removed = true;
    live.delete(this);
  }

  async psql(sql: string, database?: string): Promise<string> {
    const rawText = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;
    return withPg(this.connection(database), async (c) => {
      const res = (await c.query({ text: sql, rowMode: 'array', types: rawText })) as unknown as
        | pg.QueryArrayResult
        | pg.QueryArrayResult[];
      const results = Array.isArray(res) ? res : [res];
      const lines: string[] = [];
      for (const r of results) {
        for (const row of r.rows ?? []) lines.push(row.map((v) => (v === null ? '' : String(v))).join('|'));
      }
      return lines.join('\n');
    });
  }

  // biome-ignore lint/suspicious/noExplicitAny: as declared in SandboxCluster
  async query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]> {
    return withPg(this.connection(database), async (c) => {
      const res = (await c.query(sql, params)) as unknown as pg.QueryResult | pg.QueryResult[];
      if (Array.isArray(res)) return (res[res.length - 1]?.rows ?? []) as T[];
      return res.rows as T[];
    });
  }
}

async function prepareBaseDir(opts: SandboxOptions): Promise<string> {
  if (!opts.baseDir) {
    const tmp = await realpath(os.tmpdir());
    return mkdtemp(path.join(tmp, 'pgrunbook-sandbox-'));
  }
  const dir = path.resolve(opts.baseDir);
  await mkdir(dir, { recursive: true });
  const entries = await readdir(dir);
  if (entries.length > 0) {
    throw new Error(`sandbox base directory ${dir} is not empty; give a missing or empty directory.`);
  }
  return dir;
}

/**
 * Create (initdb) and, unless `start: false`, start a sandbox cluster. On failure everything it
 * created is removed and the error names the cause (with the server log's tail).
 */
export async function createSandboxCluster(opts: SandboxOptions = {}): Promise<SandboxCluster> {
  const initdb = await findPgBinary('initdb');
  const binDir = path.dirname(await realpath(initdb));
  const pgCtlPath = path.join(binDir, 'pg_ctl');
  try {
    await stat(pgCtlPath);
  } catch {
    throw new Error(`pg_ctl not found next to ${initdb} (in ${binDir}); install the complete PostgreSQL server package.`);
  }

  let runAs: OsIds | undefined;
  if (isRoot()) {
    const u = await lookupUser('postgres');
    runAs = { uid: u.uid, gid: u.gid, home: u.home };
  }

  const baseDir = await prepareBaseDir(opts);
  let socketDir = path.join(baseDir, 'sock');
  let separateSocketDir: string | undefined;
  const cleanupEarly = async () => {
    await rm(baseDir, { recursive: true, force: true });
    if (separateSocketDir) await rm(separateSocketDir, { recursive: true, force: true });
  };

  let cluster: SandboxClusterImpl;
  try {
    if (runAs) {
      const blocked = await firstUntraversableDir(path.dirname(baseDir), runAs);
      if (blocked) {
        throw new Error(
          `the postgres OS user cannot enter ${blocked}, so it cannot run a sandbox cluster under ${baseDir}. ` +
            `Choose a base directory under ${os.tmpdir()} or make ${blocked} traversable (chmod o+x).`,
        );
      }
      await chown(baseDir, runAs.uid, runAs.gid);
    }
    if (socketDir.length + '/.s.PGSQL.65535'.length > SOCKET_PATH_MAX) {
      separateSocketDir = await mkdtemp('/tmp/pgrb-');
      socketDir = separateSocketDir;
    } else {
      await mkdir(socketDir, { mode: 0o700 });
    }
    if (runAs) await chown(socketDir, runAs.uid, runAs.gid);

    const dataDir = path.join(baseDir, 'data');
    const logFile = path.join(baseDir, 'server.log');
    const init = await runCommand(
      initdb,
      ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C', '-k', ...(opts.initdbArgs ?? [])],
      { as: runAs, cwd: baseDir, env: serverEnvironment({ binDir, extra: { LC_ALL: 'C', LANG: 'C', TZ: process.env.TZ ?? 'UTC' } }), extendEnv: false },
    );
    if (init.failed) throw new Error(`initdb failed for sandbox cluster in ${dataDir}: ${init.failure}`);

    const port = opts.port ?? (await findFreePort());
    cluster = new SandboxClusterImpl(
      opts.name ?? path.basename(baseDir),
      baseDir,
      dataDir,
      socketDir,
      logFile,
      binDir,
      port,
      opts.port !== undefined,
    );
    cluster.settings = {
      port,
      listen_addresses: '127.0.0.1',
      unix_socket_directories: socketDir,
      synchronous_commit: 'off',
      wal_level: 'replica',
      max_wal_senders: 4,
      logging_collector: 'off',
      log_line_prefix: '%m [%p] ',
      ...(opts.settings ?? {}),
    };
    await cluster.writeSettings(cluster.settings);
  } catch (e) {
    await cleanupEarly();
    throw e;
  }

  if (!opts.persistent) {
    live.add(cluster);
    installExitHook();
  }
  if (opts.start ?? true) {
    try {
      await cluster.start();
    } catch (e) {
      await cluster.remove().catch(() => {});
      throw e;
    }
  }
  return cluster;
}

/** Run `fn` with a fresh sandbox cluster, and remove it afterwards whatever happens. */
export async function withSandboxCluster<T>(
  fn: (cluster: SandboxCluster) => Promise<T>,
  opts: SandboxOptions = {},
): Promise<T> {
  const cluster = await createSandboxCluster(opts);
  try {
    return await fn(cluster);
  } finally {
    await cluster.remove();
  }
}

/** Reconnectable check that a server answers: resolves true as soon as `SELECT 1` works, false at the deadline. */
export async function waitForServer(conn: PgConnection, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await withPg({ ...conn, connectTimeoutSec: Math.max(1, Math.ceil((deadline - Date.now()) / 1000)) }, (c) =>
        c.query('SELECT 1'),
      );
      return true;
    } catch {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
