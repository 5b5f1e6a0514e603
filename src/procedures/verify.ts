// Post-restore verification: can we connect, does every database answer, do the critical
// tables hold what they should, and did the server log anything alarming.
// The connect, databases and critical-tables steps are exported: pitr and promote verify a
// recovered server with the same steps, their State including VerifyState.
import type { Step, StepContext } from '../engine/types.js';
import { parseCriticalTable, type CriticalTable } from '../config/profile.js';
import { describeConnection, type ConnectionSettings } from '../config/connection.js';
import { firstReadable, logfilePath } from '../postgres/archiver.js';
import { countRows, probeDatabase, serverOverview } from '../postgres/checks.js';
import { LOG_LEVELS, parseSince, scanServerLog, serverLogVerdict, type LogLevelName } from '../postgres/server-log-scan.js';
import { defineProcedure, type Typed } from './define.js';

export { parseSince, scanServerLog } from '../postgres/server-log-scan.js';
export { quoteQualified } from '../postgres/checks.js';

export type VerifyParams = {
  databases?: string[];
  criticalTables?: string[];
  serverLog?: string;
  since?: string;
  logFailLevel?: LogLevelName;
};

export type VerifyState = {
  serverVersion?: string;
  /** Databases that accept connections, as the connect step found them. */
  allDatabases?: string[];
  dataDirectory?: string;
  currentLogfile?: string;
  rowCounts?: Record<string, number>;
};

type VerifyTypes = Typed<VerifyParams, VerifyState>;
type Ctx = StepContext<VerifyTypes>;
/** A verify step, usable by any procedure whose Params and State include verify's. */
export type VerifyStep = Step<VerifyTypes>;

/** The --critical-tables specs that do not parse, each as a message naming the fix. */
export function criticalTableErrors(specs: string[] | undefined): string[] {
  const errors: string[] = [];
  for (const spec of specs ?? []) {
    const parsed = parseCriticalTable(spec);
    if ('error' in parsed) errors.push(parsed.error);
  }
  return errors;
}

