// The incident drill: a whole disaster recovery on a sandbox cluster, with nothing to
// configure. It runs the same procedures an operator would (wal-archiving, backup-base,
// backup-logical, pitr, table-restore), measures RTO and RPO, and proves the data is back.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Procedure, StepContext } from '../engine/types.js';
import { formatDuration } from '../engine/format.js';
import { withPg } from '../postgres/client.js';
import { createSandboxCluster } from '../postgres/sandbox.js';
import { isRoot, lookupUser } from '../postgres/osuser.js';
import { pgCtlStart, pgCtlStatus, pgCtlStop } from '../postgres/pgctl.js';
import type { ConnectionSettings } from '../config/connection.js';
import { openRepository } from '../storage/repository.js';
import { services, type ProcedureServices } from './services.js';
import { runNested } from './nested.js';
import { walArchivingProcedure } from './wal-archiving.js';
import { backupBaseProcedure } from './backup-base.js';
import { backupLogicalProcedure } from './backup-logical.js';
import { pitrProcedure } from './pitr.js';
import { tableRestoreProcedure } from './table-restore.js';

type Incident = 'bad-delete' | 'dropped-table' | 'lost-datadir';

interface Sandbox {
  baseDir: string;
  dataDir: string;
  host: string;
  port: number;
  logFile: string;
  repo: string;
}

const DATABASES = ['matih_control_plane', 'matih_data_plane', 'context_graph'];

/** The tables whose rows must come back, database -> tables. */
const CRITICAL: Record<string, string[]> = {
  matih_control_plane: ['public.users', 'public.tenants', 'public.config', 'public.audit_log'],
  matih_data_plane: ['public.sessions', 'public.facts'],
  context_graph: ['public.events', 'public.decisions', 'public.entities', 'public.edges'],
};

const INCIDENTS: Record<Incident, string> = {
  'bad-delete': 'a bad DELETE removes a third of context_graph.events (recovered by PITR to just before it)',
  'dropped-table': 'DROP TABLE users in matih_control_plane (recovered from the hourly dump by table-restore)',
  'lost-datadir': 'the data directory is lost with the host (recovered by PITR to the latest archived WAL)',
};

function sandbox(ctx: StepContext): Sandbox {
  const s = ctx.state.sandbox as Sandbox | undefined;
  if (!s) throw new Error('the sandbox was not created (the first step did not finish); start a new drill');
  return s;
}

function conn(ctx: StepContext, database = 'postgres'): ConnectionSettings {
  const s = sandbox(ctx);
  return { host: s.host, port: s.port, user: 'postgres', database };
}

function sandboxServices(ctx: StepContext): ProcedureServices {
  const s = sandbox(ctx);
  return { connection: conn(ctx), profile: {}, pgdata: s.dataDir, repo: s.repo, env: services(ctx).env };
}

function incident(ctx: StepContext): Incident {
  return (ctx.params.incident as Incident | undefined) ?? 'bad-delete';
}

async function q<T = Record<string, unknown>>(ctx: StepContext, database: string, sql: string): Promise<T[]> {
  return withPg(conn(ctx, database), async (c) => (await c.query(sql)).rows as T[]);
}

async function countAll(ctx: StepContext): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [db, tables] of Object.entries(CRITICAL)) {
    for (const t of tables) {
      const [exists] = await q<{ oid: string | null }>(ctx, db, `SELECT to_regclass('${t}')::oid AS oid`);
      out[`${db}:${t}`] = exists.oid ? Number((await q<{ n: string }>(ctx, db, `SELECT count(*) AS n FROM ${t}`))[0].n) : -1;
    }
  }
  return out;
}

