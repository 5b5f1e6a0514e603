// Post-restore verification: can we connect, does every database answer, do the critical
// tables hold what they should, and did the server log anything alarming.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Procedure, StepContext } from '../engine/types.js';
import { parseCriticalTable, type CriticalTable } from '../config/profile.js';
import { describeConnection, type ConnectionSettings } from '../config/connection.js';
import { withPg } from '../postgres/client.js';
import { services } from './services.js';

const LEVELS = ['error', 'fatal', 'panic'] as const;

export const verifyProcedure: Procedure = {
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
    { name: 'logFailLevel', type: 'choice', choices: [...LEVELS], default: 'panic', description: 'the lowest log level that fails the check (lower levels are reported)' },
  ],
  validate(params) {
    const errors: string[] = [];
    for (const spec of (params.criticalTables as string[] | undefined) ?? []) {
      const parsed = parseCriticalTable(spec);
      if ('error' in parsed) errors.push(parsed.error);
    }
    if (params.since !== undefined && parseSince(String(params.since), new Date()) === undefined) {
      errors.push(`--since: "${params.since}" is neither an ISO 8601 time (2026-11-24T03:00:00Z) nor an age (30m, 2h, 1d)`);
    }
    return errors;
  },
  steps: [
    {
      id: 'connect',
      title: 'Connect to the server',
      kind: 'check',
      describe: (ctx) => `Connecting to ${describeConnection(services(ctx).connection)} to read the server version and its databases.`,
      plan: (ctx) => [`connect to ${describeConnection(services(ctx).connection)} and run SELECT version()`],
      async run(ctx) {
        const conn = services(ctx).connection;
        const info = await withPg(conn, async (c) => {
          const v = await c.query<{ version: string; in_recovery: boolean; data_directory: string | null; logfile: string | null }>(
            `SELECT current_setting('server_version') AS version, pg_is_in_recovery() AS in_recovery,
                    CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory,
                    CASE WHEN pg_has_role('pg_monitor', 'member') THEN pg_current_logfile() END AS logfile`,
          );
          const dbs = await c.query<{ datname: string }>(
            `SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname`,
          );
          return { ...v.rows[0], databases: dbs.rows.map((r) => r.datname) };
        });
        ctx.state.serverVersion = info.version;
        ctx.state.allDatabases = info.databases;
        ctx.state.dataDirectory = info.data_directory ?? undefined;
        ctx.state.currentLogfile = info.logfile ?? undefined;
        ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${info.version}${info.in_recovery ? ', in recovery (read-only)' : ''}`);
      },
    },
    {
      id: 'databases',
      title: 'Query every database',
      kind: 'verify',
      describe: () => 'Running SELECT 1 and a catalog query in each database, to prove each one opens and its catalog is readable.',
      plan: (ctx) => targetDatabases(ctx).map((db) => `connect to ${db}; SELECT 1; count pg_class`),
      async run(ctx) {
        const all = (ctx.state.allDatabases as string[] | undefined) ?? [];
        for (const db of targetDatabases(ctx)) {
          ctx.signal.throwIfAborted();
          if (!all.includes(db)) {
            ctx.check(`database ${db}`, false, `does not exist or does not accept connections (existing: ${all.join(', ') || 'none'})`);
            continue;
          }
          try {
            const relations = await withPg(dbConnection(ctx, db), async (c) => {
              await c.query('SELECT 1');
              const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_catalog.pg_class`);
              return Number(r.rows[0].n);
            });
            ctx.check(`database ${db}`, true, `SELECT 1 and catalog query ok (${relations} relations)`);
          } catch (err) {
            ctx.check(`database ${db}`, false, (err as Error).message);
          }
        }
      },
    },
    {
      id: 'critical-tables',
      title: 'Count rows of critical tables',
      kind: 'verify',
      describe: () => 'Counting rows exactly (SELECT count(*)) in each critical table, against the expected minimum where one is given.',
      skipIf: (ctx) => (criticalTables(ctx).length === 0 ? 'no critical tables given (pass --critical-tables DB:SCHEMA.TABLE[:MIN] or set criticalTables in the profile)' : undefined),
      plan: (ctx) => criticalTables(ctx).map((t) => `SELECT count(*) FROM ${t.table} in ${t.database}${t.minRows !== undefined ? `, expect >= ${t.minRows}` : ''}`),
      async run(ctx) {
        const tables = criticalTables(ctx);
        const counts: Record<string, number> = {};
        let done = 0;
        for (const t of tables) {
          ctx.signal.throwIfAborted();
          const label = `${t.database}:${t.table}`;
          try {
            const count = await withPg(dbConnection(ctx, t.database), async (c) => {
              const found = await c.query<{ oid: string | null }>(`SELECT to_regclass($1)::oid AS oid`, [t.table]);
              if (!found.rows[0].oid) return undefined;
              const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${quoteQualified(t.table)}`);
              return Number(r.rows[0].n);
            });
            if (count === undefined) {
              ctx.check(`table ${label}`, false, `missing: table ${t.table} does not exist in database ${t.database}`);
            } else {
              counts[label] = count;
              if (t.minRows !== undefined && count < t.minRows) {
                ctx.check(`table ${label}`, false, `${count} rows, expected at least ${t.minRows}`);
              } else {
                ctx.check(`table ${label}`, true, `${count} rows${t.minRows !== undefined ? ` (expected at least ${t.minRows})` : ''}`);
              }
            }
          } catch (err) {
            ctx.check(`table ${label}`, false, (err as Error).message);
          }
          ctx.progress({ done: ++done, total: tables.length, unit: 'tables' });
        }
        ctx.state.rowCounts = counts;
      },
    },
    {
      id: 'server-log',
      title: 'Scan the server log for errors',
      kind: 'verify',
      describe: (ctx) => `Looking for ERROR, FATAL and PANIC lines since ${String(ctx.params.since ?? '1h')} in the server log.`,
      skipIf: (ctx) => (findServerLog(ctx) ? undefined : 'no server log found: pass --server-log PATH (or set serverLog in the profile); logging_collector is off or the log is not readable here'),
      plan: (ctx) => [`read ${findServerLog(ctx)} from ${String(ctx.params.since ?? '1h')} ago`],
      async run(ctx) {
        const file = findServerLog(ctx)!;
        const since = parseSince(String(ctx.params.since ?? '1h'), new Date())!;
        const failLevel = LEVELS.indexOf((ctx.params.logFailLevel as (typeof LEVELS)[number]) ?? 'panic');
        const found = await scanServerLog(file, since, ctx.signal);
        const counts = { error: found.filter((l) => l.level === 'error').length, fatal: found.filter((l) => l.level === 'fatal').length, panic: found.filter((l) => l.level === 'panic').length };
        for (const l of found.slice(-5)) ctx.log(l.text, l.level === 'error' ? 'warn' : 'error');
        const failing = found.filter((l) => LEVELS.indexOf(l.level) >= failLevel);
        const summary = `${counts.error} ERROR, ${counts.fatal} FATAL, ${counts.panic} PANIC since ${since.toISOString()} in ${file}`;
        ctx.check('server log', failing.length === 0, failing.length ? `${summary}; first: ${failing[0].text}` : summary);
      },
    },
  ],
};

function targetDatabases(ctx: StepContext): string[] {
  const given = ctx.params.databases as string[] | undefined;
  if (given?.length) return given;
  const profileDbs = services(ctx).profile.databases;
  if (profileDbs?.length) return profileDbs;
  return (ctx.state.allDatabases as string[] | undefined) ?? [];
}

function criticalTables(ctx: StepContext): CriticalTable[] {
  const given = (ctx.params.criticalTables as string[] | undefined) ?? [];
  if (given.length) return given.map((s) => parseCriticalTable(s)).filter((t): t is CriticalTable => !('error' in t));
  return services(ctx).profile.criticalTables ?? [];
}

function dbConnection(ctx: StepContext, database: string): ConnectionSettings {
  return { ...services(ctx).connection, database };
}

/** "schema.table" or "table" to a safely quoted identifier. */
export function quoteQualified(name: string): string {
  return name
    .split('.')
    .map((part) => (part.startsWith('"') ? part : `"${part.replace(/"/g, '""')}"`))
    .join('.');
}

function findServerLog(ctx: StepContext): string | undefined {
  const svc = services(ctx);
  const candidates: (string | undefined)[] = [ctx.params.serverLog as string | undefined, svc.profile.serverLog];
  const current = ctx.state.currentLogfile as string | undefined;
  const dataDir = (ctx.state.dataDirectory as string | undefined) ?? svc.pgdata;
  if (current) candidates.push(path.isAbsolute(current) ? current : dataDir ? path.join(dataDir, current) : undefined);
  for (const c of candidates) {
    if (!c) continue;
    try {
      fs.accessSync(c, fs.constants.R_OK);
      return c;
    } catch {
      /* try the next */
    }
  }
  return undefined;
}

export function parseSince(text: string, now: Date): Date | undefined {
  const age = /^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$/i.exec(text.trim());
  if (age) {
    const n = Number(age[1]);
    const unit = age[2].toLowerCase();
    const ms = unit === 's' ? 1000 : unit === 'm' || unit === 'min' ? 60_000 : unit === 'h' ? 3_600_000 : 86_400_000;
    return new Date(now.getTime() - n * ms);
  }
  if (!/^\d{4}-\d\d-\d\d/.test(text)) return undefined;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

interface LogLine {
  level: (typeof LEVELS)[number];
  text: string;
}

// PostgreSQL's default log_line_prefix starts with %m: "2026-11-24 15:56:17.123 UTC [42] ".
const STAMP = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: ([A-Z]{2,5}|[+-]\d\d(?::?\d\d)?))?/;
const LEVEL = /\b(ERROR|FATAL|PANIC):\s/;

export async function scanServerLog(file: string, since: Date, signal?: AbortSignal): Promise<LogLine[]> {
  const out: LogLine[] = [];
  const input = fs.createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  // Lines without a timestamp continue the previous entry (DETAIL, STATEMENT, stack traces).
  let inWindow = false;
  try {
    for await (const line of lines) {
      signal?.throwIfAborted();
      const stamp = STAMP.exec(line);
      if (stamp) {
        const when = logTime(stamp[1], stamp[2]);
        // An unknown time zone abbreviation: keep the line rather than miss an error.
        inWindow = when === undefined || when >= since;
      }
      if (!inWindow) continue;
      const level = LEVEL.exec(line);
      if (level) out.push({ level: level[1].toLowerCase() as LogLine['level'], text: line.length > 300 ? line.slice(0, 300) + '…' : line });
    }
  } finally {
    lines.close();
    input.destroy();
  }
  return out;
}

function logTime(stamp: string, zone: string | undefined): Date | undefined {
  const iso = stamp.replace(' ', 'T');
  if (!zone || zone === 'UTC' || zone === 'GMT') return new Date(iso + 'Z');
  if (/^[+-]\d\d/.test(zone)) {
    const z = zone.length === 3 ? `${zone}:00` : zone.includes(':') ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`;
    return new Date(iso + z);
  }
  return undefined;
}
