// A profile is a saved set of connection, data directory, server control, databases,
// critical tables, repository and monitoring thresholds. Flags and environment variables
// override it, so automation needs no profile at all.
import type { ConnectionSettings } from './connection.js';
import { parseConnectionString } from './connection.js';
import { errorMessage } from '../engine/errors.js';
import { pgrunbookCommand } from '../engine/command-name.js';

export interface CriticalTable {
  database: string;
  /** schema.table, or table (public schema). */
  table: string;
  minRows?: number;
}

export interface ServerControl {
  method: 'pg_ctl' | 'systemd' | 'commands';
  /** systemd unit, e.g. postgresql@15-main */
  unit?: string;
  start?: string;
  stop?: string;
  status?: string;
  /**
   * Names of variables passed from pgrunbook's environment to the server when it starts or
   * restarts it; by default it gets only PATH, LANG/LC_* and TZ (secrets stay out of the postmaster).
   */
  passEnv?: string[];
}

export interface MonitoringThresholds {
  maxDumpAgeHours: number;
  maxBaseBackupAgeHours: number;
  sizeDeviationPercent: number;
  maxArchiveLagSegments: number;
  /** Days after which the last `catalog --verify` is stale (status warns). */
  maxVerifyAgeDays: number;
  /** Warning when the newest passed restore-test is older; critical when the newest failed or none exists after this age. */
  maxRestoreTestAgeDays: number;
}

export interface Profile {
  connection?: ConnectionSettings & { conninfo?: string };
  pgdata?: string;
  server?: ServerControl;
  databases?: string[];
  criticalTables?: CriticalTable[];
  repo?: string;
  /** Path of the file holding an encrypted repository's passphrase; never the passphrase itself. */
  repoKeyFile?: string;
  serverLog?: string;
  monitoring?: Partial<MonitoringThresholds>;
  /** What the retention procedure keeps; its flags override these. */
  retention?: RetentionSettings;
}

export interface RetentionSettings {
  /** Complete base backups to keep (default 7). */
  baseBackups?: number;
  /** Days to keep dumps for; the newest dump of each database is always kept (default 7). */
  dumpDays?: number;
}

export const DEFAULT_THRESHOLDS: MonitoringThresholds = {
  maxDumpAgeHours: 2,
  maxBaseBackupAgeHours: 26,
  sizeDeviationPercent: 50,
  maxArchiveLagSegments: 100,
  maxVerifyAgeDays: 8,
  maxRestoreTestAgeDays: 8,
};

const PROFILE_KEYS = ['connection', 'pgdata', 'server', 'databases', 'criticalTables', 'repo', 'repoKeyFile', 'serverLog', 'monitoring', 'retention'];

