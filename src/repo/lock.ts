// Repository locks (e.g. one base backup at a time) and the conditional create they are built on.
//
// A lock is a small JSON object (owner, host, pid, runId, a random token, expiry) created only when
// absent: atomically where the driver can (local: link(2); S3: If-None-Match), else head + put, and
// in every case read back and compared with what this process wrote. It is refreshed while its
// holder runs and deleted at the end; a lock whose holder died is taken over once it has expired.
//
// Like walarchive.ts, no SDK imports here: wal-push loads this module (through identity.ts).
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { ObjectStore } from '../storage/types.js';
import { readObjectIfExists } from './objects.js';

/** How long a lock stays valid without a refresh; refreshed every quarter of it. */
export const DEFAULT_LOCK_TTL_MS = 5 * 60 * 1000;
/** Stores without an atomic create: wait this long before reading back, so a racing writer's put lands first. */
const SETTLE_MS = 250;

export { lockKey } from './layout.js';

/** Exit code for "someone else holds the lock, try later" (EX_TEMPFAIL). */
export const EXIT_LOCK_HELD = 75;

export interface LockRecord {
  owner: string;
  host: string;
  pid: number;
  runId: string;
  procedure?: string;
  token: string;
  acquiredAt: string;
  refreshedAt: string;
  expiresAt: string;
}

/** Another run holds the lock. Carries exit code 75, which the runner passes through. */
export class LockHeldError extends Error {
  readonly procedureExitCode = EXIT_LOCK_HELD;
  readonly hint: string;
  constructor(
    readonly key: string,
    readonly holder: LockRecord | undefined,
    store: string,
  ) {
    const who = holder
      ? `run ${holder.runId}${holder.procedure ? ` (${holder.procedure})` : ''} by ${holder.owner} on ${holder.host}, pid ${holder.pid}, since ${holder.acquiredAt}, lock valid until ${holder.expiresAt}`
      : 'a run whose lock record cannot be read';
    super(`${store} is locked (${key}) by ${who}. Nothing was written`);
    this.name = 'LockHeldError';
    this.hint = holder
      ? `wait for that run to finish and run again; if it died, its lock is taken over automatically after ${holder.expiresAt}`
      : `wait and run again; if no backup runs, delete ${key} from the repository`;
  }
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Create `key` with `body` unless it exists. True only when the object now holds exactly `body`
 * (so `body` should be unique to the caller, e.g. carry a random token): a retried conditional
 * put that reports "exists" for our own write is still ours, and a lost race is caught on read-back.
 */
export async function createIfAbsent(store: ObjectStore, key: string, body: Buffer): Promise<boolean> {
  let created: boolean;
  if (store.putIfAbsent) {
    created = await store.putIfAbsent(key, body);
    if (created && store.kind === 'file') return true; // link(2) is atomic: nothing to confirm
  } else {
    created = !(await store.head(key));
    if (created) await store.put(key, body, { contentLength: body.length });
  }
  if (created && store.kind !== 'file') await sleep(SETTLE_MS);
  const back = await readObjectIfExists(store, key);
  return back?.equals(body) === true;
}

export async function readLock(store: ObjectStore, key: string): Promise<LockRecord | undefined> {
  const raw = await readObjectIfExists(store, key);
  if (raw === undefined) return undefined;
  try {
    const rec = JSON.parse(raw.toString('utf8')) as LockRecord;
    if (typeof rec.token !== 'string' || typeof rec.expiresAt !== 'string') throw new Error('not a lock record');
    return rec;
  } catch {
    // Unreadable: treat as held until it is old enough to have expired.
    const info = await store.head(key);
    const since = info?.lastModified ?? new Date();
    return {
      owner: 'unknown',
      host: 'unknown',
      pid: 0,
      runId: 'unknown',
      token: `unreadable-${raw.length}`,
      acquiredAt: since.toISOString(),
      refreshedAt: since.toISOString(),
      expiresAt: new Date(since.getTime() + DEFAULT_LOCK_TTL_MS).toISOString(),
    };
  }
}

export interface AcquireOptions {
  runId: string;
  procedure?: string;
  ttlMs?: number;
  /** Warnings: a stale lock taken over, a refresh that failed. */
  onWarn?: (message: string) => void;
  now?: () => Date;
}

export class HeldLock {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  lost = false;

  constructor(
    readonly store: ObjectStore,
    readonly key: string,
    private record: LockRecord,
    private readonly ttlMs: number,
    private readonly onWarn: (message: string) => void,
  ) {}

