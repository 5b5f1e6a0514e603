// Server settings and what the server says about itself: pg_settings (with pending_restart),
// pg_file_settings (what the next restart brings), ALTER SYSTEM with its rollback, and
// pg_reload_conf(). Callers hold the connection; nothing here decides what a setting should be.
import type pg from 'pg';
import { withPg, type PgConnection } from './client.js';
import { ident, literal } from './sql.js';

export interface ServerInfo {
  version: string;
  versionNum: number;
  inRecovery: boolean;
  superuser: boolean;
  port: number;
  /** data_directory, when this user may read it (pg_read_all_settings). */
  dataDirectory?: string;
  /** pg_current_logfile(), when this user may call it (pg_monitor) and logging_collector is on. */
  currentLogfile?: string;
  /** pg_postmaster_start_time(), as text: changes with every restart. */
  postmasterStart: string;
}

export async function readServerInfo(c: pg.Client): Promise<ServerInfo> {
  const r = await c.query<{
    version: string;
    num: number;
    in_recovery: boolean;
    superuser: boolean;
    port: number;
    data_directory: string | null;
    logfile: string | null;
    started: string;
  }>(
    `SELECT current_setting('server_version') AS version, current_setting('server_version_num')::int AS num,
            pg_is_in_recovery() AS in_recovery, current_setting('is_superuser') = 'on' AS superuser,
            current_setting('port')::int AS port,
            CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory,
            CASE WHEN pg_has_role('pg_monitor', 'member') THEN pg_current_logfile() END AS logfile,
            pg_postmaster_start_time()::text AS started`,
  );
  const row = r.rows[0];
  return {
    version: row.version,
    versionNum: row.num,
    inRecovery: row.in_recovery,
    superuser: row.superuser,
    port: row.port,
    dataDirectory: row.data_directory ?? undefined,
    currentLogfile: row.logfile ?? undefined,
    postmasterStart: row.started,
  };
}

/** The server's data_directory, when this user may read it. */
export async function readDataDirectory(c: pg.Client): Promise<string | undefined> {
  const r = await c.query<{ d: string | null }>(`SELECT CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS d`);
  return r.rows[0].d ?? undefined;
}

/** pg_current_logfile(), when this user may call it and the logging collector writes one. */
export async function readCurrentLogfile(conn: PgConnection): Promise<string | undefined> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ f: string | null }>(`SELECT CASE WHEN pg_has_role('pg_monitor', 'member') THEN pg_current_logfile() END AS f`);
    return r.rows[0].f ?? undefined;
  });
}

/** pg_postmaster_start_time(), as text: changes with every restart. */
export async function readPostmasterStart(c: pg.Client): Promise<string> {
  return (await c.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t')).rows[0].t;
}

/** pg_postmaster_start_time() now, or undefined when the server does not answer within 5 s. */
export async function postmasterStartTime(conn: PgConnection): Promise<string | undefined> {
  try {
    return await withPg({ ...conn, connectTimeoutSec: 5 }, readPostmasterStart);
  } catch {
    return undefined;
  }
}

export interface SettingRow {
  name: string;
  setting: string;
  /** The configured value (reset_val): archive_command shows "(disabled)" in `setting` while archive_mode is off. */
  resetVal: string;
  pendingRestart: boolean;
}

export async function readSettings(c: pg.Client, names: readonly string[]): Promise<SettingRow[]> {
  const r = await c.query<{ name: string; setting: string; reset_val: string; pending_restart: boolean }>(
    `SELECT name, setting, reset_val, pending_restart FROM pg_settings WHERE name = ANY($1)`,
    [names],
  );
  return r.rows.map((row) => ({ name: row.name, setting: row.setting, resetVal: row.reset_val, pendingRestart: row.pending_restart }));
}

/** The value the configuration files give each setting (the last valid one): what the next restart brings. Superusers only. */
export async function readFileSettings(c: pg.Client, names: readonly string[]): Promise<Record<string, string>> {
  const r = await c.query<{ name: string; setting: string }>(
    `SELECT DISTINCT ON (name) name, setting FROM pg_file_settings WHERE name = ANY($1) AND error IS NULL ORDER BY name, seqno DESC`,
    [names],
  );
  return Object.fromEntries(r.rows.map((row) => [row.name, row.setting]));
}

/** postgresql.auto.conf's values for these settings (null: not set there), to roll back to; undefined when this user may not read pg_file_settings. */
export async function readAutoConf(c: pg.Client, names: readonly string[]): Promise<Record<string, string | null> | undefined> {
  try {
    const r = await c.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%/postgresql.auto.conf' AND name = ANY($1) ORDER BY seqno`,
      [names],
    );
    const out: Record<string, string | null> = Object.fromEntries(names.map((n) => [n, null]));
    for (const row of r.rows) out[row.name] = row.setting;
    return out;
  } catch {
    return undefined;
  }
}

