// The throwaway server a scratch recovery runs (src/restore/scratch.ts): reachable only through
// a private unix socket (listen_addresses = ''), never archiving, on its own port, with its own
// pg_hba.conf. It is started with pg_ctl (clean environment, as the data directory's owner) and
// stopped with an immediate shutdown: nothing in it is ever kept.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ConnectionSettings } from '../config/connection.js';
import { isRoot } from './osuser.js';
import { pgCtlStart, pgCtlStatus, pgCtlStop } from './pgctl.js';

export type ScratchServerSpec = {
  dataDir: string;
  socketDir: string;
  port: number;
  logFile: string;
  owner: { uid: number; gid: number };
};

const HBA_NAME = 'pgrunbook_scratch_hba.conf';

/**
 * Settings that make the copy a private, read-only, non-archiving server whatever production's
 * configuration says (appended after it, so they win): no TCP, no archiving, its own hba file (so no
 * replication or remote connections), logs to our file only. max_connections, max_wal_senders and
 * the like stay production's: a hot standby refuses to start with less than its primary had.
 */
export function scratchServerSettings(s: ScratchServerSpec): [string, string][] {
  return [
    ['port', String(s.port)],
    ['listen_addresses', ''],
    ['unix_socket_directories', s.socketDir],
    ['unix_socket_permissions', '0700'],
    ['archive_mode', 'off'],
    ['archive_command', ''],
    ['hba_file', path.join(s.dataDir, HBA_NAME)],
    ['ident_file', path.join(s.dataDir, 'pg_ident.conf')],
    ['logging_collector', 'off'],
    ['ssl', 'off'],
    ['cluster_name', 'pgrunbook-scratch'],
  ];
}

/**
 * Writes the scratch server's pg_hba.conf (local socket only, trust: the socket sits in a 0700
 * directory of the server's OS user, so only that user and root reach it) and makes sure a
 * postgresql.conf and pg_ident.conf exist (a backup of a cluster configured from /etc has none).
 */
export async function writeScratchServerFiles(s: ScratchServerSpec): Promise<void> {
  const files: [string, string][] = [[path.join(s.dataDir, HBA_NAME), '# pgrunbook scratch recovery: the private socket only\nlocal all all trust\n']];
  for (const name of ['postgresql.conf', 'pg_ident.conf']) {
    if (!fs.existsSync(path.join(s.dataDir, name))) files.push([path.join(s.dataDir, name), '']);
  }
  for (const [file, text] of files) {
    await fsp.writeFile(file, text, { mode: 0o600 });
    if (isRoot()) await fsp.chown(file, s.owner.uid, s.owner.gid);
  }
}

export async function startScratchServer(s: ScratchServerSpec, signal: AbortSignal): Promise<void> {
  if ((await pgCtlStatus(s.dataDir).catch(() => ({ running: false }))).running) return;
  await pgCtlStart({ pgdata: s.dataDir, logFile: s.logFile, signal, timeoutSec: 300 });
}

/** Immediate shutdown (nothing is kept); no error when it is not running or its directory is gone. */
export async function stopScratchServer(dataDir: string): Promise<void> {
  if (!fs.existsSync(path.join(dataDir, 'PG_VERSION'))) return;
  const st = await pgCtlStatus(dataDir).catch(() => ({ running: false }));
  if (st.running) await pgCtlStop({ pgdata: dataDir, mode: 'immediate', timeoutSec: 60 });
}

export async function scratchServerRunning(dataDir: string): Promise<boolean> {
  if (!fs.existsSync(path.join(dataDir, 'PG_VERSION'))) return false;
  return (await pgCtlStatus(dataDir).catch(() => ({ running: false }))).running;
}

/** How to reach the scratch server: its socket directory and port, as `user`, no TLS. */
export function scratchServerConnection(s: Pick<ScratchServerSpec, 'socketDir' | 'port'>, user: string, database?: string): ConnectionSettings {
  return { host: s.socketDir, port: s.port, user, database: database ?? 'postgres', sslmode: 'disable', applicationName: 'pgrunbook scratch' };
}
