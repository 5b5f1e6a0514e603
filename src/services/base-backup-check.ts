// The check of a base backup against its own backup_manifest, made while the tar streams past on
// its way into the repository (one pass: the backup is never read back). Every file's digest is
// taken as it passes; backup_manifest comes last in pg_basebackup's tar, so the comparison (size,
// checksum, nothing missing, nothing extra, the WAL that makes the backup consistent) is made at
// the end. The result goes in the run's journal; the verify step reports it.
import { createHash, type Hash } from 'node:crypto';
import { ManifestReader, manifestChecksummer, nativeCrc32c, type FileChecksummer, type ManifestFile, type ManifestSummary } from '../postgres/formats/backup_manifest.js';
import type { TarEntry, TarEntrySink } from '../postgres/formats/tar.js';
import { parseLsn, segmentName, segnoOfLsn } from '../repo/walnames.js';

/** What the stream check found: journaled, reported by the verify step. */
export type StreamCheckResult = {
  /** Regular files in the tar. */
  files: number;
  /** Files whose checksum matched backup_manifest. */
  checksummed: number;
  /** Files listed in backup_manifest. */
  listed: number;
  /** Bytes of the tar. */
  bytes: number;
  /** backup_manifest's own Manifest-Checksum held, and it could be read. */
  manifestOk: boolean;
  manifestDetail: string;
  /** Mismatches between the tar and backup_manifest (the first few), and how many in all. */
  problems: string[];
  problemCount: number;
  /** WAL segments the backup needs that are not in its pg_wal/. */
  missingWal: string[];
  neededWal: string[];
};

const MAX_PROBLEMS = 10;

/**
 * The algorithm pg_basebackup is asked for (--manifest-checksums): CRC-32C (PostgreSQL's default)
 * when the hardware CRC addon loads: nearly free on both sides, where SHA-256 costs the server and
 * us a second each per 1.5 GB (bench/README.md). Without the addon, SHA-256 in OpenSSL: several
 * times faster than CRC-32C in JavaScript.
 */
export function manifestChecksums(): 'CRC32C' | 'SHA256' {
  return nativeCrc32c() ? 'CRC32C' : 'SHA256';
}

type Seen = { size: number; digest?: string; algorithm: string };

/**
 * Follows a tar: `sink(entry)` hashes each regular file with `algorithm` (what the manifest will
 * list) and remembers the digests; `manifest` reads the backup_manifest member.
 */
export class StreamCheck {
  readonly manifest = new ManifestReader({ keepFiles: true });
  private manifestError?: Error;
  private manifestSummary?: ManifestSummary;
  private readonly seen = new Map<string, Seen>();
  private readonly walNames = new Set<string>();
  private files = 0;

  constructor(readonly algorithm: string = manifestChecksums()) {}

  /** The sink for a regular file of the tar (backup_manifest's own is fed to the reader). */
  sink(entry: TarEntry, also?: TarEntrySink): TarEntrySink | undefined {
    if (entry.type !== 'file') return also;
    this.files++;
    if (entry.name === 'backup_manifest') {
      return {
        data: (c) => {
          also?.data(c);
          this.manifestData(c);
        },
        end: () => {
          also?.end();
          this.manifestEnd();
        },
      };
    }
    // Manifests do not list WAL segments (pg_verifybackup parses them instead): the needed ones are
    // checked by name, their bytes by the object's SHA-256 and zstd's content checksum.
    if (entry.name.startsWith('pg_wal/')) this.walNames.add(entry.name.slice('pg_wal/'.length));
    const rec: Seen = { size: entry.size, algorithm: this.algorithm };
    this.seen.set(entry.name, rec);
    const sum = hasher(this.algorithm);
    return {
      data: (c) => {
        also?.data(c);
        sum?.update(c);
      },
      end: () => {
        also?.end();
        rec.digest = sum?.digestHex();
      },
    };
  }

  /** backup_manifest's bytes, from the tar or (pg_basebackup -D DIR) from the file beside it. */
  manifestData(c: Buffer): void {
    if (this.manifestError) return;
    try {
      this.manifest.write(c);
    } catch (err) {
      this.manifestError = err as Error;
    }
  }

  manifestEnd(): void {
    if (this.manifestError) return;
    try {
      this.manifestSummary = this.manifest.end();
    } catch (err) {
      this.manifestError = err as Error;
    }
  }

  /** The summary of backup_manifest, when it was read and its checksum held. */
  summary(): ManifestSummary | undefined {
    return this.manifestSummary;
  }

  /** The comparison, once the tar has ended. `walRanges` default to the manifest's. */
  result(bytes: number, walSegmentSize: number): StreamCheckResult {
    const problems: string[] = [];
    let problemCount = 0;
    const problem = (p: string) => {
      problemCount++;
      if (problems.length < MAX_PROBLEMS) problems.push(p);
    };
    let checksummed = 0;
    const summary = this.manifestSummary;
    const expected: Map<string, ManifestFile> = summary ? this.manifest.files : new Map();
    if (summary) {
      for (const [name, got] of this.seen) {
        const want = expected.get(name);
        if (!want) {
          if (!name.startsWith('pg_wal/')) problem(`${name}: in the tar but not in backup_manifest`);
          continue;
        }
        if (want.size !== got.size) {
          problem(`${name}: ${got.size} bytes in the tar, ${want.size} in backup_manifest`);
          continue;
        }
        if (!want.checksum || !got.digest) continue;
        if (want.algorithm.toUpperCase() !== got.algorithm) {
          problem(`${name}: backup_manifest lists a ${want.algorithm} checksum, the stream was hashed with ${got.algorithm}`);
          continue;
        }
        if (want.checksum === got.digest) checksummed++;
        else problem(`${name}: ${want.algorithm} ${got.digest}, backup_manifest says ${want.checksum}`);
      }
      for (const name of expected.keys()) if (!this.seen.has(name)) problem(`${name}: in backup_manifest but not in the tar`);
    }
    const neededWal: string[] = [];
    for (const r of summary?.walRanges ?? []) {
      const start = parseLsn(r.startLsn);
      const end = parseLsn(r.endLsn);
      const last = end > start ? end - 1n : end;
      for (let s = segnoOfLsn(start, walSegmentSize); s <= segnoOfLsn(last, walSegmentSize); s++) neededWal.push(segmentName(r.timeline, s, walSegmentSize));
    }
    return {
      files: this.files,
      checksummed,
      listed: expected.size,
      bytes,
      manifestOk: Boolean(summary),
      manifestDetail: summary
        ? `Manifest-Checksum ok; ${summary.fileCount} files`
        : this.manifestError
          ? this.manifestError.message
          : 'the tar has no backup_manifest',
      problems,
      problemCount,
      missingWal: neededWal.filter((n) => !this.walNames.has(n)),
      neededWal,
    };
  }
}

function hasher(algorithm: string): FileChecksummer | undefined {
  if (algorithm === 'SHA256') {
    const h: Hash = createHash('sha256');
    return { update: (c) => void h.update(c), digestHex: () => h.digest('hex') };
  }
  return manifestChecksummer(algorithm);
}
