// A stored base backup read back and checked against its own manifest: the SHA-256 of both
// objects, the backup_manifest's Manifest-Checksum, every file in the tar (size and checksum), and
// the WAL from the start to the stop LSN that makes the backup consistent.
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { formatBytes } from '../engine/format.js';
import { ManifestError, ManifestReader, manifestChecksummer, type FileChecksummer, type ManifestFile, type ManifestSummary } from '../postgres/formats/backup_manifest.js';
import { TarFormatError, TarReader, type TarEntrySink } from '../postgres/formats/tar.js';
import type { BaseBackupMeta } from '../repo/catalog.js';
import type { Repository } from '../repo/repository.js';
import { ChecksumMismatchError } from '../storage/types.js';
import { parseLsn, segmentName, segnoOfLsn } from '../repo/walnames.js';
import { DATA_OBJECT, MANIFEST_OBJECT } from './base-backup-repo.js';
import { ZLIB_CHUNK } from './base-backup-stream.js';
import type { RunIO } from './run-repository.js';

/** What was read back, for the run's state. */
export type VerifiedBackup = { files: number; checksummed: number; bytes: number; seconds: number };

function isCorruption(err: unknown): boolean {
  if (err instanceof ChecksumMismatchError || err instanceof TarFormatError || err instanceof ManifestError) return true;
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && code.startsWith('Z_'); // zlib: not gzip, or damaged
}

/** `failed` when a check failed (the backup is bad); throws when the repository could not be read. */
export async function verifyBaseBackup(ctx: RunIO, repo: Repository, meta: BaseBackupMeta): Promise<{ failed: boolean; verified?: VerifiedBackup }> {
  const data = meta.objects?.data;
  const man = meta.objects?.manifest;
  if (!data || !man) throw new Error(`backup ${meta.id} has no object list in its state; run the backup again`);
  let failed = false;
  const fail = (name: string, detail: string) => {
    failed = true;
    ctx.check(name, false, detail);
  };

  // 1. The manifest: the bytes we stored, and its own checksum.
  const manifestReader = new ManifestReader({ keepFiles: true });
  let manifest: ManifestSummary;
  try {
    const body = await repo.getVerified(man.key, man.sha256, ctx.signal);
    for await (const chunk of body) manifestReader.write(chunk as Buffer);
    manifest = manifestReader.end();
  } catch (err) {
    if (!isCorruption(err)) throw err;
    fail(MANIFEST_OBJECT, (err as Error).message);
    return { failed: true };
  }
  ctx.check(MANIFEST_OBJECT, true, `SHA-256 and Manifest-Checksum ok; ${manifest.fileCount} files, ${formatBytes(manifest.totalSize)}`);
  const expected = manifestReader.files;

  // 2. The data: SHA-256 of the object, gunzip, every tar entry against the manifest.
  const seen = new Set<string>();
  const problems: string[] = [];
  const walNames = new Set<string>();
  let files = 0;
  let checksummed = 0;
  let unlisted = 0;
  const reader = new TarReader((entry): TarEntrySink | undefined => {
    if (entry.type !== 'file') return undefined;
    files++;
    if (entry.name.startsWith('pg_wal/')) walNames.add(entry.name.slice('pg_wal/'.length));
    if (entry.name === MANIFEST_OBJECT) return undefined;
    const want = expected.get(entry.name);
    // Manifests do not list WAL files (pg_verifybackup checks WAL by parsing it): the needed
    // segments are checked by name below, and their bytes by the object's SHA-256.
    if (!want && entry.name.startsWith('pg_wal/')) return undefined;
    if (!want) {
      unlisted++;
      if (problems.length < 10) problems.push(`${entry.name}: in the tar but not in backup_manifest`);
      return undefined;
    }
    seen.add(entry.name);
    if (want.size !== entry.size) {
      problems.push(`${entry.name}: ${entry.size} bytes in the tar, ${want.size} in backup_manifest`);
      return undefined;
    }
    return checksumSink(want, (outcome) => {
      if (outcome === 'ok') checksummed++;
      else if (outcome !== 'unchecked') problems.push(outcome);
    });
  });

  let compressedRead = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      compressedRead += chunk.length;
      ctx.progress({ done: compressedRead, total: data.size, unit: 'bytes' });
      cb(null, chunk);
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      try {
        reader.write(chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    final(cb) {
      try {
        reader.end();
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  const started = Date.now();
  try {
    const body: Readable = await repo.getVerified(data.key, data.sha256, ctx.signal);
    await pipeline(body, counter, createGunzip({ chunkSize: ZLIB_CHUNK }), sink, { signal: ctx.signal });
  } catch (err) {
    if (ctx.signal.aborted || !isCorruption(err)) throw err;
    fail(DATA_OBJECT, `${(err as Error).message} (after ${formatBytes(compressedRead)} of ${formatBytes(data.size)})`);
    return { failed: true };
  }
  const seconds = (Date.now() - started) / 1000;
  ctx.check(
    DATA_OBJECT,
    true,
    `SHA-256 ok, gunzip ok, complete tar: ${files} files, ${formatBytes(reader.bytesRead)} (read at ${(reader.bytesRead / 1024 / 1024 / Math.max(seconds, 0.001)).toFixed(1)} MiB/s)`,
  );

  const missing = [...expected.keys()].filter((p) => !seen.has(p));
  for (const p of missing.slice(0, 10)) problems.push(`${p}: in backup_manifest but not in the tar`);
  if (problems.length) {
    fail('files against backup_manifest', `${problems.length + Math.max(0, missing.length - 10) + Math.max(0, unlisted - 10)} problem(s): ${problems.slice(0, 5).join('; ')}`);
  } else {
    ctx.check('files against backup_manifest', true, `all ${expected.size} files present with the listed size; ${checksummed} checksums verified`);
  }

  // 3. The WAL from the start to the stop LSN, which makes the backup consistent, is inside.
  const segSize = meta.walSegmentSize ?? 16 * 1024 * 1024;
  const needed: string[] = [];
  for (const r of meta.walRanges ?? [{ timeline: meta.timeline, startLsn: meta.startLsn, endLsn: meta.stopLsn }]) {
    const start = parseLsn(r.startLsn);
    const end = parseLsn(r.endLsn);
    const last = end > start ? end - 1n : end;
    for (let s = segnoOfLsn(start, segSize); s <= segnoOfLsn(last, segSize); s++) needed.push(segmentName(r.timeline, s, segSize));
  }
  const absent = needed.filter((n) => !walNames.has(n));
  if (absent.length) fail('WAL inside the backup', `missing from pg_wal/: ${absent.join(', ')} (needed for ${meta.startLsn} .. ${meta.stopLsn})`);
  else ctx.check('WAL inside the backup', true, `${needed.join(', ')} (${meta.startLsn} .. ${meta.stopLsn}) in pg_wal/`);

  return { failed, verified: { files, checksummed, bytes: reader.bytesRead, seconds } };
}

/** Checks one file's contents against its manifest checksum; reports 'ok', 'unchecked' (no or an unknown algorithm) or the problem. */
function checksumSink(want: ManifestFile, done: (outcome: string) => void): TarEntrySink {
  const sum: FileChecksummer | undefined = want.checksum ? manifestChecksummer(want.algorithm) : undefined;
  return {
    data: (chunk) => sum?.update(chunk),
    end: () => {
      if (!sum) return done('unchecked');
      const actual = sum.digestHex();
      done(actual === want.checksum ? 'ok' : `${want.path}: ${want.algorithm} ${actual}, backup_manifest says ${want.checksum}`);
    },
  };
}
