// Continuous WAL archiving: read wal_level, archive_mode, archive_command, archive_timeout and
// pg_stat_archiver; propose the settings that archive into the repository with `pgrunbook
// wal-push`; apply them (ALTER SYSTEM, after a confirmation); restart when wal_level or
// archive_mode changed (only after a typed confirmation); then force a segment switch and prove
// the segment arrived in the repository.
//
// The server starts with a clean environment (src/postgres/server-env.ts), so pgrunbook's
// credentials never reach the postmaster; what archive_command needs for an S3 or Azure repository
// goes into a 0600 file owned by the server's OS user, next to the data directory (never inside it:
// base backups copy the data directory), and archive_command names it: `wal-push --env-file FILE`.
// A segment that arrives after the restart therefore proves what the next restart keeps.
//
// Order matters for "a refused confirmation changes nothing": every step before the apply steps
// only reads, and the restart's typed confirmation is asked (by the runner, for the destructive
// step) BEFORE that step runs its ALTER SYSTEM. The repository directory is created inside the
// apply steps too, after every confirmation. A failure after ALTER SYSTEM but before the server
// went down rolls the settings back.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { ConfirmationRefusedError, type Procedure, type StepContext } from '../engine/types.js';
import { shellQuote } from '../engine/runner.js';
import { describeEndpoint, withPg } from '../postgres/client.js';
import { firstUntraversableDir, isRoot, userNameOf } from '../postgres/osuser.js';
import {
  describeRestart,
  describeStart,
  postmasterPid,
  restartServer,
  serverControlFor,
  serverControlProblem,
  serverStderrFile,
  waitForConnections,
  type ServerControlSpec,
} from '../postgres/server-control.js';
import { openRepository } from '../storage/repository.js';
import { parseRepoUrl, secretsOf } from '../storage/url.js';
import { walKey } from '../storage/walarchive.js';
import { SEGMENT_RE } from '../storage/walnames.js';
import { services } from './services.js';
import {
  defaultServerEnvFile,
  percentEscape,
  secretValues,
  serverEnvFileStatus,
  serverEnvFileVars,
  walCommandLine,
  writeServerEnvFile,
} from './pgrunbook-command.js';

/** Settings this procedure manages; archive_library only exists from PostgreSQL 15. */
type SettingName = 'wal_level' | 'archive_mode' | 'archive_command' | 'archive_timeout' | 'archive_library';
const READ_SETTINGS = ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout', 'archive_library', 'cluster_name'];
/** PostgreSQL retries a failing archive_command 3 times before pausing; that many failures after the switch is a real failure. */
const FAILURES_BEFORE_GIVING_UP = 3;

interface LiveSetting {
  setting: string;
  /** The configured value (pg_settings.reset_val): archive_command shows "(disabled)" while archive_mode is off. */
  configured: string;
  pendingRestart: boolean;
  /** The value the configuration files give it (pg_file_settings, superusers only): what the next restart brings. */
  fileValue?: string;
}

interface Archiver {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedTime: string | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: string | null;
  /** The last failure is newer than the last success. */
  failing: boolean;
}

interface Inspection {
  endpoint: string;
  version: string;
  versionNum: number;
  superuser: boolean;
  inRecovery: boolean;
  clusterName: string;
  port: number;
  /** The server's data_directory, when this user may read it. */
  serverDataDirectory?: string;
  /** pg_current_logfile(), when logging_collector is on and this user may call it. */
  currentLogfile?: string;
  postmasterStart: string;
  live: Partial<Record<SettingName, LiveSetting>>;
  archiver: Archiver;
  missingPrivileges: string[];
}

interface Change {
  name: SettingName;
  /** As shown to the operator. */
  from: string;
  /** As shown; archive_command's real value is recomputed from the parameters when applied (the journal masks secrets). */
  to: string;
  /** Takes effect only after a restart. */
  restart: boolean;
  why: string;
}

interface Proposal {
  changes: Change[];
  restartNeeded: boolean;
}

interface ServerUser {
  name: string;
  uid: number;
  gid: number;
  groupName: string;
  groups: number[];
}

interface RepoPrep {
  kind: 'file' | 's3' | 'azure';
  root?: string;
  /** Directories to create (outermost first), owned by the server's OS user. */
  create?: string[];
  serverUser?: ServerUser;
  /** The server's env file must be (re)written: missing, or its contents, mode or owner differ. */
  writeEnvFile?: boolean;
}

/** The env file archive_command names (journaled: the path and variable names only, never values). */
interface EnvFilePlan {
  path: string;
  names: string[];
}