async function switchAndWaitArchived(ctx: StepContext): Promise<void> {
  const [{ name }] = await q<{ name: string }>(ctx, 'postgres', `SELECT pg_walfile_name(pg_switch_wal()) AS name`);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const [s] = await q<{ last: string | null; failed: string | null }>(ctx, 'postgres', `SELECT last_archived_wal AS last, last_failed_wal AS failed FROM pg_stat_archiver`);
    if (s.last !== null && s.last >= name) return;
    if (Date.now() > deadline) throw new Error(`WAL segment ${name} was not archived within 60 s (last archived ${s.last ?? 'none'}, last failed ${s.failed ?? 'none'}); see ${sandbox(ctx).logFile}`);
    ctx.signal.throwIfAborted();
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const drillProcedure: Procedure = {
  id: 'drill',
  title: 'Incident drill on a sandbox cluster',
  summary: 'Archive, back up, break something, restore with the real procedures, verify, and report the measured RTO and RPO.',
  group: 'drill',
  params: [
    { name: 'incident', type: 'choice', choices: Object.keys(INCIDENTS), default: 'bad-delete', description: 'what goes wrong: bad-delete, dropped-table or lost-datadir' },
    { name: 'rows', type: 'number', default: 20000, description: 'rows per large table in the seeded databases (progress is more visible with more)', example: '100000' },
    { name: 'keep', type: 'boolean', default: false, description: 'keep the sandbox cluster and repository afterwards instead of removing them' },
  ],
  validate(params) {
    const n = Number(params.rows ?? 20000);
    return Number.isInteger(n) && n >= 100 && n <= 10_000_000 ? [] : ['--rows: a whole number between 100 and 10000000'];
  },
  steps: [
    {
      id: 'sandbox',
      title: 'Create a sandbox cluster and repository',
      kind: 'action',
      describe: () => 'initdb into a temporary directory, a free port and its own socket directory; a local-directory repository beside it. Your own clusters are not touched.',
      plan: () => ['initdb a sandbox cluster in a temp dir', 'mkdir a file:// repository beside it'],
      async run(ctx) {
        if (ctx.state.sandbox && fs.existsSync(sandbox(ctx).dataDir)) {
          const s = sandbox(ctx);
          if (!(await pgCtlStatus(s.dataDir)).running) await pgCtlStart({ pgdata: s.dataDir, logFile: s.logFile });
          return;
        }
        const cluster = await createSandboxCluster({ name: `drill-${ctx.runId}`, persistent: true });
        const repoDir = path.join(cluster.baseDir, 'repository');
        await fsp.mkdir(repoDir);
        if (isRoot()) {
          const pg = await lookupUser('postgres');
          await fsp.chown(repoDir, pg.uid, pg.gid);
        }
        ctx.state.sandbox = { baseDir: cluster.baseDir, dataDir: cluster.dataDir, host: cluster.host, port: cluster.port, logFile: cluster.logFile, repo: `file://${repoDir}` } satisfies Sandbox;
        ctx.log(`sandbox cluster in ${cluster.dataDir} (port ${cluster.port}), repository file://${repoDir}`);
      },
    },
    {
      id: 'seed',
      title: 'Seed the three databases',
      kind: 'action',
      describe: (ctx) => `Creating matih_control_plane (IAM, tenants, config, audit log), matih_data_plane (sessions, bi-temporal facts) and context_graph (events, decisions, entities, edges) with about ${String(ctx.params.rows)} rows per large table.`,
      async run(ctx) {
        const n = Number(ctx.params.rows ?? 20000);
        const existing = (await q<{ datname: string }>(ctx, 'postgres', 'SELECT datname FROM pg_database')).map((r) => r.datname);
        for (const db of DATABASES) if (!existing.includes(db)) await q(ctx, 'postgres', `CREATE DATABASE ${db}`);
        const scripts: Record<string, string> = {
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
        let done = 0;
        for (const db of DATABASES) {
          await q(ctx, db, scripts[db]);
          ctx.progress({ done: ++done, total: DATABASES.length, unit: 'databases' });
        }
        const counts = await countAll(ctx);
        ctx.log(`seeded: ${Object.entries(counts).map(([k, v]) => `${k.split(':')[1].replace('public.', '')} ${v}`).join(', ')}`);
      },
    },
    {
      id: 'archiving',
      title: 'Turn on WAL archiving (wal-archiving procedure)',
      kind: 'action',
      describe: () => 'The wal-archiving procedure sets archive_command to pgrunbook wal-push, restarts the sandbox, and proves a segment arrives.',
      async run(ctx) {
        await runNested(ctx, walArchivingProcedure, {}, sandboxServices(ctx), { confirm: ['data'], label: 'wal-archiving' });
      },
    },
    {
      id: 'backup',
      title: 'Take a base backup and the logical backups',
      kind: 'action',
      describe: () => 'backup-base (pg_basebackup, WAL included, manifest verified) and backup-logical (pg_dump -Fc of every database with exact row counts), into the sandbox repository.',
      async run(ctx) {
        await runNested(ctx, backupBaseProcedure, { checkpoint: 'fast' }, sandboxServices(ctx), { label: 'backup-base' });
        await runNested(ctx, backupLogicalProcedure, { databases: DATABASES, parallel: 2 }, sandboxServices(ctx), { label: 'backup-logical' });
      },
    },
    {
      id: 'workload',
      title: 'Run a workload',
      kind: 'action',
      describe: () => 'Writing events, audit entries and sessions for a few seconds, as the application would; all of it is archived.',
      async run(ctx) {
        const rounds = 20;
        for (let i = 1; i <= rounds; i++) {
          ctx.signal.throwIfAborted();
          await q(ctx, 'context_graph', `INSERT INTO events (kind, payload) SELECT 'workload', jsonb_build_object('round', ${i}) FROM generate_series(1, 50)`);
          await q(ctx, 'matih_control_plane', `INSERT INTO audit_log (actor, action) SELECT 7, 'update' FROM generate_series(1, 20)`);
          await q(ctx, 'matih_data_plane', `INSERT INTO sessions (user_id) SELECT g FROM generate_series(1, 20) g`);
          ctx.progress({ done: i, total: rounds, unit: 'rounds' });
        }
        await switchAndWaitArchived(ctx);
      },
    },
    {
      id: 'incident',
      title: 'Cause the incident',
      kind: 'action',
      describe: (ctx) => `Incident: ${INCIDENTS[incident(ctx)]}.`,
      async run(ctx) {
        ctx.state.before = await countAll(ctx);
        const [{ t }] = await q<{ t: Date }>(ctx, 'postgres', 'SELECT clock_timestamp() AS t');
        ctx.state.lastGoodAt = t.toISOString();
        switch (incident(ctx)) {
          case 'bad-delete': {
            const [{ n }] = await q<{ n: string }>(ctx, 'context_graph', `WITH d AS (DELETE FROM events WHERE id % 3 = 0 RETURNING 1) SELECT count(*) AS n FROM d`);
            ctx.log(`DELETE FROM events WHERE id % 3 = 0: ${n} rows gone`, 'warn');
            break;
          }
          case 'dropped-table':
            await q(ctx, 'matih_control_plane', 'DROP TABLE users');
            ctx.log('DROP TABLE users in matih_control_plane', 'warn');
            break;
          case 'lost-datadir':
            break;
        }
        const [{ at }] = await q<{ at: Date }>(ctx, 'postgres', 'SELECT clock_timestamp() AS at');
        ctx.state.incidentAt = at.toISOString();
        await switchAndWaitArchived(ctx);
        if (incident(ctx) === 'lost-datadir') {
          const s = sandbox(ctx);
          await pgCtlStop({ pgdata: s.dataDir, mode: 'immediate' });
          const lost = path.join(s.baseDir, `lost-${Date.now()}`);
          await fsp.rename(s.dataDir, lost);
          ctx.state.lostDir = lost;
          ctx.log(`the server crashed and its data directory is gone (moved to ${lost} to simulate the loss)`, 'warn');
        }
      },
    },
    {
      id: 'recover',
      title: 'Recover with the fitting procedure',
      kind: 'action',
      describe: (ctx) =>
        incident(ctx) === 'dropped-table'
          ? 'table-restore: the users table from the newest dump, restored under its own name.'
          : `pitr: the newest base backup before the target, WAL replayed to ${incident(ctx) === 'lost-datadir' ? 'the latest archived segment' : 'just before the incident'}, promoted.`,
      async run(ctx) {
        ctx.state.recoverStartedAt ??= new Date().toISOString();
        if (incident(ctx) === 'dropped-table') {
          await runNested(ctx, tableRestoreProcedure, { database: 'matih_control_plane', table: 'public.users', mode: 'new-table', newTable: 'users' }, sandboxServices(ctx), { label: 'table-restore' });
          const repo = await openRepository(sandbox(ctx).repo, services(ctx).env);
          try {
            const dump = (await repo.catalog()).dumps.filter((d) => d.complete && d.database === 'matih_control_plane').at(-1);
            ctx.state.recoveryPointAt = dump?.meta?.consistentAt ?? dump?.meta?.startTime;
          } finally {
            await repo.close();
          }
        } else {
          const target = incident(ctx) === 'lost-datadir' ? 'latest' : String(ctx.state.lastGoodAt);
          await runNested(ctx, pitrProcedure, { target, targetAction: 'promote', databases: DATABASES }, sandboxServices(ctx), { confirm: ['data'], label: 'pitr' });
          // The newest row that came back is the recovery point the application sees.
          const [{ t }] = await q<{ t: Date | null }>(ctx, 'context_graph', 'SELECT max(at) AS t FROM events');
          ctx.state.recoveryPointAt = t?.toISOString();
        }
      },
    },
    {
      id: 'verify',
      title: 'Verify the data from before the incident is back',
      kind: 'verify',
      describe: () => 'Counting every table of the three databases and comparing with the counts taken just before the incident.',
      async run(ctx) {
        const before = ctx.state.before as Record<string, number>;
        const after = await countAll(ctx);
        for (const [key, n] of Object.entries(before)) {
          if (incident(ctx) === 'dropped-table' && key !== 'matih_control_plane:public.users') {
            ctx.check(key, after[key] === n, `${after[key]} rows (before the incident: ${n})`);
            continue;
          }
          ctx.check(key, after[key] === n, after[key] === -1 ? 'missing' : `${after[key]} rows (before the incident: ${n})`);
        }
        ctx.state.verifiedAt = new Date().toISOString();
      },
    },
    {
      id: 'report',
      title: 'Report RTO and RPO',
      kind: 'verify',
      async run(ctx) {
        const rto = Date.parse(String(ctx.state.verifiedAt)) - Date.parse(String(ctx.state.recoverStartedAt));
        const incidentAt = Date.parse(String(ctx.state.incidentAt));
        const point = ctx.state.recoveryPointAt ? Date.parse(String(ctx.state.recoveryPointAt)) : undefined;
        const rpo = point !== undefined ? Math.max(0, incidentAt - point) : undefined;
        ctx.state.rtoMs = rto;
        ctx.state.rpoMs = rpo;
        ctx.log(`incident: ${INCIDENTS[incident(ctx)]}`);
        ctx.log(`RTO (recovery started to data verified): ${formatDuration(rto)}`);
        ctx.log(`RPO (incident to the recovery point${incident(ctx) === 'dropped-table' ? ', the dump' : ', the last recovered commit'}): ${rpo === undefined ? 'unknown' : formatDuration(rpo)}`);
        ctx.fact('Incident', INCIDENTS[incident(ctx)]);
        ctx.fact('RTO', `${formatDuration(rto)} (recovery started to data verified)`);
        ctx.fact('RPO', rpo === undefined ? 'unknown' : `${formatDuration(rpo)} (incident to the ${incident(ctx) === 'dropped-table' ? 'dump restored' : 'last recovered commit'})`);
        ctx.check('RTO measured', true, formatDuration(rto));
        ctx.check('RPO measured', rpo !== undefined, rpo === undefined ? 'no recovery point found' : formatDuration(rpo));
      },
    },
    {
      id: 'cleanup',
      title: 'Remove the sandbox',
      kind: 'action',
      describe: (ctx) => `Stopping the sandbox cluster and removing ${ctx.state.sandbox ? sandbox(ctx).baseDir : 'its directory'} (cluster, repository, moved-aside copies).`,
      skipIf: (ctx) => (ctx.params.keep ? `kept: ${ctx.state.sandbox ? sandbox(ctx).baseDir : ''} (stop it with pg_ctl -D DATADIR stop)` : undefined),
      async run(ctx) {
        const s = sandbox(ctx);
        const ok = await ctx.confirm({ message: `Remove the drill sandbox in ${s.baseDir}?` });
        if (!ok) {
          ctx.log(`kept ${s.baseDir}; stop the cluster with pg_ctl -D ${s.dataDir} stop and remove the directory when done`, 'warn');
          return;
        }
        if (fs.existsSync(s.dataDir) && (await pgCtlStatus(s.dataDir)).running) await pgCtlStop({ pgdata: s.dataDir, mode: 'fast' });
        await fsp.rm(s.baseDir, { recursive: true, force: true });
        ctx.log(`removed ${s.baseDir}`);
      },
    },
  ],
};
