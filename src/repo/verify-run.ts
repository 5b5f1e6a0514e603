// One verify run's state (counts, problems, progress) and the checks of single objects: WAL
// files, dumps, metadata files and anything else against its recorded SHA-256. Base backups are
// checked in verify-basebackup.ts; verify.ts lists the repository and schedules the checks.
import { createHash } from 'node:crypto';
import { ChecksumMismatchError, ObjectNotFoundError, StorageError, type ListEntry, type ObjectStore } from '../storage/types.js';
import { sha256Hex } from '../storage/checksum.js';
import type { DumpMeta } from './catalog.js';
import { DUMP_PREFIX, IDENTITY_KEY, LOCK_PREFIX, parseWalKey } from './layout.js';
import { decompressBuffer } from './codec.js';
import { walContentProven } from './walarchive.js';
import type { VerifyCounts, VerifyOptions, VerifyProblem, VerifyProgress } from './verify-types.js';


export const HEX64 = /^[0-9a-f]{64}$/;

export interface Group {
  id: string;
  entries: ListEntry[];
  meta?: ListEntry;
}

/** Problems found while reading one object; undefined when it was deleted after the listing (retention, a cleanup). */
export function classify(key: string, err: unknown): VerifyProblem | undefined {
  if (err instanceof ObjectNotFoundError || (err instanceof StorageError && err.code === 'not-found')) return undefined;
  if (err instanceof ChecksumMismatchError) return { key, problem: 'checksum-mismatch', detail: `SHA-256 is ${err.actual}, ${err.expected} was recorded` };
  return { key, problem: 'unreadable', detail: (err as Error)?.message ?? String(err) };
}

export class VerifyRun {
  readonly bad: VerifyProblem[] = [];
  readonly warnings: string[] = [];
  readonly unverifiedKeys: string[] = [];
  readonly counts: VerifyCounts = { objects: 0, bytes: 0, verified: 0, unverified: 0, walFiles: 0, baseBackups: 0, dumps: 0, manifestFiles: 0, incomplete: 0, gaps: 0, bad: 0 };
  readonly progress: VerifyProgress = { objectsDone: 0, objectsTotal: 0, bytesDone: 0, bytesTotal: 0 };

  constructor(
    readonly store: ObjectStore,
    readonly opts: VerifyOptions,
  ) {}

  report(): void {
    this.opts.onProgress?.({ ...this.progress });
  }

  objectDone(): void {
    this.progress.objectsDone++;
    this.report();
  }

  addBad(p: VerifyProblem): void {
    this.bad.push(p);
  }

  /** A read failed: unreadable, or (not found) deleted since the listing, which is not corruption. */
  readFailed(key: string, err: unknown): void {
    const p = classify(key, err);
    if (p) this.addBad(p);
    else this.warnings.push(`${key}: deleted while the verify ran (retention or another job?); not checked`);
  }

  /**
   * Runs the check of one object: a failed read is recorded against `key` (an abort is rethrown,
   * it stops the run), and the object counts as done either way.
   */
  async checkObject<T>(key: string, check: () => Promise<T>): Promise<T | undefined> {
    try {
      return await check();
    } catch (err) {
      if (this.opts.signal?.aborted) throw err;
      this.readFailed(key, err);
      return undefined;
    } finally {
      this.objectDone();
    }
  }

  unverified(key: string): void {
    this.counts.unverified++;
    if (this.unverifiedKeys.length < 20) this.unverifiedKeys.push(key);
  }
}

/** Reads one object whole, hashing it; `onChunk` sees every chunk in order (and may wait). */
export async function readHashed(run: VerifyRun, key: string, onChunk?: (chunk: Buffer) => Promise<void> | void): Promise<{ sha256: string; size: number; metadata: Record<string, string> }> {
  run.opts.signal?.throwIfAborted();
  const { body, info } = await run.store.get(key, { signal: run.opts.signal });
  const hash = createHash('sha256');
  let size = 0;
  for await (const c of body) {
    const chunk = c as Buffer;
    hash.update(chunk);
    size += chunk.length;
    run.progress.bytesDone += chunk.length;
    if (onChunk) await onChunk(chunk);
  }
  return { sha256: hash.digest('hex'), size, metadata: info.metadata };
}

