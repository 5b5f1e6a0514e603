// The pusher: a long-lived background process (one per spool) that pushes the segments
// PostgreSQL has marked .ready into the repository ahead of the archiver, several at a time, and
// leaves an ok file for each only after the store said it is durable. PostgreSQL's
// archive_command then finds the ok file (`test -f`, no node start) and returns at once.
//
// Crash safety: an ok file appears by rename after the durable put, so a SIGKILL at any moment
// leaves either no ok file (the archive_command pushes the segment itself: the store finds the
// same contents and says so) or a true one. Two different contents under one name are refused
// by pushWal's conflict check, as for a synchronous push. The pusher never tells PostgreSQL
// anything: only archive_command's exit code does.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { StorageError, type ObjectStore } from '../storage/types.js';
import { pushWal, type WalCompression } from '../repo/walarchive.js';
import { zstdFilesToDir, zstdLevelArg } from '../repo/codec.js';
import type { RepositoryIdentity } from '../repo/identity.js';
import { okDir, okFile, releaseLock, segmentFingerprint, takeLock, writeAtomic, type PusherState } from './spool.js';

export interface PusherOptions {
  spool: string;
  /** The server's pg_wal directory (its archive_status beside the segments). */
  pgWal: string;
  store: ObjectStore;
  compression: WalCompression;
  level: number;
  /** The zstd level while more than a batch of segments waits (negative: `--fast=N`). */
  backlogLevel: number;
  /** Segments pushed at once. */
  parallel: number;
  /** Exit after this long with nothing .ready (the next archive_command starts a new pusher). */
  idleExitMs: number;
  log: (msg: string) => void;
}

/** Segments compressed by one zstd process. */
const BATCH = 4;

const WAL_READY = /^([0-9A-F]{24}|[0-9A-F]{8}\.history|[0-9A-F]{24}\.[0-9A-F]{8}\.backup|[0-9A-F]{24}\.partial)\.ready$/;

/** PostgreSQL's archiver order: timeline history files first, then by name (oldest first). */
function archiveOrder(a: string, b: string): number {
  const ha = a.endsWith('.history') ? 0 : 1;
  const hb = b.endsWith('.history') ? 0 : 1;
  return ha - hb || (a < b ? -1 : a > b ? 1 : 0);
}

