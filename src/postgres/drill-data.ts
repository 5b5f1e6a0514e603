// The drill's sandbox data: three databases seeded like a small product's (IAM, sessions and
// bi-temporal facts, an event graph), the workload written between backup and incident, the
// incidents themselves, and the counts that prove the data came back.
import type { ConnectionSettings } from '../config/connection.js';
import { delay } from '../storage/retry.js';
import { withPg } from './client.js';
import { archiverStatus, switchWalNow } from './recovery.js';
import { ident } from './sql.js';

export const DRILL_DATABASES = ['matih_control_plane', 'matih_data_plane', 'context_graph'];

/** The tables whose rows must come back, database -> tables. */
export const DRILL_CRITICAL: Record<string, string[]> = {
  matih_control_plane: ['public.users', 'public.tenants', 'public.config', 'public.audit_log'],
  matih_data_plane: ['public.sessions', 'public.facts'],
  context_graph: ['public.events', 'public.decisions', 'public.entities', 'public.edges'],
};

const on = (conn: ConnectionSettings, database: string): ConnectionSettings => ({ ...conn, database });

async function exec(conn: ConnectionSettings, database: string, sql: string): Promise<void> {
  await withPg(on(conn, database), (c) => c.query(sql));
}

async function one<T>(conn: ConnectionSettings, database: string, sql: string): Promise<T> {
  return withPg(on(conn, database), async (c) => (await c.query(sql)).rows[0] as T);
}

function seedScripts(n: number): Record<string, string> {
  return {
    matih_control_plane: `
      DROP TABLE IF EXISTS users, tenants, config, audit_log;
      CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL);
      CREATE TABLE users (id int PRIMARY KEY, tenant_id int REFERENCES tenants, email text NOT NULL, created_at timestamptz DEFAULT now());
      CREATE TABLE config (key text PRIMARY KEY, value jsonb);
      CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp(), actor int, action text);
      INSERT INTO tenants SELECT g, 'tenant-' || g FROM generate_series(1, 50) g;
      INSERT INTO users SELECT g, 1 + g % 50, 'user' || g || '@example.com' FROM generate_series(1, ${Math.ceil(n / 4)}) g;
      INSERT INTO config SELECT 'setting.' || g, jsonb_build_object('v', g) FROM generate_series(1, 200) g;
      INSERT INTO audit_log (actor, action) SELECT 1 + g % 1000, 'login' FROM generate_series(1, ${n}) g;`,
    matih_data_plane: `
      DROP TABLE IF EXISTS sessions, facts;
      CREATE TABLE sessions (id bigserial PRIMARY KEY, user_id int, started_at timestamptz DEFAULT clock_timestamp(), ended_at timestamptz);
      CREATE TABLE facts (id bigserial PRIMARY KEY, entity int, value numeric, valid tstzrange, recorded tstzrange DEFAULT tstzrange(now(), NULL));
      INSERT INTO sessions (user_id, ended_at) SELECT 1 + g % 5000, now() FROM generate_series(1, ${n}) g;
      INSERT INTO facts (entity, value, valid) SELECT g % 1000, g * 1.5, tstzrange(now() - interval '1 day', NULL) FROM generate_series(1, ${n}) g;`,
    context_graph: `
      DROP TABLE IF EXISTS events, decisions, entities, edges;
      CREATE TABLE entities (id int PRIMARY KEY, name text);
      CREATE TABLE events (id bigserial PRIMARY KEY, kind text, at timestamptz DEFAULT clock_timestamp(), payload jsonb);
      CREATE TABLE decisions (id bigserial PRIMARY KEY, event_id bigint, outcome text);
      CREATE TABLE edges (src int, dst int, kind text);
      INSERT INTO entities SELECT g, 'entity-' || g FROM generate_series(1, ${Math.ceil(n / 10)}) g;
      INSERT INTO events (kind, payload) SELECT 'observed', jsonb_build_object('n', g) FROM generate_series(1, ${n}) g;
      INSERT INTO decisions (event_id, outcome) SELECT g, CASE WHEN g % 2 = 0 THEN 'accept' ELSE 'reject' END FROM generate_series(1, ${Math.ceil(n / 2)}) g;
      INSERT INTO edges SELECT g % ${Math.ceil(n / 10)} + 1, (g * 7) % ${Math.ceil(n / 10)} + 1, 'relates' FROM generate_series(1, ${n}) g;`,
  };
}

