// Entry point of the background workers wal-push and wal-fetch start: `node worker.js push SPOOL
// PG_WAL` (the pusher) or `node worker.js fetch SPOOL` (the prefetcher). Started detached, with
// the environment the archive_command or restore_command itself got from the server (never
// pgrunbook's own), plus PGRUNBOOK_REPO and the codec settings; the credentials file is named
// by PGRUNBOOK_ENV_FILE and read here, so neither secrets nor their file are in argv.
import os from 'node:os';
import path from 'node:path';
import { openStore } from '../storage/url.js';
import type { WalCompression } from '../repo/walarchive.js';
import { loadEnvFile } from './env-file.js';

function stamp(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} [${process.pid}] ${msg}\n`);
}

async function main(argv: string[]): Promise<number> {
  const [side, spool, pgWal] = argv;
  if (!spool || (side !== 'push' && side !== 'fetch') || (side === 'push' && !pgWal)) {
    stamp('usage: worker.js push SPOOL PG_WAL | worker.js fetch SPOOL');
    return 2;
  }
  const envFile = process.env.PGRUNBOOK_ENV_FILE;
  if (envFile) Object.assign(process.env, await loadEnvFile(envFile));
  const repo = process.env.PGRUNBOOK_REPO;
  if (!repo) {
    stamp('no repository (PGRUNBOOK_REPO)');
    return 2;
  }
  const compression = (process.env.PGRUNBOOK_WAL_COMPRESS || 'zstd') as WalCompression;
  const level = Number(process.env.PGRUNBOOK_WAL_COMPRESS_LEVEL || 1);
  const idleExitMs = Number(process.env.PGRUNBOOK_WAL_IDLE_EXIT_SEC || 60) * 1000;
  const store = await openStore(repo, process.env);
  try {
    if (side === 'push') {
      const { runPusher } = await import('./pusher.js');
      const parallel = Number(process.env.PGRUNBOOK_WAL_PUSH_PARALLEL) || Math.max(8, Math.min(16, 4 * os.availableParallelism()));
      // A backlog is compressed with zstd --fast=3 unless PGRUNBOOK_WAL_BACKLOG_LEVEL says otherwise (the same as the level: never faster).
      const wanted = Number(process.env.PGRUNBOOK_WAL_BACKLOG_LEVEL || -3);
      const backlogLevel = Number.isInteger(wanted) && wanted !== 0 && wanted >= -100 && wanted <= 19 ? wanted : level;
      if (backlogLevel !== wanted) stamp(`PGRUNBOOK_WAL_BACKLOG_LEVEL must be -100..-1 (zstd --fast=N) or 1..19; using ${level}`);
      return await runPusher({ spool, pgWal: path.resolve(pgWal), store, compression, level, backlogLevel, parallel, idleExitMs, log: stamp });
    }
    const { runPrefetcher } = await import('./prefetcher.js');
    const depth = Number(process.env.PGRUNBOOK_WAL_FETCH_QUEUE) || 8;
    return await runPrefetcher({ spool, store, compression, depth, parallel: 3, idleExitMs, log: stamp });
  } finally {
    await store.close().catch(() => undefined);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    stamp(`stopped: ${(err as Error).message}`);
    process.exitCode = 1;
  },
);
