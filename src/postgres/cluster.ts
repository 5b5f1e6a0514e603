// What a cluster is and how it is set up, read over SQL: version, system identifier, WAL segment
// size, its databases, and the settings and privileges a base backup needs, with what to change when one is
// missing.
import type pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { ident } from './sql.js';

/** pg_control_system().system_identifier; undefined when this role may not call it (it can be revoked). */
export async function readSystemIdentifier(c: pg.Client): Promise<string | undefined> {
  try {
    return (await c.query<{ id: string }>(`SELECT system_identifier::text AS id FROM pg_control_system()`)).rows[0]?.id;
  } catch {
    return undefined;
  }
}

export interface ServerIdentity {
  version: string;
  versionNum: number;
  walSegmentSize: number;
  /** Undefined when this role may not call pg_control_system(). */
  systemIdentifier?: string;
}

export async function readServerIdentity(c: pg.Client): Promise<ServerIdentity> {
  const v = await c.query<{ version: string; num: string; seg: string }>(
    `SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num, pg_size_bytes(current_setting('wal_segment_size')) AS seg`,
  );
  return {
    version: v.rows[0].version,
    versionNum: Number(v.rows[0].num),
    walSegmentSize: Number(v.rows[0].seg),
    systemIdentifier: await readSystemIdentifier(c),
  };
}

/** Why the repository's owner cannot be compared with this server, and what lets it be. */
export function systemIdentifierDeniedHint(user: string | undefined): string {
  return `user "${user}" may not read this server's (pg_control_system()); connect as a role that may (a superuser or pg_monitor member), or GRANT EXECUTE ON FUNCTION pg_control_system() TO ${user}`;
}

// ---------------------------------------------------------------------------------------------
// Databases, as pg_database lists them

export interface DatabaseInfo {
  name: string;
  oid: number;
  allowConn: boolean;
  template: boolean;
  /** pg_database_size; null when this role may not connect to it. */
  size: number | null;
}

export async function listDatabases(c: pg.Client): Promise<DatabaseInfo[]> {
  const dbs = await c.query<{ name: string; oid: string; allow_conn: boolean; template: boolean; size: string | null }>(
    `SELECT datname AS name, oid::int8 AS oid, datallowconn AS allow_conn, datistemplate AS template,
            CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END AS size
       FROM pg_database ORDER BY datname`,
  );
  return dbs.rows.map((r) => ({ name: r.name, oid: Number(r.oid), allowConn: r.allow_conn, template: r.template, size: r.size === null ? null : Number(r.size) }));
}

