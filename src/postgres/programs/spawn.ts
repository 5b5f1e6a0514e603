// How this tool starts the PostgreSQL client programs whose output it streams (pg_dump,
// pg_restore, pg_basebackup, psql): only the environment it was given (the connection travels in
// libpq's variables, see libpq.ts), stderr always piped for the caller to read line by line,
// nothing buffered in memory (a dump may be gigabytes), and a non-zero exit is a result, not a
// throw: the caller says what failed.
import { execa } from 'execa';

export interface StreamingProgramOptions {
  /** The whole environment of the program (extendEnv: false). */
  env: NodeJS.ProcessEnv;
  stdin: 'ignore' | 'pipe';
  stdout: 'ignore' | 'pipe';
  /** Stops the program (SIGTERM, or killSignal). */
  signal?: AbortSignal;
  killSignal?: 'SIGKILL';
  /** A program still running this long after it was told to stop is killed (ms). */
  forceKillAfterDelay?: number;
}

export function startStreamingProgram(bin: string, args: readonly string[], o: StreamingProgramOptions) {
  return execa(bin, args, {
    env: o.env,
    extendEnv: false,
    stdin: o.stdin,
    stdout: o.stdout,
    stderr: 'pipe',
    buffer: false,
    reject: false,
    ...(o.signal ? { cancelSignal: o.signal } : {}),
    ...(o.killSignal ? { killSignal: o.killSignal } : {}),
    ...(o.forceKillAfterDelay !== undefined ? { forceKillAfterDelay: o.forceKillAfterDelay } : {}),
  });
}
