// The relay of a logical backup's archive (logical-dump-pass.ts), in a worker thread: pg_dump
// writes its uncompressed custom archive into one named pipe, this thread reads it with blocking
// reads into one reused buffer, counts every table's rows on the way (ArchiveWalker) and writes
// the same bytes into a second named pipe that `zstd` reads. Off the main thread and out of node's
// streams because ~1 GB of archive arriving as 64 KiB Buffers through a Transform into zstd's stdin
// cost the main thread ~3 s of CPU on pgbench -s 100 (bench/README.md), most of it in the writes.
//
// workerData: the two pipes (both held open by the main thread until 'opened', so neither open
// waits). Messages out: 'opened', 'progress' (bytes), then 'done' (bytes, the counts or why the
// archive could not be read, where every data block starts) or 'error'.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { ArchiveWalker } from '../postgres/formats/custom-archive.js';

export type DumpWorkerData = { input: string; output: string };
export type DumpWorkerOut =
  | { type: 'opened' }
  | { type: 'progress'; bytes: number }
  | { type: 'done'; bytes: number; rows?: Record<string, number>; unreadable?: string; blocks: [number, number][] }
  | { type: 'error'; message: string };

/** How often progress is reported, in bytes of the archive. */
const PROGRESS_EVERY = 4 * 1024 * 1024;
const READ_SIZE = 1024 * 1024;
/** Bytes gathered from pg_dump before they are counted and passed on to zstd. */
const WRITE_AT = 256 * 1024;

function run(): void {
  const port = parentPort;
  if (!port) return;
  const { input, output } = workerData as DumpWorkerData;
  const post = (m: DumpWorkerOut) => port.postMessage(m);
  let inFd: number | undefined;
  let outFd: number | undefined;
  try {
    inFd = openSync(input, 'r');
    outFd = openSync(output, 'w');
    post({ type: 'opened' });
    const walker = new ArchiveWalker();
    const buf = Buffer.allocUnsafeSlow(READ_SIZE);
    let reported = 0;
    let ended = false;
    while (!ended) {
      // pg_dump writes in 4 KiB pieces and a pipe wakes its reader for each: reads are gathered
      // until WRITE_AT bytes before they are counted and written, so zstd is woken (and written
      // to) once per WRITE_AT rather than once per piece.
      let filled = 0;
      while (filled < WRITE_AT) {
        // The end: pg_dump closed the pipe (exited, or was killed: its exit code tells which).
        const n = readSync(inFd, buf, filled, READ_SIZE - filled, null);
        if (n === 0) {
          ended = true;
          break;
        }
        filled += n;
      }
      if (filled === 0) break;
      const chunk = buf.subarray(0, filled);
      walker.write(chunk);
      // EPIPE (zstd is gone) throws: the thread ends with an error, and closing the input stops pg_dump.
      for (let off = 0; off < filled; ) off += writeSync(outFd, chunk, off, filled - off);
      // The first batch at once (the archive has started), then every few MiB.
      if (reported === 0 || walker.bytes - reported >= PROGRESS_EVERY) {
        reported = walker.bytes;
        post({ type: 'progress', bytes: reported });
      }
    }
    closeSync(outFd);
    outFd = undefined;
    walker.end();
    const problem = walker.problem();
    post({
      type: 'done',
      bytes: walker.bytes,
      ...(problem ? { unreadable: problem.message } : { rows: walker.result().rows }),
      blocks: problem ? [] : [...walker.blockAt],
    });
  } catch (err) {
    post({ type: 'error', message: (err as Error)?.message ?? String(err) });
  } finally {
    if (outFd !== undefined) closeSync(outFd);
    if (inFd !== undefined) closeSync(inFd);
  }
}

run();