export const walArchivingProcedure: Procedure = {
  id: 'wal-archiving',
  title: 'Set up and prove WAL archiving',
  summary: 'Check wal_level, archive_mode, archive_command, archive_timeout; apply them (restart only after a typed confirmation); prove a WAL segment arrives in the repository.',
  group: 'backup',
  params: [
    {
      name: 'archiveCommand',
      type: 'string',
      description:
        "archive_command to set instead of pgrunbook's own wal-push into --repo (for example a wrapper that exports the repository's credentials); must pass %p",
      example: "'/usr/local/bin/archive-wal.sh %p'",
    },
    {
      name: 'archiveTimeout',
      type: 'string',
      default: '60s',
      description: 'archive_timeout to set when it is 0 (off): the longest a quiet server keeps a partly filled segment unarchived, which bounds the RPO',
      example: '5min',
    },
    {
      name: 'serverEnvFile',
      type: 'string',
      description:
        "where to write the repository's credentials for archive_command (mode 0600, owned by the server's OS user; archive_command names it with wal-push --env-file); default <parent of the data directory>/pgrunbook-<cluster>.env. Not inside the data directory: base backups copy it",
      example: '/var/lib/postgresql/15/pgrunbook-main.env',
    },
    { name: 'timeout', type: 'number', default: 60, description: 'seconds to wait for the test segment to arrive in the repository', example: '120' },
    {
      name: 'serverLog',
      type: 'string',
      description: "server log to quote when archive_command fails (default: the profile's, pg_current_logfile(), or where the running server writes)",
      example: '/var/log/postgresql/postgresql-15-main.log',
    },
  ],
  validate(params) {
    const errors: string[] = [];
    if (params.archiveTimeout !== undefined && parseDurationSec(String(params.archiveTimeout)) === undefined) {
      errors.push(`--archive-timeout: "${params.archiveTimeout}" is not a duration greater than 0 (e.g. 60s, 5min, 1h)`);
    }
    if (params.timeout !== undefined && !(Number(params.timeout) > 0)) errors.push(`--timeout: must be a number of seconds greater than 0, got ${params.timeout}`);
    const cmd = params.archiveCommand;
    if (cmd !== undefined && params.serverEnvFile !== undefined) {
      errors.push('--server-env-file goes with pgrunbook\'s own wal-push; with --archive-command your command provides the credentials itself: drop one of them');
    }
    if (params.serverEnvFile !== undefined && !String(params.serverEnvFile).trim()) errors.push('--server-env-file: give a file path');
    if (cmd !== undefined && !/%[pf]/.test(String(cmd))) {
      errors.push(`--archive-command: "${cmd}" does not pass the WAL file to archive; include %p (its path), e.g. --archive-command '/usr/local/bin/archive-wal.sh %p'`);
    }
    return errors;
  },
  steps: [
    {
      id: 'inspect',
      title: 'Read the archiving settings',
      kind: 'check',
      describe: (ctx) =>
        `Reading wal_level, archive_mode, archive_command, archive_timeout and pg_stat_archiver from ${describeEndpoint(services(ctx).connection)}, ` +
        'to see what stands between this server and archiving into the repository. Nothing is changed.',
      async plan(ctx) {
        for (const line of await inspect(ctx)) ctx.log(line.text, line.level);
        return [`read the settings and pg_stat_archiver at ${describeEndpoint(services(ctx).connection)}`];
      },
      async run(ctx) {
        for (const line of await inspect(ctx)) ctx.log(line.text, line.level);
        const insp = inspection(ctx);
        ctx.check('server reachable', true, `${insp.endpoint}, PostgreSQL ${insp.version}`);
      },
    },
    {
      id: 'repository',
      title: 'Check the repository',
      kind: 'check',
      describe: (ctx) =>
        `Checking that the server's OS user can write ${repoDescription(ctx)}: PostgreSQL runs archive_command as that user, ` +
        'so a repository it cannot write makes every WAL segment fail to archive (and pile up in pg_wal).',
      async plan(ctx) {
        for (const line of await checkRepository(ctx)) ctx.log(line.text, line.level);
        const prep = repoPrep(ctx);
        return prep.create?.length ? [`create ${prep.create.at(-1)} owned by ${prep.serverUser?.name ?? 'the server\'s OS user'}`] : [];
      },
      async run(ctx) {
        for (const line of await checkRepository(ctx)) ctx.log(line.text, line.level);
      },
    },
    {
      id: 'propose',
      title: 'Propose the settings',
      kind: 'action',
      describe: (ctx) => {
        const p = proposal(ctx);
        return (
          `Showing the ALTER SYSTEM statements that make the server archive into the repository, and asking to apply them. ` +
          (p.restartNeeded
            ? `${restartNames(ctx)} ${plural(ctx) ? 'take' : 'takes'} effect only after a restart, which is asked for separately (typed confirmation) before anything is changed.`
            : 'They take effect on a configuration reload; no restart is needed.')
        );
      },
      skipIf: (ctx) => (nothingToDo(ctx) ? 'nothing to change: the archiving settings are right' : undefined),
      plan: (ctx) => proposalLines(ctx),
      async run(ctx) {
        for (const line of proposalLines(ctx)) ctx.log(line);
        const p = proposal(ctx);
        const prep = repoPrep(ctx);
        const what = [
          p.changes.length ? `apply ${p.changes.map((c) => `${c.name} = ${c.to}`).join(', ')} with ALTER SYSTEM` : undefined,
          prep.create?.length ? `create ${prep.create.at(-1)}` : undefined,
          prep.writeEnvFile && envFilePlan(ctx) ? `write the repository's credentials to ${envFilePlan(ctx)!.path} (mode 0600)` : undefined,
        ]
          .filter(Boolean)
          .join(' and ');
        const ok = await ctx.confirm({
          message: `${capitalize(what)}?${p.restartNeeded ? ` A restart of PostgreSQL is needed afterwards; it is asked for next, before anything is changed.` : ''}`,
        });
        if (!ok) throw refused('the proposed settings were not confirmed, so nothing was changed (headless: pass --yes to allow them)');
      },
    },
    {
      id: 'apply',
      title: 'Apply the settings and reload',
      kind: 'action',
      describe: () =>
        'Writing the settings with ALTER SYSTEM (postgresql.auto.conf, which overrides postgresql.conf) and reloading the configuration (pg_reload_conf); ' +
        'connections stay up. If anything fails half-way the settings written so far are rolled back.',
      skipIf: (ctx) =>
        nothingToDo(ctx)
          ? 'nothing to change'
          : proposal(ctx).restartNeeded
            ? 'the settings need a restart: they are applied in the next step, after its typed confirmation'
            : undefined,
      plan: (ctx) => [...createLines(ctx), ...alterLines(ctx), 'SELECT pg_reload_conf() and wait until the server shows the new values'],
      async run(ctx) {
        await withPg(services(ctx).connection, (c) => assertSameTarget(ctx, c));
        await createRepositoryDir(ctx);
        const undoEnvFile = await writeEnvFile(ctx);
        const changes = proposal(ctx).changes;
        if (!changes.length) return;
        await withPg(services(ctx).connection, async (c) => {
          let prior;
          try {
            prior = await applySettings(ctx, c, changes);
          } catch (err) {
            await undoEnvFile();
            throw err;
          }
          try {
            await waitForSettings(c, ctx, changes);
          } catch (err) {
            await rollBack(ctx, c, changes, prior);
            await undoEnvFile();
            throw new Error(`${(err as Error).message}; the settings were rolled back, nothing was changed`);
          }
        });
        ctx.log(`applied: ${changes.map((c) => `${c.name} = ${c.to}`).join(', ')} (reloaded, no restart needed)`);
      },
    },
    {
      id: 'apply-restart',
      title: 'Apply the settings and restart PostgreSQL',
      kind: 'action',
      describe: (ctx) =>
        `Writing the settings with ALTER SYSTEM and reloading; ${restartNames(ctx)} then ${plural(ctx) ? 'show' : 'shows'} pending_restart, so PostgreSQL is restarted ` +
        `(${describeRestart(controlSpec(ctx))}): open connections are dropped and clients reconnect. ` +
        'If the restart cannot begin, the settings are rolled back.',
      destructive: {
        what: (ctx) => `restart PostgreSQL ${restartTarget(ctx)} (connections are dropped)`,
        confirmText: (ctx) => confirmName(ctx),
      },
      skipIf: (ctx) => (proposal(ctx).restartNeeded ? undefined : 'no restart needed'),
      plan: (ctx) => [
        ...createLines(ctx),
        ...alterLines(ctx),
        `SELECT pg_reload_conf(); expect pending_restart for ${restartNames(ctx)}`,
        describeRestart(controlSpec(ctx)),
        'wait until the server accepts connections, then check the new values are live',
      ],
      async run(ctx) {
        await applyAndRestart(ctx);
      },
    },
    {
      id: 'prove',
      title: 'Prove a WAL segment arrives in the repository',
      kind: 'verify',
      describe: (ctx) =>
        `Checking the live settings, then forcing a WAL segment switch (pg_switch_wal) and waiting up to ${Number(ctx.params.timeout ?? 60)} s ` +
        `until pg_stat_archiver reports it archived AND the segment is in ${repoDescription(ctx)}: the only proof that archiving works end to end.`,
      plan: (ctx) => [
        'check wal_level, archive_mode, archive_command, archive_timeout are live',
        'SELECT pg_switch_wal() after a small transaction',
        `wait up to ${Number(ctx.params.timeout ?? 60)} s for pg_stat_archiver.last_archived_wal >= that segment and wal/<segment>.gz (or wal/<segment>) in ${repoDescription(ctx)}`,
      ],
      async run(ctx) {
        await prove(ctx);
      },
    },
  ],
};

// ---------------------------------------------------------------------------------------------
// state accessors

function inspection(ctx: StepContext): Inspection {
  const i = ctx.state.inspection as Inspection | undefined;
  if (!i) throw new Error('internal: the settings were not read (step "inspect" did not run)');
  return i;
}

function proposal(ctx: StepContext): Proposal {
  return (ctx.state.proposal as Proposal | undefined) ?? { changes: [], restartNeeded: false };
}

function repoPrep(ctx: StepContext): RepoPrep {
  return (ctx.state.repoPrep as RepoPrep | undefined) ?? { kind: 'file' };
}

function nothingToDo(ctx: StepContext): boolean {
  return proposal(ctx).changes.length === 0 && !repoPrep(ctx).create?.length && !repoPrep(ctx).writeEnvFile;
}

function envFilePlan(ctx: StepContext): EnvFilePlan | undefined {
  return ctx.state.envFile as EnvFilePlan | undefined;
}

/**
 * Whether archive_command gets an env file, and where: only for pgrunbook's own wal-push into an
 * S3 or Azure repository whose variables are in our environment, and only when we know where the
 * server lives (--server-env-file, or its data directory visible here). The option is not called
 * --env-file: Node.js takes any --env-file* argument, even one after the script, as its own and
 * exits when that file does not exist yet (nodejs/node#54232).
 */
function planEnvFile(ctx: StepContext, insp: Inspection): EnvFilePlan | undefined {
  const svc = services(ctx);
  if (ctx.params.archiveCommand || !svc.repo) return undefined;
  const vars = serverEnvFileVars(svc.repo, svc.env);
  if (!vars) return undefined;
  const given = ctx.params.serverEnvFile as string | undefined;
  if (given) return { path: path.resolve(given), names: Object.keys(vars) };
  const dir = localDataDir(ctx) ?? insp.serverDataDirectory;
  if (!dir || !fs.existsSync(dir)) return undefined;
  return { path: defaultServerEnvFile(dir, insp.clusterName), names: Object.keys(vars) };
}

function restartNames(ctx: StepContext): string {
  return (
    proposal(ctx)
      .changes.filter((c) => c.restart)
      .map((c) => c.name)
      .join(' and ') || 'wal_level and archive_mode'
  );
}

function plural(ctx: StepContext): boolean {
  return restartNames(ctx).includes(' and ');
}

function repoDescription(ctx: StepContext): string {
  const repo = services(ctx).repo;
  if (!repo) return 'the repository';
  try {
    const loc = parseRepoUrl(repo, services(ctx).env);
    return loc.kind === 'file' ? `the repository ${loc.root}` : `the repository ${repo.replace(/\?.*$/, '')}`;
  } catch {
    return 'the repository';
  }
}

function localDataDir(ctx: StepContext): string | undefined {
  const pgdata = services(ctx).pgdata;
  return pgdata ? path.resolve(pgdata) : undefined;
}

function controlSpec(ctx: StepContext): ServerControlSpec {
  return serverControlFor(services(ctx).profile.server, localDataDir(ctx));
}

/** What the restart acts on, in the operator's terms: the data directory, else host:port. */
function restartTarget(ctx: StepContext): string {
  const insp = ctx.state.inspection as Inspection | undefined;
  const spec = controlSpec(ctx);
  const where = localDataDir(ctx) ?? insp?.serverDataDirectory ?? describeEndpoint(services(ctx).connection);
  return spec.method === 'systemd' ? `${where} (systemd unit ${spec.unit})` : where;
}

/**
 * The text an operator types to allow the restart: the server's cluster_name when set (stable,
 * and what Debian's postgresql-common sets, e.g. "15/main"), else the data directory's base name
 * (from --pgdata, else the server's data_directory), else the systemd unit, else host:port.
 */
