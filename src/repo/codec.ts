// How the repository's objects are compressed: gzip (what pgrunbook wrote before), zstd (the
// default: several times faster at a smaller size, see bench/README.md) or none. The codec is
// recorded with each object (backup.json's `compression`, a WAL key's suffix) so a reader never
// guesses, and every codec stays readable.
//
// zstd runs as Debian's `zstd` program, a child process: it works the same on Node 20 (whose zlib
// has no zstd), 22 and 24, needs no compiler at install, and puts compression on another core
// (-T for several), so the node process never is the single-threaded bottleneck. Its frames carry
// a content checksum (XXH64, on by default in the program) that `zstd -d` checks on every read.
//
// Loaded by wal-push for every segment: node built-ins only, and node:child_process (with net
// and dgram behind it) only once a zstd process is started: a wal-fetch of a segment the archive
// does not have, or a gzip push, never loads it.
import type { ChildProcessByStdio } from 'node:child_process';
import { createRequire } from 'node:module';
import { Duplex, type Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';

const require = createRequire(import.meta.url);
const childProcess = () => require('node:child_process') as typeof import('node:child_process');

export type Codec = 'gzip' | 'zstd' | 'none';
export const CODECS: readonly Codec[] = ['zstd', 'gzip', 'none'];
/** What new objects get unless told otherwise (PGRUNBOOK_COMPRESSION, --compress). */
export const DEFAULT_CODEC: Codec = 'zstd';

/** The suffix an object's key carries for its codec (WAL files, base backup data objects). */
export const CODEC_SUFFIX: Record<Codec, string> = { gzip: '.gz', zstd: '.zst', none: '' };

/** zlib's buffers: a sixteenth of the round trips to its thread of the 16 KiB default (about 15% less CPU). */
export const ZLIB_CHUNK = 256 * 1024;

/** The Debian (and Homebrew, Alpine, RPM) package that has the `zstd` program. */
export const ZSTD_PACKAGE = 'zstd';

export function isCodec(text: unknown): text is Codec {
  return text === 'gzip' || text === 'zstd' || text === 'none';
}

/** The codec new objects get: PGRUNBOOK_COMPRESSION when it names one, else zstd. */
export function defaultCodec(env: NodeJS.ProcessEnv = process.env): Codec {
  const v = env.PGRUNBOOK_COMPRESSION?.trim().toLowerCase();
  if (!v) return DEFAULT_CODEC;
  if (!isCodec(v)) throw new CodecUsageError(`PGRUNBOOK_COMPRESSION="${env.PGRUNBOOK_COMPRESSION}" is not one of: ${CODECS.join(', ')}`, 'unset it (zstd is the default) or set it to zstd, gzip or none');
  return v;
}

/** A codec that cannot be used here (the program is missing, a bad name): exit 2, nothing was written. */
export class CodecUsageError extends Error {
  readonly procedureExitCode = 2;
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'CodecUsageError';
  }
}

/** The compressed bytes are damaged (a failed frame or content checksum): corruption, exit 3. */
export class CodecDataError extends Error {
  readonly corrupt = true;
  readonly code = 'CODEC_DATA';
  constructor(message: string) {
    super(message);
    this.name = 'CodecDataError';
  }
}

/** zlib's and zstd's complaints about damaged input. */
export function isCodecDataError(err: unknown): boolean {
  if (err instanceof CodecDataError) return true;
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && code.startsWith('Z_');
}

export type CompressOptions = {
  /** gzip 1-9, zstd 1-19; 1 by default: the speed matters more than the last percent. */
  level?: number;
  /** zstd worker threads (-T); 0 = one per core. */
  threads?: number;
};

/** A stream that compresses with `codec`. */
export function compressStream(codec: Codec, opts: CompressOptions = {}): Duplex {
  if (codec === 'gzip') return zlib.createGzip({ level: opts.level ?? 1, chunkSize: ZLIB_CHUNK });
  if (codec === 'zstd') return new ZstdProcess(['-q', '-c', zstdLevelArg(opts.level ?? 1), `-T${opts.threads ?? 0}`, '--no-progress'], 'compress');
  return new PassThroughDuplex();
}

