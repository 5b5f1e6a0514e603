// The replication protocol, as pg_basebackup will use it: a probe (IDENTIFY_SYSTEM) that proves
// pg_hba.conf lets this user in for replication, and a temporary slot that holds WAL while a base
// backup runs.
import type pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { connectPg } from './client.js';

export interface IdentifySystem {
  systemIdentifier: string;
  timeline: number;
  walPosition: string;
}

/**
 * Open a physical replication connection, as pg_basebackup will, and run IDENTIFY_SYSTEM. This
 * proves what SQL cannot: that pg_hba.conf lets this user in for replication.
 */
export async function identifySystem(conn: ConnectionSettings): Promise<IdentifySystem> {
  // The same defaults, TLS (sslmode) and password file as every other connection of ours.
  const client = await connectPg({ ...conn, applicationName: conn.applicationName ?? 'pgrunbook' }, { replication: true } as Partial<pg.ClientConfig>);
  try {
    const r = await client.query<{ systemid: string; timeline: number | string; xlogpos: string }>('IDENTIFY_SYSTEM');
    const row = r.rows[0];
    return { systemIdentifier: String(row.systemid), timeline: Number(row.timeline), walPosition: row.xlogpos };
  } finally {
    await client.end().catch(() => {});
  }
}

export interface WalHold {
  slot: string;
  restartLsn: string;
  release(): Promise<void>;
}

/**
 * Keep the server from recycling WAL until `release()`: a temporary physical replication slot,
 * reserving WAL at once, held by an open session. With --wal-method=fetch the WAL is only fetched
 * at the end of the backup; a busy server could otherwise remove a segment the backup needs before
 * then ("requested WAL segment ... has already been removed"). Being temporary, the slot goes away
 * with the session, also when we crash or are killed, so it can never pin WAL forever.
 */
export async function holdWal(conn: ConnectionSettings, slot: string): Promise<WalHold> {
  const client = await connectPg({ ...conn, applicationName: 'pgrunbook backup-base (WAL hold)' });
  try {
    const r = await client.query<{ lsn: string | null }>(`SELECT lsn::text AS lsn FROM pg_create_physical_replication_slot($1, true, true)`, [slot]);
    return {
      slot,
      restartLsn: r.rows[0].lsn ?? '',
      release: async () => {
        await client.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => {});
        await client.end().catch(() => {});
      },
    };
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
}


/** What holdWal runs, for a dry run's plan. */
export function describeHoldWal(slot: string): string {
  return `SELECT pg_create_physical_replication_slot('${slot}', true, true): a temporary slot holding WAL until the backup has fetched it (it goes with the session)`;
}

/** What to do when a replication connection (as pg_basebackup opens) is refused. */
export function replicationConnectHint(message: string, user: string): string {
  if (/no pg_hba\.conf entry/i.test(message)) {
    return `${message}. Allow it in pg_hba.conf (e.g. "host replication ${user} <client address>/32 scram-sha-256", or "local replication ${user} peer" for a socket), then SELECT pg_reload_conf()`;
  }
  return `a replication connection (as pg_basebackup opens) failed: ${message}`;
}
