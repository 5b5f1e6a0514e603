// The incident drill: a whole disaster recovery on a sandbox cluster, with nothing to
// configure. It runs the same procedures an operator would (wal-archiving, backup-base,
// backup-logical, pitr, table-restore), measures RTO and RPO, and proves the data is back.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { StepContext } from '../engine/types.js';
import { formatDuration } from '../engine/format.js';
import { createSandboxCluster } from '../postgres/sandbox.js';
import { isRoot, lookupUser } from '../postgres/osuser.js';
import { pgCtlStart, pgCtlStatus, pgCtlStop } from '../postgres/pgctl.js';
import {
  DRILL_DATABASES,
  countDrillTables,
  deleteThirdOfEvents,
  drillWorkloadRound,
  dropUsersTable,
  newestEventTime,
  seedDrillDatabases,
  serverClock,
  switchAndWaitArchived,
} from '../postgres/drill-data.js';
import type { ConnectionSettings } from '../config/connection.js';
import { openRepository } from '../repo/repository.js';
import type { ProcedureServices } from './services.js';
import { defineProcedure, type Typed } from './define.js';
import { runNested, type NestedSummaries } from './nested.js';
import { walArchivingProcedure } from './wal-archiving.js';
import { backupBaseProcedure } from './backup-base.js';
import { backupLogicalProcedure } from './backup-logical.js';
import { pitrProcedure } from './pitr.js';
import { tableRestoreProcedure } from './table-restore.js';
import { findIncidents } from '../restore/incidents.js';

type Incident = 'bad-delete' | 'dropped-table' | 'lost-datadir';

type Sandbox = {
  baseDir: string;
  dataDir: string;
  host: string;
  port: number;
  logFile: string;
  repo: string;
};

type Via = 'find-target' | 'classic';

type DrillParams = { incident?: Incident; rows?: number; keep?: boolean; via?: Via };

type DrillState = NestedSummaries & {
  sandbox?: Sandbox;
  /** Row counts just before the incident, DATABASE:SCHEMA.TABLE -> rows. */
  before?: Record<string, number>;
  lastGoodAt?: string;
  incidentAt?: string;
  lostDir?: string;
  recoverStartedAt?: string;
  recoveryPointAt?: string;
  verifiedAt?: string;
  rtoMs?: number;
  rpoMs?: number;
  /** find-target's pick: the incident found in the WAL and the target just before it. */
  found?: { kind: string; relation?: string; xid: string; time: string; target: string };
  /** What the newest dump would have given (incident to its snapshot), for the RPO gained. */
  dumpRpoMs?: number;
};

type Ctx = StepContext<Typed<DrillParams, DrillState>>;

const INCIDENTS: Record<Incident, string> = {
  'bad-delete': 'a bad DELETE removes a third of context_graph.events',
  'dropped-table': 'DROP TABLE users in matih_control_plane',
  'lost-datadir': 'the data directory is lost with the host (recovered by PITR to the latest archived WAL)',
};

/** How each incident is recovered: find-target + table-restore --at (default), or the classic way. */
const RECOVERY: Record<Exclude<Incident, 'lost-datadir'>, Record<Via, string>> = {
  'bad-delete': {
    'find-target': 'find-target finds the DELETE in the archived WAL; table-restore --at just before it replaces the rows of events (a scratch cluster beside the sandbox)',
    classic: 'pitr of the whole cluster to just before it',
  },
  'dropped-table': {
    'find-target': 'find-target finds the DROP in the archived WAL; table-restore --at just before it brings users back (a scratch cluster beside the sandbox)',
    classic: 'table-restore from the newest dump',
  },
};

const via = (ctx: Pick<Ctx, 'params'>): Via => ctx.params.via ?? 'find-target';
const usesFindTarget = (ctx: Pick<Ctx, 'params'>) => incident(ctx) !== 'lost-datadir' && via(ctx) === 'find-target';

function sandbox(ctx: Ctx): Sandbox {
  const s = ctx.state.sandbox;
  if (!s) throw new Error('the sandbox was not created (the first step did not finish); start a new drill');
  return s;
}

function conn(ctx: Ctx): ConnectionSettings {
  const s = sandbox(ctx);
  return { host: s.host, port: s.port, user: 'postgres', database: 'postgres' };
}

function sandboxServices(ctx: Ctx): ProcedureServices {
  const s = sandbox(ctx);
  return { connection: conn(ctx), profile: {}, pgdata: s.dataDir, repo: s.repo, env: ctx.services.env };
}

function lastGoodAt(ctx: Ctx): string {
  const t = ctx.state.lastGoodAt;
  if (!t) throw new Error('the journal has no time from before the incident (the incident step did not finish); start a new drill');
  return t;
}

const incident = (ctx: Pick<Ctx, 'params'>): Incident => ctx.params.incident ?? 'bad-delete';
const archiveNow = (ctx: Ctx) => switchAndWaitArchived(conn(ctx), { logFile: sandbox(ctx).logFile, signal: ctx.signal });

