// pg_dump and pg_restore --list as streams: pg_dump's output goes straight to whoever reads it
// (the repository), never to a temporary file, and a pg_dump that fails makes that stream fail, so
// a truncated dump can never be stored as if it were whole. The connection travels in libpq's
// environment variables (no password on a command line).
import { readdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Duplex, type Readable, type Writable } from 'node:stream';
import { startStreamingProgram } from './spawn.js';
import type { ConnectionSettings } from '../../config/connection.js';
import { drainedOrClosed } from '../streams.js';
import { findPgBinary, pgBinaryVersion, PgBinaryNotFoundError, PG_BINDIR_ENV, type PgBinaryVersion } from '../binaries.js';
import { libpqEnv } from '../libpq.js';

/** How many stderr lines reach the log (the rest are counted), and how many end up in an error message. */
const STDERR_LOGGED_LINES = 200;
const STDERR_TAIL_LINES = 8;
const STDERR_MAX_LINE = 1000;

/** Splits a child's stderr into lines: each goes to `onLine` up to a limit; the last few are kept for errors. */
export class StderrLines {
  private partial = '';
  private readonly tail: string[] = [];
  private delivered = 0;
  private suppressed = 0;

  constructor(
    private readonly onLine?: (line: string) => void,
    private readonly maxDelivered = STDERR_LOGGED_LINES,
    private readonly keep = STDERR_TAIL_LINES,
  ) {}

  push(chunk: Buffer | string): void {
    this.partial += chunk.toString();
    // A child that never prints a newline must not grow this without bound.
    if (this.partial.length > 64 * 1024) this.partial = this.partial.slice(-STDERR_MAX_LINE);
    let nl: number;
    while ((nl = this.partial.indexOf('\n')) >= 0) {
      this.line(this.partial.slice(0, nl));
      this.partial = this.partial.slice(nl + 1);
    }
  }

  end(): void {
    if (this.partial) this.line(this.partial);
    this.partial = '';
    if (this.suppressed > 0) this.onLine?.(`(${this.suppressed} more stderr lines not shown)`);
  }

  lastLines(): string[] {
    return [...this.tail];
  }

  private line(raw: string): void {
    const text = raw.replace(/\r$/, '');
    if (!text.trim()) return;
    const line = text.length > STDERR_MAX_LINE ? `${text.slice(0, STDERR_MAX_LINE)}…` : text;
    this.tail.push(line);
    if (this.tail.length > this.keep) this.tail.shift();
    if (this.delivered < this.maxDelivered) {
      this.delivered++;
      this.onLine?.(line);
    } else {
      this.suppressed++;
    }
  }
}

export interface ChildExit {
  ok: boolean;
  exitCode?: number;
  signal?: string;
  /** Stopped through the abort signal (or stop()), not failed on its own. */
  canceled: boolean;
  /** The last stderr lines. */
  stderrTail: string[];
  /** One line for an error message: what happened, with the last stderr lines. Empty when ok. */
  failure: string;
}

export class PgDumpError extends Error {
  constructor(
    message: string,
    readonly exit: ChildExit,
  ) {
    super(message);
    this.name = 'PgDumpError';
  }
}

export interface PgDumpOptions {
  /** Absolute path of pg_dump (see findPgDumpFor). */
  pgDump: string;
  /** Where to connect; `database` is the database dumped. */
  connection: ConnectionSettings;
  /** A snapshot exported with pg_export_snapshot() by a transaction that stays open until pg_dump has started. */
  snapshot?: string;
  /** Aborting kills pg_dump (SIGTERM, SIGKILL 5 s later); the output stream then fails. */
  signal?: AbortSignal;
  /** Each stderr line (bounded: the first 200, then a count). */
  onStderrLine?: (line: string) => void;
  /** Bytes of dump read so far, called as they pass. */
  onBytes?: (total: number) => void;
  extraArgs?: string[];
  /** Base environment for pg_dump (default process.env); PG* connection variables are replaced. */
  env?: NodeJS.ProcessEnv;
}

export interface PgDumpRun {
  /**
   * The dump, byte for byte. It ends only after pg_dump exited 0; if pg_dump fails or is killed,
   * it errors with a PgDumpError instead of ending, so a consumer never mistakes a truncated dump
   * for a whole one. Destroying it (a consumer that gave up) kills pg_dump.
   */
  output: Readable;
  /** Settles when pg_dump has exited (never rejects). */
  exited: Promise<ChildExit>;
  /** The command line, without secrets (the connection is in the environment). */
  command: string;
  /** Bytes read from pg_dump so far. */
  bytes(): number;
  /** Kill pg_dump (idempotent). */
  stop(): void;
}

