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
//
// The steps' work lives in ./wal-archiving/: inspect, repository, apply, prove; the pure rules
// of what the settings should be in ./wal-archiving/plan.ts; SQL in src/postgres/settings.ts and
// src/postgres/archiver.ts.
import { describeEndpoint } from '../postgres/client.js';
import { describeRestart } from '../postgres/server-control.js';
import { RELOAD_TEXT } from '../postgres/settings.js';
import { SWITCH_WAL_TEXT } from '../postgres/archiver.js';
import { ConfirmationRefusedError } from '../engine/types.js';
import { defineProcedure } from './define.js';
import { applyAndRestart, applyWithReload } from './wal-archiving/apply.js';
import {
  confirmName, confirmNameMeaning,
  controlSpec,
  desiredOf,
  inspectionOf,
  nothingToDo,
  proposalOf,
  registerRepoSecrets,
  repoDescription,
  repoPrepOf,
  restartTarget,
  timeoutSec,
} from './wal-archiving/context.js';
import { inspect } from './wal-archiving/inspect.js';
import { alterLines, capitalize, createLines, parseDurationSec, restartNames } from './wal-archiving/plan.js';
import { checkSettingsLive, noteServerEnvironment, proveSegmentArrives } from './wal-archiving/prove.js';
import { checkRepository } from './wal-archiving/repository.js';
import type { Finding, WalArchivingParams, WalArchivingState, WalCtx } from './wal-archiving/types.js';