export async function runPusher(o: PusherOptions): Promise<number> {
  const lock = path.join(o.spool, 'push', 'pusher.pid');
  if (!takeLock(lock)) {
    o.log('another pusher runs for this spool; exiting');
    return 0;
  }
  const status = path.join(o.pgWal, 'archive_status');
  const inFlight = new Map<string, Promise<void>>();
  // Pushed by this pusher and still .ready: a push that ended between the loop's listing of the ok
  // files and its launch must not be pushed again.
  const pushedHere = new Set<string>();
  const retryAt = new Map<string, number>();
  const identityCache = new Map<string, RepositoryIdentity>();
  const failures = new Map<string, number>();
  // Segments whose last push failed in the store itself (unreachable, refused, full), not in their
  // contents: they wait out a backoff that grows to 30 s. Once the store takes a write again (a push
  // here, or archive_command's own push of one of them) they all go at once, instead of each after
  // its own backoff while the archiver pushed the backlog one node start at a time.
  const waitingForStore = new Set<string>();
  const storeIsBack = (why: string) => {
    if (!waitingForStore.size) return;
    let released = 0;
    for (const n of waitingForStore) if (retryAt.delete(n)) released++;
    waitingForStore.clear();
    if (released) o.log(`${why}: the store takes writes again; pushing the ${released} segment${released === 1 ? '' : 's'} that waited for it now`);
    wake();
  };
  const state: PusherState = { pid: process.pid, startedAt: new Date().toISOString(), updatedAt: '', ready: 0, inFlight: 0, pushedAhead: 0, pushedTotal: 0 };
  let stopping = false;
  let wake: () => void = () => undefined;
  const onSignal = () => {
    stopping = true;
    wake();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let watcher: fs.FSWatcher | undefined;
  try {
    watcher = fs.watch(status, () => wake());
  } catch {
    watcher = undefined; // polling alone still works
  }
  // Half-written ok files of a killed pusher (never matched by the fast path: they start with a dot).
  for (const n of await fsp.readdir(okDir(o.spool)).catch(() => [] as string[])) if (n.startsWith('.')) await fsp.rm(path.join(okDir(o.spool), n), { force: true });
  o.log(`pusher ${process.pid} started for ${o.pgWal} (${o.parallel} at once)`);

  const tmpDir = path.join(o.spool, 'push', 'tmp');
  // Compressed copies a killed pusher left: never trusted, made again.
  await fsp.rm(tmpDir, { recursive: true, force: true });
  await fsp.mkdir(tmpDir, { recursive: true, mode: 0o700 });

  /**
   * zstd-compresses a batch of segments with one process; each push then reads its own .zst. Each
   * segment's file identity is taken before zstd reads it: its ok file holds it, and a push whose
   * segment no longer has it is not acknowledged.
   */
  const compressBatch = async (names: string[], level: number): Promise<Map<string, { file?: string; fingerprint: string }>> => {
    const fingerprints = await Promise.all(names.map((n) => segmentFingerprint(path.join(o.pgWal, n))));
    const done = zstdFilesToDir(
      names.map((n) => path.join(o.pgWal, n)),
      tmpDir,
      level,
    );
    // A batch that failed (a segment archived meanwhile, a full disk) is pushed one by one: each then reports its own error.
    const ok = await done.then(
      () => true,
      (err: unknown) => {
        o.log(`compressing ${names.length} segments at once failed (${(err as Error).message}); pushing them one by one`);
        return false;
      },
    );
    return new Map(names.map((n, i) => [n, { file: ok ? path.join(tmpDir, `${n}.zst`) : undefined, fingerprint: fingerprints[i] }]));
  };

  const push = async (name: string, compressed?: Promise<{ file?: string; fingerprint: string } | undefined>): Promise<void> => {
    const file = path.join(o.pgWal, name);
    const batch = compressed ? await compressed.catch(() => undefined) : undefined;
    const compressedFile = batch?.file;
    try {
      const t0 = Date.now();
      const r = await pushWal(o.store, file, { compression: o.compression, level: o.level, compressedFile, identityCache });
      // What the ok file vouches for: the segment's SHA-256 when it was read here, else the file
      // identity taken before zstd read it, which must still hold (else the file changed meanwhile).
      let vouch = r.rawSha256;
      if (!vouch && batch) {
        if ((await segmentFingerprint(file)) !== batch.fingerprint) throw new Error(`${file} changed while it was compressed; pushing it again`);
        vouch = batch.fingerprint;
      }
      if (!vouch) throw new Error(`no checksum or file identity recorded for ${name}`);
      o.log(`pushed ${name} (${r.status}, ${(r.storedSize / 1048576).toFixed(1)} MiB stored) in ${Date.now() - t0} ms, ${inFlight.size} in flight`);
      // Only now, durable in the store: the ok file, by rename, holding what the slow path re-checks.
      await writeAtomic(okFile(o.spool, name), `${vouch}\n`);
      pushedHere.add(name);
      state.pushedTotal++;
      state.lastPushed = name;
      failures.delete(name);
      retryAt.delete(name);
      waitingForStore.delete(name);
      storeIsBack(`pushed ${name}`);
      if (r.status === 'already-archived') o.log(`${name} was already archived with the same contents`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(path.join(status, `${name}.ready`))) return; // archived meanwhile
      const n = (failures.get(name) ?? 0) + 1;
      failures.set(name, n);
      retryAt.set(name, Date.now() + Math.min(30_000, 500 * 2 ** Math.min(n, 6)));
      if (err instanceof StorageError) waitingForStore.add(name);
      else waitingForStore.delete(name);
      state.lastError = `${name}: ${(err as Error).message}`;
      state.lastErrorAt = new Date().toISOString();
      o.log(`cannot push ${name} (attempt ${n}): ${(err as Error).message}`);
    } finally {
      if (compressedFile) await fsp.rm(compressedFile, { force: true });
    }
  };

  let idleSince = Date.now();
  let inBacklog = false;
  try {
    while (!stopping) {
      let entries: string[];
      try {
        entries = await fsp.readdir(status);
      } catch (err) {
        o.log(`cannot read ${status} (${(err as Error).message}); exiting`);
        break;
      }
      const ready = entries.filter((e) => WAL_READY.test(e)).map((e) => e.slice(0, -'.ready'.length));
      ready.sort(archiveOrder);
      const readySet = new Set(ready);
      // ok files the archiver has consumed (.done) or that no longer name a waiting segment.
      const oks = (await fsp.readdir(okDir(o.spool)).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
      let ahead = 0;
      for (const n of oks) {
        if (readySet.has(n) || inFlight.has(n)) ahead++;
        else await fsp.rm(okFile(o.spool, n), { force: true });
      }
      const okSet = new Set(oks);
      for (const n of pushedHere) if (!readySet.has(n)) pushedHere.delete(n);
      // Forget the failures of segments archived meanwhile (a pusher can run for days). One that
      // waited for the store was archived by archive_command's own push: the store is back.
      let archivedMeanwhile: string | undefined;
      for (const n of failures.keys()) {
        if (readySet.has(n) || inFlight.has(n)) continue;
        failures.delete(n);
        retryAt.delete(n);
        if (waitingForStore.delete(n)) archivedMeanwhile = n;
      }
      if (archivedMeanwhile) storeIsBack(`${archivedMeanwhile} was archived by archive_command`);
      const now = Date.now();
      const launch: string[] = [];
      for (const name of ready) {
        if (inFlight.size + launch.length >= o.parallel) break;
        if (okSet.has(name) || pushedHere.has(name) || inFlight.has(name) || (retryAt.get(name) ?? 0) > now) continue;
        launch.push(name);
      }
      // zstd: the segments of a batch share one zstd process (a batch holding a segment that failed
      // before is compressed segment by segment, so each reports its own error).
      // With nothing in flight the archiver is waiting for the first of these: it goes alone, so
      // that its acknowledgement does not wait for three more to be compressed before it.
      const idle = inFlight.size === 0;
      // A backlog (more than a batch waits): a faster zstd level until it is drained. Segments
      // waiting in pg_wal are the risk then (a full disk stops the server), not a few more stored
      // bytes; --fast=3 still stores less than lz4 (bench/README.md).
      const backlog = o.compression === 'zstd' && o.backlogLevel !== o.level && ready.length > BATCH;
      if (launch.length && backlog !== inBacklog) {
        inBacklog = backlog;
        o.log(backlog ? `${ready.length} segments wait: compressing with zstd ${zstdLevelArg(o.backlogLevel)} until they are pushed` : `backlog pushed: back to zstd ${zstdLevelArg(o.level)}`);
      }
      const level = backlog ? o.backlogLevel : o.level;
      for (let i = 0; i < launch.length; ) {
        const size = o.compression !== 'zstd' || (idle && i === 0) ? 1 : BATCH;
        const batch = launch.slice(i, i + size);
        i += size;
        const compressed = o.compression === 'zstd' && batch.every((n) => !failures.has(n)) ? compressBatch(batch, level) : undefined;
        for (const name of batch) {
          const p = push(name, compressed?.then((m) => m.get(name)!)).finally(() => {
            inFlight.delete(name);
            wake();
          });
          inFlight.set(name, p);
        }
      }
      Object.assign(state, { updatedAt: new Date().toISOString(), ready: ready.length, inFlight: inFlight.size, pushedAhead: ahead });
      await writeAtomic(path.join(o.spool, 'push', 'state.json'), `${JSON.stringify(state)}\n`).catch(() => undefined);
      if (ready.length || inFlight.size) idleSince = now;
      else if (now - idleSince > o.idleExitMs) {
        o.log(`nothing to push for ${Math.round(o.idleExitMs / 1000)} s; exiting (the next archive_command starts a pusher again)`);
        break;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 250);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    await Promise.allSettled(inFlight.values());
  } finally {
    watcher?.close();
    releaseLock(lock);
  }
  return 0;
}
