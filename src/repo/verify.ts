// `pgrunbook catalog --verify`: read every object of a repository back and check it against what
// was recorded when it was written. WAL files against the SHA-256s wal-push put in their metadata
// (stored bytes and, for .gz, the uncompressed ones); base backups against backup.json (the data
// tar and backup_manifest by SHA-256) and then every file in the tar against backup_manifest's
// size and checksum; dumps against dump.json; any other object against the SHA-256 in its
// metadata. WAL continuity per timeline comes from the catalog (gaps are named). Incomplete
// backups (no metadata file) are reported as incomplete, not as corruption.
//
// The result is recorded in the repository (verify/last.json) so `status` can say when the
// repository was last proven readable and whether it was intact.
import { IDENTITY_KEY } from './identity.js';
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { PassThrough, type Transform } from 'node:stream';
import { createGunzip, gunzip as gunzipCb } from 'node:zlib';
import { promisify } from 'node:util';
import { ChecksumMismatchError, ObjectNotFoundError, StorageError, type ListEntry, type ObjectStore } from '../storage/types.js';
import { sha256Hex } from '../storage/checksum.js';
import { LocalStore } from '../storage/local.js';
import { BACKUP_META, BASEBACKUP_PREFIX, DUMP_META, DUMP_PREFIX, readCatalog, type BaseBackupMeta, type DumpMeta } from './catalog.js';
import { WAL_PREFIX } from './walarchive.js';
import { parseLsn, segmentName, segnoOfLsn } from './walnames.js';
import { ManifestReader, TarReader, manifestChecksummer, type ManifestFile, type TarEntrySink } from '../postgres/basebackup.js';

const gunzip = promisify(gunzipCb);

export const VERIFY_PREFIX = 'verify/';
export const VERIFY_RESULT_KEY = `${VERIFY_PREFIX}last.json`;
/** At most this many bad objects are kept in verify/last.json (the count is always exact). */
const MAX_RECORDED_BAD = 1000;

export type VerifyProblemKind = 'checksum-mismatch' | 'missing' | 'unreadable' | 'gap' | 'corrupt';

export interface VerifyProblem {
  key: string;
  problem: VerifyProblemKind;
  detail: string;
}

export interface VerifyCounts {
  /** Objects in scope (listed), and their bytes. */
  objects: number;
  bytes: number;
  /** Objects read whole and found to match a recorded checksum. */
  verified: number;
  /** Objects read whole that have no recorded checksum to compare with. */
  unverified: number;
  walFiles: number;
  baseBackups: number;
  dumps: number;
  /** Files inside base backups checked against backup_manifest. */
  manifestFiles: number;
  incomplete: number;
  gaps: number;
  bad: number;
}

export interface VerifyResult {
  version: 1;
  store: string;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  ok: boolean;
  /** `all`, or the objects written since `since`. */
  scope: { all: boolean; since?: string };
  parallel: number;
  counts: VerifyCounts;
  bad: VerifyProblem[];
  /** More bad objects than `bad` lists (only in the recorded copy, which is capped). */
  badTruncated?: number;
  incomplete: { kind: 'base-backup' | 'dump'; id: string; objects: number; bytes: number; lastWritten: string }[];
  /** Objects without a recorded checksum (the first 20). */
  unverifiedKeys: string[];
  warnings: string[];
}