export const drillProcedure = defineProcedure<DrillParams, DrillState>({
  id: 'drill',
  title: 'Incident drill on a sandbox cluster',
  summary: 'Archive, back up, break something, restore with the real procedures, verify, and report the measured RTO and RPO.',
  group: 'drill',
  params: [
    { name: 'incident', type: 'choice', choices: Object.keys(INCIDENTS), default: 'bad-delete', description: 'what goes wrong: bad-delete, dropped-table or lost-datadir' },
    { name: 'rows', type: 'number', default: 20000, description: 'rows per large table in the seeded databases (progress is more visible with more)', example: '100000' },
    { name: 'keep', type: 'boolean', default: false, description: 'keep the sandbox cluster and repository afterwards instead of removing them' },
    {
      name: 'via',
      type: 'choice',
      choices: ['find-target', 'classic'],
      default: 'find-target',
      description: 'bad-delete and dropped-table: find the incident in the WAL (find-target) and restore the table as it was just before it (table-restore --at), or the classic way (pitr of the whole cluster; the newest dump)',
    },
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
      describe: (ctx) => `Creating matih_control_plane (IAM, tenants, config, audit log), matih_data_plane (sessions, bi-temporal facts) and context_graph (events, decisions, entities, edges) with about ${ctx.params.rows ?? 20000} rows per large table.`,
      async run(ctx) {
        await seedDrillDatabases(conn(ctx), ctx.params.rows ?? 20000, (done, total) => ctx.progress({ done, total, unit: 'databases' }));
        const counts = await countDrillTables(conn(ctx));
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
        await runNested(ctx, backupLogicalProcedure, { databases: DRILL_DATABASES, parallel: 2 }, sandboxServices(ctx), { label: 'backup-logical' });
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
          await drillWorkloadRound(conn(ctx), i);
          ctx.progress({ done: i, total: rounds, unit: 'rounds' });
        }
        await archiveNow(ctx);
      },
    },
    {
      id: 'incident',
      title: 'Cause the incident',
      kind: 'action',
      describe: (ctx) => `Incident: ${INCIDENTS[incident(ctx)]}.`,
      async run(ctx) {
        ctx.state.before = await countDrillTables(conn(ctx));
        ctx.state.lastGoodAt = (await serverClock(conn(ctx))).toISOString();
        switch (incident(ctx)) {
          case 'bad-delete': {
            const n = await deleteThirdOfEvents(conn(ctx));
            ctx.log(`deleted every third row of events: ${n} rows gone`, 'warn');
            break;
          }
          case 'dropped-table':
            await dropUsersTable(conn(ctx));
            ctx.log('DROP TABLE users in matih_control_plane', 'warn');
            break;
          case 'lost-datadir':
            break;
        }
        ctx.state.incidentAt = (await serverClock(conn(ctx))).toISOString();
        await archiveNow(ctx);
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
      describe: (ctx) => (incident(ctx) === 'lost-datadir' ? 'pitr: the newest base backup, WAL replayed to the latest archived segment, promoted.' : `${RECOVERY[incident(ctx) as Exclude<Incident, 'lost-datadir'>][via(ctx)]}.`),
      async run(ctx) {
        ctx.state.recoverStartedAt ??= new Date().toISOString();
        ctx.state.dumpRpoMs = await dumpRpo(ctx);
        if (usesFindTarget(ctx)) return recoverAtIncident(ctx);
        if (incident(ctx) === 'dropped-table') {
          await runNested(ctx, tableRestoreProcedure, { database: 'matih_control_plane', table: 'public.users', mode: 'new-table', newTable: 'users' }, sandboxServices(ctx), { label: 'table-restore' });
          ctx.state.recoveryPointAt = new Date(Date.parse(ctx.state.incidentAt ?? '') - (ctx.state.dumpRpoMs ?? 0)).toISOString();
        } else {
          const target = incident(ctx) === 'lost-datadir' ? 'latest' : lastGoodAt(ctx);
          await runNested(ctx, pitrProcedure, { target, targetAction: 'promote', databases: DRILL_DATABASES }, sandboxServices(ctx), { confirm: ['data'], label: 'pitr' });
          // The newest row that came back is the recovery point the application sees.
          ctx.state.recoveryPointAt = (await newestEventTime(conn(ctx)))?.toISOString();
        }
      },
    },
    {
      id: 'verify',
      title: 'Verify the data from before the incident is back',
      kind: 'verify',
      describe: () => 'Counting every table of the three databases and comparing with the counts taken just before the incident.',
      async run(ctx) {
        const before = ctx.state.before ?? {};
        const after = await countDrillTables(conn(ctx));
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
        const rto = Date.parse(ctx.state.verifiedAt ?? '') - Date.parse(ctx.state.recoverStartedAt ?? '');
        const incidentAt = Date.parse(ctx.state.incidentAt ?? '');
        const point = ctx.state.recoveryPointAt ? Date.parse(ctx.state.recoveryPointAt) : undefined;
        const rpo = point !== undefined ? Math.max(0, incidentAt - point) : undefined;
        ctx.state.rtoMs = rto;
        ctx.state.rpoMs = rpo;
        ctx.log(`incident: ${INCIDENTS[incident(ctx)]}`);
        ctx.log(`RTO (recovery started to data verified): ${formatDuration(rto)}`);
        // RPO in what it costs: the seconds of commits before the incident that did not come back.
        const fromDump = incident(ctx) === 'dropped-table' && !usesFindTarget(ctx);
        const lost = rpo === undefined ? 'unknown' : `data lost: ${dataLostSeconds(rpo)} s of commits`;
        const between = fromDump ? 'between the dump restored and the incident' : 'between the last recovered commit and the incident';
        ctx.log(`RPO: ${lost} (${between})`);
        ctx.fact('Incident', INCIDENTS[incident(ctx)]);
        if (incident(ctx) !== 'lost-datadir') ctx.fact('Recovered by', RECOVERY[incident(ctx) as Exclude<Incident, 'lost-datadir'>][via(ctx)]);
        if (ctx.state.found) ctx.fact('Found in the WAL', `${ctx.state.found.kind} of ${ctx.state.found.relation ?? '?'} by transaction ${ctx.state.found.xid} at ${ctx.state.found.time}; target ${ctx.state.found.target}`);
        ctx.fact('RTO', `${formatDuration(rto)} (recovery started to data verified)`);
        ctx.fact('RPO', rpo === undefined ? 'unknown' : `${lost} (${between})`);
        if (usesFindTarget(ctx) && rpo !== undefined && ctx.state.dumpRpoMs !== undefined) {
          ctx.fact('RPO gained', `${formatDuration(Math.max(0, ctx.state.dumpRpoMs - rpo))} less data lost than with the newest dump (which would have lost ${dataLostSeconds(ctx.state.dumpRpoMs)} s of commits)`);
        }
        ctx.check('RTO measured', true, formatDuration(rto));
        ctx.check('RPO measured', rpo !== undefined, rpo === undefined ? 'no recovery point found' : lost);
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
        // Retries: the sandbox's WAL pusher may still write into its spool for a moment (ENOTEMPTY).
        await fsp.rm(s.baseDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
        ctx.log(`removed ${s.baseDir}`);
      },
    },
  ],
});

