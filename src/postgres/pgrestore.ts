// Restoring pg_dump archives: the dump downloaded from the repository into a private temporary
// file (its SHA-256 checked on the way; `pg_restore -j` needs a seekable file, not a pipe), its
// table of contents read with `pg_restore --list`, `pg_restore` run with per-item progress, and a
// table's rows streamed from one database into another through two psql processes (COPY TO
// STDOUT piped into COPY FROM STDIN) inside one transaction on the receiving side. Connections
// travel in libpq's environment variables: no password on a command line.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import type { ConnectionSettings } from '../config/connection.js';
import { formatBytes } from '../engine/format.js';
import type { Repository } from '../repo/repository.js';
import { libpqEnv } from './libpq.js';
import { drainedOrClosed } from './streams.js';
import { StderrLines } from './pgdump.js';

// ---------------------------------------------------------------------------------------------
// Work files

/** Room kept free besides the dump itself: a full disk breaks more than this restore. */
export function spaceMargin(size: number): number {
  return Math.max(64 * 1024 * 1024, Math.ceil(size * 0.05));
}

export interface FreeSpace {
  dir: string;
  free: number;
  needed: number;
  ok: boolean;
}

/** Free space for an unprivileged writer in `dir` (which must exist), against `size` plus a margin. */
export async function checkFreeSpace(dir: string, size: number): Promise<FreeSpace> {
  const st = await fsp.statfs(dir);
  const free = Number(st.bavail) * Number(st.bsize);
  const needed = size + spaceMargin(size);
  return { dir, free, needed, ok: free >= needed };
}

export function freeSpaceMessage(s: FreeSpace, what: string): string {
  return (
    `not enough free space in ${s.dir} for ${what}: ${formatBytes(s.needed)} needed (with a margin), ${formatBytes(s.free)} free. ` +
    `Pass --work-dir DIR on a filesystem with room (the file is deleted afterwards), or free some space`
  );
}

export interface DownloadedDump {
  /** The private directory holding the file (mode 0700); remove it with removeWorkDir. */
  dir: string;
  file: string;
  bytes: number;
}

/**
 * Copy an object into a fresh private directory under `parentDir`, checking its SHA-256 and size
 * on the way. On any failure (a corrupt object, a full disk, an abort) nothing is left behind.
 */
export async function downloadToFile(
  repo: Repository,
  key: string,
  opts: { sha256?: string; size?: number; parentDir: string; fileName: string; signal?: AbortSignal; onBytes?: (total: number) => void },
): Promise<DownloadedDump> {
  const dir = await fsp.mkdtemp(path.join(opts.parentDir, 'pgrunbook-restore-'));
  await fsp.chmod(dir, 0o700);
  const file = path.join(dir, opts.fileName);
  let bytes = 0;
  try {
    const body = await repo.getVerified(key, opts.sha256, opts.signal);
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        opts.onBytes?.(bytes);
        cb(null, chunk);
      },
    });
    // The stream fails at its end when the bytes do not hash to `sha256`: the file is then removed.
    await pipeline(body, counter, fs.createWriteStream(file, { mode: 0o600 }), { signal: opts.signal });
    if (opts.size !== undefined && bytes !== opts.size) {
      throw new Error(`${key} holds ${bytes} bytes, dump.json says ${opts.size}: the dump is damaged; choose another one with --dump ID`);
    }
    return { dir, file, bytes };
  } catch (err) {
    await removeWorkDir(dir);
    throw err;
  }
}

