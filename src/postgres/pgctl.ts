// Server control for a data directory through pg_ctl. As root, pg_ctl runs as the data
// directory's owner (PostgreSQL refuses to run as root).
import { createHash } from 'node:crypto';
import { chown, open, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { findPgBinary } from './binaries.js';
import { isRoot, runCommand, runIdsFor, type OsIds, type RunResult } from './osuser.js';
import { serverEnvironment } from './server-env.js';

export type StopMode = 'fast' | 'smart' | 'immediate';

interface CommonOptions {
  /** Path of pg_ctl; default: findPgBinary('pg_ctl'). */
  pgCtl?: string;
  signal?: AbortSignal;
  /** Seconds pg_ctl waits (-t); default 60. */
  timeoutSec?: number;
  /** Variables to pass from our environment to pg_ctl and the server (the profile's server.passEnv); nothing else is passed. */
  passEnv?: readonly string[];
}

/** pg_ctl (and the server it starts) runs with a minimal environment, never ours. */
function pgCtlEnv(pgCtl: string, opts: CommonOptions): { env: Record<string, string>; extendEnv: false } {
  return { env: serverEnvironment({ binDir: path.dirname(pgCtl), passEnv: opts.passEnv }), extendEnv: false };
}

export interface PgCtlStartOptions extends CommonOptions {
  pgdata: string;
  /**
   * Server log file (-l). Default: a file in the temp directory named after the data directory
   * (the server's own logging_collector, when on, still writes where it is configured to).
   */
  logFile?: string;
  /** Extra server options (-o), e.g. "-c port=5433". */
  options?: string;
}

export interface PgCtlStopOptions extends CommonOptions {
  pgdata: string;
  mode: StopMode;
}

export interface PgCtlStatus {
  running: boolean;
  pid?: number;
}

export class PgCtlError extends Error {
  readonly result?: RunResult;
  readonly logTail?: string;
  constructor(message: string, result?: RunResult, logTail?: string) {
    super(message);
    this.name = 'PgCtlError';
    this.result = result;
    this.logTail = logTail;
  }
}

async function pgCtlPath(opts: CommonOptions): Promise<string> {
  return opts.pgCtl ?? findPgBinary('pg_ctl');
}

async function idsFor(pgdata: string): Promise<OsIds | undefined> {
  try {
    const st = await stat(pgdata);
    if (!st.isDirectory()) throw new PgCtlError(`${pgdata} is not a directory; expected a PostgreSQL data directory.`);
  } catch (e) {
    if (e instanceof PgCtlError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PgCtlError(`data directory ${pgdata} does not exist. Check --pgdata / PGDATA.`);
    }
    throw new PgCtlError(`could not inspect data directory ${pgdata}: ${(e as Error).message}`);
  }
  return runIdsFor(pgdata);
}

/** Default log file for a data directory when the caller gives none. */
export function defaultServerLogFile(pgdata: string): string {
  const h = createHash('sha256').update(path.resolve(pgdata)).digest('hex').slice(0, 10);
  return path.join(os.tmpdir(), `pgrunbook-server-${path.basename(pgdata)}-${h}.log`);
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await stat(p)).size;
  } catch {
    return 0;
  }
}

/** Last `maxLines` lines of a file, reading from byte `from` (only the last 64 KiB are read). */
export async function readLogTail(file: string, maxLines = 30, from = 0): Promise<string> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch {
    return '';
  }
  try {
    const size = (await fh.stat()).size;
    const start = Math.max(from, size - 64 * 1024, 0);
    if (start >= size) return '';
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const lines = buf.toString('utf8').trimEnd().split('\n');
    return lines.slice(-maxLines).join('\n');
  } finally {
    await fh.close();
  }
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

/**
 * Start the server for `pgdata` and wait (-w) until it accepts connections. On failure, the error
 * carries pg_ctl's output and the tail of the server log. Returns the log file used.
 */