/** Whole seconds under a minute keep one decimal ("0.4", "12.3"); longer ones are whole ("95"). */
export function dataLostSeconds(ms: number): string {
  const s = ms / 1000;
  return s < 60 ? s.toFixed(1) : String(Math.round(s));
}

/** The incident as find-target sees it in the archived WAL, then the table as it was just before it. */
async function recoverAtIncident(ctx: Ctx): Promise<void> {
  const bad = incident(ctx) === 'bad-delete';
  const table = bad ? 'public.events' : 'public.users';
  const database = bad ? 'context_graph' : 'matih_control_plane';
  const since = new Date(Date.parse(lastGoodAt(ctx)) - 60_000);
  const incidents = await findIncidents({ repoUrl: sandbox(ctx).repo, env: ctx.services.env, connection: conn(ctx), since, until: new Date(), table, signal: ctx.signal });
  const found = incidents.find((i) => i.database === database && i.kind === (bad ? 'delete' : 'drop-table'));
  if (!found) throw new Error(`find-target did not find the ${bad ? 'DELETE from' : 'DROP of'} ${table} in the archived WAL (it found: ${incidents.map((i) => `${i.kind} ${i.relation ?? '?'}`).join(', ') || 'nothing'}); recover with --via classic`);
  ctx.state.found = { kind: found.kind, relation: found.relation, xid: found.xid, time: found.time, target: found.target };
  ctx.log(`find-target: ${found.kind} of ${found.relation} by transaction ${found.xid} at ${found.time}${found.rows !== null ? ` (${found.rows} rows)` : ''}; recovering to ${found.target}, just before it`);
  const params = bad
    ? { database, table, mode: 'replace', at: found.target }
    : { database, table, mode: 'new-table', newTable: 'users', at: found.target };
  await runNested(ctx, tableRestoreProcedure, params, sandboxServices(ctx), { confirm: [`${database}.${table}`], label: 'table-restore' });
  // Everything committed before the incident is back: the recovery point is the incident's commit.
  ctx.state.recoveryPointAt = bad ? (await newestEventTime(conn(ctx)))?.toISOString() : found.time;
}

/** How much the newest dump of the incident's database would have lost (incident to its snapshot). */
async function dumpRpo(ctx: Ctx): Promise<number | undefined> {
  if (incident(ctx) === 'lost-datadir') return undefined;
  const database = incident(ctx) === 'bad-delete' ? 'context_graph' : 'matih_control_plane';
  const repo = await openRepository(sandbox(ctx).repo, ctx.services.env);
  try {
    const dump = (await repo.catalog()).dumps.filter((d) => d.complete && d.database === database).at(-1);
    const at = dump?.meta?.consistentAt ?? dump?.meta?.startTime;
    return at ? Math.max(0, Date.parse(ctx.state.incidentAt ?? '') - Date.parse(at)) : undefined;
  } finally {
    await repo.close();
  }
}
