// One database's archive on its way into the repository, with zstd (the default codec): pg_dump
// writes into a named pipe, a worker thread (logical-dump-worker.ts) reads it, counts the rows and
// writes the same bytes into a second named pipe, which `zstd` reads; only zstd's output (several
// times smaller) passes through this thread, to be hashed and stored. The pipes live in a private
// temporary directory removed at the end. `stored` ends only when pg_dump, the thread and zstd have
// all finished well; otherwise it fails, so a cut dump is never stored as a whole one.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { ArchiveFormatError } from '../postgres/formats/custom-archive.js';
import { startPgDumpToFile, type ChildExit, type PgDumpOptions } from '../postgres/programs/pg_dump.js';
import { zstdSpawnError } from '../repo/codec.js';
import type { DumpWorkerData, DumpWorkerOut } from './logical-dump-worker.js';

export type DumpPassResult = {
  /** Bytes of archive pg_dump wrote. */
  bytes: number;
  /** The counts, or why the archive could not be read for them (the caller then counts with count(*)). */
  rows: Record<string, number> | ArchiveFormatError;
  /** [dump id, where its data block starts in the archive], for dump.json (a restore's seek positions). */
  blocks: [number, number][];
};

export type DumpPass = {
  /** zstd's output: ends only after pg_dump, the thread and zstd finished well. */
  stored: Readable;
  /** pg_dump's exit (never rejects). */
  exited: Promise<ChildExit>;
  /** The thread's result once the archive has ended; rejects when the thread or zstd failed. */
  counted: Promise<DumpPassResult>;
  command: string;
  bytes(): number;
};

/** The thread's script: beside this module when built; from the TypeScript sources (tests, tsx), the built one of the same checkout. */
function workerUrl(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('../../dist/services/logical-dump-worker.js', import.meta.url) : new URL('./logical-dump-worker.js', import.meta.url);
}

/** The pipes' directory, or undefined when they cannot be made here (no writable temporary directory, no mkfifo): the caller then streams through this thread. */
function makePipes(): { dir: string; input: string; output: string } | undefined {
  let dir: string;
  try {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-dump-'));
  } catch {
    return undefined; // no writable temporary directory: the streamed way needs none
  }
  const input = path.join(dir, 'archive.fifo');
  const output = path.join(dir, 'zstd.fifo');
  const made = spawnSync('mkfifo', ['-m', '600', input, output], { stdio: 'ignore' });
  if (made.status === 0) return { dir, input, output };
  rmSync(dir, { recursive: true, force: true });
  return undefined;
}

/**
 * pg_dump -> thread (row counts) -> zstd -1 -T0, started; undefined when named pipes cannot be
 * made here. `onBytes`: bytes of archive so far.
 */