export function confirmName(ctx: StepContext): string {
  const insp = ctx.state.inspection as Inspection | undefined;
  if (insp?.clusterName) return insp.clusterName;
  const dir = localDataDir(ctx) ?? insp?.serverDataDirectory;
  if (dir) return path.basename(dir);
  const spec = controlSpec(ctx);
  if (spec.unit) return spec.unit;
  const c = services(ctx).connection;
  return `${c.host ?? 'localhost'}:${c.port ?? 5432}`;
}

/**
 * What the proposal was made for: server, repository, data directory. --repo, --host and --pgdata
 * are not journaled parameters, so a --resume without them (or with others) must not apply a
 * proposal made for another target. Hashed: the repository URL may carry credentials.
 */
function targetFingerprint(ctx: StepContext, serverDataDirectory: string | undefined): string {
  const svc = services(ctx);
  const parts = [describeEndpoint(svc.connection), svc.repo ?? '', localDataDir(ctx) ?? '', serverDataDirectory ?? ''];
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 16);
}

/** Mask the repository's credentials everywhere (again in each changing step: a resumed run skips inspect). */
function registerRepoSecrets(ctx: StepContext): void {
  const svc = services(ctx);
  if (!svc.repo) return;
  for (const secret of secretsOf(parseRepoUrl(svc.repo, svc.env))) ctx.addSecret(secret);
  for (const secret of secretValues(serverEnvFileVars(svc.repo, svc.env))) ctx.addSecret(secret);
}

/** Before changing anything: the server, repository and data directory are the ones inspected. */
async function assertSameTarget(ctx: StepContext, c: pg.Client): Promise<void> {
  const svc = services(ctx);
  if (!svc.repo) throw new Error('no backup repository: pass the same --repo URL as the run being resumed (it is not journaled)');
  registerRepoSecrets(ctx);
  const r = await c.query<{ d: string | null }>(`SELECT CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS d`);
  if (targetFingerprint(ctx, r.rows[0].d ?? undefined) !== ctx.state.target) {
    throw new Error(
      'the server, --repo or --pgdata differ from the ones inspected at the start of this run (when resuming, pass the same --host, --port, --repo and --pgdata: they are not journaled). Nothing was changed; start a new run to inspect this target.',
    );
  }
}

function refused(message: string): ConfirmationRefusedError {
  return new ConfirmationRefusedError(message);
}

function capitalize(s: string): string {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}

// ---------------------------------------------------------------------------------------------
// desired values

/** "60s", "5min", "1h", "90" (seconds) to seconds; undefined when not a positive duration. */
export function parseDurationSec(text: string): number | undefined {
  const m = /^\s*(\d+)\s*(ms|s|min|h|d)?\s*$/.exec(text);
  if (!m) return undefined;
  const n = Number(m[1]);
  const factor = { ms: 0.001, s: 1, min: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 'ms' | 's' | 'min' | 'h' | 'd'];
  const sec = n * factor;
  return sec >= 1 && Number.isInteger(sec) ? sec : undefined;
}

function archiveTimeoutSec(ctx: StepContext): number {
  return parseDurationSec(String(ctx.params.archiveTimeout ?? '60s')) ?? 60;
}

/** `pgrunbook` on PATH, resolved, when one is installed. */
/**
 * The archive_command to set: --archive-command when given; else `pgrunbook wal-push --repo URL %p`
 * with the absolute path of a `pgrunbook` on PATH (the server's PATH is not ours); else this
 * installation's node and dist/cli.js.
 */
export function desiredArchiveCommand(ctx: StepContext): { command: string; program?: { node?: string; script: string } } {
  const override = ctx.params.archiveCommand as string | undefined;
  if (override) return { command: override };
  const svc = services(ctx);
  return walCommandLine('wal-push', svc.repo ?? '', svc.env, { envFile: envFilePlan(ctx)?.path });
}

/**
 * Whether an archive_command already does what we would set: exactly it, or (without an override)
 * a pgrunbook wal-push into the same repository, naming the same env file when one is wanted.
 */
