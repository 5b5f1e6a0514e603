// Stopping, starting and restarting a PostgreSQL server the way its profile says: pg_ctl on the
// data directory (run as the directory's owner when we are root), a systemd unit, or the
// operator's own shell commands. Callers check the server answers afterwards (waitForConnections).
// Every one of them runs with a minimal environment (serverEnvironment), never pgrunbook's own:
// the postmaster keeps what it was started with and hands it to archive_command.
import { constants as fsConstants } from 'node:fs';
import { access, chown, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ServerControl } from '../config/profile.js';
import { findPgBinary } from './binaries.js';
import { withPg, type PgConnection } from './client.js';
import { isRoot, runCommand, runIdsFor, type RunResult } from './osuser.js';
import { defaultServerLogFile, pgCtlStart, pgCtlStop, readLogTail } from './pgctl.js';
import { serverEnvironment } from './server-env.js';
import { pgrunbookCommand } from '../engine/command-name.js';

export type ServerControlMethod = ServerControl['method'];

/** How to control one server: the profile's `server` settings plus the data directory. */
export interface ServerControlSpec {
  method: ServerControlMethod;
  /** Data directory (needed for pg_ctl). */
  pgdata?: string;
  /** systemd unit, e.g. postgresql@15-main. */
  unit?: string;
  /** Shell commands (method "commands"). */
  start?: string;
  stop?: string;
  /** Variables passed from our environment to the control program (the profile's server.passEnv); nothing else is. */
  passEnv?: string[];
}

export class ServerControlError extends Error {
  constructor(
    message: string,
    readonly result?: RunResult,
    readonly logTail?: string,
  ) {
    super(message);
    this.name = 'ServerControlError';
  }
}

/** The profile's server control, defaulting to pg_ctl on the data directory. */
export function serverControlFor(profileServer: ServerControl | undefined, pgdata: string | undefined): ServerControlSpec {
  const method = profileServer?.method ?? 'pg_ctl';
  return {
    method,
    pgdata: pgdata ? path.resolve(pgdata) : undefined,
    unit: profileServer?.unit,
    start: profileServer?.start,
    stop: profileServer?.stop,
    passEnv: profileServer?.passEnv,
  };
}

/** What is missing to control the server this way, and how to supply it; undefined when nothing is. */
export function serverControlProblem(spec: ServerControlSpec): string | undefined {
  switch (spec.method) {
    case 'pg_ctl':
      return spec.pgdata
        ? undefined
        : 'restarting with pg_ctl needs the data directory: pass --pgdata DIR (or set PGDATA, or save pgdata in the profile), ' +
            `or save how to control the server in the profile (${pgrunbookCommand('profile save NAME --server-control systemd --systemd-unit UNIT')})`;
    case 'systemd':
      return spec.unit ? undefined : `the profile says server control "systemd" but names no unit: ${pgrunbookCommand('profile save NAME --server-control systemd --systemd-unit postgresql@15-main')}`;
    case 'commands':
      return spec.start && spec.stop
        ? undefined
        : `the profile says server control "commands" but lacks the start or stop command: ${pgrunbookCommand('profile save NAME --server-control commands --start-command CMD --stop-command CMD')}`;
  }
}

/** The command(s) a restart runs, for plans and messages. */
export function describeRestart(spec: ServerControlSpec, mode: 'fast' | 'smart' = 'fast'): string {
  switch (spec.method) {
    case 'pg_ctl':
      return `pg_ctl restart -D ${spec.pgdata ?? 'DATADIR'} -m ${mode} -w${isRoot() ? ' (as the data directory\'s owner)' : ''}`;
    case 'systemd':
      return `systemctl restart ${spec.unit ?? 'UNIT'}`;
    case 'commands':
      return `${spec.stop ?? 'STOP-COMMAND'}; then ${spec.start ?? 'START-COMMAND'}`;
  }
}

