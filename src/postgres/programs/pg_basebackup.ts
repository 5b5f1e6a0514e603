// pg_basebackup, one tar of the data directory with the WAL it needs inside, in one of two ways:
// on stdout with backup_manifest as its last member, or (PostgreSQL 15+) compressed by the server
// into a directory as base.tar.zst beside backup_manifest, which the caller follows as it grows.
// The connection travels in libpq's environment variables (no password on a command line); -v's
// start and end points are picked out of stderr.
import path from 'node:path';
import type { Readable } from 'node:stream';
import { startStreamingProgram } from './spawn.js';
import type { ConnectionSettings } from '../../config/connection.js';
import { findPgBinary } from '../binaries.js';
import { libpqEnv } from '../libpq.js';

export interface PgBasebackupOptions {
  connection: ConnectionSettings;
  label: string;
  checkpoint: 'fast' | 'spread';
  /** pg_basebackup --max-rate, e.g. "50M". */
  maxRate?: string;
  /** --manifest-checksums: what backup_manifest lists per file (CRC32C with the hardware addon, else SHA256: see base-backup-check.ts). */
  manifestChecksums?: string;
  /**
   * Write into this directory (it must not exist yet) instead of stdout, with --compress=
   * server-zstd:level=1: the server compresses as it reads, pg_basebackup writes base.tar.zst
   * and backup_manifest, unsynced (the caller stores its own durable copy).
   */
  directory?: string;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Each line pg_basebackup writes to stderr (progress and errors, with -v). */
  onStderrLine?: (line: string) => void;
}

/** The tar of the data directory, with the WAL it needs inside (pg_wal/): to stdout, backup_manifest as its last member, or into `directory` (see PgBasebackupOptions). */
export function pgBasebackupArgs(opts: Pick<PgBasebackupOptions, 'label' | 'checkpoint' | 'maxRate' | 'manifestChecksums' | 'directory'>): string[] {
  return [
    `--pgdata=${opts.directory ?? '-'}`,
    ...(opts.directory ? [`--compress=${SERVER_COMPRESSION}`, '--no-sync'] : []),
    '--format=tar',
    '--wal-method=fetch',
    `--checkpoint=${opts.checkpoint}`,
    `--label=${opts.label}`,
    '--verbose',
    '--no-password',
    ...(opts.manifestChecksums ? [`--manifest-checksums=${opts.manifestChecksums}`] : []),
    ...(opts.maxRate ? [`--max-rate=${opts.maxRate}`] : []),
  ];
}

export interface PgBasebackupResult {
  exitCode?: number;
  signal?: string;
  ok: boolean;
  /** The last lines of stderr. */
  stderrTail: string;
  /** From -v: "write-ahead log start point: 0/2000028 on timeline 1". */
  startLsn?: string;
  startTimeline?: number;
  /** From -v: "write-ahead log end point: 0/2000100". */
  endLsn?: string;
}

/** What the server compresses with in directory mode; its frames carry no content checksum (the caller checks every file against backup_manifest). */
export const SERVER_COMPRESSION = 'server-zstd:level=1';

/** The file the directory mode writes the main tar to. */
export const SERVER_COMPRESSED_TAR = 'base.tar.zst';

export interface RunningPgBasebackup {
  command: string;
  /** The tar, unless it goes into a directory. */
  stdout?: Readable;
  /** Settles when the program has exited; never rejects. */
  done: Promise<PgBasebackupResult>;
  kill(): void;
}

export async function startPgBasebackup(opts: PgBasebackupOptions): Promise<RunningPgBasebackup> {
  const bin = await findPgBinary('pg_basebackup');
  const args = pgBasebackupArgs(opts);
  const command = [path.basename(bin), ...args].join(' ');
  const child = startStreamingProgram(bin, args, {
    env: libpqEnv(opts.connection, opts.env ?? process.env),
    stdin: 'ignore',
    stdout: opts.directory ? 'ignore' : 'pipe',
    signal: opts.signal,
    forceKillAfterDelay: 5000,
  });
  const tail: string[] = [];
  const parsed: Pick<PgBasebackupResult, 'startLsn' | 'startTimeline' | 'endLsn'> = {};
  let partial = '';
  const onLine = (line: string) => {
    if (!line.trim()) return;
    tail.push(line);
    if (tail.length > 30) tail.shift();
    const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/i.exec(line);
    if (start) {
      parsed.startLsn = start[1].toUpperCase();
      parsed.startTimeline = Number(start[2]);
    }
    const end = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/i.exec(line);
    if (end) parsed.endLsn = end[1].toUpperCase();
    try {
      opts.onStderrLine?.(line);
    } catch {
      // a listener's bug must not break the backup
    }
  };
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) onLine(l);
  });
  const done = child.then(
    (r) => {
      if (partial) onLine(partial);
      const exitCode = typeof r.exitCode === 'number' ? r.exitCode : undefined;
      return { exitCode, signal: r.signal ?? undefined, ok: exitCode === 0 && !r.failed, stderrTail: tail.join('\n'), ...parsed };
    },
    (err: unknown) => ({ ok: false, stderrTail: [...tail, (err as Error)?.message ?? String(err)].join('\n'), ...parsed }),
  );
  return {
    command,
    stdout: child.stdout ?? undefined,
    done,
    kill: () => {
      child.kill('SIGTERM');
    },
  };
}

/** What pg_basebackup said about its failure: from its first error line on, without its -v progress lines. */
export function pgBasebackupErrorLines(stderr: string): string {
  const lines = stderr.trim().split('\n');
  const first = lines.findIndex((l) => /\b(error|fatal|FATAL|ERROR|PANIC):/.test(l));
  return (first >= 0 ? lines.slice(first) : lines.slice(-3)).map((l) => l.trim()).join(' ');
}

/** The server recycled WAL the backup needed before pg_basebackup fetched it. */
export function walWasRemoved(stderr: string): boolean {
  return /requested WAL segment \S+ has already been removed/.test(stderr);
}

/** pg_basebackup --max-rate: kB/s, or with k/M; 32 kB/s to 1024 MB/s. */
export function parseMaxRate(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kKmM]?)$/.exec(text.trim());
  if (!m) return undefined;
  const kb = Number(m[1]) * (m[2].toLowerCase() === 'm' ? 1024 : 1);
  return kb >= 32 && kb <= 1024 * 1024 ? kb : undefined;
}