/** Remove a directory made by downloadToFile; only ever one whose name we gave it. */
export async function removeWorkDir(dir: string | undefined): Promise<void> {
  if (!dir || !path.basename(dir).startsWith('pgrunbook-restore-')) return;
  await fsp.rm(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Table of contents

export interface TocEntry {
  id: number;
  /** Everything after the catalog ids: "TABLE DATA public events postgres". */
  text: string;
}

export interface Toc {
  entries: TocEntry[];
}

/** `pg_restore --list FILE`, parsed. Names are printed unquoted, so a name with spaces is ambiguous in theory. */
export async function readToc(pgRestore: string, file: string, opts: { env?: NodeJS.ProcessEnv; signal?: AbortSignal; create?: boolean } = {}): Promise<Toc> {
  // With --create the listing includes the entries for the database itself (DATABASE ...), left out otherwise.
  const r = await execa(pgRestore, ['--list', ...(opts.create ? ['--create'] : []), file], {
    env: opts.env ?? process.env,
    extendEnv: false,
    reject: false,
    stdin: 'ignore',
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    maxBuffer: 512 * 1024 * 1024,
  });
  if (r.exitCode !== 0) {
    const tail = String(r.stderr ?? '').trim().split('\n').slice(-4).join(' | ');
    throw new Error(`pg_restore --list could not read ${file}${r.exitCode !== undefined ? ` (exit code ${r.exitCode})` : ''}: ${tail || r.shortMessage}`);
  }
  return parseToc(String(r.stdout));
}

export function parseToc(listing: string): Toc {
  const entries: TocEntry[] = [];
  for (const line of listing.split('\n')) {
    // "123; 1259 16386 TABLE public events postgres"; comments start with ';'.
    const m = /^(\d+);\s+\d+\s+\d+\s+(.*)$/.exec(line);
    if (m) entries.push({ id: Number(m[1]), text: m[2] });
  }
  return { entries };
}

/** The TABLE and TABLE DATA entries of one table. The owner is the last word after the name. */
export function findTableInToc(toc: Toc, schema: string, table: string): { table?: TocEntry; data?: TocEntry } {
  const matches = (e: TocEntry, desc: string) => e.text.startsWith(`${desc} ${schema} ${table} `) || e.text === `${desc} ${schema} ${table}`;
  return { table: toc.entries.find((e) => matches(e, 'TABLE')), data: toc.entries.find((e) => matches(e, 'TABLE DATA')) };
}

/** "schema name" of every TABLE entry (owner dropped), for suggestions. */
export function tablesInToc(toc: Toc): string[] {
  return toc.entries
    .filter((e) => e.text.startsWith('TABLE ') && !e.text.startsWith('TABLE DATA ') && !e.text.startsWith('TABLE ATTACH '))
    .map((e) => {
      const words = e.text.slice('TABLE '.length).split(' ');
      if (words.length > 2) words.pop();
      return words.length >= 2 ? `${words[0]}.${words.slice(1).join(' ')}` : words.join(' ');
    });
}

// ---------------------------------------------------------------------------------------------
// pg_restore

export interface PgRestoreOptions {
  pgRestore: string;
  /** `database` is the database restored into. */
  connection: ConnectionSettings;
  file: string;
  /** Parallel jobs (-j); 1 runs serially. */
  jobs?: number;
  /** Further arguments, e.g. --section=pre-data, -n, -t, --no-owner. */
  args?: string[];
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Called with the number of items done so far (from -v output). */
  onItem?: (done: number) => void;
  /** Lines that are not per-item chatter: warnings and errors. */
  onMessage?: (line: string) => void;
}

export class PgRestoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PgRestoreError';
  }
}

// With -v, pg_restore names each item as it starts it: "creating TABLE ...", "processing data for
// table ...", "executing SEQUENCE SET ..." (serially and in parallel workers alike).
const ITEM_LINE = /^pg_restore: (creating|processing data for|executing|restoring|dropping) /;
const CHATTER_LINE = /^pg_restore: (connecting to|processing item|launching item|finished item|entering main parallel loop|finished main parallel loop|implied data-only restore|entering restore_toc_entries|skipping item|transferring dependency)/;