/** The command that starts the server, for "start it with ..." advice. */
export function describeStart(spec: ServerControlSpec): string {
  switch (spec.method) {
    case 'pg_ctl':
      return `pg_ctl start -D ${spec.pgdata ?? 'DATADIR'} -l LOGFILE${isRoot() ? ' (as the data directory\'s owner, e.g. su postgres -c ...)' : ''}`;
    case 'systemd':
      return `systemctl start ${spec.unit ?? 'UNIT'}`;
    case 'commands':
      return spec.start ?? 'START-COMMAND';
  }
}

export interface RestartOptions {
  /** pg_ctl shutdown mode; default fast (connections are dropped, no waiting for clients). */
  mode?: 'fast' | 'smart';
  /** Seconds pg_ctl / the commands may take; default 300 (a shutdown checkpoint can take long). */
  timeoutSec?: number;
  /** Cancels the control program (pg_ctl, systemctl, the shell). */
  signal?: AbortSignal;
  /** pg_ctl only: where the restarted server writes its log; default the running server's, else pg_ctl's default. */
  logFile?: string;
}

export interface RestartResult {
  /** The command(s) run. */
  command: string;
  /** pg_ctl only: the log file the restarted server writes to. */
  logFile?: string;
}

/**
 * Restart the server and wait for the control program to say it is up (pg_ctl -w, systemctl).
 * Throws ServerControlError with the program's output (and for pg_ctl the server log's tail).
 */
export async function restartServer(spec: ServerControlSpec, opts: RestartOptions = {}): Promise<RestartResult> {
  const problem = serverControlProblem(spec);
  if (problem) throw new ServerControlError(problem);
  const timeoutSec = opts.timeoutSec ?? 300;
  switch (spec.method) {
    case 'pg_ctl':
      return pgCtlRestart(spec.pgdata!, opts.mode ?? 'fast', timeoutSec, { ...opts, passEnv: spec.passEnv });
    case 'systemd': {
      const r = await runCommand('systemctl', ['restart', spec.unit!], { signal: opts.signal, timeoutMs: timeoutSec * 1000, ...cleanEnv(spec) });
      if (r.failed) {
        throw new ServerControlError(
          `could not restart PostgreSQL with systemctl restart ${spec.unit}: ${r.failure}. Look at: systemctl status ${spec.unit}; journalctl -u ${spec.unit} -n 50`,
          r,
        );
      }
      return { command: r.command };
    }
    case 'commands': {
      const stop = await shell(spec, spec.stop!, opts.signal, timeoutSec);
      if (stop.failed) throw new ServerControlError(`the profile's stop command failed, so PostgreSQL was not restarted: ${stop.failure}`, stop);
      const start = await shell(spec, spec.start!, opts.signal, timeoutSec);
      if (start.failed) {
        throw new ServerControlError(`PostgreSQL was stopped, but the profile's start command failed: ${start.failure}. Start it by hand: ${spec.start}`, start);
      }
      return { command: `${spec.stop}; ${spec.start}` };
    }
  }
}

function shell(spec: ServerControlSpec, command: string, signal: AbortSignal | undefined, timeoutSec: number): Promise<RunResult> {
  return runCommand('/bin/sh', ['-c', command], { signal, timeoutMs: timeoutSec * 1000, ...cleanEnv(spec) });
}

/** The minimal environment every control program (and so the server) gets: see serverEnvironment. */
function cleanEnv(spec: ServerControlSpec, binDir?: string): { env: Record<string, string>; extendEnv: false } {
  return { env: serverEnvironment({ binDir, passEnv: spec.passEnv }), extendEnv: false };
}

