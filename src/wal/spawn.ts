// Starting the background workers (pusher, prefetcher) from wal-push / wal-fetch: detached, so
// PostgreSQL's archiver or startup process does not wait for them, with the server's own
// environment (as the archive_command got it, before --env-file) and their output in the
// spool's log. Secrets never go in argv: the credentials file is named in the environment.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WalCompression } from '../repo/walarchive.js';

export interface WorkerSettings {
  repo: string;
  compression: WalCompression;
  level: number;
  envFile?: string;
}

/** The environment a worker starts with: the server's (as archive_command got it) plus what it needs. */
export function workerEnv(serverEnv: NodeJS.ProcessEnv, s: WorkerSettings): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...serverEnv, PGRUNBOOK_REPO: s.repo, PGRUNBOOK_WAL_COMPRESS: s.compression, PGRUNBOOK_WAL_COMPRESS_LEVEL: String(s.level) };
  if (s.envFile) env.PGRUNBOOK_ENV_FILE = path.resolve(s.envFile);
  else delete env.PGRUNBOOK_ENV_FILE;
  return env;
}

const LOG_LIMIT = 1024 * 1024;

/** Start `worker.js <args>` detached; its stdout and stderr append to `logFile` (cut when over 1 MiB). Returns its pid. */
export function startWorker(args: string[], logFile: string, env: NodeJS.ProcessEnv, cwd: string, onExit?: () => void): number | undefined {
  try {
    if (fs.statSync(logFile).size > LOG_LIMIT) fs.renameSync(logFile, `${logFile}.1`);
  } catch {
    // no log yet
  }
  const fd = fs.openSync(logFile, 'a', 0o600);
  try {
    const script = fileURLToPath(new URL('./worker.js', import.meta.url));
    const child = spawn(process.execPath, [script, ...args], { detached: true, stdio: ['ignore', fd, fd], env, cwd });
    if (onExit) {
      child.once('exit', onExit);
      child.once('error', onExit);
    }
    child.unref();
    return child.pid;
  } finally {
    fs.closeSync(fd);
  }
}