/** An object checked against the SHA-256 in its own metadata (metadata files, other objects). */
export async function verifyPlain(run: VerifyRun, key: string, expected?: string): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  return run.checkObject(key, async () => {
    const keep = key.endsWith('.json');
    const r = await readHashed(run, key, keep ? (c) => void chunks.push(Buffer.from(c)) : undefined);
    const want = expected ?? r.metadata.sha256;
    if (key === IDENTITY_KEY || key.startsWith(LOCK_PREFIX)) {
      // Small records rewritten in place by design (no recorded checksum): they must parse.
      try {
        JSON.parse(Buffer.concat(chunks).toString('utf8'));
        run.counts.verified++;
      } catch (e) {
        run.addBad({ key, problem: 'corrupt', detail: `not a readable JSON record: ${(e as Error).message}` });
        return undefined;
      }
    } else if (!want || !HEX64.test(want)) {
      run.unverified(key);
    } else if (want !== r.sha256) {
      run.addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, ${want} was recorded when it was written` });
      return undefined;
    } else {
      run.counts.verified++;
    }
    return Buffer.concat(chunks);
  });
}

export async function readMeta<T>(run: VerifyRun, key: string): Promise<T | undefined> {
  const body = await verifyPlain(run, key);
  if (!body) return undefined;
  try {
    return JSON.parse(body.toString('utf8')) as T;
  } catch (err) {
    run.addBad({ key, problem: 'corrupt', detail: `not valid JSON: ${(err as Error).message}` });
    return undefined;
  }
}

export async function verifyWal(run: VerifyRun, e: ListEntry): Promise<void> {
  const key = e.key;
  await run.checkObject(key, async () => {
    const chunks: Buffer[] = [];
    const r = await readHashed(run, key, (c) => void chunks.push(Buffer.from(c)));
    const stored = Buffer.concat(chunks);
    const want = r.metadata.sha256;
    const wantRaw = r.metadata.rawsha256;
    if (want && want !== r.sha256) {
      run.addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 of the stored bytes is ${r.sha256}, wal-push recorded ${want}` });
      return;
    }
    let raw: Buffer = stored;
    const codec = parseWalKey(key)?.compression ?? 'none';
    if (codec !== 'none') {
      try {
        raw = await decompressBuffer(codec, stored);
      } catch (err) {
        if ((err as { procedureExitCode?: number }).procedureExitCode === 2) throw err; // no zstd program: not the object's fault
        run.addBad({ key, problem: want ? 'corrupt' : 'checksum-mismatch', detail: `${codec === 'gzip' ? 'gunzip' : 'zstd -d'} fails: ${(err as Error).message}` });
        return;
      }
    }
    // Segments the pusher compressed record no raw SHA-256: zstd -d checked its content checksum above.
    if (wantRaw) {
      const rawSha = sha256Hex(raw);
      if (rawSha !== wantRaw) {
        run.addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 of the uncompressed WAL is ${rawSha}, wal-push recorded ${wantRaw}` });
        return;
      }
    }
    const rawSize = Number(r.metadata.rawsize);
    if (r.metadata.rawsize && rawSize !== raw.length) {
      run.addBad({ key, problem: 'corrupt', detail: `${raw.length} bytes uncompressed, wal-push recorded ${rawSize}` });
      return;
    }
    if (walContentProven(r.metadata, codec)) run.counts.verified++;
    else run.unverified(key);
  });
}

export async function verifyDump(run: VerifyRun, g: Group): Promise<void> {
  const metaKey = g.meta!.key;
  const meta = await readMeta<DumpMeta>(run, metaKey);
  const prefix = `${DUMP_PREFIX}${g.id}/`;
  const listed = new Map(g.entries.map((e) => [e.key, e]));
  if (meta && typeof meta.object === 'string') {
    const key = prefix + meta.object;
    if (takeListed(run, listed, key, 'dump.json')) await checkRecorded(run, key, meta.sha256, meta.size, 'dump.json');
  }
  for (const e of listed.values()) await verifyPlain(run, e.key);
}

/**
 * Takes an object a backup's metadata file names (`where`) out of the backup's listing, so that
 * what is left are the objects it does not name; false, and a 'missing' problem, when the
 * repository does not have it.
 */
export function takeListed(run: VerifyRun, listed: Map<string, ListEntry>, key: string, where: string): boolean {
  if (!listed.has(key)) {
    run.addBad({ key, problem: 'missing', detail: `${where} names it, but the repository does not have it` });
    return false;
  }
  listed.delete(key);
  return true;
}

/** An object against the SHA-256 and size its backup's metadata file recorded. */
export async function checkRecorded(run: VerifyRun, key: string, sha256: unknown, size: unknown, where: string): Promise<void> {
  await run.checkObject(key, async () => {
    const r = await readHashed(run, key);
    if (typeof sha256 !== 'string' || !HEX64.test(sha256)) {
      run.unverified(key);
      run.warnings.push(`${key}: ${where} records no SHA-256 for it; only read, not checked`);
    } else if (r.sha256 !== sha256) {
      run.addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, ${where} recorded ${sha256}` });
    } else if (typeof size === 'number' && size !== r.size) {
      run.addBad({ key, problem: 'corrupt', detail: `${r.size} bytes, ${where} recorded ${size}` });
    } else {
      run.counts.verified++;
    }
  });
}
