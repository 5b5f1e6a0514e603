// The slow paths of asynchronous archiving, run when restore_command's or archive_command's shell
// fast path found nothing in the spool. wal-push: an ok file is trusted only when it holds the
// segment's own SHA-256 or file identity; with a live pusher, wait for it; with none, start one and let the
// caller push synchronously. wal-fetch: tell the prefetcher where PostgreSQL is, take a verified
// file it already has (or is fetching), else let the caller fetch synchronously.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ensureSpool, fetchedFile, lockAlive, okFile, okFileVouchesFor, readLock, writeAtomic, type PusherState } from './spool.js';
import { startWorker, workerEnv, type WorkerSettings } from './spawn.js';

export interface SpoolContext extends WorkerSettings {
  spool: string;
  /** The environment archive_command got from the server (before --env-file), for the worker. */
  serverEnv: NodeJS.ProcessEnv;
  say: (msg: string) => void;
  verbose: boolean;
  /** How long to wait for a live worker before doing the work here. */
  waitMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * True when the segment is already durably pushed (an ok file holding its checksum). False: the
 * caller must push it synchronously (the pusher has been started if it was not running).
 */
export async function acknowledgeFromSpool(source: string, c: SpoolContext): Promise<boolean> {
  const name = path.basename(source);
  const ok = okFile(c.spool, name);
  const check = async (): Promise<boolean | undefined> => {
    let text: string;
    try {
      text = await fsp.readFile(ok, 'utf8');
    } catch {
      return undefined;
    }
    if (await okFileVouchesFor(text, source)) return true;
    await fsp.rm(ok, { force: true });
    c.say(`the spool's ok file for ${name} names other contents than the segment has; pushing it again`);
    return false;
  };
  const first = await check();
  if (first !== undefined) return first;
  try {
    await ensureSpool(c.spool, 'push');
  } catch (err) {
    c.say(`cannot use the spool ${c.spool} (${(err as Error).message}); pushing synchronously`);
    return false;
  }
  const lock = path.join(c.spool, 'push', 'pusher.pid');
  const started = Date.now();
  const deadline = started + (c.waitMs ?? 30_000);
  let startedPusherAt: number | undefined;
  let sawPusher = false;
  let startedPusherExited = false;
  for (let polls = 0; Date.now() < deadline; polls++) {
    if (polls % 25 === 0) {
      if (lockAlive(readLock(lock))) {
        sawPusher = true;
        // The pusher failed on this very segment since we began: push here, so the real error reaches the server log.
        const state = readState(path.join(c.spool, 'push', 'state.json'));
        if (state?.lastError?.startsWith(`${name}:`) && Date.parse(state.lastErrorAt ?? '') >= started - 1000) return false;
      } else if (startedPusherAt === undefined) {
        // None runs: start one and wait for it like for any other, instead of pushing this segment
        // here too (in a backlog the pusher would then hash, compress and check it a second time).
        startPusher(source, c, () => {
          startedPusherExited = true;
        });
        startedPusherAt = Date.now();
      } else if (sawPusher || startedPusherExited || Date.now() - startedPusherAt > 3_000) {
        // Gone (it could not open the repository, say), or never took its lock: a synchronous
        // push, whose error then reaches the server's log.
        return false;
      }
    } else if (startedPusherExited && !lockAlive(readLock(lock))) {
      return false;
    }
    const r = await check();
    if (r !== undefined) return r;
    await sleep(20);
  }
  return false;
}

function readState(file: string): PusherState | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as PusherState;
  } catch {
    return undefined;
  }
}

function startPusher(source: string, c: SpoolContext, onExit: () => void): void {
  const pgWal = path.resolve(path.dirname(source));
  const pid = startWorker(['push', c.spool, pgWal], path.join(c.spool, 'push', 'pusher.log'), workerEnv(c.serverEnv, c), process.cwd(), onExit);
  if (c.verbose) c.say(`started the pusher (pid ${pid}) for ${pgWal}; waiting for it to push ${path.basename(source)}`);
}

/**
 * True when `dest` now holds the segment, moved from the spool (verified before it got there).
 * False: the caller fetches synchronously. Records `name` as where PostgreSQL is, and starts the
 * prefetcher when none runs.
 */
export async function fetchFromSpool(name: string, dest: string, c: SpoolContext): Promise<boolean> {
  try {
    await ensureSpool(c.spool, 'fetch');
  } catch (err) {
    c.say(`cannot use the spool ${c.spool} (${(err as Error).message}); fetching synchronously`);
    return false;
  }
  const dir = path.join(c.spool, 'fetch');
  const isSegment = /^[0-9A-F]{24}$/.test(name);
  if (isSegment) await writeAtomic(path.join(dir, 'want'), `${name}\n`);
  const lock = path.join(dir, 'prefetcher.pid');
  if (!lockAlive(readLock(lock))) {
    if (isSegment) {
      const pid = startWorker(['fetch', c.spool], path.join(dir, 'prefetcher.log'), workerEnv(c.serverEnv, c), process.cwd());
      if (c.verbose) c.say(`started the prefetcher (pid ${pid})`);
    }
    return false;
  }
  const deadline = Date.now() + (c.waitMs ?? 10_000);
  for (;;) {
    if (await moveInto(fetchedFile(c.spool, name), dest)) return true;
    let state: { inFlight?: string[] } | undefined;
    try {
      state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as { inFlight?: string[] };
    } catch {
      state = undefined;
    }
    if (!state?.inFlight?.includes(name) || Date.now() > deadline) return false;
    await sleep(10);
  }
}

/** rename (the spool and pg_wal usually share a file system); across file systems, copy then rename. */
async function moveInto(from: string, dest: string): Promise<boolean> {
  try {
    await fsp.rename(from, dest);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code !== 'EXDEV') throw err;
  }
  const tmp = `${dest}.pgrunbook-tmp-${process.pid}`;
  await fsp.copyFile(from, tmp);
  await fsp.rename(tmp, dest);
  await fsp.rm(from, { force: true });
  return true;
}
