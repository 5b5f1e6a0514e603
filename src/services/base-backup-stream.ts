// A base backup streamed into the repository in one pass, with the WAL it needs inside (so it is
// consistent on its own) and its backup_manifest as a separate object. Every file is hashed as it
// passes and checked against backup_manifest at the end (base-backup-check.ts): the backup is never
// read back. Two ways, the same objects:
// - server-compressed (PostgreSQL 15+, zstd): the server compresses as it reads, pg_basebackup
//   writes base.tar.zst into a private temp directory, and we follow that file as it grows: its
//   bytes go to the repository as they are and, at the same time, through `zstd -d` into the tar
//   check. The CPU-heavy compression runs in the server while the check runs here, and only
//   compressed bytes cross a pipe into node: about pg_basebackup's own time (bench/README.md).
//   It needs free space in the temp directory for the compressed backup: without it (or with an
//   older server or another codec) the second way is taken.
// - streamed: pg_basebackup's uncompressed tar on stdout through node (the check) and the codec
//   (its own process) into the repository; nothing touches the local disk but the manifest.
// What comes back is backup.json's content, not yet written, and the check's result.
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, statfs, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ConnectionSettings } from '../config/connection.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { parseBackupLabel } from '../postgres/formats/backup_label.js';
import { ManifestReader, type ManifestSummary } from '../postgres/formats/backup_manifest.js';
import { TarFormatError, TarReader, type TarEntrySink } from '../postgres/formats/tar.js';
import { pgBasebackupErrorLines, SERVER_COMPRESSED_TAR, startPgBasebackup, walWasRemoved } from '../postgres/programs/pg_basebackup.js';
import { holdWal, type WalHold } from '../postgres/replication.js';
import type { BaseBackupMeta } from '../repo/catalog.js';
import type { ObjectRecord, Repository } from '../repo/repository.js';
import { compressStream, defaultCodec, type Codec } from '../repo/codec.js';
import { StorageError } from '../storage/types.js';
import { dataObjectName, MANIFEST_OBJECT } from './base-backup-repo.js';
import { manifestChecksums, StreamCheck, type StreamCheckResult } from './base-backup-check.js';
import { FOLLOW_CHUNK, followGrowingFile, makeCheckPipe, ReaderGoneError, startCheckWorker, type CheckedInWorker } from './base-backup-follow.js';
import { sentence, type RunIO } from './run-repository.js';

/** What preflight learned about the server, journaled so a resumed run backs up what was checked. */
export type BaseBackupPreflight = {
  serverVersion: string;
  serverVersionNum: number;
  systemIdentifier: string;
  walSegmentSize: number;
  sizeEstimate: number;
  tool: string;
  /** The repository checked (secrets removed): a resumed run must use the same one. */
  repository: string;
  pgMajor?: number;
};

export type StreamOptions = {
  connection: ConnectionSettings;
  env: NodeJS.ProcessEnv;
  checkpoint: 'fast' | 'spread';
  maxRate?: string;
  /** zstd unless PGRUNBOOK_COMPRESSION says otherwise (codec.ts). */
  codec?: Codec;
};

export type StreamedBackup = { meta: BaseBackupMeta; check: StreamCheckResult };