export function archiveCommandMatches(current: string, desired: string, overrideGiven: boolean, repoUrl: string, envFile?: string): boolean {
  if (current === desired) return true;
  if (overrideGiven || !current) return false;
  const forms = (v: string) => new Set([v, shellQuote(v), `'${v}'`, `"${v}"`].map(percentEscape));
  const pushes = /(^|[\s/'"])(pgrunbook|cli\.js)['"]?\s+wal-push(\s|$)/.test(current);
  const sameRepo = [...forms(repoUrl)].some((u) => current.includes(`--repo ${u}`) || current.includes(`--repo=${u}`));
  const sameEnvFile = envFile
    ? [...forms(envFile)].some((f) => current.includes(`--env-file ${f}`) || current.includes(`--env-file=${f}`))
    : true; // none wanted (no credentials here, or the server is remote): keep one the command already names
  return pushes && sameRepo && sameEnvFile && /(^|\s)["']?%p["']?(\s|$)/.test(current);
}

function desiredValue(ctx: StepContext, name: SettingName): string {
  switch (name) {
    case 'wal_level':
      return 'replica';
    case 'archive_mode':
      return 'on';
    case 'archive_command':
      return desiredArchiveCommand(ctx).command;
    case 'archive_timeout':
      return `${archiveTimeoutSec(ctx)}s`;
    case 'archive_library':
      return '';
  }
}

/** Whether a live pg_settings value is what we want (archive_timeout in seconds, as pg_settings shows it). */
function liveIsDesired(ctx: StepContext, name: SettingName, live: string): boolean {
  switch (name) {
    case 'wal_level':
      return live === 'replica' || live === 'logical';
    case 'archive_mode':
      return live === 'on' || live === 'always';
    case 'archive_command':
      return archiveCommandMatches(live, desiredValue(ctx, name), Boolean(ctx.params.archiveCommand), services(ctx).repo ?? '', envFilePlan(ctx)?.path);
    case 'archive_timeout':
      return Number(live) > 0;
    case 'archive_library':
      return live === '';
  }
}

// ---------------------------------------------------------------------------------------------
// step 1: inspect

interface Finding {
  text: string;
  level?: 'info' | 'warn' | 'error';
}

async function readInspection(ctx: StepContext): Promise<Inspection> {
  const conn = services(ctx).connection;
  return withPg(conn, async (c) => {
    const info = (
      await c.query<{
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
      )
    ).rows[0];
    const rows = (
      await c.query<{ name: string; setting: string; reset_val: string; pending_restart: boolean }>(
        `SELECT name, setting, reset_val, pending_restart FROM pg_settings WHERE name = ANY($1)`,
        [READ_SETTINGS],
      )
    ).rows;
    const live: Partial<Record<SettingName, LiveSetting>> = {};
    let clusterName = '';
    for (const r of rows) {
      if (r.name === 'cluster_name') clusterName = r.setting;
      else live[r.name as SettingName] = { setting: r.setting, configured: r.reset_val, pendingRestart: r.pending_restart };
    }
    if (info.superuser) {
      const files = await c.query<{ name: string; setting: string }>(
        `SELECT DISTINCT ON (name) name, setting FROM pg_file_settings WHERE name = ANY($1) AND error IS NULL ORDER BY name, seqno DESC`,
        [READ_SETTINGS],
      );
      for (const f of files.rows) {
        const s = live[f.name as SettingName];
        if (s) s.fileValue = f.setting;
      }
    }
    const a = (
      await c.query<{
        archived_count: string;
        last_archived_wal: string | null;
        last_archived_time: string | null;
        failed_count: string;
        last_failed_wal: string | null;
        last_failed_time: string | null;
        failing: boolean;
      }>(
        `SELECT archived_count, last_archived_wal, last_archived_time::text, failed_count, last_failed_wal, last_failed_time::text,
                coalesce(last_failed_time > last_archived_time, last_failed_time IS NOT NULL) AS failing
           FROM pg_stat_archiver`,
      )
    ).rows[0];
    const missingPrivileges: string[] = [];
    if (!info.superuser) {
      const priv = (
        await c.query<{ can_switch: boolean; can_reload: boolean }>(
          `SELECT has_function_privilege('pg_switch_wal()', 'EXECUTE') AS can_switch, has_function_privilege('pg_reload_conf()', 'EXECUTE') AS can_reload`,
        )
      ).rows[0];
      if (!priv.can_switch) missingPrivileges.push('GRANT EXECUTE ON FUNCTION pg_switch_wal() TO <user>');
      if (!priv.can_reload) missingPrivileges.push('GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <user>');
    }
    return {
      endpoint: describeEndpoint(conn),
      version: info.version,
      versionNum: info.num,
      superuser: info.superuser,
      inRecovery: info.in_recovery,
      clusterName,
      port: info.port,
      serverDataDirectory: info.data_directory ?? undefined,
      currentLogfile: info.logfile ?? undefined,
      postmasterStart: info.started,
      live,
      archiver: {
        archivedCount: Number(a.archived_count),
        lastArchivedWal: a.last_archived_wal,
        lastArchivedTime: a.last_archived_time,
        failedCount: Number(a.failed_count),
        lastFailedWal: a.last_failed_wal,
        lastFailedTime: a.last_failed_time,
        failing: a.failing,
      },
      missingPrivileges,
    };
  });
}

/** The value an operator would recognise: archive_command is "(disabled)" in pg_settings while archive_mode is off. */
function shownValue(s: LiveSetting | undefined): string {
  if (!s) return '';
  return s.setting === '(disabled)' ? s.configured : s.setting;
}

function proposeChanges(ctx: StepContext, insp: Inspection): Change[] {
  const changes: Change[] = [];
  const live = insp.live;
  const wal = live.wal_level!;
  if (!liveIsDesired(ctx, 'wal_level', wal.setting) || !nextRestartKeeps(ctx, 'wal_level', wal)) {
    changes.push({
      name: 'wal_level',
      from: wal.setting,
      to: 'replica',
      restart: !liveIsDesired(ctx, 'wal_level', wal.setting),
      why: liveIsDesired(ctx, 'wal_level', wal.setting)
        ? 'the configuration files set it to minimal at the next restart'
        : 'wal_level minimal leaves out what recovery from a base backup and archived WAL needs',
    });
  }
  const mode = live.archive_mode!;
  if (!liveIsDesired(ctx, 'archive_mode', mode.setting) || !nextRestartKeeps(ctx, 'archive_mode', mode)) {
    changes.push({
      name: 'archive_mode',
      from: mode.setting,
      to: 'on',
      restart: !liveIsDesired(ctx, 'archive_mode', mode.setting),
      why: liveIsDesired(ctx, 'archive_mode', mode.setting) ? 'the configuration files turn archiving off at the next restart' : 'without it PostgreSQL never runs archive_command',
    });
  }
  const command = shownValue(live.archive_command);
  if (!liveIsDesired(ctx, 'archive_command', command)) {
    changes.push({
      name: 'archive_command',
      from: command || "''",
      to: desiredValue(ctx, 'archive_command'),
      restart: false,
      why: command ? 'it does not archive into this repository' : 'it is empty, so nothing is archived',
    });
  }
  const timeout = live.archive_timeout!;
  if (!liveIsDesired(ctx, 'archive_timeout', timeout.setting)) {
    changes.push({
      name: 'archive_timeout',
      from: '0 (off)',
      to: desiredValue(ctx, 'archive_timeout'),
      restart: false,
      why: 'with 0 a quiet server keeps a partly filled segment unarchived indefinitely; this bounds the data that can be lost (RPO)',
    });
  }
  const library = live.archive_library;
  if (library && library.setting !== '') {
    changes.push({
      name: 'archive_library',
      from: library.setting,
      to: "''",
      restart: false,
      why: 'when archive_library is set PostgreSQL ignores archive_command',
    });
  }
  return changes;
}

/**
 * A restart-only setting with pending_restart: the configuration files give it another value, which
 * the next restart brings. Fine when that value is also right (e.g. wal_level logical); when it is
 * not, or unknown (pg_file_settings needs a superuser), it must be written again.
 */
function nextRestartKeeps(ctx: StepContext, name: SettingName, s: LiveSetting): boolean {
  if (!s.pendingRestart) return true;
  return s.fileValue !== undefined && liveIsDesired(ctx, name, s.fileValue);
}

async function inspect(ctx: StepContext): Promise<Finding[]> {
  const svc = services(ctx);
  if (!svc.repo) {
    throw new Error(
      'no backup repository: pass --repo URL (file:///var/backups/pg/main, s3://bucket/prefix, azure://container/prefix), set PGRUNBOOK_REPO, or save one in the profile',
    );
  }
  registerRepoSecrets(ctx);

  const insp = await readInspection(ctx);
  ctx.state.inspection = insp;
  ctx.state.target = targetFingerprint(ctx, insp.serverDataDirectory);
  const out: Finding[] = [];
  out.push({ text: `PostgreSQL ${insp.version} at ${insp.endpoint}${insp.clusterName ? `, cluster_name "${insp.clusterName}"` : ''}${insp.serverDataDirectory ? `, data directory ${insp.serverDataDirectory}` : ''}` });

  if (insp.inRecovery) {
    throw new Error(
      `the server at ${insp.endpoint} is in recovery (a standby): it cannot switch WAL segments, and with archive_mode=on a standby does not archive. Run this procedure against the primary.`,
    );
  }

  // --pgdata must be this server's data directory: a pg_ctl restart acts on it.
  const dataDir = localDataDir(ctx);
  if (dataDir) {
    const mismatch = await dataDirMismatch(dataDir, insp);
    if (mismatch) throw new Error(mismatch);
  }

  ctx.state.envFile = planEnvFile(ctx, insp);
  const changes = proposeChanges(ctx, insp);
  const restartNeeded = changes.some((c) => c.restart);
  ctx.state.proposal = { changes, restartNeeded } satisfies Proposal;

  for (const name of ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout'] as SettingName[]) {
    const change = changes.find((c) => c.name === name);
    const value = name === 'archive_timeout' ? `${insp.live.archive_timeout?.setting ?? '?'}s` : shownValue(insp.live[name]) || "''";
    if (!change) out.push({ text: `${name} = ${value}: ok` });
    else out.push({ text: `${name} = ${change.from}: needs ${change.to}${change.restart ? ' (takes effect only after a restart)' : ''}: ${change.why}`, level: 'warn' });
  }
  const lib = changes.find((c) => c.name === 'archive_library');
  if (lib) out.push({ text: `archive_library = ${lib.from}: needs '' (${lib.why})`, level: 'warn' });

  const a = insp.archiver;
  out.push({
    text:
      `pg_stat_archiver: ${a.archivedCount} archived${a.lastArchivedWal ? ` (last ${a.lastArchivedWal} at ${a.lastArchivedTime})` : ''}, ` +
      `${a.failedCount} failed${a.lastFailedWal ? ` (last ${a.lastFailedWal} at ${a.lastFailedTime})` : ''}`,
    level: a.failing ? 'warn' : 'info',
  });
  if (a.failing) out.push({ text: `archiving is failing right now: ${a.lastFailedWal} could not be archived; WAL accumulates in pg_wal until it works`, level: 'warn' });

  if (changes.length && !insp.superuser) {
    const grants = await missingAlterSystemGrants(ctx, changes.map((c) => c.name));
    if (grants.length) {
      throw new Error(
        `user "${svc.connection.user ?? ''}" may not change these settings with ALTER SYSTEM. Connect as a superuser (--user postgres), ` +
          `or have one run: ${grants.join('; ')}`,
      );
    }
  }
  if (insp.missingPrivileges.length) {
    throw new Error(`user "${svc.connection.user ?? ''}" lacks privileges this procedure needs; connect as a superuser (--user postgres), or have one run: ${insp.missingPrivileges.join('; ')}`);
  }

  if (!changes.length) out.push({ text: 'the archiving settings are right; nothing to change (the last step still proves a segment arrives)' });
  else if (restartNeeded) {
    const spec = controlSpec(ctx);
    const problem = serverControlProblem(spec);
    if (problem) {
      throw new Error(
        `${changes.filter((c) => c.restart).map((c) => c.name).join(' and ')} must change, which needs a restart, but ${problem}` +
          (insp.serverDataDirectory && spec.method === 'pg_ctl' ? ` (the server reports data_directory = ${insp.serverDataDirectory})` : ''),
      );
    }
    out.push({ text: `a restart is needed (${describeRestart(spec)}); it is asked for with a typed confirmation (--confirm ${shellQuote(confirmName(ctx))}) before anything is changed`, level: 'warn' });
  }
  return out;
}

async function dataDirMismatch(dataDir: string, insp: Inspection): Promise<string | undefined> {
  let real: string;
  try {
    real = await fsp.realpath(dataDir);
  } catch (e) {
    return `data directory ${dataDir} (--pgdata / PGDATA / profile) is not accessible here: ${(e as Error).message}. Pass the server's data directory${insp.serverDataDirectory ? ` (it reports ${insp.serverDataDirectory})` : ''}.`;
  }
  if (insp.serverDataDirectory) {
    const theirs = await fsp.realpath(insp.serverDataDirectory).catch(() => insp.serverDataDirectory!);
    if (theirs !== real) {
      return `--pgdata ${dataDir} is not the data directory of the server at ${insp.endpoint}, which reports ${insp.serverDataDirectory}. Pass the right --pgdata: a restart would act on the wrong cluster.`;
    }
    return undefined;
  }
  // Not allowed to read data_directory: compare the port in postmaster.pid instead.
  try {
    const lines = (await fsp.readFile(path.join(real, 'postmaster.pid'), 'utf8')).split('\n');
    if (Number(lines[3]) !== insp.port) {
      return `the server running on --pgdata ${dataDir} listens on port ${lines[3]}, but the server at ${insp.endpoint} on port ${insp.port}: pass the right --pgdata or --port.`;
    }
  } catch {
    // No postmaster.pid: no server runs there, or we may not read it; pg_ctl will say so if it matters.
  }
  return undefined;
}

async function missingAlterSystemGrants(ctx: StepContext, names: string[]): Promise<string[]> {
  const insp = inspection(ctx);
  if (insp.versionNum < 150000) return ['ALTER SYSTEM needs a superuser before PostgreSQL 15'];
  return withPg(services(ctx).connection, async (c) => {
    const r = await c.query<{ name: string; ok: boolean }>(`SELECT n AS name, has_parameter_privilege(n, 'ALTER SYSTEM') AS ok FROM unnest($1::text[]) AS n`, [names]);
    return r.rows.filter((x) => !x.ok).map((x) => `GRANT ALTER SYSTEM ON PARAMETER ${x.name} TO "${services(ctx).connection.user ?? ''}"`);
  });
}

// ---------------------------------------------------------------------------------------------
// step 2: repository

async function serverOsUser(dir: string | undefined): Promise<ServerUser | undefined> {
  if (!dir) return undefined;
  let st: fs.Stats;
  try {
    st = await fsp.stat(dir);
  } catch {
    return undefined; // the data directory is not visible here (a remote server)
  }
  const name = (await userNameOf(st.uid)) ?? String(st.uid);
  const groups = new Set<number>([st.gid]);
  let groupName = String(st.gid);
  try {
    for (const line of (await fsp.readFile('/etc/group', 'utf8')).split('\n')) {
      const [gname, , gid, members] = line.split(':');
      if (gid === undefined) continue;
      if (Number(gid) === st.gid) groupName = gname;
      if ((members ?? '').split(',').includes(name)) groups.add(Number(gid));
    }
  } catch {
    // no /etc/group: primary group only
  }
  // The server's own primary group is the owner's primary group in practice; the data dir's gid stands in for it.
  return { name, uid: st.uid, gid: st.gid, groupName, groups: [...groups] };
}

function permits(st: fs.Stats, user: ServerUser, bits: { r?: boolean; w?: boolean; x?: boolean }): boolean {
  if (user.uid === 0) return true;
  const want = (bits.r ? 4 : 0) | (bits.w ? 2 : 0) | (bits.x ? 1 : 0);
  const shift = st.uid === user.uid ? 6 : user.groups.includes(st.gid) ? 3 : 0;
  return ((st.mode >> shift) & want) === want;
}

async function checkRepository(ctx: StepContext): Promise<Finding[]> {
  const svc = services(ctx);
  const insp = inspection(ctx);
  const loc = parseRepoUrl(svc.repo!, svc.env);
  const out: Finding[] = [];
  const serverUser = await serverOsUser(localDataDir(ctx) ?? insp.serverDataDirectory);
  const prep: RepoPrep = { kind: loc.kind, serverUser };
  ctx.state.repoPrep = prep;
  const chownHint = (dir: string) => `chown -R ${serverUser!.name}:${serverUser!.groupName} ${shellQuote(dir)}`;

  if (loc.kind === 'file') {
    const root = loc.root;
    prep.root = root;
    if (!serverUser) {
      out.push({
        text: `cannot see the server's data directory here, so cannot check that its OS user can write ${root}; a file:// repository must be on the server's machine and writable by the user PostgreSQL runs as`,
        level: 'warn',
      });
    } else {
      let st: fs.Stats | undefined;
      try {
        st = await fsp.stat(root);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot inspect the repository directory ${root}: ${(e as Error).message}`);
      }
      if (st) {
        if (!st.isDirectory()) throw new Error(`the repository ${root} is not a directory; pass --repo file:///a/directory`);
        const blocked = await firstUntraversableDirFor(root, serverUser);
        if (blocked) {
          throw new Error(
            `PostgreSQL runs archive_command as OS user ${serverUser.name}, which cannot enter ${blocked} (on the way to the repository ${root}). ` +
              `Let it through: chmod o+x ${shellQuote(blocked)} (or choose a repository directory it can reach).`,
          );
        }
        const walDir = path.join(root, 'wal');
        const walSt = await fsp.stat(walDir).catch(() => undefined);
        const notWritable = [
          !permits(st, serverUser, { w: true, x: true }) ? { dir: root, st } : undefined,
          walSt && !permits(walSt, serverUser, { w: true, x: true }) ? { dir: walDir, st: walSt } : undefined,
        ].find(Boolean);
        if (notWritable) {
          const owner = (await userNameOf(notWritable.st.uid)) ?? String(notWritable.st.uid);
          throw new Error(
            `the repository directory ${notWritable.dir} is not writable by ${serverUser.name}, the OS user PostgreSQL runs archive_command as ` +
              `(it is owned by ${owner}, mode ${(notWritable.st.mode & 0o7777).toString(8).padStart(4, '0')}). Fix it with: ${chownHint(root)}`,
          );
        }
        out.push({ text: `${root} exists and ${serverUser.name} (the server's OS user) can write it` });
      } else {
        // Missing: create it (after confirmation) owned by the server's OS user, when we can.
        const missing: string[] = [];
        let parent = root;
        while (!fs.existsSync(parent)) {
          missing.unshift(parent);
          parent = path.dirname(parent);
        }
        const parentSt = await fsp.stat(parent);
        const self = isRoot() || process.getuid?.() === serverUser.uid;
        const blocked = await firstUntraversableDirFor(parent, serverUser);
        if (blocked) {
          throw new Error(
            `the repository ${root} does not exist, and ${serverUser.name} (the server's OS user) cannot enter ${blocked} to reach it. ` +
              `Choose a directory it can reach, or: chmod o+x ${shellQuote(blocked)}`,
          );
        }
        const canCreate = self && (isRoot() || (parentSt.uid === process.getuid?.() && (parentSt.mode & 0o300) === 0o300));
        if (!canCreate) {
          throw new Error(
            `the repository directory ${root} does not exist. Create it for the server's OS user: mkdir -p ${shellQuote(root)} && ${chownHint(root)}`,
          );
        }
        prep.create = missing;
        out.push({ text: `${root} does not exist: it will be created owned by ${serverUser.name}:${serverUser.groupName} once the settings are confirmed`, level: 'warn' });
      }
    }
  } else {
    // Prove we reach it; the server's own credentials are only proven by the final segment.
    const repo = await openRepository(svc.repo, svc.env);
    try {
      for await (const entry of repo.store.list('wal/')) {
        out.push({ text: `${repo.describe()} is reachable and already holds WAL (first: ${entry.key})` });
        break;
      }
      if (!out.length) out.push({ text: `${repo.describe()} is reachable (no WAL archived there yet)` });
    } finally {
      await repo.close().catch(() => undefined);
    }
  }

  const envFile = envFilePlan(ctx);
  if (envFile) {
    out.push(...(await checkEnvFile(ctx, envFile, serverUser, prep)));
  } else if (loc.kind !== 'file') {
    out.push({
      text: ctx.params.archiveCommand
        ? 'PostgreSQL starts with a clean environment: your --archive-command must find the repository\'s credentials itself (e.g. a wrapper that reads them from a file only the server\'s OS user can read). The last step proves it.'
        : serverEnvFileVars(svc.repo!, svc.env)
          ? 'the server\'s data directory is not visible here, so no env file with the repository\'s credentials is written for it: pass --server-env-file FILE (a path on the server\'s machine), or give the server the credentials yourself. The last step proves it.'
          : `this environment holds no ${loc.kind === 's3' ? 'AWS_*' : 'AZURE_STORAGE_*'} variables, so archive_command gets no env file: the server must find the repository's credentials itself (e.g. an instance role). The last step proves it.`,
      level: 'warn',
    });
  }

  // The server's OS user must be able to run the command we set.
  const desired = desiredArchiveCommand(ctx);
  if (desired.program && serverUser && proposal(ctx).changes.some((c) => c.name === 'archive_command')) {
    const script = desired.program.script;
    const blocked = await firstUntraversableDirFor(path.dirname(script), serverUser);
    const st = await fsp.stat(script).catch(() => undefined);
    if (blocked || !st || !permits(st, serverUser, { r: true })) {
      throw new Error(
        `archive_command would run ${script} as OS user ${serverUser.name}, which cannot ${blocked ? `enter ${blocked}` : `read ${script}`}. ` +
          `Install pgrunbook where ${serverUser.name} can read it (e.g. npm install -g), make it readable (chmod -R o+rX), or pass --archive-command.`,
      );
    }
  }
  const url = svc.repo!;
  if (secretsOf(loc).some((s) => url.includes(s) || url.includes(encodeURIComponent(s)))) {
    out.push({
      text: 'the repository URL carries credentials; in archive_command they would be stored in postgresql.auto.conf. Prefer credentials in the server\'s environment or a wrapper script (--archive-command).',
      level: 'warn',
    });
  }
  return out;
}

/** Whether `file` is `dir` or lies inside it. */
function isInside(file: string, dir: string): boolean {
  const rel = path.relative(path.resolve(dir), path.resolve(file));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Where the env file goes, whether the server's OS user can read it there, and whether it must be (re)written. */
async function checkEnvFile(ctx: StepContext, envFile: EnvFilePlan, serverUser: ServerUser | undefined, prep: RepoPrep): Promise<Finding[]> {
  const svc = services(ctx);
  const insp = inspection(ctx);
  const dataDirs = [localDataDir(ctx), insp.serverDataDirectory].filter((d): d is string => Boolean(d));
  for (const d of dataDirs) {
    const real = await fsp.realpath(d).catch(() => d);
    if (isInside(envFile.path, d) || isInside(envFile.path, real)) {
      throw new Error(
        `--server-env-file ${envFile.path} is inside the data directory ${d}: base backups copy the data directory into the repository, credentials included. ` +
          `Put it next to it instead, e.g. --server-env-file ${shellQuote(defaultServerEnvFile(d, insp.clusterName))}`,
      );
    }
  }
  const dir = path.dirname(envFile.path);
  const dirSt = await fsp.stat(dir).catch(() => undefined);
  if (!dirSt?.isDirectory()) throw new Error(`the directory of the env file ${envFile.path} does not exist: create it (reachable by the server's OS user) or pass another --server-env-file`);
  const owner = serverUser ? { uid: serverUser.uid, gid: serverUser.gid } : undefined;
  if (serverUser) {
    const blocked = await firstUntraversableDirFor(dir, serverUser);
    if (blocked) {
      throw new Error(
        `${serverUser.name} (the server's OS user) cannot enter ${blocked}, so archive_command could not read the env file ${envFile.path}. ` +
          `Pass --server-env-file in a directory it can reach, or: chmod o+x ${shellQuote(blocked)}`,
      );
    }
    if (!isRoot() && process.getuid?.() !== serverUser.uid) {
      throw new Error(
        `the env file ${envFile.path} must belong to ${serverUser.name} (the server's OS user) and be readable only by it; this user cannot give it away. Run this as root or as ${serverUser.name}.`,
      );
    }
  }
  const status = await serverEnvFileStatus(envFile.path, svc.repo!, svc.env, owner);
  prep.writeEnvFile = status === 'missing' || status === 'stale';
  const who = serverUser ? `${serverUser.name}:${serverUser.groupName}` : 'this user';
  const out: Finding[] = [];
  if (status === 'current') out.push({ text: `${envFile.path} (mode 0600, owner ${who}) holds the repository's variables for archive_command: ${envFile.names.join(', ')}` });
  else
    out.push({
      text:
        `PostgreSQL starts with a clean environment, so archive_command reads the repository's credentials from ${envFile.path}: ` +
        `${status === 'missing' ? 'it will be written' : 'it differs from this environment (contents, mode or owner) and will be rewritten'} ` +
        `(mode 0600, owner ${who}) with ${envFile.names.join(', ')} once the settings are confirmed`,
      level: 'warn',
    });
  if (!serverUser) out.push({ text: `the server's data directory is not visible here: make sure ${envFile.path} is on the server's machine and owned by its OS user`, level: 'warn' });
  return out;
}

/** firstUntraversableDir with the user's supplementary groups taken into account. */
async function firstUntraversableDirFor(dir: string, user: ServerUser): Promise<string | undefined> {
  for (const gid of user.groups) {
    // Try each group the user belongs to; a directory blocks only if no membership lets them through.
    const blocked = await firstUntraversableDir(dir, { uid: user.uid, gid });
    if (!blocked) return undefined;
  }
  return firstUntraversableDir(dir, { uid: user.uid, gid: user.gid });
}

// ---------------------------------------------------------------------------------------------
// steps 3-5: propose and apply

function alterStatement(name: SettingName, value: string, quote: (v: string) => string): string {
  return `ALTER SYSTEM SET ${name} = ${quote(value)}`;
}

const sqlQuote = (v: string) => `'${v.replace(/'/g, "''")}'`;

function alterLines(ctx: StepContext): string[] {
  return proposal(ctx).changes.map((c) => alterStatement(c.name, desiredValue(ctx, c.name), sqlQuote));
}

function createLines(ctx: StepContext): string[] {
  const prep = repoPrep(ctx);
  const out: string[] = [];
  if (prep.create?.length) {
    const dirs = prep.create.map(shellQuote).join(' ');
    out.push(`mkdir ${dirs}; chown ${prep.serverUser?.name}:${prep.serverUser?.groupName} ${dirs}`);
  }
  const envFile = envFilePlan(ctx);
  if (envFile && prep.writeEnvFile) {
    const who = prep.serverUser ? `${prep.serverUser.name}:${prep.serverUser.groupName}` : 'this user';
    out.push(`write ${envFile.path} (mode 0600, owner ${who}): ${envFile.names.join(', ')}`);
  }
  return out;
}

function proposalLines(ctx: StepContext): string[] {
  const p = proposal(ctx);
  const lines = [...createLines(ctx), ...alterLines(ctx), ...(p.changes.length ? ['SELECT pg_reload_conf()'] : [])];
  if (p.restartNeeded) lines.push(`restart PostgreSQL (${describeRestart(controlSpec(ctx))}) for ${restartNames(ctx)}, after a typed confirmation`);
  return lines;
}

async function createRepositoryDir(ctx: StepContext): Promise<void> {
  const prep = repoPrep(ctx);
  if (!prep.create?.length || !prep.serverUser) return;
  for (const dir of prep.create) {
    try {
      await fsp.mkdir(dir, { mode: 0o750 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`could not create the repository directory ${dir}: ${(e as Error).message}`);
    }
    if (isRoot()) await fsp.chown(dir, prep.serverUser.uid, prep.serverUser.gid);
  }
  ctx.log(`created ${prep.create.at(-1)} owned by ${prep.serverUser.name}:${prep.serverUser.groupName}`);
}

/**
 * Write the server's env file when the repository step found it missing or stale. Returns how to
 * undo it (remove a new file, put back the old one) for when the settings are rolled back.
 */
async function writeEnvFile(ctx: StepContext): Promise<() => Promise<void>> {
  const svc = services(ctx);
  const prep = repoPrep(ctx);
  const plan = envFilePlan(ctx);
  if (!plan || !prep.writeEnvFile) return async () => undefined;
  registerRepoSecrets(ctx);
  const previous = await fsp
    .stat(plan.path)
    .then(async (st) => ({ st, data: await fsp.readFile(plan.path) }))
    .catch(() => undefined);
  const owner = prep.serverUser ? { uid: prep.serverUser.uid, gid: prep.serverUser.gid } : undefined;
  const names = Object.keys(serverEnvFileVars(svc.repo!, svc.env) ?? {});
  const written = await writeServerEnvFile(plan.path, svc.repo!, svc.env, owner);
  if (!written) {
    throw new Error(
      `this environment no longer holds the repository's credentials (${plan.names.join(', ')}) that ${plan.path} was planned with: run again with them set (when resuming, the same environment as the run being resumed)`,
    );
  }
  ctx.log(`wrote ${written} (mode 0600, owner ${prep.serverUser ? `${prep.serverUser.name}:${prep.serverUser.groupName}` : 'this user'}): ${names.join(', ')}`);
  return async () => {
    try {
      if (!previous) {
        await fsp.rm(plan.path, { force: true });
        ctx.log(`rolled back: removed ${plan.path}`, 'warn');
      } else {
        await fsp.writeFile(plan.path, previous.data, { mode: 0o600 });
        await fsp.chmod(plan.path, previous.st.mode & 0o7777);
        if (isRoot()) await fsp.chown(plan.path, previous.st.uid, previous.st.gid);
        ctx.log(`rolled back: ${plan.path} has its previous contents again`, 'warn');
      }
    } catch (err) {
      ctx.log(`could not roll back ${plan.path} (${(err as Error).message})`, 'error');
    }
  };
}

/** postgresql.auto.conf's values for these settings (superusers only), to roll back to. */
async function readAutoConf(c: pg.Client, names: string[]): Promise<Record<string, string | null> | undefined> {
  try {
    const r = await c.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%/postgresql.auto.conf' AND name = ANY($1) ORDER BY seqno`,
      [names],
    );
    const out: Record<string, string | null> = Object.fromEntries(names.map((n) => [n, null]));
    for (const row of r.rows) out[row.name] = row.setting;
    return out;
  } catch {
    return undefined; // not allowed to read pg_file_settings: roll back with RESET
  }
}

/** ALTER SYSTEM each change and reload. Returns the previous postgresql.auto.conf values; rolls back what it wrote if one fails. */
async function applySettings(ctx: StepContext, c: pg.Client, changes: Change[]): Promise<Record<string, string | null> | undefined> {
  const prior = await readAutoConf(
    c,
    changes.map((ch) => ch.name),
  );
  const done: Change[] = [];
  try {
    for (const ch of changes) {
      ctx.signal.throwIfAborted();
      await c.query(alterStatement(ch.name, desiredValue(ctx, ch.name), (v) => c.escapeLiteral(v)));
      done.push(ch);
      ctx.log(alterStatement(ch.name, desiredValue(ctx, ch.name), sqlQuote));
    }
    await c.query('SELECT pg_reload_conf()');
  } catch (err) {
    await rollBack(ctx, c, done, prior);
    throw new Error(`ALTER SYSTEM failed: ${(err as Error).message}; what was written has been rolled back, nothing was changed`);
  }
  return prior;
}

async function rollBack(ctx: StepContext, c: pg.Client, changes: Change[], prior: Record<string, string | null> | undefined): Promise<void> {
  for (const ch of changes) {
    const before = prior?.[ch.name];
    const sql = before === undefined || before === null ? `ALTER SYSTEM RESET ${ch.name}` : alterStatement(ch.name, before, (v) => c.escapeLiteral(v));
    try {
      await c.query(sql);
      ctx.log(`rolled back: ${before === undefined || before === null ? sql : alterStatement(ch.name, before, sqlQuote)}`, 'warn');
    } catch (err) {
      ctx.log(`could not roll back ${ch.name} (${(err as Error).message}); remove its line from postgresql.auto.conf by hand`, 'error');
    }
  }
  await c.query('SELECT pg_reload_conf()').catch(() => undefined);
}

/**
 * After pg_reload_conf(): wait until settings that need no restart show their new value and
 * those that do show pending_restart (the reload reaches backends asynchronously).
 */
async function waitForSettings(c: pg.Client, ctx: StepContext, changes: Change[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = (
      await c.query<{ name: string; setting: string; reset_val: string; pending_restart: boolean }>(
        `SELECT name, setting, reset_val, pending_restart FROM pg_settings WHERE name = ANY($1)`,
        [changes.map((ch) => ch.name)],
      )
    ).rows;
    const waiting = changes.filter((ch) => {
      const row = rows.find((r) => r.name === ch.name);
      if (!row) return true;
      if (ch.restart) return !row.pending_restart;
      const value = row.setting === '(disabled)' ? row.reset_val : row.setting;
      if (ch.name === 'archive_timeout') return Number(value) !== archiveTimeoutSec(ctx);
      return value !== desiredValue(ctx, ch.name);
    });
    if (!waiting.length) {
      const pending = changes.filter((ch) => ch.restart).map((ch) => ch.name);
      if (pending.length) ctx.log(`after the reload PostgreSQL reports pending_restart for ${pending.join(' and ')}: a restart is needed for ${pending.length > 1 ? 'them' : 'it'} to take effect`, 'warn');
      return;
    }
    if (Date.now() > deadline) {
      const errors = await c
        .query<{ name: string; error: string; sourcefile: string }>(`SELECT name, error, sourcefile FROM pg_file_settings WHERE error IS NOT NULL`)
        .then((r) => r.rows.map((e) => `${e.sourcefile}: ${e.name ?? ''} ${e.error}`))
        .catch(() => [] as string[]);
      throw new Error(
        `the server did not take ${waiting.map((w) => w.name).join(', ')} within ${timeoutMs / 1000} s after pg_reload_conf()` +
          (errors.length ? ` (configuration errors: ${errors.join('; ')})` : ''),
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function postmasterStart(ctx: StepContext): Promise<string | undefined> {
  try {
    return await withPg({ ...services(ctx).connection, connectTimeoutSec: 5 }, async (c) => (await c.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t')).rows[0].t);
  } catch {
    return undefined;
  }
}

async function applyAndRestart(ctx: StepContext): Promise<void> {
  const svc = services(ctx);
  const spec = controlSpec(ctx);
  const problem = serverControlProblem(spec);
  if (problem) throw new Error(`cannot restart: ${problem}`);
  const changes = proposal(ctx).changes;
  await withPg(svc.connection, (c) => assertSameTarget(ctx, c));
  await createRepositoryDir(ctx);
  const undoEnvFile = await writeEnvFile(ctx);

  const { before, prior } = await withPg(svc.connection, async (c) => {
    const t = (await c.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t')).rows[0].t;
    let p;
    try {
      p = await applySettings(ctx, c, changes);
    } catch (err) {
      await undoEnvFile();
      throw err;
    }
    try {
      await waitForSettings(c, ctx, changes);
    } catch (err) {
      await rollBack(ctx, c, changes, p);
      await undoEnvFile();
      throw new Error(`${(err as Error).message}; the settings were rolled back, nothing was changed`);
    }
    return { before: t, prior: p };
  });

  const rollBackNow = async (why: string): Promise<never> => {
    await withPg(svc.connection, (c) => rollBack(ctx, c, changes, prior)).catch(() => undefined);
    await undoEnvFile();
    throw new Error(`${why}. PostgreSQL kept running with its old settings; the new ones were rolled back, so nothing changed. Fix the cause and run this procedure again.`);
  };

  ctx.log(`restarting PostgreSQL: ${describeRestart(spec)}`, 'warn');
  // No abort signal: stopping pg_ctl or systemctl half-way can leave the server down.
  let restartError: Error | undefined;
  try {
    const r = await restartServer(spec, { mode: 'fast' });
    if (r.logFile) ctx.log(`the server writes its log to ${r.logFile}`);
  } catch (err) {
    restartError = err as Error;
  }

  const up = await waitForConnections(svc.connection, restartError ? 5_000 : 120_000);
  const after = up ? await postmasterStart(ctx) : undefined;
  if (restartError) {
    if (after === before) await rollBackNow(`the restart failed before the server stopped: ${restartError.message}`);
    if (!after) {
      throw new Error(
        `${restartError.message}\nPostgreSQL does not accept connections after the failed restart. The new settings are in postgresql.auto.conf ` +
          `(${changes.map((c) => c.name).join(', ')}). Find the cause in the server log, then start it: ${describeStart(spec)}. ` +
          `To start with the old settings instead, remove those lines from ${spec.pgdata ?? 'DATADIR'}/postgresql.auto.conf first.`,
      );
    }
    ctx.log(`the restart reported an error, but the server is back (started ${after}): ${restartError.message}`, 'warn');
  } else if (!up) {
    throw new Error(
      `PostgreSQL did not accept connections within 120 s after the restart (${describeRestart(spec)}). Check the server log and its status; ` +
        `start it with: ${describeStart(spec)}. The new settings are in postgresql.auto.conf (${changes.map((c) => c.name).join(', ')}).`,
    );
  } else if (after === before) {
    await rollBackNow(`the restart command succeeded but the server was not restarted (pg_postmaster_start_time is still ${before}); check the profile's server control`);
  }
  ctx.log(`PostgreSQL restarted (up since ${after})`);

  const live = await withPg(svc.connection, (c) =>
    c.query<{ name: string; setting: string; pending_restart: boolean }>(`SELECT name, setting, pending_restart FROM pg_settings WHERE name = ANY($1)`, [
      changes.map((ch) => ch.name),
    ]),
  );
  const notLive = changes.filter((ch) => {
    const row = live.rows.find((r) => r.name === ch.name);
    return !row || row.pending_restart || (ch.restart && !liveIsDesired(ctx, ch.name, row.setting));
  });
  if (notLive.length) {
    throw new Error(
      `after the restart ${notLive.map((c) => c.name).join(', ')} still do not have the new values: another configuration source overrides them (see SELECT * FROM pg_file_settings), or the server was started with -c options`,
    );
  }
  ctx.log(`live now: ${changes.map((c) => `${c.name} = ${c.to}`).join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// step 6: prove

interface ArchiverNow {
  last_archived_wal: string | null;
  failed_count: string;
  last_failed_wal: string | null;
  last_failed_time: string | null;
}

async function findLogFile(ctx: StepContext): Promise<string | undefined> {
  const svc = services(ctx);
  const insp = ctx.state.inspection as Inspection | undefined;
  const dataDir = localDataDir(ctx) ?? insp?.serverDataDirectory;
  const candidates: (string | undefined)[] = [ctx.params.serverLog as string | undefined, svc.profile.serverLog];
  const current = await withPg(svc.connection, async (c) => {
    const r = await c.query<{ f: string | null }>(`SELECT CASE WHEN pg_has_role('pg_monitor', 'member') THEN pg_current_logfile() END AS f`);
    return r.rows[0].f ?? undefined;
  }).catch(() => undefined);
  if (current) candidates.push(path.isAbsolute(current) ? current : dataDir ? path.join(dataDir, current) : undefined);
  if (dataDir) candidates.push(await serverStderrFile(dataDir));
  for (const c of candidates) {
    if (!c) continue;
    try {
      fs.accessSync(c, fs.constants.R_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

// A line written by the server's logger ("2026-11-24 16:37:16.913 UTC [16519] LOG:  ..."); other lines
// in the server's stderr come from child programs, such as archive_command saying why it failed.
const LOGGER_LINE = /\b(LOG|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT|NOTICE|INFO|DEBUG\d?):\s/;

/**
 * Server log lines about archiving written since `offset` (at most the last 256 KiB): the
 * logger's lines that mention archiving, and the archive command's own output (lines not from
 * the logger, e.g. "pgrunbook wal-push: cannot put ...").
 */
export async function archiveLogLines(file: string, offset: number): Promise<string[]> {
  const fh = await fsp.open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const start = Math.max(offset > size ? 0 : offset, size - 256 * 1024);
    const buf = Buffer.alloc(Math.max(0, size - start));
    await fh.read(buf, 0, buf.length, start);
    const out: string[] = [];
    for (const l of buf.toString('utf8').split('\n')) {
      if (!l.trim()) continue;
      const fromLogger = LOGGER_LINE.test(l);
      if ((fromLogger && /archiv/i.test(l)) || !fromLogger) out.push(l.length > 400 ? `${l.slice(0, 400)}…` : l);
    }
    return out.slice(-15);
  } finally {
    await fh.close();
  }
}

/** The few lines that say why: the command's own output first, then PostgreSQL's verdict; without log prefixes. */
export function telltaleLines(lines: string[]): string[] {
  const strip = (l: string) => l.replace(/^.*?\b(LOG|WARNING|ERROR|DETAIL):\s+/, '$1: ');
  const own = [...new Set(lines.filter((l) => !LOGGER_LINE.test(l)))].slice(-2);
  const verdict = lines.filter((l) => /archive command (failed|was terminated)/i.test(l)).slice(-1);
  const picked = [...own, ...verdict].map(strip);
  return picked.length ? picked : lines.slice(-2).map(strip);
}

function adviceFor(lines: string[], prep: RepoPrep): string {
  const text = lines.join('\n');
  if (/EACCES|permission denied|access-denied/i.test(text)) {
    return prep.root && prep.serverUser
      ? `the server's OS user cannot write the repository: chown -R ${prep.serverUser.name}:${prep.serverUser.groupName} ${shellQuote(prep.root)}`
      : "the server's OS user cannot write the repository or run the command: fix the permissions";
  }
  if (/not found|No such file|cannot find module|ENOENT/i.test(text)) return 'the archive_command\'s program is not found or not readable by the server\'s OS user: check the paths in archive_command';
  if (/credential|AccessDenied|AuthenticationFailed|InvalidAccessKeyId|SignatureDoesNotMatch|403/i.test(text)) {
    return 'the server lacks the repository\'s credentials: run this procedure with the repository\'s AWS_* / AZURE_STORAGE_* variables set (it writes them to the env file archive_command names), or pass --archive-command with a wrapper that reads them from a file only the server\'s OS user can read';
  }
  if (/DIFFERENT contents/.test(text)) return 'another cluster archives into this repository: give this cluster its own --repo';
  return 'read the server log lines above, fix the cause';
}

/**
 * Whether the running postmaster's environment holds credentials (names only, from
 * /proc/PID/environ when readable): a server started by hand from an operator's shell passes them
 * to archive_command, and a proof that leans on them fails after the next clean restart.
 */
async function noteServerEnvironment(ctx: StepContext): Promise<void> {
  const insp = ctx.state.inspection as Inspection | undefined;
  const dataDir = localDataDir(ctx) ?? insp?.serverDataDirectory;
  const pid = dataDir ? await postmasterPid(dataDir) : undefined;
  if (!pid) return;
  let names: string[];
  try {
    names = (await fsp.readFile(`/proc/${pid}/environ`, 'utf8'))
      .split('\0')
      .map((e) => e.slice(0, Math.max(0, e.indexOf('='))))
      .filter(Boolean);
  } catch {
    return; // not Linux, or not allowed to read it
  }
  const envFile = envFilePlan(ctx);
  const held = names.filter((n) => /^(AWS_|AZURE_STORAGE_|GOOGLE_APPLICATION_CREDENTIALS$|PGPASSWORD$)|SECRET|TOKEN|PASSWORD/.test(n));
  if (held.length) {
    ctx.log(
      `the running server's environment holds ${held.join(', ')} (from whoever started it): archive_command sees ${held.length > 1 ? 'them' : 'it'}, ` +
        `and ${held.length > 1 ? 'they are' : 'it is'} gone after a restart with a clean environment` +
        (envFile ? `; archive_command takes the repository's variables from ${envFile.path}, whose values win` : '') +
        `. Restart the server with pgrunbook or its service manager to drop ${held.length > 1 ? 'them' : 'it'}.`,
      'warn',
    );
  } else {
    ctx.log(
      `the running server's environment holds no credentials${envFile ? `; archive_command reads the repository's from ${envFile.path}` : ''}: a segment archived now is archived after the next restart too`,
    );
  }
}

async function prove(ctx: StepContext): Promise<void> {
  const svc = services(ctx);
  registerRepoSecrets(ctx);
  const prep = repoPrep(ctx);
  const timeoutSec = Number(ctx.params.timeout ?? 60);

  // The settings as they are now, one check each.
  const rows = await withPg(svc.connection, async (c) =>
    (
      await c.query<{ name: string; setting: string; reset_val: string; pending_restart: boolean }>(
        `SELECT name, setting, reset_val, pending_restart FROM pg_settings WHERE name = ANY($1)`,
        [READ_SETTINGS],
      )
    ).rows,
  );
  let settingsOk = true;
  for (const name of ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout', 'archive_library'] as SettingName[]) {
    const row = rows.find((r) => r.name === name);
    if (!row) continue; // archive_library before PostgreSQL 15
    const value = row.setting === '(disabled)' ? row.reset_val : row.setting;
    const ok = liveIsDesired(ctx, name, value) && !row.pending_restart;
    if (name === 'archive_library' && ok) continue;
    settingsOk &&= ok;
    const shown = name === 'archive_timeout' ? `${value}s` : value || "''";
    ctx.check(
      name,
      ok,
      ok
        ? shown
        : `${shown}${row.pending_restart ? ' (a different value is pending a restart)' : ''}; expected ${name === 'archive_command' ? desiredValue(ctx, name) : desiredValue(ctx, name) || "''"}`,
    );
  }
  if (!settingsOk) {
    ctx.check('segment archived', false, 'not attempted: the settings above are not in effect; run this procedure again (with --yes and --confirm) to apply them');
    return;
  }

  await noteServerEnvironment(ctx);

  const logFile = await findLogFile(ctx);
  const logOffset = logFile ? await fsp.stat(logFile).then((s) => s.size, () => 0) : 0;
  const repo = await openRepository(svc.repo, svc.env);
  try {
    await withPg(svc.connection, async (c) => {
      const baseline = Number((await c.query<{ n: string }>('SELECT failed_count AS n FROM pg_stat_archiver')).rows[0].n);
      // A transaction with an xid writes a commit record, so the switch has a segment to close even on an idle server.
      await c.query('SELECT pg_current_xact_id()');
      const seg = (await c.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name')).rows[0].name;
      const switchedAt = Date.now();
      ctx.log(`switched WAL: segment ${seg} is complete and waits for archive_command`);
      const deadline = switchedAt + timeoutSec * 1000;
      let reported = false;
      let reportedAt = 0;
      for (;;) {
        ctx.signal.throwIfAborted();
        const s = (
          await c.query<ArchiverNow>(`SELECT last_archived_wal, failed_count, last_failed_wal, last_failed_time::text FROM pg_stat_archiver`)
        ).rows[0];
        const last = s.last_archived_wal;
        if (!reported && last && SEGMENT_RE.test(last) && last >= seg) {
          reported = true;
          reportedAt = Date.now();
        }
        if (reported) {
          const key = (await repo.store.head(walKey(seg, 'gzip'))) ? walKey(seg, 'gzip') : (await repo.store.head(walKey(seg, 'none'))) ? walKey(seg, 'none') : undefined;
          if (key) {
            const info = await repo.store.head(key);
            ctx.check('segment archived', true, `${seg} arrived in ${repo.describe()} as ${key} (${info?.size ?? '?'} bytes) ${Date.now() - switchedAt} ms after the switch`);
            return;
          }
          // PostgreSQL says it is archived but it is not in this repository: archive_command writes elsewhere.
          if (Date.now() - reportedAt > 5_000 || Date.now() > deadline) {
            ctx.check(
              'segment archived',
              false,
              `PostgreSQL reports ${seg} archived (pg_stat_archiver), but neither ${walKey(seg, 'gzip')} nor ${walKey(seg, 'none')} is in ${repo.describe()}: ` +
                `archive_command stores WAL somewhere else. Point it at this repository (run again without --archive-command, or fix the wrapper).`,
            );
            return;
          }
        }
        const failures = Number(s.failed_count) - baseline;
        if (failures >= FAILURES_BEFORE_GIVING_UP || (Date.now() > deadline && failures > 0)) {
          const lines = logFile ? await archiveLogLines(logFile, logOffset).catch(() => [] as string[]) : [];
          for (const l of lines) ctx.log(l, 'error');
          ctx.check(
            'segment archived',
            false,
            `archive_command failed ${failures} times since the switch (last failed: ${s.last_failed_wal} at ${s.last_failed_time}). ` +
              (lines.length
                ? `The server log (${logFile}) says: ${telltaleLines(lines).join(' | ')}. `
                : logFile
                  ? `The server log (${logFile}) has no lines about it since the switch. `
                  : 'The server log is not readable here (pass --server-log FILE); look in it for "archive command failed". ') +
              `What to do: ${adviceFor(lines, prep)}; then run this procedure again. Until archiving works, WAL piles up in pg_wal and can fill the disk.`,
          );
          return;
        }
        if (Date.now() > deadline) {
          ctx.check(
            'segment archived',
            false,
            `${seg} was not archived within ${timeoutSec} s (pg_stat_archiver.last_archived_wal = ${last ?? 'none'}, no failures reported): ` +
              `the archiver may be working through a backlog or archive_command may hang. Check SELECT * FROM pg_stat_archiver and the server log${logFile ? ` (${logFile})` : ''}; ` +
              'run again with a longer --timeout.',
          );
          return;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    });
  } finally {
    await repo.close().catch(() => undefined);
  }
}
