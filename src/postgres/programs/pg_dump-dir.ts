// pg_dump in directory format with parallel jobs (-Fd -j N): what logical-restore --at reads from
// the scratch cluster, so that both the dump and pg_restore -j run in parallel. The connection
// travels in libpq's environment variables, never in argv.
import { libpqEnv } from '../libpq.js';
import type { ConnectionSettings } from '../../config/connection.js';
import { StderrLines } from './pg_dump.js';
import { startStreamingProgram } from './spawn.js';

export async function dumpToDirectory(o: { pgDump: string; connection: ConnectionSettings; dir: string; jobs: number; env: NodeJS.ProcessEnv; signal: AbortSignal }): Promise<{ command: string }> {
  const args = ['--format=directory', `--jobs=${Math.max(1, o.jobs)}`, '--no-password', `--file=${o.dir}`];
  const command = [o.pgDump, ...args].join(' ');
  const stderr = new StderrLines();
  const child = startStreamingProgram(o.pgDump, args, { env: libpqEnv(o.connection, o.env), stdin: 'ignore', stdout: 'ignore', signal: o.signal, forceKillAfterDelay: 5000 });
  child.stderr?.on('data', (d: Buffer) => stderr.push(d));
  const r = await child;
  stderr.end();
  if (r.failed || r.exitCode !== 0) {
    throw new Error(`pg_dump of ${o.connection.database} from the scratch cluster failed (${r.exitCode !== undefined ? `exit code ${r.exitCode}` : `signal ${r.signal}`}): ${stderr.lastLines().join(' | ')}`);
  }
  return { command };
}