/** A stream that decompresses `codec`, failing with CodecDataError (or zlib's Z_ errors) on damaged input. */
export function decompressStream(codec: Codec): Duplex {
  if (codec === 'gzip') return zlib.createGunzip({ chunkSize: ZLIB_CHUNK });
  if (codec === 'zstd') return new ZstdProcess(['-q', '-d', '-c', '--no-progress'], 'decompress');
  return new PassThroughDuplex();
}

/**
 * A stream that decompresses zstd into the open file `fd` (written by `zstd -d` itself: the
 * decompressed bytes never pass through this process). It finishes only once zstd has exited 0;
 * a damaged frame fails it with CodecDataError. The file is not fsynced.
 */
export function zstdDecompressIntoFile(fd: number): Writable {
  return new ZstdIntoFile(fd);
}

/**
 * zstd-compresses `files` with one `zstd` process, each into `outDir`/<its name>.zst (one process
 * for several WAL segments: a spawn and a pipe of 16 MiB per segment cost the pusher a third of
 * its CPU; bench/README.md). One thread: the caller runs several of these at once.
 */
export async function zstdFilesToDir(files: readonly string[], outDir: string, level = 1): Promise<void> {
  const lean = await zstdLeanFlags();
  return new Promise((resolve, reject) => {
    // --check (zstd's default, said aloud): the frames carry the content checksum that fetches rely
    // on for segments whose raw SHA-256 the pusher does not record (walarchive.ts).
    const child = childProcess().spawn('zstd', ['-q', '-f', zstdLevelArg(level), '--check', ...lean, '--no-progress', '--output-dir-flat', outDir, '--', ...files], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-2000);
    });
    child.once('error', (err: NodeJS.ErrnoException) => reject(zstdSpawnError(err)));
    child.once('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`zstd failed to compress: ${stderr.trim().split('\n').slice(-3).join(' ') || signal || `exit code ${code}`}`))));
  });
}

/** zstd's level option: 1..19, or a negative level as `--fast=N` (faster than 1, larger output). */
export function zstdLevelArg(level: number): string {
  return level < 0 ? `--fast=${-level}` : `-${level}`;
}

let leanFlags: Promise<string[]> | undefined;

/**
 * zstd flags that cut its CPU per job, for callers that run many short jobs side by side (the
 * pusher): `--single-thread` (1.3.8+; -T1 still hands the work to a worker thread with buffers of
 * its own) and `--no-asyncio` (1.5.3+; an I/O thread). On a 16 MiB WAL segment they took zstd -1
 * from ~77 to ~44 ms of CPU here, half of it system time: every fresh page a process touches is dear
 * on these VMs (bench/README.md). Asked of `zstd -V` once per process; none when it cannot be told.
 */
export function zstdLeanFlags(): Promise<string[]> {
  leanFlags ??= new Promise((resolve) => {
    childProcess().execFile('zstd', ['-V'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeout: 5000 }, (err, stdout) => {
      const m = /v(\d+)\.(\d+)\.(\d+)/.exec(err ? '' : String(stdout));
      const v = m ? Number(m[1]) * 10000 + Number(m[2]) * 100 + Number(m[3]) : 0;
      resolve(v >= 10503 ? ['--single-thread', '--no-asyncio'] : v >= 10308 ? ['--single-thread'] : ['-T1']);
    });
  });
  return leanFlags;
}

/** Why a `zstd` process did not start: a missing program is bad usage (exit 2) naming the package. */
export function zstdSpawnError(err: NodeJS.ErrnoException): Error {
  if (err.code !== 'ENOENT') return err;
  return new CodecUsageError(
    'the zstd program is not installed (pgrunbook compresses with zstd by default, and reads zstd objects with it)',
    `install the "${ZSTD_PACKAGE}" package (apt-get install ${ZSTD_PACKAGE}), or set PGRUNBOOK_COMPRESSION=gzip to write gzip instead (zstd objects already stored still need it)`,
  );
}

/** One buffer through compressStream (a WAL segment): resolves to the compressed bytes. */
export function compressBuffer(codec: Codec, raw: Buffer, opts: CompressOptions = {}): Promise<Buffer> {
  return throughStream(compressStream(codec, opts), raw);
}

export function decompressBuffer(codec: Codec, stored: Buffer): Promise<Buffer> {
  return throughStream(decompressStream(codec), stored);
}

