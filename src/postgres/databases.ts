// Databases as whole objects: which exist and who owns them, the connected user's rights, and
// creating (same encoding and locale as another), dropping (only ever a database a run created),
// and swapping names (both renames in one transaction).
import type { ConnectionSettings } from '../config/connection.js';
import { errorMessage } from '../engine/runner.js';
import { withPg } from './client.js';
import { ident, literal } from './sql.js';

/** The server and the connected role, and the databases there are (name -> owner). */
export interface ServerAndRole {
  versionNum: number;
  version: string;
  superuser: boolean;
  createdb: boolean;
  user: string;
  databases: Map<string, string>;
}

export async function serverAndRole(conn: ConnectionSettings): Promise<ServerAndRole> {
  return withPg(conn, async (c) => {
    const v = await c.query<{ num: string; version: string; superuser: boolean; createdb: boolean; user: string }>(
      `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version,
              r.rolsuper AS superuser, r.rolcreatedb AS createdb, current_user AS user
         FROM pg_roles r WHERE r.rolname = current_user`,
    );
    const dbs = await c.query<{ datname: string; owner: string }>(`SELECT datname, pg_get_userbyid(datdba) AS owner FROM pg_database`);
    const row = v.rows[0];
    return {
      versionNum: Number(row.num),
      version: row.version,
      superuser: row.superuser,
      createdb: row.createdb,
      user: row.user,
      databases: new Map(dbs.rows.map((r) => [r.datname, r.owner])),
    };
  });
}

/** A connection for CREATE/ALTER/DROP DATABASE: never one of `avoid` (a database cannot be renamed or dropped from inside). */
export async function maintenanceConnection(conn: ConnectionSettings, avoid: string[]): Promise<ConnectionSettings> {
  const candidates = [conn.database, 'postgres', 'template1'].filter((d): d is string => Boolean(d) && !avoid.includes(d!));
  let lastError: unknown;
  for (const database of candidates) {
    try {
      await withPg({ ...conn, database }, async () => {});
      return { ...conn, database };
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(`no database to work from (tried ${candidates.join(', ')}): ${errorMessage(lastError)}`);
}

export async function databaseExists(conn: ConnectionSettings, name: string): Promise<boolean> {
  return withPg(conn, async (c) => (await c.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [name])).rows.length > 0);
}

/** Every database's oid by name. */
export async function databaseOids(conn: ConnectionSettings): Promise<Map<string, string>> {
  return withPg(conn, async (c) => new Map((await c.query<{ datname: string; oid: string }>(`SELECT datname, oid::text AS oid FROM pg_database`)).rows.map((r) => [r.datname, r.oid])));
}

/** The owner of the database `conn` is connected to. */
export async function databaseOwner(conn: ConnectionSettings): Promise<string> {
  return withPg(conn, async (c) => (await c.query<{ o: string }>(`SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = current_database()`)).rows[0].o);
}

/** Whether the connected user may give a database to `role`: it must exist, and the user be a superuser or a member of it. */
export async function mayGiveDatabaseTo(maint: ConnectionSettings, role: string): Promise<'ok' | 'missing' | 'not-allowed'> {
  return withPg(maint, async (c) => {
    const r = await c.query<{ ok: boolean }>(
      `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(current_user, oid, 'MEMBER') AS ok FROM pg_roles WHERE rolname = $1`,
      [role],
    );
    if (!r.rows.length) return 'missing';
    return r.rows[0].ok ? 'ok' : 'not-allowed';
  });
}

/** The CREATE DATABASE clauses that give a new database the same encoding and locale as `like` (and the owner, when given). */
export async function createDatabaseClauses(maint: ConnectionSettings, like: string | undefined, owner?: string): Promise<string> {
  const ownerClause = owner ? ` OWNER ${ident(owner)}` : '';
  if (!like) return `TEMPLATE template0${ownerClause}`;
  return withPg(maint, async (c) => {
    const num = Number((await c.query<{ n: string }>(`SELECT current_setting('server_version_num') AS n`)).rows[0].n);
    const cols =
      num >= 170000
        ? `datlocprovider::text AS provider, datlocale AS icu`
        : num >= 150000
          ? `datlocprovider::text AS provider, daticulocale AS icu`
          : `'c'::text AS provider, NULL::text AS icu`;
    const r = await c.query<{ encoding: string; collate: string; ctype: string; provider: string; icu: string | null }>(
      `SELECT pg_encoding_to_char(encoding) AS encoding, datcollate AS collate, datctype AS ctype, ${cols} FROM pg_database WHERE datname = $1`,
      [like],
    );
    const d = r.rows[0];
    if (!d) return `TEMPLATE template0${ownerClause}`;
    let sql = `TEMPLATE template0 ENCODING ${literal(d.encoding)} LC_COLLATE ${literal(d.collate)} LC_CTYPE ${literal(d.ctype)}`;
    if (d.provider === 'i' && d.icu) sql += ` LOCALE_PROVIDER icu ICU_LOCALE ${literal(d.icu)}`;
    else if (d.provider === 'b' && d.icu) sql += ` LOCALE_PROVIDER builtin BUILTIN_LOCALE ${literal(d.icu)}`;
    return sql + ownerClause;
  });
}

/** CREATE DATABASE, unless the name is taken (checked again here: another session may have taken it since the checks). */
export async function createDatabase(maint: ConnectionSettings, name: string, clauses: string): Promise<'created' | 'exists'> {
  return withPg(maint, async (c) => {
    if ((await c.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [name])).rows.length > 0) return 'exists';
    await c.query(`CREATE DATABASE ${ident(name)} ${clauses}`);
    return 'created';
  });
}

