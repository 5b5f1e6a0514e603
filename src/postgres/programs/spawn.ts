// How this tool starts the PostgreSQL client programs whose output it streams (pg_dump,
// pg_restore, pg_basebackup, psql): only the environment it was given (the connection travels in
// libpq's variables, see libpq.ts), stderr always piped for the caller to read line by line,
// nothing buffered in memory (a dump may be gigabytes), and a non-zero exit is a result, not a
// throw: the caller says what failed.
//
// Node's child_process, not execa: execa's 119 modules cost every process start about 100 ms,
// and these programs need none of what it adds (bench/startup.ts). The result has the fields the
// callers read (exitCode, signal, failed, isCanceled, shortMessage), named as execa names them.
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface StreamingProgramOptions {
  /** The whole environment of the program. */
  env: NodeJS.ProcessEnv;
  stdin: 'ignore' | 'pipe';
  stdout: 'ignore' | 'pipe';
  /** Stops the program (SIGTERM, or killSignal). */
  signal?: AbortSignal;
  killSignal?: 'SIGKILL';
  /** A program still running this long after it was told to stop is killed (ms). */
  forceKillAfterDelay?: number;
}

export interface StreamingProgramResult {
  exitCode?: number;
  signal?: NodeJS.Signals;
  /** It did not exit 0 (or could not start). */
  failed: boolean;
  /** Stopped through `signal`. */
  isCanceled: boolean;
  shortMessage: string;
  message: string;
}

/** The running program; awaiting it gives its result (never rejects). */
export type StreamingProgram = Promise<StreamingProgramResult> & {
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  pid?: number;
  kill(signal?: NodeJS.Signals): boolean;
};

export function startStreamingProgram(bin: string, args: readonly string[], o: StreamingProgramOptions): StreamingProgram {
  const child = spawn(bin, args, { env: o.env, stdio: [o.stdin, o.stdout, 'pipe'] });
  // EPIPE on stdin when the program stops reading, and the like: its exit status says what
  // happened; the callers that care listen too. Unlistened, they would end this process.
  for (const s of [child.stdin, child.stdout, child.stderr]) s?.on('error', () => {});
  let canceled = false;
  let forceTimer: NodeJS.Timeout | undefined;
  const kill = (signal: NodeJS.Signals = o.killSignal ?? 'SIGTERM'): boolean => {
    const sent = child.kill(signal);
    if (signal !== 'SIGKILL' && o.forceKillAfterDelay !== undefined && !forceTimer) {
      forceTimer = setTimeout(() => child.kill('SIGKILL'), o.forceKillAfterDelay);
      forceTimer.unref();
    }
    return sent;
  };
  const onAbort = () => {
    canceled = true;
    kill();
  };
  if (o.signal?.aborted) onAbort();
  else o.signal?.addEventListener('abort', onAbort, { once: true });
  const command = [bin, ...args].join(' ');
  const result = new Promise<StreamingProgramResult>((resolve) => {
    let settled = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null, error?: Error) => {
      if (settled) return;
      settled = true;
      if (forceTimer) clearTimeout(forceTimer);
      o.signal?.removeEventListener('abort', onAbort);
      const exitCode = code ?? undefined;
      const shortMessage = error
        ? `Command failed: ${command}: ${error.message}`
        : exitCode !== undefined
          ? `Command failed with exit code ${exitCode}: ${command}`
          : `Command was killed with ${signal}: ${command}`;
      resolve({ exitCode, signal: signal ?? undefined, failed: Boolean(error) || exitCode !== 0, isCanceled: canceled, shortMessage, message: shortMessage });
    };
    // A program that cannot start (ENOENT, EACCES) emits 'error' and no 'close' of its own.
    child.once('error', (err) => {
      if (child.pid === undefined) finish(null, null, err);
    });
    child.once('close', (code, signal) => finish(code, signal));
  });
  return Object.assign(result, { stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, pid: child.pid, kill });
}