/** pg_dump's arguments: the connection comes from libpq's environment variables, never from here. */
export function pgDumpArgs(opts: Pick<PgDumpOptions, 'snapshot' | 'extraArgs'>): string[] {
  // Custom format: pg_restore can restore from it selectively and in parallel. Uncompressed: the
  // repository's codec compresses it on another core, and the rows are counted in the COPY data
  // as it passes (formats/custom-archive.ts).
  // --no-password: fail rather than wait for a password nobody will type (cron, CI).
  const args = ['--format=custom', '--compress=0', '--no-password'];
  if (opts.snapshot) args.push(`--snapshot=${opts.snapshot}`);
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** pg_dump started, with what its exit means. */
function spawnPgDump(opts: PgDumpOptions, file: string | undefined) {
  const args = pgDumpArgs(opts);
  // --no-sync: the file is a pipe (fsync fails on one); what is durable is the stored object.
  if (file !== undefined) args.push(`--file=${file}`, '--no-sync');
  const command = [opts.pgDump, ...args].join(' ') + (opts.connection.database ? ` (PGDATABASE=${opts.connection.database})` : '');
  const stopper = new AbortController();
  const cancelSignal = opts.signal ? AbortSignal.any([opts.signal, stopper.signal]) : stopper.signal;
  const stderr = new StderrLines(opts.onStderrLine);

  const child = startStreamingProgram(opts.pgDump, args, {
    env: libpqEnv(opts.connection, opts.env ?? process.env),
    stdin: 'ignore',
    stdout: file === undefined ? 'pipe' : 'ignore',
    signal: cancelSignal,
    forceKillAfterDelay: 5000,
  });
  child.stderr?.on('data', (d: Buffer) => stderr.push(d));

  const exited: Promise<ChildExit> = child.then(
    (r) => {
      stderr.end();
      const tail = stderr.lastLines();
      const exitCode = r.exitCode ?? undefined;
      const signal = r.signal ?? undefined;
      const canceled = Boolean(r.isCanceled) || (stopper.signal.aborted && exitCode !== 0);
      const ok = !r.failed && exitCode === 0;
      let failure = '';
      if (!ok) {
        const code = (r as unknown as { code?: string }).code;
        let why: string;
        if (canceled) why = 'was stopped';
        else if (exitCode === undefined && code === 'ENOENT') why = `could not be started: ${opts.pgDump} does not exist`;
        else if (exitCode === undefined && code === 'EACCES') why = `could not be started: permission denied on ${opts.pgDump}`;
        else if (exitCode !== undefined) why = `exited with code ${exitCode}`;
        else if (signal) why = `was killed by ${signal}`;
        else why = `failed: ${r.shortMessage ?? r.message}`;
        failure = `pg_dump ${why}${tail.length ? `: ${tail.join(' | ')}` : ''}`;
      }
      return { ok, exitCode, signal, canceled, stderrTail: tail, failure };
    },
    (err: unknown) => {
      stderr.end();
      const tail = stderr.lastLines();
      return { ok: false, canceled: stopper.signal.aborted, stderrTail: tail, failure: `pg_dump failed: ${(err as Error).message}` };
    },
  );
  return { child, exited, command, stopper };
}

/**
 * Start pg_dump writing its archive into `file` (a named pipe whose reader is already waiting:
 * the dump's worker thread, services/logical-dump-pass.ts). `exited` says whether the archive
 * is whole; `stop` kills pg_dump.
 */
export function startPgDumpToFile(opts: PgDumpOptions & { file: string }): { exited: Promise<ChildExit>; command: string; stop(): void } {
  const { exited, command, stopper } = spawnPgDump(opts, opts.file);
  return { exited, command, stop: () => stopper.abort(new Error('stopped')) };
}

/** Start pg_dump with its output as a stream (see PgDumpRun.output). */
export function startPgDump(opts: PgDumpOptions): PgDumpRun {
  const { child, exited, command, stopper } = spawnPgDump(opts, undefined);

  let bytes = 0;
  let settled = false;
  const output = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      opts.onBytes?.(bytes);
      cb(null, chunk);
    },
    // pg_dump closes its stdout before it exits: the stream ends only once its exit code says
    // the dump is whole.
    flush(cb) {
      exited.then((exit) => {
        settled = true;
        if (exit.ok) cb();
        else cb(new PgDumpError(exit.failure, exit));
      }, cb);
    },
  });
  // A consumer that gives up (the upload failed) must not leave pg_dump blocked on a full pipe.
  output.on('close', () => {
    if (settled) return;
    stopper.abort(new Error('the dump stream was closed before pg_dump finished'));
    // Discard what is left in the pipe so the child's streams end and its exit is seen.
    child.stdout?.unpipe(output);
    child.stdout?.resume();
  });
  child.stdout!.pipe(output);
  child.stdout!.on('error', (err) => output.destroy(err));

  return {
    output,
    exited,
    command,
    bytes: () => bytes,
    stop: () => stopper.abort(new Error('stopped')),
  };
}