/** Lines that could not be applied from the configuration files, "file: name error". */
export async function configFileErrors(c: pg.Client): Promise<string[]> {
  return c
    .query<{ name: string | null; error: string; sourcefile: string }>(`SELECT name, error, sourcefile FROM pg_file_settings WHERE error IS NOT NULL`)
    .then((r) => r.rows.map((e) => `${e.sourcefile}: ${e.name ?? ''} ${e.error}`))
    .catch(() => []);
}

/** The statement that sets `name` to `value` in postgresql.auto.conf, as run and as shown. */
export function alterSystemText(name: string, value: string): string {
  // escapeLiteral writes a value with backslashes as " E'...'", with a leading space.
  return `ALTER SYSTEM SET ${name} = ${literal(value).trimStart()}`;
}

/** The statement that removes `name` from postgresql.auto.conf, as run and as shown. */
export function alterSystemResetText(name: string): string {
  return `ALTER SYSTEM RESET ${name}`;
}

/** The reload, as shown in plans. */
export const RELOAD_TEXT = 'SELECT pg_reload_conf()';

/** `name` is a server setting's name from our own list: ALTER SYSTEM takes no parameters. */
export async function alterSystemSet(c: pg.Client, name: string, value: string): Promise<void> {
  await c.query(alterSystemText(name, value));
}

export async function alterSystemReset(c: pg.Client, name: string): Promise<void> {
  await c.query(alterSystemResetText(name));
}

export async function reloadConf(c: pg.Client): Promise<void> {
  await c.query('SELECT pg_reload_conf()');
}

/** What a non-superuser lacks to switch WAL and reload the configuration, as the GRANTs that would give it. */
export async function missingFunctionGrants(c: pg.Client): Promise<string[]> {
  const r = await c.query<{ can_switch: boolean; can_reload: boolean }>(
    `SELECT has_function_privilege('pg_switch_wal()', 'EXECUTE') AS can_switch, has_function_privilege('pg_reload_conf()', 'EXECUTE') AS can_reload`,
  );
  const out: string[] = [];
  if (!r.rows[0].can_switch) out.push('GRANT EXECUTE ON FUNCTION pg_switch_wal() TO <user>');
  if (!r.rows[0].can_reload) out.push('GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <user>');
  return out;
}

/** The settings `user` may not change with ALTER SYSTEM (PostgreSQL 15+), as the GRANTs that would allow it. */
export async function missingAlterSystemGrants(conn: PgConnection, names: readonly string[], user: string): Promise<string[]> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ name: string; ok: boolean }>(`SELECT n AS name, has_parameter_privilege(n, 'ALTER SYSTEM') AS ok FROM unnest($1::text[]) AS n`, [names]);
    return r.rows.filter((x) => !x.ok).map((x) => `GRANT ALTER SYSTEM ON PARAMETER ${x.name} TO ${ident(user)}`);
  });
}