export interface VerifyProgress {
  objectsDone: number;
  objectsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface VerifyOptions {
  parallel?: number;
  /** Only objects written at or after this time (base backups and dumps: by their metadata file). */
  since?: Date;
  signal?: AbortSignal;
  onProgress?: (p: VerifyProgress) => void;
}

/** The repository could not be listed at all: nothing was verified. */
export class RepositoryUnreadableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RepositoryUnreadableError';
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

interface Group {
  id: string;
  entries: ListEntry[];
  meta?: ListEntry;
}

/** Problems found while reading one object; undefined when it was deleted after the listing (retention, a cleanup). */
function classify(key: string, err: unknown): VerifyProblem | undefined {
  if (err instanceof ObjectNotFoundError || (err instanceof StorageError && err.code === 'not-found')) return undefined;
  if (err instanceof ChecksumMismatchError) return { key, problem: 'checksum-mismatch', detail: `SHA-256 is ${err.actual}, ${err.expected} was recorded` };
  return { key, problem: 'unreadable', detail: (err as Error)?.message ?? String(err) };
}

export async function verifyRepository(store: ObjectStore, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const started = Date.now();
  const parallel = Math.max(1, Math.floor(opts.parallel ?? 4));
  const since = opts.since?.getTime();
  const inScope = (e: ListEntry | undefined) => since === undefined || (e !== undefined && e.lastModified.getTime() >= since);

  // 1. Everything the repository holds. A local repository whose directory is missing is an
  // unmounted volume or a typo, not an empty repository (and nothing may be written there).
  if (store instanceof LocalStore) {
    try {
      const st = await stat(store.root);
      if (!st.isDirectory()) throw new RepositoryUnreadableError(`${store.root} is not a directory`);
    } catch (err) {
      if (err instanceof RepositoryUnreadableError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw new RepositoryUnreadableError(
        code === 'ENOENT' ? `directory ${store.root} does not exist (is the backup volume mounted? is --repo right?)` : `cannot read ${store.root}: ${(err as Error).message}`,
      );
    }
  }
  const all: ListEntry[] = [];
  try {
    for await (const e of store.list('')) all.push(e);
  } catch (err) {
    throw new RepositoryUnreadableError(`cannot list ${store.describe()}: ${(err as Error).message}`);
  }

  const bad: VerifyProblem[] = [];
  const warnings: string[] = [];
  const unverifiedKeys: string[] = [];
  const counts: VerifyCounts = { objects: 0, bytes: 0, verified: 0, unverified: 0, walFiles: 0, baseBackups: 0, dumps: 0, manifestFiles: 0, incomplete: 0, gaps: 0, bad: 0 };
  const incomplete: VerifyResult['incomplete'] = [];

  const baseBackups = new Map<string, Group>();
  const dumps = new Map<string, Group>();
  const wal: ListEntry[] = [];
  const other: ListEntry[] = [];
  for (const e of all) {
    if (e.key.startsWith(BASEBACKUP_PREFIX)) {
      const rest = e.key.slice(BASEBACKUP_PREFIX.length);
      const slash = rest.indexOf('/');
      if (slash > 0) {
        const id = rest.slice(0, slash);
        let g = baseBackups.get(id);
        if (!g) baseBackups.set(id, (g = { id, entries: [] }));
        if (rest.slice(slash + 1) === BACKUP_META) g.meta = e;
        else g.entries.push(e);
        continue;
      }
    } else if (e.key.startsWith(DUMP_PREFIX)) {
      const parts = e.key.slice(DUMP_PREFIX.length).split('/');
      if (parts.length >= 3) {
        const id = `${parts[0]}/${parts[1]}`;
        let g = dumps.get(id);
        if (!g) dumps.set(id, (g = { id, entries: [] }));
        if (parts.slice(2).join('/') === DUMP_META) g.meta = e;
        else g.entries.push(e);
        continue;
      }
    } else if (e.key.startsWith(WAL_PREFIX)) {
      wal.push(e);
      continue;
    }
    other.push(e);
  }

  // 2. What is in scope, and its size (for progress).
  const progress: VerifyProgress = { objectsDone: 0, objectsTotal: 0, bytesDone: 0, bytesTotal: 0 };
  const count = (e: ListEntry) => {
    progress.objectsTotal++;
    progress.bytesTotal += e.size;
  };
  const tasks: (() => Promise<void>)[] = [];

  for (const g of [...baseBackups.values(), ...dumps.values()]) {
    const kind = baseBackups.get(g.id) === g ? 'base-backup' : 'dump';
    if (!g.meta) {
      const newest = g.entries.reduce((a, b) => Math.max(a, b.lastModified.getTime()), 0);
      if (since !== undefined && newest < since) continue;
      counts.incomplete++;
      incomplete.push({ kind, id: g.id, objects: g.entries.length, bytes: g.entries.reduce((s, e) => s + e.size, 0), lastWritten: new Date(newest).toISOString() });
      continue;
    }
    if (!inScope(g.meta)) continue;
    count(g.meta);
    g.entries.forEach(count);
    if (kind === 'base-backup') {
      counts.baseBackups++;
      tasks.push(() => verifyBaseBackup(g));
    } else {
      counts.dumps++;
      tasks.push(() => verifyDump(g));
    }
  }
  for (const e of wal) {
    if (!inScope(e)) continue;
    count(e);
    counts.walFiles++;
    tasks.push(() => verifyWal(e));
  }
  for (const e of other) {
    if (!inScope(e)) continue;
    count(e);
    tasks.push(async () => void (await verifyPlain(e.key)));
  }
  counts.objects = progress.objectsTotal;
  counts.bytes = progress.bytesTotal;

  const report = () => opts.onProgress?.({ ...progress });
  const objectDone = () => {
    progress.objectsDone++;
    report();
  };
  const addBad = (p: VerifyProblem) => bad.push(p);
  /** A read failed: unreadable, or (not found) deleted since the listing, which is not corruption. */
  const readFailed = (key: string, err: unknown) => {
    const p = classify(key, err);
    if (p) addBad(p);
    else warnings.push(`${key}: deleted while the verify ran (retention or another job?); not checked`);
  };
  const unverified = (key: string) => {
    counts.unverified++;
    if (unverifiedKeys.length < 20) unverifiedKeys.push(key);
  };

  /** Reads one object whole, hashing it; `onChunk` sees every chunk in order (and may wait). */
  async function readHashed(key: string, onChunk?: (chunk: Buffer) => Promise<void> | void): Promise<{ sha256: string; size: number; metadata: Record<string, string> }> {
    opts.signal?.throwIfAborted();
    const { body, info } = await store.get(key, { signal: opts.signal });
    const hash = createHash('sha256');
    let size = 0;
    for await (const c of body) {
      const chunk = c as Buffer;
      hash.update(chunk);
      size += chunk.length;
      progress.bytesDone += chunk.length;
      if (onChunk) await onChunk(chunk);
    }
    return { sha256: hash.digest('hex'), size, metadata: info.metadata };
  }

  /** An object checked against the SHA-256 in its own metadata (metadata files, other objects). */
  async function verifyPlain(key: string, expected?: string): Promise<Buffer | undefined> {
    const chunks: Buffer[] = [];
    try {
      const keep = key.endsWith('.json');
      const r = await readHashed(key, keep ? (c) => void chunks.push(Buffer.from(c)) : undefined);
      const want = expected ?? r.metadata.sha256;
      if (key === IDENTITY_KEY || key.startsWith('locks/')) {
        // Small records rewritten in place by design (no recorded checksum): they must parse.
        try {
          JSON.parse(Buffer.concat(chunks).toString('utf8'));
          counts.verified++;
        } catch (e) {
          addBad({ key, problem: 'corrupt', detail: `not a readable JSON record: ${(e as Error).message}` });
          return undefined;
        }
      } else if (!want || !HEX64.test(want)) {
        unverified(key);
      } else if (want !== r.sha256) {
        addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, ${want} was recorded when it was written` });
        return undefined;
      } else {
        counts.verified++;
      }
      return Buffer.concat(chunks);
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      readFailed(key, err);
      return undefined;
    } finally {
      objectDone();
    }
  }

  async function readMeta<T>(key: string): Promise<T | undefined> {
    const body = await verifyPlain(key);
    if (!body) return undefined;
    try {
      return JSON.parse(body.toString('utf8')) as T;
    } catch (err) {
      addBad({ key, problem: 'corrupt', detail: `not valid JSON: ${(err as Error).message}` });
      return undefined;
    }
  }

  async function verifyWal(e: ListEntry): Promise<void> {
    const key = e.key;
    try {
      const chunks: Buffer[] = [];
      const r = await readHashed(key, (c) => void chunks.push(Buffer.from(c)));
      const stored = Buffer.concat(chunks);
      const want = r.metadata.sha256;
      const wantRaw = r.metadata.rawsha256;
      if (want && want !== r.sha256) {
        addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 of the stored bytes is ${r.sha256}, wal-push recorded ${want}` });
        return;
      }
      let raw: Buffer = stored;
      if (key.endsWith('.gz')) {
        try {
          raw = await gunzip(stored);
        } catch (err) {
          addBad({ key, problem: want ? 'corrupt' : 'checksum-mismatch', detail: `gunzip fails: ${(err as Error).message}` });
          return;
        }
      }
      if (wantRaw) {
        const rawSha = sha256Hex(raw);
        if (rawSha !== wantRaw) {
          addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 of the uncompressed WAL is ${rawSha}, wal-push recorded ${wantRaw}` });
          return;
        }
        const rawSize = Number(r.metadata.rawsize);
        if (r.metadata.rawsize && rawSize !== raw.length) {
          addBad({ key, problem: 'corrupt', detail: `${raw.length} bytes uncompressed, wal-push recorded ${rawSize}` });
          return;
        }
      }
      if (!want && !wantRaw) unverified(key);
      else counts.verified++;
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      readFailed(key, err);
    } finally {
      objectDone();
    }
  }

  async function verifyDump(g: Group): Promise<void> {
    const metaKey = g.meta!.key;
    const meta = await readMeta<DumpMeta>(metaKey);
    const prefix = `${DUMP_PREFIX}${g.id}/`;
    const listed = new Map(g.entries.map((e) => [e.key, e]));
    if (meta && typeof meta.object === 'string') {
      const key = prefix + meta.object;
      if (!listed.has(key)) {
        addBad({ key, problem: 'missing', detail: `dump.json names it, but the repository does not have it` });
      } else {
        listed.delete(key);
        await checkRecorded(key, meta.sha256, meta.size, 'dump.json');
      }
    }
    for (const e of listed.values()) await verifyPlain(e.key);
  }

  /** An object against the SHA-256 and size its backup's metadata file recorded. */
  async function checkRecorded(key: string, sha256: unknown, size: unknown, where: string): Promise<void> {
    try {
      const r = await readHashed(key);
      if (typeof sha256 !== 'string' || !HEX64.test(sha256)) {
        unverified(key);
        warnings.push(`${key}: ${where} records no SHA-256 for it; only read, not checked`);
      } else if (r.sha256 !== sha256) {
        addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, ${where} recorded ${sha256}` });
      } else if (typeof size === 'number' && size !== r.size) {
        addBad({ key, problem: 'corrupt', detail: `${r.size} bytes, ${where} recorded ${size}` });
      } else {
        counts.verified++;
      }
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      readFailed(key, err);
    } finally {
      objectDone();
    }
  }

  async function verifyBaseBackup(g: Group): Promise<void> {
    const metaKey = g.meta!.key;
    const meta = await readMeta<BaseBackupMeta>(metaKey);
    const listed = new Map(g.entries.map((e) => [e.key, e]));
    const recorded = meta?.objects;
    let manifestFiles: Map<string, ManifestFile> | undefined;
    if (recorded?.manifest) {
      const key = recorded.manifest.key;
      if (!listed.has(key)) {
        addBad({ key, problem: 'missing', detail: `backup.json of ${g.id} names it, but the repository does not have it` });
      } else {
        listed.delete(key);
        manifestFiles = await checkManifest(key, recorded.manifest.sha256);
      }
    } else if (meta?.objects) {
      addBad({ key: `${BASEBACKUP_PREFIX}${g.id}/backup_manifest`, problem: 'missing', detail: 'backup.json lists no backup_manifest' });
    }
    if (recorded?.data) {
      const key = recorded.data.key;
      if (!listed.has(key)) {
        addBad({ key, problem: 'missing', detail: `backup.json of ${g.id} names it, but the repository does not have it` });
      } else {
        listed.delete(key);
        await checkBackupData(key, recorded.data, manifestFiles, meta!);
      }
    }
    for (const e of listed.values()) await verifyPlain(e.key);
  }

  async function checkManifest(key: string, sha256: string): Promise<Map<string, ManifestFile> | undefined> {
    const reader = new ManifestReader({ keepFiles: true });
    let readerError: Error | undefined;
    try {
      const r = await readHashed(key, (c) => {
        if (readerError) return;
        try {
          reader.write(c);
        } catch (err) {
          readerError = err as Error;
        }
      });
      if (r.sha256 !== sha256) {
        addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, backup.json recorded ${sha256}` });
        return undefined;
      }
      if (!readerError) {
        try {
          reader.end();
        } catch (err) {
          readerError = err as Error;
        }
      }
      if (readerError) {
        addBad({ key, problem: 'corrupt', detail: readerError.message });
        return undefined;
      }
      counts.verified++;
      return reader.files;
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      readFailed(key, err);
      return undefined;
    } finally {
      objectDone();
    }
  }

  /** The data tar: SHA-256 of the stored bytes, and (when the manifest was good) every file in it against backup_manifest. */
  async function checkBackupData(key: string, rec: NonNullable<NonNullable<BaseBackupMeta['objects']>['data']>, expected: Map<string, ManifestFile> | undefined, meta: BaseBackupMeta): Promise<void> {
    const problems: string[] = [];
    const seen = new Set<string>();
    const walNames = new Set<string>();
    let checked = 0;
    const reader = new TarReader((entry): TarEntrySink | undefined => {
      if (entry.type !== 'file') return undefined;
      if (entry.name.startsWith('pg_wal/')) walNames.add(entry.name.slice('pg_wal/'.length));
      if (!expected || entry.name === 'backup_manifest') return undefined;
      const want = expected.get(entry.name);
      if (!want) {
        if (!entry.name.startsWith('pg_wal/')) problems.push(`${entry.name}: in the tar but not in backup_manifest`);
        return undefined;
      }
      seen.add(entry.name);
      if (want.size !== entry.size) {
        problems.push(`${entry.name}: ${entry.size} bytes in the tar, ${want.size} in backup_manifest`);
        return undefined;
      }
      const sum = want.checksum ? manifestChecksummer(want.algorithm) : undefined;
      return {
        data: (c) => sum?.update(c),
        end: () => {
          if (!sum) return;
          const actual = sum.digestHex();
          if (actual === want.checksum) checked++;
          else problems.push(`${entry.name}: ${want.algorithm} ${actual}, backup_manifest says ${want.checksum}`);
        },
      };
    });
    const decoder: Transform = rec.compression === 'gzip' ? createGunzip({ chunkSize: 256 * 1024 }) : new PassThrough();
    let contentError: Error | undefined;
    const consumer = (async () => {
      for await (const c of decoder) reader.write(c as Buffer);
      reader.end();
    })().catch((err: unknown) => {
      contentError ??= err as Error;
      decoder.destroy();
    });
    const feed = async (chunk: Buffer) => {
      if (contentError || decoder.destroyed) return;
      if (decoder.write(chunk)) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          decoder.off('drain', done);
          decoder.off('close', done);
          decoder.off('error', done);
          resolve();
        };
        decoder.once('drain', done);
        decoder.once('close', done);
        decoder.once('error', done);
      });
    };
    try {
      let r: { sha256: string; size: number };
      try {
        r = await readHashed(key, feed);
      } finally {
        if (!decoder.destroyed) decoder.end();
        await consumer;
      }
      if (r.sha256 !== rec.sha256) {
        addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, backup.json recorded ${rec.sha256}${contentError ? ` (and reading it fails: ${contentError.message})` : ''}` });
        return;
      }
      if (contentError) {
        addBad({ key, problem: 'corrupt', detail: `its SHA-256 matches backup.json, but its contents are not a complete ${rec.compression === 'gzip' ? 'gzipped ' : ''}tar: ${contentError.message}` });
        return;
      }
      if (expected) {
        const missing = [...expected.keys()].filter((p) => !seen.has(p));
        for (const p of missing) problems.push(`${p}: in backup_manifest but not in the tar`);
        counts.manifestFiles += checked;
      }
      if (meta.includesWal) {
        const segSize = meta.walSegmentSize ?? 16 * 1024 * 1024;
        try {
          for (const range of meta.walRanges ?? [{ timeline: meta.timeline, startLsn: meta.startLsn, endLsn: meta.stopLsn }]) {
            const start = parseLsn(range.startLsn);
            const end = parseLsn(range.endLsn);
            const last = end > start ? end - 1n : end;
            for (let s = segnoOfLsn(start, segSize); s <= segnoOfLsn(last, segSize); s++) {
              const name = segmentName(range.timeline, s, segSize);
              if (!walNames.has(name)) problems.push(`pg_wal/${name}: needed to make the backup consistent, not in the tar`);
            }
          }
        } catch (err) {
          warnings.push(`${key}: the WAL range in backup.json cannot be read (${(err as Error).message}); the WAL inside was not checked`);
        }
      }
      if (problems.length) {
        addBad({ key, problem: 'corrupt', detail: `${problems.length} file(s) do not match backup_manifest: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? '; ...' : ''}` });
        return;
      }
      counts.verified++;
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      readFailed(key, err);
    } finally {
      objectDone();
    }
  }

  // 3. Read everything, N at a time.
  report();
  let next = 0;
  let failure: unknown;
  const workers = Array.from({ length: Math.min(parallel, Math.max(1, tasks.length)) }, async () => {
    while (next < tasks.length && failure === undefined) {
      const task = tasks[next++];
      try {
        await task();
      } catch (err) {
        failure ??= err;
      }
    }
  });
  await Promise.all(workers);
  if (failure !== undefined) throw failure;

  // 4. WAL continuity, from the catalog (gaps between archived segments, per timeline).
  try {
    const catalog = await readCatalog(store);
    for (const gap of catalog.gaps) {
      counts.gaps++;
      addBad({
        key: `${WAL_PREFIX}${gap.from}`,
        problem: 'gap',
        detail: `timeline ${gap.timeline}: ${gap.from}${gap.missing > 1 ? ` .. ${gap.to}` : ''} missing (${gap.missing} segment${gap.missing > 1 ? 's' : ''}); recovery cannot pass it`,
      });
    }
    for (const w of catalog.windows) if (w.unusable) warnings.push(`base backup ${w.backupId} cannot be restored: ${w.unusable}`);
  } catch (err) {
    throw new RepositoryUnreadableError(`cannot read the catalog of ${store.describe()}: ${(err as Error).message}`);
  }

  bad.sort((a, b) => a.key.localeCompare(b.key));
  counts.bad = bad.length;
  const finished = Date.now();
  return {
    version: 1,
    store: store.describe(),
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date(finished).toISOString(),
    durationMs: finished - started,
    ok: bad.length === 0,
    scope: since === undefined ? { all: true } : { all: false, since: new Date(since).toISOString() },
    parallel,
    counts,
    bad,
    incomplete,
    unverifiedKeys,
    warnings,
  };
}

