// Following pg_basebackup's server-compressed output as it is written (base-backup-stream.ts):
// the file's bytes copied to their readers as the file grows, and the check of those bytes
// (`zstd -d` into a named pipe read by the check thread, base-backup-check-worker.ts).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { TarFormatError } from '../postgres/formats/tar.js';
import { CodecDataError, zstdSpawnError } from '../repo/codec.js';
import type { StreamCheckResult } from './base-backup-check.js';
import type { CheckWorkerData, CheckWorkerOut } from './base-backup-check-worker.js';

/** The put's body was stopped because the other reader of the followed file failed. */
export class ReaderGoneError extends Error {
  constructor() {
    super('the check of the backup stream stopped reading');
    this.name = 'ReaderGoneError';
  }
}

/** Bytes read from the followed file at a time; also the buffers between it and its readers. */
export const FOLLOW_CHUNK = 1024 * 1024;
/** How often a followed file that has not grown is looked at again. */
const FOLLOW_POLL_MS = 10;

/**
 * Copies a file another process is still writing into `outs` as it grows, until that process has
 * exited (`exited`) and the end is reached; then ends them. Waits for the slowest reader.
 */
export async function followGrowingFile(file: string, exited: () => boolean, outs: Writable[], signal: AbortSignal): Promise<void> {
  let fh: FileHandle | undefined;
  let pos = 0;
  const pause = () => new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
  // One scratch buffer, and a copy of exactly what was read: a fresh 1 MiB per look at a file that
  // grew by a few KiB kept the garbage collector busy for a fifth of the run.
  const scratch = Buffer.allocUnsafeSlow(FOLLOW_CHUNK);
  try {
    for (;;) {
      signal.throwIfAborted();
      // One reader failed (the put, the check): the other must not wait for an end that never comes.
      if (outs.some((o) => o.destroyed)) {
        for (const o of outs) if (!o.destroyed) o.destroy(new ReaderGoneError());
        return;
      }
      // Looked at before reading: an end seen after the writer exited is the real end.
      const writerGone = exited();
      if (!fh) {
        try {
          fh = await open(file, 'r');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          if (writerGone) break;
          await pause();
          continue;
        }
      }
      const { bytesRead } = await fh.read(scratch, 0, scratch.length, pos);
      if (bytesRead > 0) {
        pos += bytesRead;
        const chunk = Buffer.from(scratch.subarray(0, bytesRead));
        await Promise.all(outs.map((o) => writeOrWait(o, chunk)));
        continue;
      }
      if (writerGone) break;
      await pause();
    }
    for (const o of outs) o.end();
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** The named pipe between zstd -d and the check thread, in the run's private temp directory. */
function checkPipe(dir: string): string {
  return path.join(dir, 'tar.fifo');
}

/** Makes it with the `mkfifo` program (node has no mkfifo); what went wrong, or undefined. */
export function makeCheckPipe(dir: string): string | undefined {
  const made = spawnSync('mkfifo', ['-m', '600', checkPipe(dir)], { stdio: 'ignore' });
  return made.status === 0 ? undefined : `mkfifo: ${made.error?.message ?? `exit code ${made.status}`}`;
}

/** The check thread's script: beside this module when built; run from the TypeScript sources (tests, tsx), the built one of the same checkout. */
function checkWorkerUrl(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('../../dist/services/base-backup-check-worker.js', import.meta.url) : new URL('./base-backup-check-worker.js', import.meta.url);
}

export type CheckedInWorker = { rawBytes: number; endedAt: number; label: Buffer; controlHead: Buffer; result: StreamCheckResult };

/**
 * The check of the compressed bytes written to `input`: `zstd -d` (started here, its output into a
 * named pipe in `dir`) and the check's thread reading that pipe (base-backup-check-worker.ts).
 * `result` settles once the tar has ended and backup_manifest (read from `manifestPath` then) was
 * compared; it fails with CodecDataError for a damaged frame, TarFormatError for a malformed tar.
 */
export function startCheckWorker(dir: string, algorithm: string, walSegmentSize: number, manifestPath: string, onProgress: (rawBytes: number) => void): { input: Writable; result: Promise<CheckedInWorker>; stop: () => void } {
  const fifo = checkPipe(dir);
  if (!existsSync(fifo)) {
    const why = makeCheckPipe(dir);
    if (why) throw new Error(`cannot make the pipe ${fifo} (${why})`);
  }
  // Read-write: opening never waits for the reader, and zstd never gets EPIPE before the thread has
  // opened its end. This thread's copy is closed once the thread has opened the pipe (its open
  // never waits either) or is gone; then zstd's exit closes the last writer and the thread's read
  // ends. Closed earlier, the thread's open could wait for ever for a writer, in a syscall that
  // worker.terminate() cannot interrupt (backup-logical hung that way, logical-dump-pass.ts).
  let out: number | undefined = openSync(fifo, 'r+');
  let threadOpened = false;
  let threadGone = false;
  const closeOut = () => {
    if (out !== undefined) closeSync(out);
    out = undefined;
  };
  let zstd: ReturnType<typeof spawn>;
  try {
    // No environment of ours: ZSTD_CLEVEL / ZSTD_NBTHREADS must not change what we asked for.
    zstd = spawn('zstd', ['-d', '-q', '-c', '--no-progress'], { stdio: ['pipe', out, 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  } catch (err) {
    closeOut();
    throw err;
  }
  let stderr = '';
  zstd.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-2000);
  });
  const zstdDone = new Promise<void>((resolve, reject) => {
    zstd.once('error', (err: NodeJS.ErrnoException) => reject(zstdSpawnError(err)));
    zstd.once('close', (code, signal) => (code === 0 ? resolve() : reject(new CodecDataError(`zstd could not decompress it: ${stderr.trim().split('\n').slice(-3).join(' ') || signal || `exit code ${code}`}`))));
  });
  zstdDone.catch(() => {});
  const worker = new Worker(checkWorkerUrl(), { workerData: { fifo, manifestPath, algorithm, walSegmentSize } satisfies CheckWorkerData });
  const input = zstd.stdin!;
  // Its errors (EPIPE once zstd failed) are the result's; nobody else listens to this stream.
  input.on('error', () => {});
  let zstdKilled = false;
  const stop = () => {
    if (zstd.exitCode === null && zstd.signalCode === null) {
      zstdKilled = true;
      zstd.kill('SIGKILL');
    }
    if (threadOpened || threadGone) closeOut();
    void worker.terminate();
  };
  worker.once('exit', () => {
    threadGone = true;
    closeOut();
  });
  const checked = new Promise<CheckedInWorker>((resolve, reject) => {
    worker.on('message', (m: CheckWorkerOut) => {
      if (m.type === 'opened') {
        threadOpened = true;
        closeOut();
      }
      else if (m.type === 'progress') onProgress(m.rawBytes);
      else if (m.type === 'done') resolve({ rawBytes: m.rawBytes, endedAt: m.endedAt, label: Buffer.from(m.label), controlHead: Buffer.from(m.controlHead), result: m.result });
      else reject(m.kind === 'tar' ? new TarFormatError(m.message) : new Error(m.message));
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the backup's check thread ended (exit code ${code}) before the tar did`)));
  });
  // The thread failed (a malformed tar) or died: nobody reads the pipe any more and zstd, which
  // holds it open read-write, would block on it for ever. Stop it.
  checked.catch(() => stop());
  // A damaged frame is the cause when both fail (the thread then sees a cut tar), unless zstd was
  // stopped here because the thread had failed first.
  const result = Promise.allSettled([zstdDone, checked]).then(([z, c]) => {
    stop();
    if (z.status === 'rejected' && !zstdKilled) throw z.reason;
    if (c.status === 'rejected') throw c.reason;
    if (z.status === 'rejected') throw z.reason;
    return c.value;
  });
  result.catch(() => {});
  return { input, result, stop };
}

function writeOrWait(o: Writable, chunk: Buffer): Promise<void> {
  if (o.destroyed || o.write(chunk)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      o.off('drain', done);
      o.off('close', done);
      resolve();
    };
    o.on('drain', done);
    o.on('close', done);
  });
}