/** Every problem with a profile, each naming the field and how to fix it. */
export function validateProfile(name: string, raw: unknown): string[] {
  const errors: string[] = [];
  const at = (field: string) => `profile "${name}": ${field}`;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return [`profile "${name}" is not an object; recreate it with: ${pgrunbookCommand(`profile save ${name}`)} ...`];
  const p = raw as Record<string, unknown>;
  for (const key of Object.keys(p)) {
    if (!PROFILE_KEYS.includes(key)) errors.push(`${at(key)} is not a known setting; known settings: ${PROFILE_KEYS.join(', ')}`);
  }
  if (p.connection !== undefined) {
    const c = p.connection as Record<string, unknown>;
    if (typeof c !== 'object' || c === null) errors.push(`${at('connection')} must be an object with host, port, user, database`);
    else {
      if (c.port !== undefined && !(Number.isInteger(c.port) && (c.port as number) > 0 && (c.port as number) < 65536)) {
        errors.push(`${at('connection.port')} must be a port number (1-65535), got ${JSON.stringify(c.port)}`);
      }
      for (const k of ['host', 'user', 'database', 'password', 'conninfo']) {
        if (c[k] !== undefined && typeof c[k] !== 'string') errors.push(`${at(`connection.${k}`)} must be a string`);
      }
      if (typeof c.conninfo === 'string') {
        try {
          parseConnectionString(c.conninfo);
        } catch (err) {
          errors.push(`${at('connection.conninfo')}: ${errorMessage(err)}`);
        }
      }
    }
  }
  if (p.pgdata !== undefined && (typeof p.pgdata !== 'string' || !p.pgdata.startsWith('/'))) {
    errors.push(`${at('pgdata')} must be an absolute path to the data directory, e.g. /var/lib/postgresql/15/main`);
  }
  if (p.server !== undefined) {
    const s = p.server as Record<string, unknown>;
    if (!['pg_ctl', 'systemd', 'commands'].includes(String(s?.method))) {
      errors.push(`${at('server.method')} must be pg_ctl, systemd or commands, got ${JSON.stringify(s?.method)}`);
    } else if (s.method === 'systemd' && typeof s.unit !== 'string') {
      errors.push(`${at('server.unit')} is needed with server.method systemd, e.g. postgresql@15-main`);
    } else if (s.method === 'commands' && (typeof s.start !== 'string' || typeof s.stop !== 'string')) {
      errors.push(`${at('server.start')} and server.stop are needed with server.method commands (shell commands)`);
    }
    if (s?.passEnv !== undefined && !(Array.isArray(s.passEnv) && s.passEnv.every((n) => typeof n === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(n)))) {
      errors.push(`${at('server.passEnv')} must be a list of environment variable names to pass to the server, e.g. ["PGRUNBOOK_REPO"]`);
    }
  }
  if (p.databases !== undefined && !(Array.isArray(p.databases) && p.databases.every((d) => typeof d === 'string' && d))) {
    errors.push(`${at('databases')} must be a list of database names`);
  }
  if (p.criticalTables !== undefined) {
    if (!Array.isArray(p.criticalTables)) errors.push(`${at('criticalTables')} must be a list of {database, table, minRows}`);
    else
      p.criticalTables.forEach((t, i) => {
        const ct = t as Record<string, unknown>;
        if (typeof ct?.database !== 'string' || typeof ct?.table !== 'string') {
          errors.push(`${at(`criticalTables[${i}]`)} needs database and table, e.g. {"database":"app","table":"public.users","minRows":1}`);
        } else if (ct.minRows !== undefined && !(Number.isInteger(ct.minRows) && (ct.minRows as number) >= 0)) {
          errors.push(`${at(`criticalTables[${i}].minRows`)} must be a whole number >= 0`);
        }
      });
  }
  if (p.repoKeyFile !== undefined && (typeof p.repoKeyFile !== 'string' || !p.repoKeyFile.startsWith('/'))) errors.push(`${at('repoKeyFile')} must be an absolute file path`);
  if (p.repo !== undefined && (typeof p.repo !== 'string' || !/^(file|s3|azure):\/\/|^\//.test(p.repo))) {
    errors.push(`${at('repo')} must be a repository URL: file:///path, s3://bucket/prefix or azure://container/prefix`);
  }
  if (p.monitoring !== undefined) {
    const m = p.monitoring as Record<string, unknown>;
    for (const key of Object.keys(m ?? {})) {
      if (!(key in DEFAULT_THRESHOLDS)) errors.push(`${at(`monitoring.${key}`)} is not a threshold; known: ${Object.keys(DEFAULT_THRESHOLDS).join(', ')}`);
      else if (typeof m[key] !== 'number' || (m[key] as number) <= 0) errors.push(`${at(`monitoring.${key}`)} must be a positive number`);
    }
  }
  if (p.retention !== undefined) {
    const r = p.retention as Record<string, unknown>;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) errors.push(`${at('retention')} must be an object like {"baseBackups": 7, "dumpDays": 7}`);
    else {
      for (const key of Object.keys(r)) {
        if (key !== 'baseBackups' && key !== 'dumpDays') errors.push(`${at(`retention.${key}`)} is not a retention setting; known: baseBackups, dumpDays`);
      }
      if (r.baseBackups !== undefined && !(Number.isInteger(r.baseBackups) && (r.baseBackups as number) >= 1)) {
        errors.push(`${at('retention.baseBackups')} must be a whole number of at least 1 (the newest base backup is always kept), got ${JSON.stringify(r.baseBackups)}`);
      }
      if (r.dumpDays !== undefined && !(typeof r.dumpDays === 'number' && Number.isFinite(r.dumpDays) && r.dumpDays >= 0)) {
        errors.push(`${at('retention.dumpDays')} must be a number of days, 0 or more, got ${JSON.stringify(r.dumpDays)}`);
      }
    }
  }
  return errors;
}

/** `db:schema.table` or `db:table`, optionally `:MIN` (expected minimum rows). */
export function parseCriticalTable(spec: string): CriticalTable | { error: string } {
  const m = /^([^:]+):([^:]+?)(?::(\d+))?$/.exec(spec.trim());
  if (!m) return { error: `--critical-tables: "${spec}" should look like DATABASE:SCHEMA.TABLE or DATABASE:SCHEMA.TABLE:MIN_ROWS (e.g. app:public.users:100)` };
  return { database: m[1], table: m[2], minRows: m[3] !== undefined ? Number(m[3]) : undefined };
}

export function profileHasSecrets(p: Profile): boolean {
  return Boolean(p.connection?.password || (p.connection?.conninfo && /password\s*=/i.test(p.connection.conninfo)) || (p.repo && /[?&](sig|password|secret|accountkey|sas|token)=/i.test(p.repo)));
}

/**
 * Why a profile may not be saved as it is: it holds a database password (in connection.password
 * or its connection string). Passwords belong in a password file, which libpq's tools read too.
 * The message never shows the password.
 */
export function profilePasswordRefusal(p: Profile): string | undefined {
  const c = p.connection;
  if (!c) return undefined;
  let inConninfo = false;
  if (c.conninfo) {
    try {
      inConninfo = Boolean(parseConnectionString(c.conninfo).password);
    } catch {
      inConninfo = /password\s*=/i.test(c.conninfo);
    }
  }
  if (!c.password && !inConninfo) return undefined;
  return (
    'a profile does not store a database password, and this one holds one (in --dbname). ' +
    'Save the profile without it (e.g. postgresql://user@host:port/db), and put the password in a password file: ' +
    '~/.pgpass, or the file PGPASSFILE names, one line host:port:database:user:password, mode 0600.'
  );
}