/** `dbname=...` as a conninfo string: a bare name holding '=' would be taken for one. Host, user and password come from the environment. */
export function dbnameArg(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function pgRestoreArgs(opts: Pick<PgRestoreOptions, 'jobs' | 'args' | 'file' | 'connection'>): string[] {
  // --exit-on-error: the first error stops the restore, so its message is the one reported.
  // --no-password: fail rather than wait for a password nobody will type.
  const args = ['--verbose', '--exit-on-error', '--no-password', `--dbname=${dbnameArg(opts.connection.database ?? '')}`];
  if (opts.jobs && opts.jobs > 1) args.push(`--jobs=${opts.jobs}`);
  args.push(...(opts.args ?? []), opts.file);
  return args;
}

/** Run pg_restore into `connection.database`. Rejects with a PgRestoreError carrying pg_restore's last error lines. */
export async function runPgRestore(opts: PgRestoreOptions): Promise<{ items: number; command: string }> {
  const args = pgRestoreArgs(opts);
  const command = [opts.pgRestore, ...args].join(' ');
  const messages = new StderrLines(opts.onMessage);
  let items = 0;
  let partial = '';
  const onLine = (line: string) => {
    if (ITEM_LINE.test(line)) {
      items++;
      opts.onItem?.(items);
    } else if (!CHATTER_LINE.test(line)) {
      messages.push(line + '\n');
    }
  };
  const child = execa(opts.pgRestore, args, {
    env: libpqEnv(opts.connection, opts.env ?? process.env),
    extendEnv: false,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    forceKillAfterDelay: 5000,
  });
  child.stderr?.on('data', (d: Buffer) => {
    partial += d.toString();
    if (partial.length > 1024 * 1024) partial = partial.slice(-64 * 1024);
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      onLine(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
  const r = await child;
  if (partial) onLine(partial);
  messages.end();
  if (r.exitCode === 0 && !r.failed) return { items, command };
  if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('interrupted');
  const tail = messages.lastLines();
  const why = r.exitCode !== undefined ? `exited with code ${r.exitCode}` : r.signal ? `was killed by ${r.signal}` : `failed: ${r.shortMessage}`;
  throw new PgRestoreError(`pg_restore ${why}${tail.length ? `: ${tail.join(' | ')}` : ''} (command: ${command})`);
}

// ---------------------------------------------------------------------------------------------
// Copying rows between databases with two psql processes

export interface CopyRowsOptions {
  psql: string;
  /** Where the rows come from. */
  source: ConnectionSettings;
  /** A query whose rows are copied, e.g. SELECT "a", "b" FROM "s"."t". */
  sourceQuery: string;
  /** Where they go. */
  target: ConnectionSettings;
  /** SQL run after BEGIN and before the COPY (CREATE TABLE, LOCK, DELETE ...), each ending in ';'. */
  before: string[];
  /** The receiving table and columns: COPY <into> FROM STDIN. */
  into: string;
  /** The receiving table must hold exactly this many rows before COMMIT, or everything rolls back. */
  expectRows?: { table: string; rows: number };
  /** SQL run after the rows and before COMMIT (checks that RAISE to roll back, re-enabling triggers ...), each ending in ';'. */
  after?: string[];
  /** Same for both sides, so the text of the rows means the same thing. */
  clientEncoding?: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  onRows?: (rows: number) => void;
  /** application_name of both psql sessions (default "pgrunbook"). */
  applicationName?: string;
  /** Test hook: called after each chunk with the bytes sent so far, and once more (final) before the end of
   *  the rows is sent; throwing (or rejecting) fails the copy there. */
  fault?: (bytesSent: number, final: boolean) => void | Promise<void>;
}

export interface CopyRowsResult {
  rows: number;
  bytes: number;
  /** psql's command tags from the receiving side, e.g. ["BEGIN", "DELETE 97", "COPY 100", "DO", "COMMIT"]. */
  tags: string[];
}

/**
 * Stream rows from `source` into `target` in ONE transaction: the receiving psql reads a script
 * (BEGIN; <before>; COPY ... FROM STDIN; <the rows>; \.; a row-count check; COMMIT) on its stdin.
 * The COMMIT is written only after the source psql exited 0 and every byte was passed on. On any
 * failure the receiving psql is killed before its input is closed, so the server rolls the
 * transaction back (psql would treat a closed input as the end of the rows and go on).
 */
export async function copyRows(opts: CopyRowsOptions): Promise<CopyRowsResult> {
  const baseEnv: NodeJS.ProcessEnv = { ...(opts.env ?? process.env), PGAPPNAME: opts.applicationName ?? 'pgrunbook' };
  if (opts.clientEncoding) baseEnv.PGCLIENTENCODING = opts.clientEncoding;
  const psqlArgs = ['-X', '--no-password', '-v', 'ON_ERROR_STOP=1'];
  const local = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, local.signal]) : local.signal;

  const sink = execa(opts.psql, [...psqlArgs, '-f', '-'], {
    env: libpqEnv(opts.target, baseEnv),
    extendEnv: false,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    cancelSignal: signal,
    killSignal: 'SIGKILL',
  });
  const source = execa(opts.psql, [...psqlArgs, '-c', `COPY (${opts.sourceQuery}) TO STDOUT`], {
    env: libpqEnv(opts.source, baseEnv),
    extendEnv: false,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    cancelSignal: signal,
    forceKillAfterDelay: 2000,
  });
  const sinkErr = new StderrLines();
  const sourceErr = new StderrLines();
  let sinkOut = '';
  sink.stdout?.on('data', (d: Buffer) => {
    if (sinkOut.length < 64 * 1024) sinkOut += d.toString();
  });
  sink.stderr?.on('data', (d: Buffer) => sinkErr.push(d));
  source.stderr?.on('data', (d: Buffer) => sourceErr.push(d));
  const sinkDone = Promise.resolve(sink);
  const sourceDone = Promise.resolve(source);
  const stdin = sink.stdin as Writable;
  let stdinError: Error | undefined;
  stdin.on('error', (err) => {
    stdinError = err;
  });

  const write = async (data: Buffer | string) => {
    if (stdin.destroyed || stdin.writableEnded) throw new Error('the receiving psql stopped reading');
    if (!stdin.write(data)) await drainedOrClosed(stdin);
    if (stdinError) throw new Error(`the receiving psql stopped reading (${stdinError.message})`);
  };

  let rows = 0;
  let bytes = 0;
  const sinkFailure = async () => {
    const r = await sinkDone;
    sinkErr.end();
    const tail = sinkErr.lastLines();
    return `psql into ${opts.target.database} ${r.exitCode !== undefined ? `exited with code ${r.exitCode}` : `was killed by ${r.signal}`}${tail.length ? `: ${tail.join(' | ')}` : ''}`;
  };
  try {
    await write(['BEGIN;', ...opts.before, `COPY ${opts.into} FROM STDIN;`, ''].join('\n'));
    for await (const chunk of source.stdout as AsyncIterable<Buffer>) {
      signal.throwIfAborted();
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) rows++;
      await write(chunk);
      bytes += chunk.length;
      opts.onRows?.(rows);
      await opts.fault?.(bytes, false);
    }
    await opts.fault?.(bytes, true);
    const src = await sourceDone;
    sourceErr.end();
    if (src.exitCode !== 0) {
      const tail = sourceErr.lastLines();
      throw new Error(`psql reading from ${opts.source.database} ${src.exitCode !== undefined ? `exited with code ${src.exitCode}` : `was killed by ${src.signal}`}${tail.length ? `: ${tail.join(' | ')}` : ''}`);
    }
    const check = opts.expectRows
      ? [
          `DO $pgrunbook$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM ${opts.expectRows.table}; ` +
            `IF n <> ${Math.trunc(opts.expectRows.rows)} THEN RAISE EXCEPTION 'pgrunbook: % rows after the copy, expected ${Math.trunc(opts.expectRows.rows)}; rolling back', n; END IF; END $pgrunbook$;`,
        ]
      : [];
    await write(['\\.', ...check, ...(opts.after ?? []), 'COMMIT;', ''].join('\n'));
    stdin.end();
    const r = await sinkDone;
    sinkErr.end();
    const tags = sinkOut.split('\n').map((l) => l.trim()).filter(Boolean);
    // psql exits 0 at the end of a script even with the transaction still open (then rolled back): only a COMMIT tag proves it.
    if (r.exitCode !== 0 || tags.at(-1) !== 'COMMIT') throw new Error(await sinkFailure());
    return { rows, bytes, tags };
  } catch (err) {
    // Kill the receiver first: an orderly end of its input could let it commit a partial copy.
    sink.kill('SIGKILL');
    local.abort(err);
    const r = await sinkDone;
    await sourceDone;
    if (opts.signal?.aborted) throw opts.signal.reason ?? err;
    // When psql failed on its own (a constraint, a type), its error explains more than a broken pipe.
    if (r.exitCode !== undefined && r.exitCode !== 0 && (stdinError || /stopped reading/.test(String((err as Error).message)))) {
      throw new Error(await sinkFailure());
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// SQL text helpers

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

export function qualified(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}