export interface TocSummary {
  /** Entries in the archive's table of contents. */
  entries: number;
  /** TABLE DATA entries (one per table whose rows are in the dump). */
  tableData: number;
}

export interface RestoreListResult {
  /** Bytes read from `input`, all of it, whether or not pg_restore wanted them. */
  bytes: number;
  /** The table of contents, when pg_restore was run and parsed it. */
  toc?: TocSummary;
  /** pg_restore's exit, when it was run. */
  exit?: ChildExit;
}

/**
 * Read `input` to its end (so a checksum-verifying stream gets to verify it), feeding it to
 * `pg_restore --list` on the way when `pgRestore` is given: proof that the archive's header and
 * table of contents parse. pg_restore stops reading once it has the table of contents; the rest of
 * the input is read and counted anyway. Rejects with the input's error (e.g. a checksum mismatch).
 * `decode`: a stream the input passes through before pg_restore reads it (a decompressor); it is
 * stopped once pg_restore has the table of contents, so the rest is read but not decoded.
 */
export async function readThroughRestoreList(
  input: Readable,
  opts: {
    pgRestore?: string;
    decode?: Duplex;
    signal?: AbortSignal;
    env?: NodeJS.ProcessEnv;
    onBytes?: (total: number) => void;
    /** Stop reading once pg_restore has the table of contents (the input's checksum is then not checked). */
    untilListed?: boolean;
  } = {},
): Promise<RestoreListResult> {
  let bytes = 0;
  if (!opts.pgRestore) {
    for await (const chunk of input) {
      bytes += (chunk as Buffer).length;
      opts.onBytes?.(bytes);
    }
    return { bytes };
  }
  const stderr = new StderrLines(undefined, 0, STDERR_TAIL_LINES);
  const child = startStreamingProgram(opts.pgRestore, ['--list'], {
    env: opts.env ?? process.env,
    stdin: 'pipe',
    stdout: 'pipe',
    signal: opts.signal,
    forceKillAfterDelay: 5000,
  });
  const toc: TocSummary = { entries: 0, tableData: 0 };
  let partial = '';
  const countLine = (line: string) => {
    // Entries look like "123; 0 16385 TABLE DATA public orders postgres"; comments start with ';'.
    if (!line.trim() || line.startsWith(';')) return;
    toc.entries++;
    if (/^\d+;\s+\d+\s+\d+\s+TABLE DATA\s/.test(line)) toc.tableData++;
  };
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      countLine(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
  child.stderr?.on('data', (d: Buffer) => stderr.push(d));
  const stdin = child.stdin as Writable;
  // EPIPE once pg_restore has what it needs and exits: expected, not an error.
  stdin.on('error', () => {});

  // With reject: false the promise settles with the result, whatever happened to the program.
  const done = Promise.resolve(child);
  const { decode } = opts;
  let listing = true;
  void done.then(() => {
    listing = false;
    decode?.destroy();
  });
  if (decode) {
    // Undecodable input ends pg_restore's too: it then fails saying it could not read the archive.
    decode.on('error', () => stdin.destroy());
    decode.pipe(stdin);
  }
  const sink: Writable = decode ?? stdin;
  try {
    for await (const chunk of input) {
      if (!listing && opts.untilListed) break; // ends and destroys `input`
      bytes += (chunk as Buffer).length;
      opts.onBytes?.(bytes);
      if (listing && !sink.destroyed && !sink.writableEnded && !sink.write(chunk)) await drainedOrClosed(sink);
    }
  } catch (err) {
    decode?.destroy();
    stdin.destroy();
    child.kill();
    await done;
    throw err;
  }
  if (!sink.destroyed && !sink.writableEnded) sink.end();
  const r = await done;
  stderr.end();
  if (partial) countLine(partial);
  const tail = stderr.lastLines();
  const ok = !r.failed && r.exitCode === 0;
  const exit: ChildExit = {
    ok,
    exitCode: r.exitCode ?? undefined,
    signal: r.signal ?? undefined,
    canceled: Boolean(r.isCanceled),
    stderrTail: tail,
    failure: ok
      ? ''
      : `pg_restore --list ${r.exitCode !== undefined ? `exited with code ${r.exitCode}` : r.signal ? `was killed by ${r.signal}` : `failed: ${r.shortMessage}`}${tail.length ? `: ${tail.join(' | ')}` : ''}`,
  };
  return { bytes, toc: ok ? toc : undefined, exit };
}

export class PgDumpVersionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PgDumpVersionError';
  }
}