/** `DROP DATABASE ... WITH (FORCE)` (before PostgreSQL 13: its sessions ended first). */
export async function dropDatabaseForce(maint: ConnectionSettings, name: string): Promise<void> {
  await withPg(maint, async (c) => {
    try {
      await c.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
    } catch (err) {
      // Before PostgreSQL 13 there is no FORCE: end the sessions, then drop.
      if ((err as { code?: string }).code !== '42601') throw err;
      await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [name]);
      await c.query(`DROP DATABASE IF EXISTS ${ident(name)}`);
    }
  });
}

/**
 * Give `restored` the name `original`, keeping the original (when it exists) as `replaced`: the
 * sessions of both are terminated, then both renames happen in one transaction, or neither. A
 * session that reconnects in between makes it try again (up to 10 times).
 */
export async function swapDatabaseNames(
  maint: ConnectionSettings,
  o: { original: string; restored: string; replaced: string; originalExists: boolean; serverVersionNum: number; signal: AbortSignal; log: (message: string, level?: 'info' | 'warn') => void },
): Promise<void> {
  await withPg({ ...maint, applicationName: 'pgrunbook logical-restore' }, async (c) => {
    const waitArg = o.serverVersionNum >= 140000 ? ', 5000' : '';
    for (let attempt = 1; ; attempt++) {
      o.signal.throwIfAborted();
      const killed = await c.query<{ n: string }>(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid${waitArg})) AS n FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()`,
        [[o.original, o.restored]],
      );
      if (Number(killed.rows[0].n) > 0) o.log(`terminated ${killed.rows[0].n} session(s) of ${o.original} and ${o.restored}`);
      try {
        await c.query('BEGIN');
        if (o.originalExists) await c.query(`ALTER DATABASE ${ident(o.original)} RENAME TO ${ident(o.replaced)}`);
        await c.query(`ALTER DATABASE ${ident(o.restored)} RENAME TO ${ident(o.original)}`);
        await c.query('COMMIT');
        return;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        // 55006: a session (re)connected between the termination and the rename: try again.
        if ((err as { code?: string }).code === '55006' && attempt < 10) {
          o.log(`a session is still connected (${errorMessage(err)}); terminating again (attempt ${attempt + 1})`, 'warn');
          await new Promise((r) => setTimeout(r, 100 * attempt));
          continue;
        }
        throw new Error(`renaming failed, nothing was renamed: ${errorMessage(err)}${(err as { code?: string }).code === '55006' ? '. Sessions keep reconnecting: stop the applications using them, then resume' : ''}`);
      }
    }
  });
}

// What an operator runs by hand, quoted as the server needs it: for messages.
export const byHand = {
  dropDatabase: (name: string, force = true) => `DROP DATABASE ${ident(name)}${force ? ' WITH (FORCE)' : ''};`,
  alterDatabaseOwner: (database: string, role?: string) => `ALTER DATABASE ${ident(database)} OWNER TO ${role === undefined ? '<role>' : ident(role)};`,
  allowCreatedb: (user: string) => `ALTER ROLE ${ident(user)} CREATEDB`,
  createSchema: (schema: string) => `CREATE SCHEMA ${ident(schema)};`,
  grantReplicationRole: (user: string) => `GRANT SET ON PARAMETER session_replication_role TO ${ident(user)}`,
};