export const verifyConnectStep: VerifyStep = {
  id: 'connect',
  title: 'Connect to the server',
  kind: 'check',
  describe: (ctx) => `Connecting to ${describeConnection(ctx.services.connection)} to read the server version and its databases.`,
  plan: (ctx) => [`connect to ${describeConnection(ctx.services.connection)} and read its version`],
  async run(ctx) {
    const conn = ctx.services.connection;
    const info = await serverOverview(conn);
    ctx.state.serverVersion = info.version;
    ctx.state.allDatabases = info.databases;
    ctx.state.dataDirectory = info.dataDirectory;
    ctx.state.currentLogfile = info.logfile;
    ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${info.version}${info.inRecovery ? ', in recovery (read-only)' : ''}`);
  },
};

export const verifyDatabasesStep: VerifyStep = {
  id: 'databases',
  title: 'Query every database',
  kind: 'verify',
  describe: () => 'Running a trivial query and a catalog query in each database, to prove each one opens and its catalog is readable.',
  plan: (ctx) => targetDatabases(ctx).map((db) => `connect to ${db}; a trivial query; count pg_class`),
  async run(ctx) {
    const all = ctx.state.allDatabases ?? [];
    for (const db of targetDatabases(ctx)) {
      ctx.signal.throwIfAborted();
      if (!all.includes(db)) {
        ctx.check(`database ${db}`, false, `does not exist or does not accept connections (existing: ${all.join(', ') || 'none'})`);
        continue;
      }
      try {
        const relations = await probeDatabase(dbConnection(ctx, db));
        ctx.check(`database ${db}`, true, `trivial and catalog queries ok (${relations} relations)`);
      } catch (err) {
        ctx.check(`database ${db}`, false, (err as Error).message);
      }
    }
  },
};

export const verifyTablesStep: VerifyStep = {
  id: 'critical-tables',
  title: 'Count rows of critical tables',
  kind: 'verify',
  describe: () => 'Counting rows exactly (count(*)) in each critical table, against the expected minimum where one is given.',
  skipIf: (ctx) => (criticalTables(ctx).length === 0 ? 'no critical tables given (pass --critical-tables DB:SCHEMA.TABLE[:MIN] or set criticalTables in the profile)' : undefined),
  plan: (ctx) => criticalTables(ctx).map((t) => `count(*) of ${t.table} in ${t.database}${t.minRows !== undefined ? `, expect >= ${t.minRows}` : ''}`),
  async run(ctx) {
    const tables = criticalTables(ctx);
    const counts: Record<string, number> = {};
    let done = 0;
    for (const t of tables) {
      ctx.signal.throwIfAborted();
      const label = `${t.database}:${t.table}`;
      try {
        const count = await countRows(dbConnection(ctx, t.database), t.table);
        if (count === undefined) {
          ctx.check(`table ${label}`, false, `missing: table ${t.table} does not exist in database ${t.database}`);
        } else {
          counts[label] = count;
          const expected = t.minRows !== undefined ? ` (expected at least ${t.minRows})` : '';
          if (t.minRows !== undefined && count < t.minRows) ctx.check(`table ${label}`, false, `${count} rows, expected at least ${t.minRows}`);
          else ctx.check(`table ${label}`, true, `${count} rows${expected}`);
        }
      } catch (err) {
        ctx.check(`table ${label}`, false, (err as Error).message);
      }
      ctx.progress({ done: ++done, total: tables.length, unit: 'tables' });
    }
    ctx.state.rowCounts = counts;
  },
};

const verifyServerLogStep: VerifyStep = {
  id: 'server-log',
  title: 'Scan the server log for errors',
  kind: 'verify',
  describe: (ctx) => `Looking for ERROR, FATAL and PANIC lines since ${ctx.params.since ?? '1h'} in the server log.`,
  skipIf: (ctx) => (findServerLog(ctx) ? undefined : 'no server log found: pass --server-log PATH (or set serverLog in the profile); logging_collector is off or the log is not readable here'),
  plan: (ctx) => [`read ${findServerLog(ctx)} from ${ctx.params.since ?? '1h'} ago`],
  async run(ctx) {
    const file = findServerLog(ctx)!;
    const since = parseSince(ctx.params.since ?? '1h', new Date())!;
    const found = await scanServerLog(file, since, ctx.signal);
    for (const l of found.slice(-5)) ctx.log(l.text, l.level === 'error' || l.routine ? 'warn' : 'error');
    const verdict = serverLogVerdict(found, ctx.params.logFailLevel ?? 'fatal', since, file);
    ctx.check('server log', verdict.ok, verdict.ok ? verdict.summary : `${verdict.summary}; first: ${verdict.failing[0].text}`);
  },
};

export const verifyProcedure = defineProcedure<VerifyParams, VerifyState>({
  id: 'verify',
  title: 'Verify a PostgreSQL cluster',
  summary: 'Connectivity, every database, critical table row counts, and server log errors: a pass/fail checklist.',
  group: 'verify',
  params: [
    { name: 'databases', type: 'list', description: 'databases to check (default: the profile\'s, else every database that accepts connections)', example: 'app,reporting' },
    {
      name: 'criticalTables',
      type: 'list',
      description: 'tables whose rows must be there, as DATABASE:SCHEMA.TABLE[:MIN_ROWS]',
      example: 'app:public.users:100',
    },
    { name: 'serverLog', type: 'string', description: 'server log file to scan (default: the profile\'s, else pg_current_logfile())', example: '/var/log/postgresql/postgresql-15-main.log' },
    { name: 'since', type: 'string', description: 'scan log lines from this time: ISO 8601, or an age like 30m, 2h, 1d', default: '1h', example: '2026-11-24T03:00:00Z' },
    { name: 'logFailLevel', type: 'choice', choices: [...LOG_LEVELS], default: 'fatal', description: 'the lowest log level that fails the check (lower levels are counted and shown)' },
  ],
  validate(params) {
    const errors = criticalTableErrors(params.criticalTables);
    if (params.since !== undefined && parseSince(params.since, new Date()) === undefined) {
      errors.push(`--since: "${params.since}" is neither an ISO 8601 time (2026-11-24T03:00:00Z) nor an age (30m, 2h, 1d)`);
    }
    return errors;
  },
  steps: [verifyConnectStep, verifyDatabasesStep, verifyTablesStep, verifyServerLogStep],
});

function targetDatabases(ctx: Ctx): string[] {
  const given = ctx.params.databases;
  if (given?.length) return given;
  const profileDbs = ctx.services.profile.databases;
  if (profileDbs?.length) return profileDbs;
  return ctx.state.allDatabases ?? [];
}

function criticalTables(ctx: Ctx): CriticalTable[] {
  const given = ctx.params.criticalTables ?? [];
  if (given.length) return given.map((s) => parseCriticalTable(s)).filter((t): t is CriticalTable => !('error' in t));
  return ctx.services.profile.criticalTables ?? [];
}

function dbConnection(ctx: Ctx, database: string): ConnectionSettings {
  return { ...ctx.services.connection, database };
}

function findServerLog(ctx: Ctx): string | undefined {
  const svc = ctx.services;
  const candidates: (string | undefined)[] = [ctx.params.serverLog, svc.profile.serverLog];
  candidates.push(logfilePath(ctx.state.currentLogfile, ctx.state.dataDirectory ?? svc.pgdata));
  return firstReadable(candidates);
}