/** Writes the result as verify/last.json (a small JSON object, its SHA-256 in its metadata). */
export async function recordVerifyResult(store: ObjectStore, result: VerifyResult): Promise<void> {
  const recorded: VerifyResult = result.bad.length > MAX_RECORDED_BAD ? { ...result, bad: result.bad.slice(0, MAX_RECORDED_BAD), badTruncated: result.bad.length - MAX_RECORDED_BAD } : result;
  const body = Buffer.from(JSON.stringify(recorded, null, 2) + '\n');
  await store.put(VERIFY_RESULT_KEY, body, { contentLength: body.length, metadata: { sha256: sha256Hex(body) } });
}

/** The last recorded verify, or undefined when the repository was never verified. Throws when the record is unreadable. */
export async function readLastVerify(store: ObjectStore): Promise<VerifyResult | undefined> {
  const info = await store.head(VERIFY_RESULT_KEY);
  if (!info) return undefined;
  let body;
  try {
    ({ body } = await store.get(VERIFY_RESULT_KEY, { expectedSha256: info.metadata.sha256 && HEX64.test(info.metadata.sha256) ? info.metadata.sha256 : undefined }));
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return undefined;
    throw err;
  }
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as VerifyResult;
  if (typeof parsed !== 'object' || parsed === null || typeof parsed.ok !== 'boolean' || typeof parsed.finishedAt !== 'string') {
    throw new Error(`${VERIFY_RESULT_KEY} is not a verify record`);
  }
  return parsed;
}

/** "30m", "2h", "7d", "1w", or an ISO 8601 time; undefined when it is neither. */
export function parseSince(text: string, now: Date): Date | undefined {
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$/i.exec(t);
  if (m) {
    const unit: Record<string, number> = { s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
    return new Date(now.getTime() - Number(m[1]) * unit[m[2].toLowerCase()]);
  }
  if (!/^\d{4}-\d\d-\d\d/.test(t)) return undefined;
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? undefined : d;
}
