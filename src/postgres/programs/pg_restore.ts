// pg_restore: a dump's table of contents read with `pg_restore --list`, and `pg_restore` run with
// per-item progress. The dump is a local file (`pg_restore -j` needs a seekable file, not a pipe).
// Connections travel in libpq's environment variables: no password on a command line.
import { loadExeca } from './execa-lazy.js';
import { startStreamingProgram } from './spawn.js';
import type { ConnectionSettings } from '../../config/connection.js';
import { libpqEnv } from '../libpq.js';
import { StderrLines, findPgClientFor, serverMajor } from './pg_dump.js';

/** pg_restore able to read the dump and talk to the server (the newer of the two majors). */
export async function findPgRestore(serverVersionNum: number, pgDumpVersion: string | undefined): Promise<{ path: string; version: string }> {
  const dumpMajor = pgDumpVersion ? Number(/^(\d+)/.exec(pgDumpVersion)?.[1] ?? 0) : 0;
  const need = Math.max(serverMajor(serverVersionNum), dumpMajor);
  const v = await findPgClientFor('pg_restore', need, String(need));
  return { path: v.path, version: v.full };
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
  const { execa } = await loadExeca();
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
      messages.push(`${line}\n`);
    }
  };
  const child = startStreamingProgram(opts.pgRestore, args, {
    env: libpqEnv(opts.connection, opts.env ?? process.env),
    stdin: 'ignore',
    stdout: 'ignore',
    signal: opts.signal,
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


/** The owner recorded in the dump's DATABASE entry ("DATABASE - <name> <owner>"; listed with --create), if there is one. */
export function dumpDatabaseOwner(toc: Toc, database: string): string | undefined {
  const prefix = `DATABASE - ${database} `;
  const e = toc.entries.find((x) => x.text.startsWith(prefix));
  const owner = e?.text.slice(prefix.length).trim();
  return owner ? owner : undefined;
}