/** Create the three databases (when missing) and fill them with about `rows` rows per large table. */
export async function seedDrillDatabases(conn: ConnectionSettings, rows: number, onSeeded: (done: number, total: number) => void): Promise<void> {
  const existing = await withPg(on(conn, 'postgres'), async (c) => (await c.query<{ datname: string }>('SELECT datname FROM pg_database')).rows.map((r) => r.datname));
  for (const db of DRILL_DATABASES) if (!existing.includes(db)) await exec(conn, 'postgres', `CREATE DATABASE ${ident(db)}`);
  const scripts = seedScripts(rows);
  let done = 0;
  for (const db of DRILL_DATABASES) {
    await exec(conn, db, scripts[db]);
    onSeeded(++done, DRILL_DATABASES.length);
  }
}

/** Rows of every critical table as DATABASE:SCHEMA.TABLE -> count, -1 for a table that is gone. */
export async function countDrillTables(conn: ConnectionSettings): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [db, tables] of Object.entries(DRILL_CRITICAL)) {
    await withPg(on(conn, db), async (c) => {
      for (const t of tables) {
        const exists = await c.query<{ oid: string | null }>(`SELECT to_regclass($1)::oid AS oid`, [t]);
        out[`${db}:${t}`] = exists.rows[0].oid ? Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${t.split('.').map(ident).join('.')}`)).rows[0].n) : -1;
      }
    });
  }
  return out;
}

/** One round of the application's writes: events, audit entries and sessions. */
export async function drillWorkloadRound(conn: ConnectionSettings, round: number): Promise<void> {
  await exec(conn, 'context_graph', `INSERT INTO events (kind, payload) SELECT 'workload', jsonb_build_object('round', ${Number(round)}) FROM generate_series(1, 50)`);
  await exec(conn, 'matih_control_plane', `INSERT INTO audit_log (actor, action) SELECT 7, 'update' FROM generate_series(1, 20)`);
  await exec(conn, 'matih_data_plane', `INSERT INTO sessions (user_id) SELECT g FROM generate_series(1, 20) g`);
}

/** The bad DELETE: a third of context_graph.events. Returns how many rows went. */
export async function deleteThirdOfEvents(conn: ConnectionSettings): Promise<number> {
  const r = await one<{ n: string }>(conn, 'context_graph', `WITH d AS (DELETE FROM events WHERE id % 3 = 0 RETURNING 1) SELECT count(*) AS n FROM d`);
  return Number(r.n);
}

export async function dropUsersTable(conn: ConnectionSettings): Promise<void> {
  await exec(conn, 'matih_control_plane', 'DROP TABLE users');
}

/** The server's clock_timestamp(). */
export async function serverClock(conn: ConnectionSettings): Promise<Date> {
  return (await one<{ t: Date }>(conn, 'postgres', 'SELECT clock_timestamp() AS t')).t;
}

/** The newest event's time: the recovery point the application sees. */
export async function newestEventTime(conn: ConnectionSettings): Promise<Date | null> {
  return (await one<{ t: Date | null }>(conn, 'context_graph', 'SELECT max(at) AS t FROM events')).t;
}

/** pg_switch_wal() and wait until that segment is archived; throws after 60 s naming the server log. */
export async function switchAndWaitArchived(conn: ConnectionSettings, opts: { logFile: string; signal: AbortSignal }): Promise<void> {
  const pg = on(conn, 'postgres');
  const name = await switchWalNow(pg);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const s = await archiverStatus(pg);
    if (s.lastArchived !== null && s.lastArchived >= name) return;
    if (Date.now() > deadline) throw new Error(`WAL segment ${name} was not archived within 60 s (last archived ${s.lastArchived ?? 'none'}, last failed ${s.lastFailed ?? 'none'}); see ${opts.logFile}`);
    opts.signal.throwIfAborted();
    await delay(100, opts.signal);
  }
}
