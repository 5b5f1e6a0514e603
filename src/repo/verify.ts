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
import { stat } from 'node:fs/promises';
import type { ListEntry, ObjectStore } from '../storage/types.js';
import { sha256Hex } from '../storage/checksum.js';
import { LocalStore } from '../storage/local.js';
import { readCatalog } from './catalog.js';
import { readObjectIfExists } from './objects.js';
import { BACKUP_META, BASEBACKUP_PREFIX, DUMP_META, DUMP_PREFIX, VERIFY_RESULT_KEY, WAL_PREFIX } from './layout.js';
import { verifyBaseBackup } from './verify-basebackup.js';
import { HEX64, VerifyRun, verifyDump, verifyPlain, verifyWal, type Group } from './verify-run.js';
import { RepositoryUnreadableError, type VerifyOptions, type VerifyResult } from './verify-types.js';

export * from './verify-types.js';

export { VERIFY_PREFIX, VERIFY_RESULT_KEY } from './layout.js';
/** At most this many bad objects are kept in verify/last.json (the count is always exact). */
const MAX_RECORDED_BAD = 1000;

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

  const run = new VerifyRun(store, opts);
  const { bad, warnings, unverifiedKeys, counts, progress } = run;
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
      tasks.push(() => verifyBaseBackup(run, g));
    } else {
      counts.dumps++;
      tasks.push(() => verifyDump(run, g));
    }
  }
  for (const e of wal) {
    if (!inScope(e)) continue;
    count(e);
    counts.walFiles++;
    tasks.push(() => verifyWal(run, e));
  }
  for (const e of other) {
    if (!inScope(e)) continue;
    count(e);
    tasks.push(async () => void (await verifyPlain(run, e.key)));
  }
  counts.objects = progress.objectsTotal;
  counts.bytes = progress.bytesTotal;

  // 3. Read everything, N at a time.
  run.report();
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
      run.addBad({
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
  const body = Buffer.from(`${JSON.stringify(recorded, null, 2)}\n`);
  await store.put(VERIFY_RESULT_KEY, body, { contentLength: body.length, metadata: { sha256: sha256Hex(body) } });
}

/** The last recorded verify, or undefined when the repository was never verified. Throws when the record is unreadable. */
export async function readLastVerify(store: ObjectStore): Promise<VerifyResult | undefined> {
  const info = await store.head(VERIFY_RESULT_KEY);
  if (!info) return undefined;
  const expectedSha256 = info.metadata.sha256 && HEX64.test(info.metadata.sha256) ? info.metadata.sha256 : undefined;
  const raw = await readObjectIfExists(store, VERIFY_RESULT_KEY, { expectedSha256 });
  if (!raw) return undefined;
  const parsed = JSON.parse(raw.toString('utf8')) as VerifyResult;
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
