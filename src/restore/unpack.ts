// Unpacking a base backup's tar stream (zstd, gzip or none) into a directory: the stored bytes'
// SHA-256 checked by whoever supplies the stream, the codec's content checksum by the codec, tar
// run as the directory's owner. Download, decompression (zstd's own process) and writing (tar's)
// run at once, each on its own core; then every file is fsynced once (several at a time) and the
// directories after them.
//
// pitr stages the backup this way beside the data directory before it touches anything (the one
// read of the backup is also its check), and later only renames the staged directory into place.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { loadExeca } from '../postgres/programs/execa-lazy.js';
import { isRoot } from '../postgres/osuser.js';
import { decompressStream, isCodec } from '../repo/codec.js';
import type { Owner } from './datadir.js';

/** How many files are fsynced at once: enough to keep a disk's queue full. */
const FSYNC_CONCURRENCY = 16;

export async function unpackTar(body: NodeJS.ReadableStream, opts: { dir: string; compression: string; owner: Owner; signal: AbortSignal; onBytes: (done: number) => void }): Promise<{ files: number }> {
  if (!isCodec(opts.compression)) throw new Error(`the backup's data object is compressed with "${opts.compression}", which this pgrunbook cannot read; upgrade pgrunbook`);
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      opts.onBytes(done);
      cb(null, chunk);
    },
  });
  // --ignore-zeros: read to the end of the stream, past the end-of-archive blocks, so
  // tar never closes its input early and the whole object's checksum is checked.
  const { execa } = await loadExeca();
  // Interrupted while execa loaded: say so, rather than start tar with a cancelled signal and
  // report its failure as the unpack's.
  opts.signal.throwIfAborted();
  const tar = execa('tar', ['-x', '--ignore-zeros', '-f', '-', '-C', opts.dir], {
    ...(isRoot() ? { uid: opts.owner.uid, gid: opts.owner.gid } : {}),
    stdin: 'pipe',
    stdout: 'ignore',
    stderr: 'pipe',
    cancelSignal: opts.signal,
    reject: false,
  });
  // While tar writes, the file system's dirty pages are written out in the background (`sync -f`
  // in a loop): the fsync of every file at the end then finds them on disk, instead of making the
  // disk write the whole backup only after the last byte was unpacked (bench/README.md).
  const flusher = startFlushing(opts.dir);
  try {
    await pipeline([body, counter, decompressStream(opts.compression), tar.stdin!], { signal: opts.signal });
  } catch (err) {
    tar.kill();
    await tar;
    await flusher.stop();
    throw err;
  }
  const r = await tar;
  await flusher.stop();
  // tar stopped by an interruption after its input ended is the interruption, not a failed unpack.
  if (r.exitCode !== 0) opts.signal.throwIfAborted();
  if (r.exitCode !== 0) throw new Error(`tar could not unpack the backup into ${opts.dir}: ${String(r.stderr).trim().slice(-500)}`);
  return { files: await fsyncTree(opts.dir) };
}

/** How long the flushing loop waits between two `sync -f` runs. */
const FLUSH_EVERY_MS = 250;

/**
 * `sync -f DIR` (coreutils, busybox) again and again until stopped: the writeback of what is being
 * unpacked overlaps the unpacking. A missing or failing `sync` only costs the overlap.
 */
function startFlushing(dir: string): { stop: () => Promise<void> } {
  let stopped = false;
  let wake: () => void = () => {};
  const loop = (async () => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        execFile('sync', ['-f', dir], { timeout: 60_000 }, () => resolve());
      });
      if (stopped) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, FLUSH_EVERY_MS);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      wake();
      await loop;
    },
  };
}

/** fsync every regular file under `dir` (several at once), then every directory, deepest first. */
export async function fsyncTree(dir: string): Promise<number> {
  const files: string[] = [];
  const dirs: string[] = [];
  const walk = async (d: string) => {
    dirs.push(d);
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) files.push(p);
    }
  };
  await walk(dir);
  let next = 0;
  const worker = async () => {
    while (next < files.length) await syncPath(files[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(FSYNC_CONCURRENCY, files.length) }, worker));
  for (const d of dirs.reverse()) await syncPath(d);
  return files.length;
}

async function syncPath(p: string): Promise<void> {
  const fh = await fsp.open(p, fs.constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Where pitr stages a base backup: beside the data directory (the same file system, so a rename puts it in place). */
export function stagedDirName(pgdata: string, runId: string): string {
  return `${pgdata}.pgrunbook-staged-${runId}`;
}

/** fsync a directory entry's parent after a rename, so the new name survives a crash. */
export async function syncParent(p: string): Promise<void> {
  await syncPath(path.dirname(p));
}
