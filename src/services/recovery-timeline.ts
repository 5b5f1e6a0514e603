// What the recovery-target picker draws comes from here, never from the screen: a repository's
// catalog (fast), then the last commit of each recovery window read from its archived WAL
// (slower: it scans WAL, so the picker shows the catalog first and refines the window ends).
// The app builds the source from its services and hands it to the screen.
import type { Catalog } from '../repo/catalog.js';
import { openRepository } from '../repo/repository.js';
import { usableWindows } from '../restore/target.js';
import { lastCommitInWindow, scanActivity, type WalActivity } from '../restore/walscan.js';
import { errorMessage } from '../engine/errors.js';
import type { ConnectionSettings } from '../config/connection.js';
import { serverWalPosition, type ServerWalPosition } from '../postgres/wal-position.js';
import { archiveCurrentWal } from '../postgres/recovery.js';

export type { ActivityCommit, ActivityRestorePoint, WalActivity } from '../restore/walscan.js';
export type { ServerWalPosition } from '../postgres/wal-position.js';

/** The last commit of each window, keyed by the window's last segment; `problem` says why some are missing. */
export interface LastCommits {
  times: Record<string, string>;
  problem?: string;
}

export interface RecoveryTimelineSource {
  /** The repository, as shown to the operator. */
  describe: string;
  catalog(signal: AbortSignal): Promise<Catalog>;
  /** The last commit of each window, read from the archived WAL. Absent: the window ends stay archive times. */
  lastCommits?(catalog: Catalog, signal: AbortSignal): Promise<LastCommits>;
  /** Every commit and restore point of each timeline's newest WAL (pg_waldump): the picker then steps by commit. */
  activity?(catalog: Catalog, signal: AbortSignal): Promise<WalActivity>;
  /** Where the server's WAL is against the archive (is the last minute archived yet?). Absent without a connection. */
  serverWal?(signal: AbortSignal): Promise<ServerWalPosition>;
  /** pg_switch_wal() and wait (up to 30 s) until the archive has the segment. */
  switchWal?(signal: AbortSignal): Promise<{ segment: string; archived: boolean } | undefined>;
}

/** The last segment of a window's gap-free WAL: windows sharing it share their last commit. */
export function windowEndSegment(window: { runs: { last: string }[] }): string | undefined {
  return window.runs.at(-1)?.last;
}

/** The recovery timeline of the repository at `repoUrl` (services.repo), opened with `env`'s credentials. */
export function loadRecoveryTimeline(repoUrl: string | undefined, env: NodeJS.ProcessEnv, opts: { readCommits?: boolean; connection?: ConnectionSettings; maxSegments?: number } = {}): RecoveryTimelineSource {
  const conn = opts.connection;
  return {
    describe: repoUrl ?? '(no repository)',
    async catalog() {
      const repo = await openRepository(repoUrl, env);
      try {
        return await repo.catalog();
      } finally {
        await repo.close();
      }
    },
    lastCommits: opts.readCommits === false ? undefined : (catalog, signal) => readLastCommits(repoUrl, env, catalog, signal),
    activity:
      opts.readCommits === false
        ? undefined
        : async (catalog, signal) => {
            const repo = await openRepository(repoUrl, env);
            try {
              return await scanActivity(repo.store, catalog, { maxSegments: opts.maxSegments, signal });
            } finally {
              await repo.close();
            }
          },
    serverWal: conn ? () => serverWalPosition(conn) : undefined,
    switchWal: conn ? (signal) => archiveCurrentWal(conn, { timeoutMs: 30_000, signal }) : undefined,
  };
}

async function readLastCommits(repoUrl: string | undefined, env: NodeJS.ProcessEnv, catalog: Catalog, signal: AbortSignal): Promise<LastCommits> {
  const times: Record<string, string> = {};
  let problem: string | undefined;
  const repo = await openRepository(repoUrl, env);
  try {
    const seen = new Set<string>();
    // Newest first; windows ending in the same segment share their last commit.
    for (const { window } of usableWindows(catalog)) {
      const last = windowEndSegment(window);
      if (!last || seen.has(last)) continue;
      seen.add(last);
      signal.throwIfAborted();
      try {
        const t = await lastCommitInWindow(repo.store, window, catalog.segmentSize, signal);
        if (t) times[last] = t.toISOString();
        else problem ??= `no commit found in the last WAL segments up to ${last}`;
      } catch (err) {
        if (signal.aborted) throw err;
        problem ??= errorMessage(err);
      }
    }
  } finally {
    await repo.close();
  }
  return { times, problem };
}