export async function pgCtlStart(opts: PgCtlStartOptions): Promise<{ logFile: string }> {
  const pgdata = path.resolve(opts.pgdata);
  const pgCtl = await pgCtlPath(opts);
  const ids = await idsFor(pgdata);
  const logFile = path.resolve(opts.logFile ?? defaultServerLogFile(pgdata));

  // The server (running as the owner) must be able to append to the log file.
  const existed = await stat(logFile).then(
    () => true,
    () => false,
  );
  if (!existed) {
    try {
      await writeFile(logFile, '', { flag: 'a', mode: 0o640 });
      if (ids && isRoot()) await chown(logFile, ids.uid, ids.gid);
    } catch (e) {
      throw new PgCtlError(`could not create the server log file ${logFile}: ${(e as Error).message}`);
    }
  }
  const logOffset = await fileSize(logFile);
  const timeoutSec = opts.timeoutSec ?? 60;
  const args = ['start', '-D', pgdata, '-w', '-t', String(timeoutSec), '-l', logFile];
  if (opts.options) args.push('-o', opts.options);

  const r = await runCommand(pgCtl, args, { as: ids, signal: opts.signal, ...pgCtlEnv(pgCtl, opts) });
  if (r.failed) {
    const tail = await readLogTail(logFile, 25, logOffset);
    const out = [r.stdout, r.stderr].filter(Boolean).join('\n').trim();
    const msg =
      `could not start PostgreSQL for data directory ${pgdata}` +
      (r.canceled ? ' (cancelled)' : r.exitCode !== undefined ? ` (pg_ctl exit code ${r.exitCode})` : '') +
      '.' +
      (out ? `\n  pg_ctl said:\n${indent(out)}` : '') +
      (tail ? `\n  last lines of the server log ${logFile}:\n${indent(tail)}` : `\n  the server log ${logFile} is empty.`);
    throw new PgCtlError(msg, r, tail);
  }
  return { logFile };
}

/**
 * Stop the server for `pgdata` and wait (-w) until it is down. Stopping a server that is not
 * running is not an error: the result says whether it was running.
 */
export async function pgCtlStop(opts: PgCtlStopOptions): Promise<{ wasRunning: boolean }> {
  const pgdata = path.resolve(opts.pgdata);
  const pgCtl = await pgCtlPath(opts);
  const ids = await idsFor(pgdata);
  const timeoutSec = opts.timeoutSec ?? 60;
  const r = await runCommand(pgCtl, ['stop', '-D', pgdata, '-m', opts.mode, '-w', '-t', String(timeoutSec)], {
    as: ids,
    signal: opts.signal,
    ...pgCtlEnv(pgCtl, opts),
  });
  if (!r.failed) return { wasRunning: true };
  const out = `${r.stderr}\n${r.stdout}`;
  if (/PID file .* does not exist|Is server running\?/i.test(out)) return { wasRunning: false };
  throw new PgCtlError(
    `could not stop PostgreSQL (mode ${opts.mode}) for data directory ${pgdata}` +
      (r.exitCode !== undefined ? ` (pg_ctl exit code ${r.exitCode})` : '') +
      `:\n${indent(out.trim())}` +
      (opts.mode === 'smart' ? '\n  smart mode waits for all clients to disconnect; try mode fast.' : ''),
    r,
  );
}

/** Whether a server runs on `pgdata` (pg_ctl status), and its postmaster PID. */
export async function pgCtlStatus(pgdata: string, opts: Omit<CommonOptions, 'timeoutSec'> = {}): Promise<PgCtlStatus> {
  const dir = path.resolve(pgdata);
  const pgCtl = await pgCtlPath(opts);
  const ids = await idsFor(dir);
  const r = await runCommand(pgCtl, ['status', '-D', dir], { as: ids, signal: opts.signal, ...pgCtlEnv(pgCtl, opts) });
  if (r.exitCode === 0) {
    const m = /PID:\s*(\d+)/.exec(r.stdout);
    return { running: true, pid: m ? Number(m[1]) : undefined };
  }
  if (r.exitCode === 3) return { running: false };
  throw new PgCtlError(
    `could not get the server status for ${dir}` +
      (r.exitCode === 4 ? ': not an accessible PostgreSQL data directory' : '') +
      `: ${(r.stderr || r.stdout || r.failure).trim()}`,
    r,
  );
}