  get token(): string {
    return this.record.token;
  }

  get expiresAt(): string {
    return this.record.expiresAt;
  }

  /** Push the expiry forward; false (and a warning) when the lock is no longer ours. */
  async refresh(): Promise<boolean> {
    if (this.released) return false;
    const current = await readLock(this.store, this.key);
    if (current?.token !== this.record.token) {
      this.lost = true;
      this.onWarn(
        `the lock ${this.key} in ${this.store.describe()} is no longer held by this run` +
          (current ? ` (now held by run ${current.runId} on ${current.host}, pid ${current.pid})` : ' (it was removed)'),
      );
      return false;
    }
    const now = new Date();
    this.record = { ...this.record, refreshedAt: now.toISOString(), expiresAt: new Date(now.getTime() + this.ttlMs).toISOString() };
    const body = Buffer.from(`${JSON.stringify(this.record, null, 2)}\n`);
    await this.store.put(this.key, body, { contentLength: body.length });
    return true;
  }

  /** Refresh every quarter of the TTL until released; the timer never keeps the process alive. */
  startRefreshing(intervalMs = Math.max(1000, Math.floor(this.ttlMs / 4))): void {
    if (this.timer || this.released) return;
    this.timer = setInterval(() => {
      this.refresh().catch((err: unknown) => this.onWarn(`could not refresh the lock ${this.key}: ${(err as Error).message}`));
    }, intervalMs);
    this.timer.unref();
  }

  /** Delete the lock if it is still ours. Never throws: a lock that stays behind expires. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    try {
      const current = await readLock(this.store, this.key);
      if (current?.token === this.record.token) await this.store.delete(this.key);
    } catch (err) {
      this.onWarn(`could not remove the lock ${this.key} from ${this.store.describe()} (${(err as Error).message}); it expires at ${this.record.expiresAt}`);
    }
  }
}

/**
 * Take the lock `key`, or throw LockHeldError naming its holder. An expired lock (its holder
 * died or hung) is taken over with a warning.
 */
export async function acquireLock(store: ObjectStore, key: string, opts: AcquireOptions): Promise<HeldLock> {
  const ttlMs = opts.ttlMs ?? DEFAULT_LOCK_TTL_MS;
  const onWarn = opts.onWarn ?? (() => {});
  const now = opts.now ?? (() => new Date());
  const make = (): LockRecord => {
    const t = now();
    let owner = 'unknown';
    try {
      owner = os.userInfo().username;
    } catch {
      // no passwd entry: keep 'unknown'
    }
    return {
      owner,
      host: os.hostname(),
      pid: process.pid,
      runId: opts.runId,
      procedure: opts.procedure,
      token: randomBytes(16).toString('hex'),
      acquiredAt: t.toISOString(),
      refreshedAt: t.toISOString(),
      expiresAt: new Date(t.getTime() + ttlMs).toISOString(),
    };
  };
  for (let attempt = 0; attempt < 4; attempt++) {
    const record = make();
    const body = Buffer.from(`${JSON.stringify(record, null, 2)}\n`);
    if (await createIfAbsent(store, key, body)) return new HeldLock(store, key, record, ttlMs, onWarn);
    const holder = await readLock(store, key);
    if (!holder) continue; // released meanwhile: try again
    const expires = Date.parse(holder.expiresAt);
    // An earlier attempt of this very run (resumed after a crash or an unreachable store) whose
    // process is gone: its lock is ours to take over at once.
    const ownEarlierAttempt = holder.runId === opts.runId && holder.host === os.hostname() && holder.pid !== process.pid && !pidAlive(holder.pid);
    if (!ownEarlierAttempt && Number.isFinite(expires) && expires > now().getTime()) throw new LockHeldError(key, holder, store.describe());
    // Expired: the holder died (or stopped refreshing). Remove exactly that record, then race for it.
    const again = await readLock(store, key);
    if (again && again.token !== holder.token) continue; // someone else took it over meanwhile
    onWarn(
      `taking over the ${ownEarlierAttempt ? 'lock left by an earlier attempt of this run,' : 'expired lock'} ${key} in ${store.describe()}: it was held by run ${holder.runId} by ${holder.owner} on ${holder.host} (pid ${holder.pid}), ` +
        `which last refreshed it at ${holder.refreshedAt} and let it expire at ${holder.expiresAt}`,
    );
    await store.delete(key);
  }
  throw new LockHeldError(key, await readLock(store, key), store.describe());
}