export const walArchivingProcedure = defineProcedure<WalArchivingParams, WalArchivingState>({
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
    {
      name: 'asyncArchive',
      type: 'boolean',
      default: true,
      description:
        'asynchronous archiving: a background pusher pushes the segments PostgreSQL marks ready ahead, in parallel, and archive_command returns at once for those (a shell test, no program start); --no-async-archive sets the plain synchronous wal-push',
    },
    {
      name: 'spoolDir',
      type: 'string',
      description: "the pusher's directory (mode 0700, owned by the server's OS user); default <parent of the data directory>/pgrunbook-<cluster>.spool. Not inside the data directory",
      example: '/var/lib/postgresql/15/pgrunbook-main.spool',
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
    if (params.archiveTimeout !== undefined && parseDurationSec(params.archiveTimeout) === undefined) {
      errors.push(`--archive-timeout: "${params.archiveTimeout}" is not a duration greater than 0 (e.g. 60s, 5min, 1h)`);
    }
    if (params.timeout !== undefined && !(Number(params.timeout) > 0)) errors.push(`--timeout: must be a number of seconds greater than 0, got ${params.timeout}`);
    const cmd = params.archiveCommand;
    if (cmd !== undefined && params.serverEnvFile !== undefined) {
      errors.push('--server-env-file goes with pgrunbook\'s own wal-push; with --archive-command your command provides the credentials itself: drop one of them');
    }
    if (params.serverEnvFile !== undefined && !params.serverEnvFile.trim()) errors.push('--server-env-file: give a file path');
    if (params.spoolDir !== undefined && (cmd !== undefined || params.asyncArchive === false)) {
      errors.push('--spool-dir goes with pgrunbook\'s own asynchronous wal-push: drop it, or drop --archive-command / --no-async-archive');
    }
    if (params.spoolDir !== undefined && !params.spoolDir.trim()) errors.push('--spool-dir: give a directory path');
    if (cmd !== undefined && !/%[pf]/.test(cmd)) {
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
        `Reading wal_level, archive_mode, archive_command, archive_timeout and pg_stat_archiver from ${describeEndpoint(ctx.services.connection)}, ` +
        'to see what stands between this server and archiving into the repository. Nothing is changed.',
      async plan(ctx) {
        logFindings(ctx, await inspect(ctx));
        return [`read the settings and pg_stat_archiver at ${describeEndpoint(ctx.services.connection)}`];
      },
      async run(ctx) {
        logFindings(ctx, await inspect(ctx));
        const insp = inspectionOf(ctx);
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
        logFindings(ctx, await checkRepository(ctx));
        const prep = repoPrepOf(ctx);
        return prep.create?.length ? [`create ${prep.create.at(-1)} owned by ${prep.serverUser?.name ?? 'the server\'s OS user'}`] : [];
      },
      async run(ctx) {
        logFindings(ctx, await checkRepository(ctx));
      },
    },
    {
      id: 'propose',
      title: 'Propose the settings',
      kind: 'action',
      describe: (ctx) =>
        'Showing the ALTER SYSTEM statements that make the server archive into the repository, and asking to apply them. ' +
        (proposalOf(ctx).restartNeeded
          ? `${restartNames(proposalOf(ctx).changes)} ${restartVerb(ctx, 'take')} effect only after a restart, which is asked for separately (typed confirmation) before anything is changed.`
          : 'They take effect on a configuration reload; no restart is needed.'),
      skipIf: (ctx) => (nothingToDo(ctx) ? 'nothing to change: the archiving settings are right' : undefined),
      plan: (ctx) => proposalLines(ctx),
      async run(ctx) {
        for (const line of proposalLines(ctx)) ctx.log(line);
        const restart = proposalOf(ctx).restartNeeded ? ' A restart of PostgreSQL is needed afterwards; it is asked for next, before anything is changed.' : '';
        const ok = await ctx.confirm({ message: `${capitalize(proposalSummary(ctx))}?${restart}` });
        if (!ok) throw new ConfirmationRefusedError('the proposed settings were not confirmed, so nothing was changed (headless: pass --yes to allow them)');
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
          : proposalOf(ctx).restartNeeded
            ? 'the settings need a restart: they are applied in the next step, after its typed confirmation'
            : undefined,
      plan: (ctx) => [...filesAndStatements(ctx), `${RELOAD_TEXT} and wait until the server shows the new values`],
      run: (ctx) => applyWithReload(ctx),
    },
    {
      id: 'apply-restart',
      title: 'Apply the settings and restart PostgreSQL',
      kind: 'action',
      describe: (ctx) =>
        `Writing the settings with ALTER SYSTEM and reloading; ${restartNames(proposalOf(ctx).changes)} then ${restartVerb(ctx, 'show')} pending_restart, so PostgreSQL is restarted ` +
        `(${describeRestart(controlSpec(ctx))}): open connections are dropped and clients reconnect. ` +
        'If the restart cannot begin, the settings are rolled back.',
      destructive: {
        what: (ctx) => `restart PostgreSQL ${restartTarget(ctx)} (connections are dropped)`,
        confirmText: (ctx) => confirmName(ctx),
        confirmMeaning: (ctx) => confirmNameMeaning(ctx),
      },
      skipIf: (ctx) => (proposalOf(ctx).restartNeeded ? undefined : 'no restart needed'),
      plan: (ctx) => [
        ...filesAndStatements(ctx),
        `${RELOAD_TEXT}; expect pending_restart for ${restartNames(proposalOf(ctx).changes)}`,
        describeRestart(controlSpec(ctx)),
        'wait until the server accepts connections, then check the new values are live',
      ],
      run: (ctx) => applyAndRestart(ctx),
    },
    {
      id: 'prove',
      title: 'Prove a WAL segment arrives in the repository',
      kind: 'verify',
      describe: (ctx) =>
        `Checking the live settings, then forcing a WAL segment switch (pg_switch_wal) and waiting up to ${timeoutSec(ctx)} s ` +
        `until pg_stat_archiver reports it archived AND the segment is in ${repoDescription(ctx)}: the only proof that archiving works end to end.`,
      plan: (ctx) => [
        'check wal_level, archive_mode, archive_command, archive_timeout are live',
        SWITCH_WAL_TEXT,
        `wait up to ${timeoutSec(ctx)} s for pg_stat_archiver.last_archived_wal >= that segment and wal/<segment>.zst (or .gz, or wal/<segment>) in ${repoDescription(ctx)}`,
      ],
      async run(ctx) {
        registerRepoSecrets(ctx);
        if (!(await checkSettingsLive(ctx))) return;
        await noteServerEnvironment(ctx);
        await proveSegmentArrives(ctx);
      },
    },
  ],
});

function logFindings(ctx: WalCtx, findings: Finding[]): void {
  for (const f of findings) ctx.log(f.text, f.level);
}

/** "take" or "takes", for the settings that need the restart. */
function restartVerb(ctx: WalCtx, verb: string): string {
  return restartNames(proposalOf(ctx).changes).includes(' and ') ? verb : `${verb}s`;
}

/** The directories and files the apply steps create, then their ALTER SYSTEM statements. */
function filesAndStatements(ctx: WalCtx): string[] {
  return [...createLines(repoPrepOf(ctx), ctx.state.envFile), ...alterLines(desiredOf(ctx), proposalOf(ctx).changes)];
}

function proposalLines(ctx: WalCtx): string[] {
  const p = proposalOf(ctx);
  const lines = [...filesAndStatements(ctx), ...(p.changes.length ? [RELOAD_TEXT] : [])];
  if (p.restartNeeded) lines.push(`restart PostgreSQL (${describeRestart(controlSpec(ctx))}) for ${restartNames(p.changes)}, after a typed confirmation`);
  return lines;
}

/** What the propose step asks to do, in one sentence. */
function proposalSummary(ctx: WalCtx): string {
  const p = proposalOf(ctx);
  const prep = repoPrepOf(ctx);
  const envFile = ctx.state.envFile;
  return [
    p.changes.length ? `apply ${p.changes.map((c) => `${c.name} = ${c.to}`).join(', ')} with ALTER SYSTEM` : undefined,
    prep.create?.length ? `create ${prep.create.at(-1)}` : undefined,
    prep.writeEnvFile && envFile ? `write the repository's credentials to ${envFile.path} (mode 0600)` : undefined,
  ]
    .filter(Boolean)
    .join(' and ');
}