/** Major version of a server from server_version_num (150004 -> 15; 90624 -> 9.6). */
export function serverMajor(versionNum: number): number {
  return versionNum >= 100000 ? Math.floor(versionNum / 10000) : Math.floor(versionNum / 10000) + (Math.floor(versionNum / 100) % 100) / 10;
}

/**
 * A client program (pg_dump, pg_restore) able to talk to a server of major version `serverMajorVersion`:
 * pg_dump refuses servers newer than itself. The usual look-up first (PGRUNBOOK_PG_BINDIR, PATH,
 * pg_config, /usr/lib/postgresql/N/bin); when that one is too old, a newer one installed side by side
 * under /usr/lib/postgresql (Debian/Ubuntu). Throws an error naming the package to install.
 */
export async function findPgClientFor(name: 'pg_dump' | 'pg_restore', serverMajorVersion: number, serverVersionText = String(serverMajorVersion)): Promise<PgBinaryVersion> {
  let first: PgBinaryVersion | undefined;
  try {
    first = await pgBinaryVersion(await findPgBinary(name));
  } catch (err) {
    if (!(err instanceof PgBinaryNotFoundError)) throw err;
    throw new PgDumpVersionError(`${err.message} For a PostgreSQL ${serverMajorVersion} server: ${installHint(serverMajorVersion)}.`);
  }
  if (first.major >= serverMajorVersion) return unwrapped(name, first);
  for (const dir of await sideBySideBinDirs()) {
    const candidate = path.join(dir, name);
    if (candidate === first.path) continue;
    try {
      const v = await pgBinaryVersion(candidate);
      if (v.major >= serverMajorVersion) return v;
    } catch {
      /* not installed there */
    }
  }
  throw new PgDumpVersionError(
    `${name} ${first.full} (${first.path}) is older than the server (PostgreSQL ${serverVersionText}), and ${name} cannot dump or read ` +
      `a newer server's data. Install the client tools for PostgreSQL ${serverMajorVersion}: ${installHint(serverMajorVersion)}, ` +
      `or set ${PG_BINDIR_ENV} to a directory holding ${name} ${serverMajorVersion} or newer.`,
  );
}

/**
 * Debian's /usr/bin/pg_dump (and pg_restore) is postgresql-common's pg_wrapper, a Perl script that
 * picks a version and runs it: ~0.1-0.3 s of Perl start for every pg_dump and pg_restore (a restore
 * runs pg_restore three times). The program it runs, /usr/lib/postgresql/<major>/bin/<name>, when
 * that reports the very same version; otherwise `found` as it is.
 */
async function unwrapped(name: string, found: PgBinaryVersion): Promise<PgBinaryVersion> {
  try {
    if (path.basename(await realpath(found.path)) !== 'pg_wrapper') return found;
    const direct = await pgBinaryVersion(path.join('/usr/lib/postgresql', String(found.major), 'bin', name));
    return direct.full === found.full ? direct : found;
  } catch {
    return found;
  }
}

function installHint(major: number): string {
  return `apt-get install -y postgresql-client-${major} (Debian/Ubuntu, from apt.postgresql.org when the release lacks it; dnf install postgresql${major} on RHEL-like systems)`;
}

/** /usr/lib/postgresql/<major>/bin, highest major first. */
async function sideBySideBinDirs(): Promise<string[]> {
  try {
    const entries = await readdir('/usr/lib/postgresql');
    return entries
      .filter((e) => /^\d+(\.\d+)?$/.test(e))
      .sort((a, b) => parseFloat(b) - parseFloat(a))
      .map((e) => path.join('/usr/lib/postgresql', e, 'bin'));
  } catch {
    return [];
  }
}