export function startDumpPass(opts: PgDumpOptions & { level?: number }): DumpPass | undefined {
  const pipes = makePipes();
  if (!pipes) return undefined;
  const { dir, input, output } = pipes;
  // Held read-write so that no open waits for the other side. The output's hold goes once the
  // thread has opened its end: the thread is then its only writer (its close is zstd's end). The
  // input's hold goes only once pg_dump has exited too: pg_dump opens the pipe when it gets to it
  // (a slow start, a loaded machine), and with no writer at all the thread would read an empty
  // archive and close its end, leaving pg_dump blocked for ever in its open.
  const holds: { input?: number; output?: number } = { input: openSync(input, 'r+'), output: openSync(output, 'r+') };
  const closeHold = (which: 'input' | 'output') => {
    const fd = holds[which];
    holds[which] = undefined;
    if (fd !== undefined) closeSync(fd);
  };
  const cleanup = () => {
    closeHold('input');
    closeHold('output');
    rmSync(dir, { recursive: true, force: true });
  };

  let zstd: ReturnType<typeof spawn>;
  try {
    // No environment of ours: ZSTD_CLEVEL / ZSTD_NBTHREADS must not change what we asked for.
    zstd = spawn('zstd', ['-q', '-c', `-${opts.level ?? 1}`, '-T0', '--no-progress', output], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  } catch (err) {
    cleanup();
    throw err;
  }
  let zstdErr = '';
  zstd.stderr!.setEncoding('utf8').on('data', (d: string) => {
    zstdErr = (zstdErr + d).slice(-2000);
  });
  const zstdDone = new Promise<void>((resolve, reject) => {
    zstd.once('error', (err: NodeJS.ErrnoException) => reject(zstdSpawnError(err)));
    zstd.once('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`zstd failed to compress the dump: ${zstdErr.trim().split('\n').slice(-3).join(' ') || signal || `exit code ${code}`}`))));
  });
  zstdDone.catch(() => {});

  const dump = startPgDumpToFile({ ...opts, onBytes: undefined, file: input });
  let bytes = 0;
  const worker = new Worker(workerUrl(), { workerData: { input, output } satisfies DumpWorkerData });
  // No hold goes before the thread has opened both pipes or is gone: released before, its open of a
  // pipe nobody else holds any more would wait for ever, in a syscall that worker.terminate() cannot
  // interrupt (a pg_dump that failed at once on a loaded machine did that).
  let threadOpened = false;
  let threadGone = false;
  let dumpExited = false;
  const releaseHolds = () => {
    if (threadOpened || threadGone) closeHold('output');
    if (threadGone || (threadOpened && dumpExited)) closeHold('input');
  };
  worker.once('exit', () => {
    threadGone = true;
    releaseHolds();
  });
  const threadDone = new Promise<DumpPassResult>((resolve, reject) => {
    worker.on('message', (m: DumpWorkerOut) => {
      if (m.type === 'opened') {
        threadOpened = true;
        releaseHolds();
      } else if (m.type === 'progress') {
        bytes = m.bytes;
        opts.onBytes?.(bytes);
      } else if (m.type === 'done') {
        bytes = m.bytes;
        opts.onBytes?.(bytes);
        resolve({ bytes: m.bytes, rows: m.rows ?? new ArchiveFormatError(m.unreadable ?? 'unreadable archive'), blocks: m.blocks });
      } else reject(new Error(`the dump's relay thread failed: ${m.message}`));
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the dump's relay thread ended (exit code ${code}) before the archive did`)));
  });
  threadDone.catch(() => {});

  // Anything failing stops the rest: pg_dump killed ends the thread's input (its hold goes when it
  // has exited), zstd killed fails the thread's writes.
  const stopAll = () => {
    dump.stop();
    if (zstd.exitCode === null && zstd.signalCode === null) zstd.kill('SIGKILL');
    releaseHolds();
  };
  void dump.exited.then((e) => {
    dumpExited = true;
    if (!e.ok) stopAll();
    else releaseHolds();
  });
  zstdDone.catch(stopAll);
  threadDone.catch(stopAll);
  opts.signal?.addEventListener('abort', stopAll, { once: true });

  const all = Promise.allSettled([dump.exited, threadDone, zstdDone]).then(([e, t, z]) => {
    cleanup();
    void worker.terminate();
    opts.signal?.removeEventListener('abort', stopAll);
    const exit = e.status === 'fulfilled' ? e.value : undefined;
    // pg_dump failing on its own explains the rest.
    if (!exit?.ok) throw new Error(exit?.failure || 'pg_dump failed');
    if (t.status === 'rejected') throw t.reason;
    if (z.status === 'rejected') throw z.reason;
    return t.value;
  });
  all.catch(() => {});

  let settled = false;
  const stored = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      cb(null, chunk);
    },
    flush(cb) {
      all.then(
        () => {
          settled = true;
          cb();
        },
        (err: unknown) => {
          settled = true;
          cb(err as Error);
        },
      );
    },
  });
  // A consumer that gives up (the upload failed) stops everything.
  stored.on('close', () => {
    if (!settled) stopAll();
  });
  zstd.stdout!.pipe(stored);
  zstd.stdout!.on('error', (err) => stored.destroy(err));

  return { stored, exited: dump.exited, counted: all, command: dump.command, bytes: () => bytes };
}
