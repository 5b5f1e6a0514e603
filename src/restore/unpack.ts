// Unpacking a base backup's tar stream (zstd, gzip or none) into a directory: the stored bytes'
// SHA-256 checked by whoever supplies the stream, the codec's content checksum by the codec, tar
// run as the directory's owner. Download, decompression (zstd's own process) and writing (tar's)
// run at once, each on its own core; then every file is fsynced once (several at a time) and the
// directories after them.
//
// pitr stages the backup this way beside the data directory before it touches anything (the one
// read of the backup is also its check), and later only renames the staged directory into place.
import { type ChildProcess, execFile, spawn, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { isRoot } from '../postgres/osuser.js';
import { CodecDataError, decompressStream, isCodec, zstdSpawnError } from '../repo/codec.js';
import type { Owner } from './datadir.js';

/** How many files are fsynced at once: enough to keep a disk's queue full. */
const FSYNC_CONCURRENCY = 16;

export async function unpackTar(body: NodeJS.ReadableStream, opts: { dir: string; compression: string; owner: Owner; signal: AbortSignal; onBytes: (done: number) => void }): Promise<{ files: number }> {
  if (!isCodec(opts.compression)) throw new Error(`the backup's data object is compressed with "${opts.compression}", which this pgrunbook cannot read; upgrade pgrunbook`);
  opts.signal.throwIfAborted();
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      opts.onBytes(done);
      cb(null, chunk);
    },
  });
  // zstd (the default) writes straight into tar's stdin: node only moves the stored (compressed)
  // bytes and checks their SHA-256, instead of relaying the whole uncompressed backup between
  // two pipes (1.5 GiB through the event loop was most of the unpack's time; bench/README.md).
  // gzip and none are decompressed here, as before.
  const zstd = opts.compression === 'zstd' ? spawnChild('zstd', ['-q', '-d', '-c', '--no-progress'], { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }) : undefined;
  // --ignore-zeros: read to the end of the stream, past the end-of-archive blocks, so
  // tar never closes its input early and the whole object's checksum is checked. -b 2048: 1 MiB
  // records instead of 10 KiB, a hundredth of the reads and writes (about 20% less system time
  // for the unpack here; bench/README.md).
  const tar = spawnChild('tar', ['-x', '--ignore-zeros', '-b', '2048', '-f', '-', '-C', opts.dir], {
    ...(isRoot() ? { uid: opts.owner.uid, gid: opts.owner.gid } : {}),
    stdio: [zstd ? zstd.child.stdout! : 'pipe', 'ignore', 'pipe'],
    // tar runs as the data directory's owner: none of pgrunbook's environment (credentials) goes with it.
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(process.env.LANG ? { LANG: process.env.LANG } : {}) },
  });
  // tar holds zstd's output now; this process must neither read it nor keep it open (so that a
  // tar that dies makes zstd fail on a broken pipe instead of blocking).
  zstd?.child.stdout?.destroy();
  const stopChildren = () => {
    zstd?.kill();
    tar.kill();
  };
  opts.signal.addEventListener('abort', stopChildren, { once: true });
  // While tar writes, the file system's dirty pages are written out in the background (`sync -f`
  // in a loop): the fsync of every file at the end then finds them on disk, instead of making the
  // disk write the whole backup only after the last byte was unpacked (bench/README.md).
  const flusher = startFlushing(opts.dir);
  let sourceFailed = false;
  body.once('error', () => {
    sourceFailed = true;
  });
  try {
    let streamError: unknown;
    try {
      const sink = zstd ? zstd.child.stdin! : tar.child.stdin!;
      await pipeline(zstd ? [body, counter, sink] : [body, counter, decompressStream(opts.compression), sink], { signal: opts.signal });
    } catch (err) {
      streamError = err;
      stopChildren();
    }
    const [z, t] = await Promise.all([zstd?.exit, tar.exit]);
    opts.signal.throwIfAborted();
    // The stored bytes failed (their checksum, the download): that is the cause, whatever the
    // programs said about the input that stopped short.
    if (streamError !== undefined && sourceFailed) throw streamError;
    // After a failed stream we killed them: only one that had exited by itself can be the cause.
    const childError = failureOf(z, t, opts.dir, streamError !== undefined);
    if (childError) throw childError;
    if (streamError !== undefined) throw streamError;
  } finally {
    opts.signal.removeEventListener('abort', stopChildren);
    await flusher.stop();
  }
  return { files: await fsyncTree(opts.dir) };
}

/**
 * Which program's failure is the cause: one that could not start; then zstd rejecting its input
 * (damaged data, exit 3), unless it only could not write because tar had stopped; then tar.
 */
function failureOf(z: Exit | undefined, t: Exit, dir: string, weKilled: boolean): Error | undefined {
  if (z?.startError) return z.startError;
  if (t.startError) return t.startError;
  const failed = (e: Exit) => e.code !== 0 && !(weKilled && e.code === null);
  const zstdFailed = z !== undefined && failed(z);
  if (zstdFailed && z.code !== null && !/write error|broken pipe/i.test(z.why)) return new CodecDataError(`zstd could not decompress the backup: ${z.why}`);
  if (failed(t)) return new Error(`tar could not unpack the backup into ${dir}: ${t.why}`);
  if (zstdFailed) return new Error(`zstd failed: ${z.why}`);
  return undefined;
}

interface Exit {
  code: number | null;
  why: string;
  startError?: Error;
}

interface Child {
  child: ChildProcess;
  /** Settles when the process has exited (never rejects): its exit code (null when killed) and why. */
  exit: Promise<Exit>;
  kill: () => void;
}

/** A program whose exit is awaited and whose stderr's last lines say why it failed. */
function spawnChild(cmd: string, args: string[], options: SpawnOptions): Child {
  const child = spawn(cmd, args, options);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-2000);
  });
  // Our end of a pipe a child closed early: its exit status says what happened.
  child.stdin?.on('error', () => undefined);
  const exit = new Promise<Exit>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      const startError = cmd === 'zstd' ? zstdSpawnError(err) : err;
      resolve({ code: -1, why: startError.message, startError });
    });
    child.once('close', (code, signal) => resolve({ code, why: stderr.trim().split('\n').slice(-3).join(' ') || (signal ? `killed by ${signal}` : `exit code ${code}`) }));
  });
  return {
    child,
    exit,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
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