/** Streams a new base backup `id` into `repo`; throws, with what to do next, when it cannot be used. The caller removes its objects then. */
export async function streamBaseBackup(ctx: RunIO, repo: Repository, id: string, pre: BaseBackupPreflight, opts: StreamOptions): Promise<StreamedBackup> {
  const { checkpoint } = opts;
  const codec = opts.codec ?? defaultCodec(opts.env);
  const launchedAt = new Date();
  const started = Date.now();
  const dataKey = repo.baseBackupKey(id, dataObjectName(codec));
  const manifestKey = repo.baseBackupKey(id, MANIFEST_OBJECT);

  // The manifest goes through a private temp file: it is written to the repository after the tar,
  // and parsed for the WAL range. It grows with the number of files (about 150 bytes each).
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'pgrunbook-basebackup-'));
  const manifestPath = path.join(tmp, MANIFEST_OBJECT);
  let manifestFile: FileHandle | undefined = await open(manifestPath, 'wx', 0o600);
  let walHold: WalHold | undefined;
  let worker: ReturnType<typeof startCheckWorker> | undefined;
  try {
    let stopping = false;
    try {
      walHold = await holdWal(opts.connection, `pgrunbook_${id.toLowerCase().replace(/[^a-z0-9_]/g, '_')}_${process.pid}`);
      ctx.log(`holding WAL from ${walHold.restartLsn} with the temporary replication slot ${walHold.slot} until the backup has its WAL`);
    } catch (err) {
      ctx.log(
        `could not create a temporary replication slot to hold WAL (${(err as Error).message}): if the server recycles WAL while the backup runs, pg_basebackup fails with "requested WAL segment ... has already been removed". Free a slot (max_replication_slots) or raise wal_keep_size to avoid that`,
        'warn',
      );
    }
    if (checkpoint === 'spread') ctx.log('waiting for the server\'s checkpoint (spread: this can take minutes on a busy server; --checkpoint fast forces it)');
    const serverDir = (await serverCompressionFits(ctx, pre, codec, tmp)) ? path.join(tmp, 'pg_basebackup') : undefined;
    const bb = await startPgBasebackup({
      directory: serverDir,
      connection: opts.connection,
      label: `pgrunbook-${id}`,
      checkpoint,
      maxRate: opts.maxRate,
      manifestChecksums: manifestChecksums(),
      signal: ctx.signal,
      env: opts.env,
      // Once we stop it ourselves, its complaints about the closed pipe are noise.
      onStderrLine: (line) => {
        if (!stopping && !ctx.signal.aborted) ctx.log(line);
      },
    });
    ctx.log(`running ${bb.command}`);

    // Follow the tar as it passes: lift out backup_manifest and backup_label, and the first
    // bytes of pg_control (the system identifier) to prove which cluster this is.
    const labelChunks: Buffer[] = [];
    const controlHead: Buffer[] = [];
    let manifestSeen = false;
    let manifestWrites: Promise<unknown> = Promise.resolve();
    const check = new StreamCheck();
    const reader = new TarReader((entry): TarEntrySink | undefined => {
      if (entry.name === MANIFEST_OBJECT) {
        manifestSeen = true;
        return check.sink(entry, {
          data: (chunk) => {
            const copy = Buffer.from(chunk);
            manifestWrites = manifestWrites.then(() => manifestFile!.write(copy));
          },
          end: () => {},
        });
      }
      if (entry.name === 'backup_label') return check.sink(entry, { data: (c) => void labelChunks.push(Buffer.from(c)), end: () => {} });
      if (entry.name === 'global/pg_control') {
        return check.sink(entry, { data: (c) => void (Buffer.concat(controlHead).length < 8 && controlHead.push(Buffer.from(c.subarray(0, 8)))), end: () => {} });
      }
      return check.sink(entry);
    });
    let rawBytes = 0;
    let streamEndedAt = new Date();
    // An estimate: past it, the total is unknown rather than a moving 100%.
    const total = () => (rawBytes <= pre.sizeEstimate ? pre.sizeEstimate : undefined);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        try {
          reader.write(chunk);
        } catch (err) {
          cb(err as Error);
          return;
        }
        rawBytes += chunk.length;
        ctx.progress({ done: rawBytes, total: total(), unit: 'bytes' });
        // Writing the manifest to its temp file is the only asynchronous part: let it catch up.
        manifestWrites.then(() => cb(null, chunk), (err) => cb(err as Error));
      },
      flush(cb) {
        try {
          reader.end();
          if (!manifestSeen && !serverDir) throw new TarFormatError('the tar stream from pg_basebackup has no backup_manifest (is pg_basebackup older than 13, or --no-manifest set?)');
        } catch (err) {
          cb(err as Error);
          return;
        }
        streamEndedAt = new Date();
        manifestWrites.then(() => cb(), (err) => cb(err as Error));
      },
    });
    let body: Readable;
    let checked: Promise<unknown> = Promise.resolve();
    let checkedInWorker: CheckedInWorker | undefined;
    if (serverDir) {
      // The followed file's bytes go to the repository as they are, and to the check's thread.
      const stored = new PassThrough({ highWaterMark: FOLLOW_CHUNK });
      let exited = false;
      void bb.done.then(() => {
        exited = true;
      });
      worker = startCheckWorker(tmp, check.algorithm, pre.walSegmentSize || 16 * 1024 * 1024, path.join(serverDir, MANIFEST_OBJECT), (n) => {
        rawBytes = n;
        ctx.progress({ done: rawBytes, total: total(), unit: 'bytes' });
      });
      // A malformed tar or damaged frame fails the put with its cause, as in the streamed way.
      checked = worker.result.then(
        (r) => {
          checkedInWorker = r;
          rawBytes = r.rawBytes;
          streamEndedAt = new Date(r.endedAt);
        },
        (err: unknown) => {
          stored.destroy(err as Error);
          throw err;
        },
      );
      checked.catch(() => {});
      followGrowingFile(path.join(serverDir, SERVER_COMPRESSED_TAR), () => exited, [stored, worker.input], ctx.signal).catch((err: unknown) => {
        stored.destroy(err as Error);
        worker?.input.destroy(err as Error);
      });
      body = stored;
    } else {
      const compressor = compressStream(codec, { level: 1 });
      // Errors anywhere destroy the chain; the put sees them as errors of its body.
      pipeline(bb.stdout!, tap, compressor).catch(() => {});
      body = compressor;
    }

    let putError: unknown;
    const put = repo
      .putObject(dataKey, body, { signal: ctx.signal, sizeHint: Math.round(pre.sizeEstimate * 1.1) + 64 * 1024 * 1024, metadata: { compression: codec, format: 'tar' } })
      .catch((err: unknown) => {
        putError = err;
        stopping = true;
        bb.kill(); // the repository failed: stop reading from the server
        return undefined;
      });
    const [result, stored] = await Promise.all([bb.done, put]);
    // The check may still be reading the last bytes the put already has; and when the put stopped
    // because the check's zstd went away, the check's own failure (a damaged frame) is the cause.
    if (putError === undefined) putError = await checked.then(() => undefined, (err: unknown) => err);
    else if (putError instanceof ReaderGoneError) putError = await checked.then(() => putError, (err: unknown) => err);

    ctx.signal.throwIfAborted();
    if ((putError as { procedureExitCode?: number } | undefined)?.procedureExitCode === 2) throw putError; // the codec cannot run here (no zstd program)
    if (putError instanceof StorageError) {
      throw new Error(
        `storing the backup failed: ${sentence((putError as Error).message)} pg_basebackup was stopped; nothing was committed (no backup.json). Check the repository, then run the backup again`,
      );
    }
    // Killed by us because its output could not be used: the put's error is the cause, not the kill.
    const killedByUs = stopping && result.exitCode === undefined && result.signal !== undefined;
    if (!result.ok && !killedByUs) {
      const walGone = walWasRemoved(result.stderrTail);
      throw new Error(
        `pg_basebackup failed (${result.exitCode !== undefined ? `exit code ${result.exitCode}` : result.signal ?? 'no exit code'}): ${sentence(pgBasebackupErrorLines(result.stderrTail) || 'no message')} ` +
          (walGone
            ? 'The server recycled WAL the backup needed while it ran: free a replication slot (max_replication_slots) so that backup-base can hold WAL, or raise wal_keep_size. Nothing was committed; run the backup again'
            : 'Nothing was committed; fix the cause and run the backup again'),
      );
    }
    if (putError !== undefined || !stored || !result.ok) {
      const e = putError as Error | undefined;
      const why = e === undefined ? `pg_basebackup ended with ${result.signal ?? 'no exit code'}` : e.message;
      throw new Error(
        `${e instanceof TarFormatError ? 'the backup stream from pg_basebackup is malformed: ' : 'the backup could not be stored: '}${sentence(why)} pg_basebackup was stopped; nothing was committed. Run the backup again`,
      );
    }

    await manifestWrites;
    await manifestFile.close();
    manifestFile = undefined;
    let manifestSource = manifestPath;
    if (serverDir) {
      // Beside the tar, not in it: the check reads it now.
      const extra = (await readdir(serverDir)).filter((n) => n !== SERVER_COMPRESSED_TAR && n !== MANIFEST_OBJECT);
      if (extra.length) throw new Error(`pg_basebackup wrote more than the data directory's tar (${extra.join(', ')}): tablespaces outside the data directory are not supported. Nothing was committed`);
      manifestSource = path.join(serverDir, MANIFEST_OBJECT);
    }
    const manifest = await readManifestFile(manifestSource);
    const manifestRecord = await repo.putObject(manifestKey, createReadStream(manifestSource), { signal: ctx.signal, sizeHint: manifest.bytes });

    const label = parseBackupLabel((checkedInWorker?.label ?? Buffer.concat(labelChunks)).toString('utf8'));
    const ranges = manifest.walRanges;
    if (!ranges.length) throw new Error('the backup_manifest has no WAL-Ranges: the backup cannot be made consistent. Run the backup again');
    const startLsn = ranges[0].startLsn;
    const stopLsn = ranges[ranges.length - 1].endLsn;
    if (result.endLsn && result.endLsn !== stopLsn) ctx.log(`pg_basebackup reported end point ${result.endLsn}, the manifest ${stopLsn}; using the manifest's`, 'warn');

    const systemIdentifier = confirmSystemIdentifier(checkedInWorker?.controlHead ?? Buffer.concat(controlHead), pre.systemIdentifier, manifest.systemIdentifier);
    const seconds = (Date.now() - started) / 1000;
    const mbps = rawBytes / 1024 / 1024 / Math.max(seconds, 0.001);
    ctx.log(
      `streamed ${formatBytes(rawBytes)} from the server in ${formatDuration(seconds * 1000)} (${mbps.toFixed(1)} MiB/s), stored as ${formatBytes(stored.size)} (${codec} -1${serverDir ? ', compressed by the server' : ''}, ${((stored.size / Math.max(rawBytes, 1)) * 100).toFixed(0)}%); ${manifest.fileCount} files, WAL ${startLsn} .. ${stopLsn}`,
    );

    const meta: BaseBackupMeta = {
      id,
      startLsn,
      stopLsn,
      // backup_label's START TIME is the server's; when its zone cannot be read, the launch time (earlier: safe).
      startTime: (label.startTime ?? launchedAt).toISOString(),
      // The end of the stream comes after the server stopped the backup: never earlier than the truth.
      stopTime: streamEndedAt.toISOString(),
      timeline: ranges[ranges.length - 1].timeline,
      systemIdentifier,
      serverVersion: pre.serverVersion,
      walSegmentSize: pre.walSegmentSize,
      includesWal: true,
      size: stored.size + manifestRecord.size,
      uncompressedSize: rawBytes,
      fileCount: manifest.fileCount,
      objects: {
        data: { ...objectOf(stored), format: 'tar', compression: codec },
        manifest: objectOf(manifestRecord),
      },
      walRanges: ranges,
      checkpointLsn: label.checkpointLsn,
      backupFrom: label.backupFrom,
      tool: pre.tool,
      label: `pgrunbook-${id}`,
    };
    return { meta, check: checkedInWorker?.result ?? check.result(rawBytes, pre.walSegmentSize || 16 * 1024 * 1024) };
  } finally {
    worker?.stop();
    await walHold?.release();
    await manifestFile?.close().catch(() => {});
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * Whether the server can compress this backup (pg_basebackup -D DIR --compress=server-zstd): zstd
 * asked for, a PostgreSQL 15+ server and pg_basebackup, and room in the temp directory for the
 * backup even uncompressed (the estimate; the compressed file is what it takes, so this is safe).
 */
async function serverCompressionFits(ctx: RunIO, pre: BaseBackupPreflight, codec: Codec, tmp: string): Promise<boolean> {
  if (codec !== 'zstd' || pre.serverVersionNum < 150000) return false;
  const toolMajor = Number(/pg_basebackup (\d+)/.exec(pre.tool)?.[1] ?? 0);
  if (toolMajor < 15) return false;
  // Made before pg_basebackup starts: a system without mkfifo takes the streamed way instead of failing.
  const noPipe = makeCheckPipe(tmp);
  if (noPipe) {
    ctx.log(`cannot make a named pipe in ${tmp} (${noPipe}): the backup is streamed through pgrunbook and compressed here instead of by the server (slower)`);
    return false;
  }
  try {
    const fs = await statfs(tmp);
    const free = fs.bavail * fs.bsize;
    if (free >= pre.sizeEstimate) return true;
    ctx.log(`${formatBytes(free)} free in ${path.dirname(tmp)}, less than the estimate (${formatBytes(pre.sizeEstimate)}): the backup is streamed through pgrunbook and compressed here instead of by the server (slower; set TMPDIR to a roomier directory for the faster way)`);
  } catch {
    // no statfs: take the way that needs no local space
  }
  return false;
}

function objectOf(r: ObjectRecord): { key: string; size: number; sha256: string } {
  return { key: r.key, size: r.size, sha256: r.sha256 };
}

async function readManifestFile(file: string): Promise<ManifestSummary> {
  const reader = new ManifestReader();
  for await (const chunk of createReadStream(file)) reader.write(chunk as Buffer);
  try {
    return reader.end();
  } catch (err) {
    throw new Error(`the backup_manifest pg_basebackup sent is unusable: ${(err as Error).message}. Nothing was committed; run the backup again`);
  }
}

/**
 * The system identifier from the backup's own pg_control (its first 8 bytes, in the server's byte
 * order), checked against the one IDENTIFY_SYSTEM gave before the backup: a connection that ended up
 * on another cluster (a moved virtual IP, a pooler) must not produce a backup filed under this one.
 */
function confirmSystemIdentifier(controlHead: Buffer, identified: string, fromManifest: string | undefined): string {
  const candidates = controlHead.length >= 8 ? [controlHead.readBigUInt64LE(0).toString(), controlHead.readBigUInt64BE(0).toString()] : [];
  if (fromManifest) candidates.unshift(fromManifest);
  if (!candidates.length) throw new Error('the backup has no global/pg_control: it is not a PostgreSQL data directory. Nothing was committed');
  if (identified && !candidates.includes(identified)) {
    throw new Error(
      `the backup is of another cluster (system identifier ${candidates[0]}) than the one checked before it started (${identified}): did the address move to another server? Nothing was committed; check the connection and run the backup again`,
    );
  }
  return identified || candidates[0];
}
