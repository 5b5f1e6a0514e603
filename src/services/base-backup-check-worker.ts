// The check of a server-compressed base backup (base-backup-stream.ts), in a worker thread: the
// main thread feeds the compressed bytes to `zstd -d`, whose output goes into a named pipe that
// this thread reads with blocking reads into one buffer, checking the tar against backup_manifest
// (base-backup-check.ts) as it passes. A thread of its own for the second core, and reads into one
// reused buffer because 1.5 GB arriving as 64 KiB Buffers made V8 hold up to 64 MB of them between
// collections and start a full collection for every 64 MB: ~0.7 s of CPU and 80 MB of RSS
// (bench/README.md).
//
// workerData: the pipe (its writer, zstd, already started), the manifest's path (read once the
// tar has ended: pg_basebackup has exited by then), the checksum algorithm, the WAL segment size.
// Messages out: 'opened' (the pipe), 'progress' (rawBytes), then 'done' (the check's result, backup_label, the first
// bytes of pg_control) or 'error' (kind 'tar' for a malformed tar).
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { TarFormatError, TarReader, type TarEntrySink } from '../postgres/formats/tar.js';
import { StreamCheck, type StreamCheckResult } from './base-backup-check.js';

export type CheckWorkerData = { fifo: string; manifestPath: string; algorithm: string; walSegmentSize: number };
export type CheckWorkerOut =
  | { type: 'opened' }
  | { type: 'progress'; rawBytes: number }
  | { type: 'done'; rawBytes: number; endedAt: number; label: Uint8Array; controlHead: Uint8Array; result: StreamCheckResult }
  | { type: 'error'; kind: 'tar' | 'other'; message: string };

/** How often progress is reported, in bytes of the tar. */
const PROGRESS_EVERY = 16 * 1024 * 1024;
const READ_SIZE = 1024 * 1024;

function run(): void {
  const port = parentPort;
  if (!port) return;
  const { fifo, manifestPath, algorithm, walSegmentSize } = workerData as CheckWorkerData;
  const post = (m: CheckWorkerOut) => port.postMessage(m);
  try {
    const check = new StreamCheck(algorithm);
    const labelChunks: Buffer[] = [];
    const controlHead: Buffer[] = [];
    // Sinks copy what they keep: the buffer is reused by the next read.
    const reader = new TarReader((entry): TarEntrySink | undefined => {
      if (entry.name === 'backup_label') return check.sink(entry, { data: (c) => void labelChunks.push(Buffer.from(c)), end: () => {} });
      if (entry.name === 'global/pg_control') {
        return check.sink(entry, { data: (c) => void (Buffer.concat(controlHead).length < 8 && controlHead.push(Buffer.from(c.subarray(0, 8)))), end: () => {} });
      }
      return check.sink(entry);
    });
    // The main thread holds a writer's end until told 'opened' (so this never waits), zstd holds
    // another: the end read here is zstd's end. Blocking reads: the thread has nothing else to do.
    const fd = openSync(fifo, 'r');
    post({ type: 'opened' });
    const buf = Buffer.allocUnsafeSlow(READ_SIZE);
    let rawBytes = 0;
    let reported = 0;
    try {
      for (;;) {
        const n = readSync(fd, buf, 0, READ_SIZE, null);
        if (n === 0) break;
        reader.write(buf.subarray(0, n));
        rawBytes += n;
        if (rawBytes - reported >= PROGRESS_EVERY) {
          reported = rawBytes;
          post({ type: 'progress', rawBytes });
        }
      }
    } finally {
      closeSync(fd);
    }
    reader.end();
    const endedAt = Date.now();
    check.manifestData(readFileSync(manifestPath));
    check.manifestEnd();
    post({ type: 'done', rawBytes, endedAt, label: Buffer.concat(labelChunks), controlHead: Buffer.concat(controlHead), result: check.result(rawBytes, walSegmentSize) });
  } catch (err) {
    post({ type: 'error', kind: err instanceof TarFormatError ? 'tar' : 'other', message: (err as Error)?.message ?? String(err) });
  }
}

run();