async function pgCtlRestart(
  pgdata: string,
  mode: 'fast' | 'smart',
  timeoutSec: number,
  opts: RestartOptions & { passEnv?: string[] },
): Promise<RestartResult> {
  try {
    if (!(await stat(pgdata)).isDirectory()) throw new ServerControlError(`${pgdata} is not a directory; --pgdata must name the server's data directory`);
  } catch (e) {
    if (e instanceof ServerControlError) throw e;
    throw new ServerControlError(`data directory ${pgdata} is not accessible (${(e as Error).message}); check --pgdata / PGDATA`);
  }
  const ids = await runIdsFor(pgdata);
  const pgCtl = await pgCtlForDataDir(pgdata);
  const passEnv = opts.passEnv;
  // Without -l the restarted postmaster would write to pg_ctl's stdout, a pipe we hold open:
  // keep writing where the running server writes.
  const logFile = path.resolve(opts.logFile ?? (await serverStderrFile(pgdata)) ?? defaultServerLogFile(pgdata));
  try {
    await stat(logFile);
  } catch {
    try {
      await writeFile(logFile, '', { flag: 'a', mode: 0o640 });
      if (ids && isRoot()) await chown(logFile, ids.uid, ids.gid);
    } catch (e) {
      throw new ServerControlError(`could not create the server log file ${logFile}: ${(e as Error).message}`);
    }
  }
  const logOffset = await stat(logFile).then(
    (s) => s.size,
    () => 0,
  );
  const r = await runCommand(pgCtl, ['restart', '-D', pgdata, '-m', mode, '-w', '-t', String(timeoutSec), '-l', logFile], {
    as: ids,
    signal: opts.signal,
    ...cleanEnv({ method: 'pg_ctl', passEnv }, path.dirname(pgCtl)),
  });
  if (r.failed) {
    const tail = await readLogTail(logFile, 25, logOffset);
    const out = [r.stdout, r.stderr].filter(Boolean).join('\n').trim();
    throw new ServerControlError(
      `pg_ctl restart failed for data directory ${pgdata}${r.exitCode !== undefined ? ` (exit code ${r.exitCode})` : ''}.` +
        (out ? `\n  pg_ctl said:\n${indent(out)}` : '') +
        (tail ? `\n  last lines of the server log ${logFile}:\n${indent(tail)}` : ''),
      r,
      tail,
    );
  }
  return { command: r.command, logFile };
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

/**
 * The pg_ctl of the PostgreSQL version that runs this data directory: next to the postgres
 * binary named in postmaster.opts, else /usr/lib/postgresql/<PG_VERSION>/bin, else the one found on
 * this machine. A pg_ctl of another major version refuses the data directory.
 */
export async function pgCtlForDataDir(pgdata: string): Promise<string> {
  const candidates: string[] = [];
  try {
    const opts = await readFile(path.join(pgdata, 'postmaster.opts'), 'utf8');
    const m = /^"?([^"\s]+)/.exec(opts.trim());
    if (m && path.isAbsolute(m[1])) candidates.push(path.join(path.dirname(m[1]), 'pg_ctl'));
  } catch {
    // never started, or not readable: try the next source
  }
  try {
    const major = (await readFile(path.join(pgdata, 'PG_VERSION'), 'utf8')).trim();
    if (/^\d+(\.\d+)?$/.test(major)) candidates.push(`/usr/lib/postgresql/${major}/bin/pg_ctl`);
  } catch {
    // fall through
  }
  for (const c of candidates) {
    try {
      await access(c, fsConstants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return findPgBinary('pg_ctl');
}

/** The postmaster's PID from DATADIR/postmaster.pid, when the file is there and readable. */
export async function postmasterPid(pgdata: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path.join(pgdata, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The port in DATADIR/postmaster.pid (its fourth line), when the file is there and readable. */
export async function postmasterPort(pgdata: string): Promise<number | undefined> {
  try {
    const port = Number((await readFile(path.join(pgdata, 'postmaster.pid'), 'utf8')).split('\n')[3]);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The names (never the values) of the variables in the running postmaster's environment, from
 * /proc/PID/environ; undefined when not on Linux, not permitted, or no server runs there.
 */
export async function postmasterEnvironmentNames(pgdata: string): Promise<string[] | undefined> {
  const pid = await postmasterPid(pgdata);
  if (!pid) return undefined;
  try {
    return (await readFile(`/proc/${pid}/environ`, 'utf8'))
      .split('\0')
      .map((e) => e.slice(0, Math.max(0, e.indexOf('='))))
      .filter(Boolean);
  } catch {
    return undefined;
  }
}

/**
 * The file the running postmaster's stderr goes to (where pg_ctl -l pointed it), read from
 * /proc/PID/fd/2. Undefined when not on Linux, not permitted, or stderr is not a regular file.
 */
export async function serverStderrFile(pgdata: string): Promise<string | undefined> {
  const pid = await postmasterPid(pgdata);
  if (!pid) return undefined;
  try {
    const target = await readlink(`/proc/${pid}/fd/2`);
    if (!path.isAbsolute(target) || target.endsWith(' (deleted)')) return undefined;
    return (await stat(target)).isFile() ? target : undefined;
  } catch {
    return undefined;
  }
}

/** Resolves true as soon as the server answers SELECT 1, false at the deadline. */
export async function waitForConnections(conn: PgConnection, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await withPg({ ...conn, connectTimeoutSec: Math.max(1, Math.min(10, Math.ceil((deadline - Date.now()) / 1000))) }, (c) => c.query('SELECT 1'));
      return true;
    } catch {
      if (Date.now() >= deadline || signal?.aborted) return false;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Stop the server the profile's way and wait until it is down. A server already down is fine. */
export async function stopServer(spec: ServerControlSpec, opts: { mode?: 'fast' | 'smart' | 'immediate'; timeoutSec?: number; signal?: AbortSignal } = {}): Promise<{ command: string; wasRunning?: boolean }> {
  const problem = serverControlProblem(spec);
  if (problem) throw new ServerControlError(problem);
  const timeoutSec = opts.timeoutSec ?? 300;
  switch (spec.method) {
    case 'pg_ctl': {
      try {
        const r = await pgCtlStop({ pgdata: spec.pgdata!, mode: opts.mode ?? 'fast', timeoutSec, signal: opts.signal, passEnv: spec.passEnv });
        return { command: `pg_ctl stop -D ${spec.pgdata} -m ${opts.mode ?? 'fast'}`, wasRunning: r.wasRunning };
      } catch (e) {
        throw new ServerControlError(`could not stop PostgreSQL (data directory ${spec.pgdata}): ${(e as Error).message}`);
      }
    }
    case 'systemd': {
      const r = await runCommand('systemctl', ['stop', spec.unit!], { signal: opts.signal, timeoutMs: timeoutSec * 1000, ...cleanEnv(spec) });
      if (r.failed) throw new ServerControlError(`could not stop PostgreSQL with systemctl stop ${spec.unit}: ${r.failure}`, r);
      return { command: r.command };
    }
    case 'commands': {
      const r = await shell(spec, spec.stop!, opts.signal, timeoutSec);
      if (r.failed) throw new ServerControlError(`the profile's stop command failed: ${r.failure}`, r);
      return { command: spec.stop! };
    }
  }
}

/** Start the server the profile's way; for pg_ctl, wait until it accepts connections (or fails, with the log's tail). */
export async function startServer(spec: ServerControlSpec, opts: { logFile?: string; timeoutSec?: number; signal?: AbortSignal } = {}): Promise<{ command: string; logFile?: string }> {
  const problem = serverControlProblem(spec);
  if (problem) throw new ServerControlError(problem);
  const timeoutSec = opts.timeoutSec ?? 3600;
  switch (spec.method) {
    case 'pg_ctl': {
      try {
        const r = await pgCtlStart({
          pgdata: spec.pgdata!,
          logFile: opts.logFile,
          timeoutSec,
          signal: opts.signal,
          pgCtl: await pgCtlForDataDir(spec.pgdata!),
          passEnv: spec.passEnv,
        });
        return { command: `pg_ctl start -D ${spec.pgdata} -l ${r.logFile}`, logFile: r.logFile };
      } catch (e) {
        throw new ServerControlError((e as Error).message);
      }
    }
    case 'systemd': {
      const r = await runCommand('systemctl', ['start', spec.unit!], { signal: opts.signal, timeoutMs: timeoutSec * 1000, ...cleanEnv(spec) });
      if (r.failed) throw new ServerControlError(`could not start PostgreSQL with systemctl start ${spec.unit}: ${r.failure}. Look at: journalctl -u ${spec.unit} -n 50`, r);
      return { command: r.command };
    }
    case 'commands': {
      const r = await shell(spec, spec.start!, opts.signal, timeoutSec);
      if (r.failed) throw new ServerControlError(`the profile's start command failed: ${r.failure}`, r);
      return { command: spec.start! };
    }
  }
}