function throughStream(s: Duplex, input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    s.on('data', (c: Buffer) => out.push(c));
    s.once('error', reject);
    s.once('end', () => resolve(Buffer.concat(out)));
    s.end(input);
  });
}

class PassThroughDuplex extends Duplex {
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.push(chunk);
    cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.push(null);
    cb();
  }
}

/**
 * `zstd` as a Duplex. Its output ends only once the program has exited 0: a damaged frame makes
 * it exit 1 after writing what it could, and that must be an error, never a short clean end.
 */
class ZstdProcess extends Duplex {
  private readonly child;
  private stderr = '';
  private pendingWrite?: (err?: Error | null) => void;
  private stdinError?: Error;

  constructor(
    args: string[],
    private readonly mode: 'compress' | 'decompress',
  ) {
    super({ readableHighWaterMark: 1024 * 1024, writableHighWaterMark: 1024 * 1024 });
    // No environment of ours: ZSTD_CLEVEL / ZSTD_NBTHREADS must not change what we asked for.
    this.child = childProcess().spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    const { child } = this;
    child.on('error', (err: NodeJS.ErrnoException) => this.destroy(zstdSpawnError(err)));
    child.stdout.on('data', (c: Buffer) => {
      if (!this.push(c)) child.stdout.pause();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-2000);
    });
    child.stdin.on('error', (err) => {
      // EPIPE: the program stopped reading (it failed); its exit status says why.
      this.stdinError = err;
      const cb = this.pendingWrite;
      this.pendingWrite = undefined;
      cb?.();
    });
    child.on('close', (code, signal) => {
      if (this.destroyed) return;
      if (code === 0) {
        this.push(null);
        return;
      }
      const why = this.stderr.trim().split('\n').slice(-3).join(' ') || (signal ? `killed by ${signal}` : `exit code ${code}`);
      if (this.mode === 'decompress' && code !== null) this.destroy(new CodecDataError(`zstd could not decompress it: ${why}`));
      else this.destroy(new Error(`zstd failed to ${this.mode}: ${why}${this.stdinError ? ` (${this.stdinError.message})` : ''}`));
    });
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.stdinError || this.child.stdin.write(chunk)) {
      cb(); // after a stdin error, the close handler reports the failure
      return;
    }
    this.pendingWrite = cb;
    this.child.stdin.once('drain', () => {
      const pending = this.pendingWrite;
      this.pendingWrite = undefined;
      pending?.();
    });
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.child.stdin.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    cb(err);
  }
}

class ZstdIntoFile extends Writable {
  private readonly child: ChildProcessByStdio<Writable, null, Readable>;
  private stderr = '';
  private readonly exited: Promise<void>;

  constructor(fd: number) {
    super({ highWaterMark: 1024 * 1024 });
    // No environment of ours: ZSTD_* variables must not change what we asked for.
    this.child = childProcess().spawn('zstd', ['-q', '-d', '-c', '--no-progress'], { stdio: ['pipe', fd, 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }) as ChildProcessByStdio<Writable, null, Readable>;
    const { child } = this;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-2000);
    });
    // EPIPE once the program stopped reading (it failed): its exit status says why.
    child.stdin.on('error', () => {});
    this.exited = new Promise((resolve, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) => reject(zstdSpawnError(err)));
      child.once('close', (code, signal) => {
        if (code === 0) return resolve();
        const why = this.stderr.trim().split('\n').slice(-3).join(' ') || (signal ? `killed by ${signal}` : `exit code ${code}`);
        reject(code !== null ? new CodecDataError(`zstd could not decompress it: ${why}`) : new Error(`zstd failed to decompress: ${why}`));
      });
    });
    // A failure before the input ended: fail the stream now (a pipeline then stops its source).
    this.exited.catch((err: Error) => {
      if (!this.writableFinished) this.destroy(err);
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.child.stdin.destroyed || this.child.stdin.write(chunk)) {
      cb();
      return;
    }
    const done = () => {
      this.child.stdin.off('drain', done);
      this.child.stdin.off('close', done);
      cb();
    };
    this.child.stdin.on('drain', done);
    this.child.stdin.on('close', done);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.child.stdin.end();
    this.exited.then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    cb(err);
  }
}