/** Every database that accepts connections, templates excluded: what a logical backup dumps by default. */
export async function listDumpableDatabases(conn: ConnectionSettings): Promise<string[]> {
  return withPg(conn, async (c) =>
    (await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname`)).rows.map((r) => r.datname),
  );
}

// ---------------------------------------------------------------------------------------------
// Readiness for a base backup

export interface BaseBackupReadiness {
  serverVersion: string;
  serverVersionNum: number;
  walLevel: string;
  maxWalSenders: number;
  walSendersInUse: number;
  user: string;
  superuser: boolean;
  replication: boolean;
  inRecovery: boolean;
  walSegmentSize: number;
  /** Tablespaces other than pg_default and pg_global. */
  extraTablespaces: { name: string; location: string }[];
  /** Sum of pg_database_size over the databases we may size: an estimate of the backup's size. */
  sizeEstimate: number;
  /** pg_control_system().system_identifier; undefined when this role may not call it. */
  systemIdentifier?: string;
}

export async function readBaseBackupReadiness(conn: ConnectionSettings): Promise<BaseBackupReadiness> {
  return withPg(conn, async (c) => {
    const s = await c.query<{
      version: string;
      version_num: string;
      wal_level: string;
      max_wal_senders: string;
      senders: string;
      usr: string;
      rolsuper: boolean | null;
      rolreplication: boolean | null;
      in_recovery: boolean;
      seg: string;
    }>(
      `SELECT current_setting('server_version') AS version,
              current_setting('server_version_num') AS version_num,
              current_setting('wal_level') AS wal_level,
              current_setting('max_wal_senders') AS max_wal_senders,
              (SELECT count(*) FROM pg_stat_replication) AS senders,
              current_user AS usr,
              r.rolsuper, r.rolreplication,
              pg_is_in_recovery() AS in_recovery,
              pg_size_bytes(current_setting('wal_segment_size')) AS seg
         FROM (SELECT 1) AS one LEFT JOIN pg_roles r ON r.rolname = current_user`,
    );
    const ts = await c.query<{ spcname: string; location: string }>(
      `SELECT spcname, pg_tablespace_location(oid) AS location FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname`,
    );
    const size = await c.query<{ total: string | null }>(
      `SELECT sum(pg_database_size(oid)) AS total FROM pg_database
        WHERE has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'MEMBER')`,
    );
    // pg_control_system() may be revoked from this role: IDENTIFY_SYSTEM gives it too, later.
    const systemIdentifier = await readSystemIdentifier(c);
    const r = s.rows[0];
    return {
      systemIdentifier,
      serverVersion: r.version,
      serverVersionNum: Number(r.version_num),
      walLevel: r.wal_level,
      maxWalSenders: Number(r.max_wal_senders),
      walSendersInUse: Number(r.senders),
      user: r.usr,
      superuser: Boolean(r.rolsuper),
      replication: Boolean(r.rolreplication),
      inRecovery: r.in_recovery,
      walSegmentSize: Number(r.seg),
      extraTablespaces: ts.rows.map((t) => ({ name: t.spcname, location: t.location })),
      sizeEstimate: Number(size.rows[0].total ?? 0),
    };
  });
}

export interface ReadinessCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** Each setting a base backup needs, and when it is missing, what to change. */
export function baseBackupChecks(r: BaseBackupReadiness): ReadinessCheck[] {
  const major = Math.floor(r.serverVersionNum / 10000);
  const walOk = r.walLevel === 'replica' || r.walLevel === 'logical';
  const sendersFree = r.maxWalSenders - r.walSendersInUse;
  const privileged = r.superuser || r.replication;
  return [
    {
      name: 'PostgreSQL 13 or newer',
      ok: major >= 13,
      detail:
        major >= 13
          ? `PostgreSQL ${r.serverVersion} writes backup manifests`
          : `PostgreSQL ${r.serverVersion} has no backup manifests (they came in 13); upgrade the server, or back it up with pg_basebackup directly`,
    },
    {
      name: 'wal_level',
      ok: walOk,
      detail: walOk
        ? `wal_level = ${r.walLevel}`
        : `wal_level is "${r.walLevel}"; a base backup needs "replica" (or "logical"). Set it with ALTER SYSTEM SET wal_level = 'replica' (and max_wal_senders = 10 if it is 0), then restart PostgreSQL`,
    },
    {
      name: 'max_wal_senders',
      ok: r.maxWalSenders > 0 && sendersFree > 0,
      detail:
        r.maxWalSenders === 0
          ? `max_wal_senders is 0; pg_basebackup needs a WAL sender. Set it with ALTER SYSTEM SET max_wal_senders = 10, then restart PostgreSQL`
          : sendersFree <= 0
            ? `all ${r.maxWalSenders} WAL senders are in use (see pg_stat_replication); raise max_wal_senders (needs a restart) or wait for a running backup or replica to disconnect`
            : `max_wal_senders = ${r.maxWalSenders}, ${r.walSendersInUse} in use`,
    },
    {
      name: 'replication privilege',
      ok: privileged,
      detail: privileged
        ? `role "${r.user}" has ${r.superuser ? 'SUPERUSER' : 'REPLICATION'}`
        : `role "${r.user}" has neither REPLICATION nor SUPERUSER; as a superuser run ALTER ROLE ${roleAsTyped(r.user)} REPLICATION, or connect as a role that has it (--user)`,
    },
    {
      name: 'tablespaces',
      ok: r.extraTablespaces.length === 0,
      detail:
        r.extraTablespaces.length === 0
          ? 'only pg_default and pg_global: everything is inside the data directory'
          : `the cluster has tablespaces outside the data directory: ${r.extraTablespaces.map((t) => `${t.name} (${t.location})`).join(', ')}. backup-base streams one tar of the data directory and would not include them. Move their tables and indexes to pg_default (ALTER TABLE ... SET TABLESPACE pg_default; ALTER DATABASE ... SET TABLESPACE pg_default) and DROP TABLESPACE, or back this cluster up with pg_basebackup -Ft -D DIR directly`,
    },
  ];
}

/** Whether a replication connection is worth trying: otherwise its error only repeats the checks above. */
export function replicationPossible(r: BaseBackupReadiness): boolean {
  return (r.walLevel === 'replica' || r.walLevel === 'logical') && r.maxWalSenders > 0 && (r.superuser || r.replication);
}

/** A role name as an operator would type it in a hint: bare when plain, quoted otherwise. */
function roleAsTyped(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : ident(name);
}
