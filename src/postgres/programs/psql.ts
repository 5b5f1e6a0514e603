// Streaming a table's rows from one database into another through two psql processes (COPY TO
// STDOUT piped into COPY FROM STDIN) inside one transaction on the receiving side. Connections
// travel in libpq's environment variables: no password on a command line.
import type { Writable } from 'node:stream';
import { startStreamingProgram } from './spawn.js';
import type { ConnectionSettings } from '../../config/connection.js';
import { libpqEnv } from '../libpq.js';
import { drainedOrClosed } from '../streams.js';
import { StderrLines } from './pg_dump.js';

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
  /** More tables copied in the same transaction after the first: each its own COPY from its own source query (several tables restored at once). */
  more?: { source: ConnectionSettings; sourceQuery: string; into: string }[];
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
  const baseEnv: NodeJS.ProcessEnv = { ...(opts.env ?? process.env) };
  const appName = (conn: typeof opts.source) => ({ ...conn, applicationName: opts.applicationName ?? 'pgrunbook' });
  if (opts.clientEncoding) baseEnv.PGCLIENTENCODING = opts.clientEncoding;
  const psqlArgs = ['-X', '--no-password', '-v', 'ON_ERROR_STOP=1'];
  const local = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, local.signal]) : local.signal;

  const sink = startStreamingProgram(opts.psql, [...psqlArgs, '-f', '-'], {
    env: libpqEnv(appName(opts.target), baseEnv),
    stdin: 'pipe',
    stdout: 'pipe',
    signal,
    killSignal: 'SIGKILL',
  });
  const startSource = (conn: typeof opts.source, query: string) =>
    startStreamingProgram(opts.psql, [...psqlArgs, '-c', `COPY (${query}) TO STDOUT`], {
      env: libpqEnv(appName(conn), baseEnv),
      stdin: 'ignore',
      stdout: 'pipe',
      signal,
      forceKillAfterDelay: 2000,
    });
  const parts = [{ source: opts.source, sourceQuery: opts.sourceQuery, into: opts.into }, ...(opts.more ?? [])];
  // One source psql at a time, started when its COPY begins; the one running is awaited on failure.
  let source = startSource(opts.source, opts.sourceQuery);
  const sinkErr = new StderrLines();
  let sourceErr = new StderrLines();
  let sinkOut = '';
  sink.stdout?.on('data', (d: Buffer) => {
    if (sinkOut.length < 64 * 1024) sinkOut += d.toString();
  });
  sink.stderr?.on('data', (d: Buffer) => sinkErr.push(d));
  const sinkDone = Promise.resolve(sink);
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
    await write(['BEGIN;', ...opts.before, ''].join('\n'));
    for (const [i, part] of parts.entries()) {
      if (i > 0) {
        source = startSource(part.source, part.sourceQuery);
        sourceErr = new StderrLines();
      }
      const err = sourceErr;
      source.stderr?.on('data', (d: Buffer) => err.push(d));
      await write(`${i > 0 ? '\\.\n' : ''}COPY ${part.into} FROM STDIN;\n`);
      for await (const chunk of source.stdout as AsyncIterable<Buffer>) {
        signal.throwIfAborted();
        for (let j = chunk.indexOf(10); j >= 0; j = chunk.indexOf(10, j + 1)) rows++;
        await write(chunk);
        bytes += chunk.length;
        opts.onRows?.(rows);
        await opts.fault?.(bytes, false);
      }
      if (i === parts.length - 1) await opts.fault?.(bytes, true);
      const src = await source;
      err.end();
      if (src.exitCode !== 0) {
        const tail = err.lastLines();
        throw new Error(`psql reading from ${part.source.database} ${src.exitCode !== undefined ? `exited with code ${src.exitCode}` : `was killed by ${src.signal}`}${tail.length ? `: ${tail.join(' | ')}` : ''}`);
      }
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
    await Promise.resolve(source);
    if (opts.signal?.aborted) throw opts.signal.reason ?? err;
    // When psql failed on its own (a constraint, a type), its error explains more than a broken pipe.
    if (r.exitCode !== undefined && r.exitCode !== 0 && (stdinError || /stopped reading/.test(String((err as Error).message)))) {
      throw new Error(await sinkFailure());
    }
    throw err;
  }
}

