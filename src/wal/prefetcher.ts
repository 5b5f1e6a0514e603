// The prefetcher: a background process (one per spool) that fetches the segments after the one
// PostgreSQL last asked for into the spool, a bounded number ahead, so that restore_command's
// shell fast path only has to move a file. A segment enters <spool>/fetch/<name> only by rename,
// after fetchWal verified it against the checksums recorded at push AND its bytes were hashed
// again against the object's recorded SHA-256; an object without a recorded checksum is never
// prefetched (the synchronous wal-fetch handles it). Nothing here is handed to PostgreSQL.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ObjectStore } from '../storage/types.js';
import { fetchWal, type WalCompression } from '../repo/walarchive.js';
import { readRepositoryIdentity } from '../repo/identity.js';
import { DEFAULT_WAL_SEGMENT_SIZE, SEGMENT_RE, parseWalFileName, segmentName } from '../repo/walnames.js';
import { fetchedFile, releaseLock, takeLock, writeAtomic } from './spool.js';

export interface PrefetcherOptions {
  spool: string;
  store: ObjectStore;
  compression: WalCompression;
  /** Segments kept ahead (fetched and waiting, plus in flight). */
  depth: number;
  parallel: number;
  idleExitMs: number;
  log: (msg: string) => void;
}

export interface PrefetcherState {
  pid: number;
  updatedAt: string;
  want?: string;
  inFlight: string[];
  queued: number;
  /** The first segment after `want` the archive does not have (yet). */
  missing?: string;
  /** Segments whose archived copy failed verification (never handed over). */
  failed: string[];
  fetchedTotal: number;
}

export async function runPrefetcher(o: PrefetcherOptions): Promise<number> {
  const dir = path.join(o.spool, 'fetch');
  const tmpDir = path.join(dir, 'tmp');
  const lock = path.join(dir, 'prefetcher.pid');
  if (!takeLock(lock)) return 0;
  const segSize = (await readRepositoryIdentity(o.store).catch(() => undefined))?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const state: PrefetcherState = { pid: process.pid, updatedAt: '', inFlight: [], queued: 0, failed: [], fetchedTotal: 0 };
  const inFlight = new Map<string, Promise<void>>();
  const retryAt = new Map<string, number>();
  let want: { timeline: number; segno: bigint } | undefined;
  let next: bigint | undefined;
  let stopping = false;
  process.on('SIGTERM', () => {
    stopping = true;
  });
  for (const n of await fsp.readdir(tmpDir).catch(() => [] as string[])) await fsp.rm(path.join(tmpDir, n), { force: true });
  const inflightDir = path.join(dir, 'inflight');
  await fsp.rm(inflightDir, { recursive: true, force: true });
  await fsp.mkdir(inflightDir, { recursive: true, mode: 0o700 });

  // Idle: no new request from PostgreSQL and nothing fetched (retrying a missing segment is not work).
  let idleSince = Date.now();
  const fetchOne = async (name: string, segno: bigint): Promise<void> => {
    // A segment not fetched this time is tried again (after retryAt): step back to it.
    const again = () => {
      if (next === undefined || next > segno) next = segno;
    };
    const tmp = path.join(tmpDir, name);
    const marker = path.join(inflightDir, name);
    // While it exists, restore_command waits for this segment in the shell instead of starting node.
    await fsp.writeFile(marker, '').catch(() => undefined);
    try {
      const r = await fetchWal(o.store, name, tmp, { preferred: o.compression });
      if (r.status === 'missing') {
        await fsp.rm(marker, { force: true });
        state.missing = name;
        retryAt.set(name, Date.now() + 1000);
        again();
        return;
      }
      // fetchWal hashed the bytes it wrote against the SHA-256 recorded at push (a mismatch throws);
      // an object with none recorded is never prefetched.
      if (!r.verified) {
        await fsp.rm(tmp, { force: true });
        await fsp.rm(marker, { force: true });
        if (!state.failed.includes(name)) state.failed.push(name);
        o.log(`${name}: no recorded SHA-256; not prefetched (restore_command fetches it itself)`);
        retryAt.set(name, Date.now() + 5000);
        again();
        return;
      }
      await fsp.rename(tmp, fetchedFile(o.spool, name));
      await fsp.rm(marker, { force: true });
      state.fetchedTotal++;
      idleSince = Date.now();
      state.failed = state.failed.filter((f) => f !== name);
      if (state.missing === name) state.missing = undefined;
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      await fsp.rm(marker, { force: true }).catch(() => undefined);
      if (!state.failed.includes(name)) state.failed.push(name);
      retryAt.set(name, Date.now() + 5000);
      again();
      o.log(`${name}: ${(err as Error).message}; not prefetched`);
    }
  };

  let lastWant = '';
  try {
    while (!stopping) {
      const wantName = (await fsp.readFile(path.join(dir, 'want'), 'utf8').catch(() => '')).trim();
      const parsed = SEGMENT_RE.test(wantName) ? parseWalFileName(wantName, segSize) : undefined;
      if (wantName !== lastWant && parsed?.segno !== undefined) {
        lastWant = wantName;
        const moved = !want || want.timeline !== parsed.timeline || next === undefined || parsed.segno >= next || parsed.segno < want.segno;
        want = { timeline: parsed.timeline, segno: parsed.segno };
        if (moved) next = parsed.segno + 1n;
        state.want = wantName;
        idleSince = Date.now();
      }
      // Waiting files: drop those PostgreSQL has gone past (or of another timeline). Before its first
      // request nothing is dropped: pitr's preflight may have left the first segments of the path here.
      const present = (await fsp.readdir(dir)).filter((n) => SEGMENT_RE.test(n));
      const waiting = new Set(present);
      let queued = 0;
      for (const n of present) {
        const p = parseWalFileName(n, segSize);
        if (want && (!p?.segno || p.timeline !== want.timeline || p.segno <= want.segno)) await fsp.rm(path.join(dir, n), { force: true });
        else queued++;
      }
      if (want && next !== undefined) {
        // The window: segments after `want`; files consumed by the fast path free their places.
        while (inFlight.size < o.parallel && queued + inFlight.size < o.depth && !stopping) {
          const name = segmentName(want.timeline, next, segSize);
          if ((retryAt.get(name) ?? 0) > Date.now() || inFlight.has(name)) break;
          if (state.missing && name > state.missing) break;
          if (waiting.has(name)) {
            next++; // already here (left by pitr's preflight): counted in queued
            continue;
          }
          inFlight.set(
            name,
            fetchOne(name, next).finally(() => inFlight.delete(name)),
          );
          next++;
        }
      }
      Object.assign(state, { updatedAt: new Date().toISOString(), inFlight: [...inFlight.keys()], queued });
      await writeAtomic(path.join(dir, 'state.json'), `${JSON.stringify(state)}\n`).catch(() => undefined);
      if (Date.now() - idleSince > o.idleExitMs) break;
      await Promise.race([new Promise((r) => setTimeout(r, 50)), ...inFlight.values()]);
    }
    await Promise.allSettled(inFlight.values());
  } finally {
    await fsp.rm(inflightDir, { recursive: true, force: true }).catch(() => undefined);
    releaseLock(lock);
    for (const n of await fsp.readdir(dir).catch(() => [] as string[])) if (SEGMENT_RE.test(n)) await fsp.rm(path.join(dir, n), { force: true });
  }
  return 0;
}
