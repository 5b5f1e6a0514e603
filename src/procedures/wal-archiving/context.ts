// What the wal-archiving steps derive from their parameters, services and shared state: the
// target they act on (and the text that confirms a restart of it), what this run wants set.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describeEndpoint, withPg } from '../../postgres/client.js';
import { serverControlFor, type ServerControlSpec } from '../../postgres/server-control.js';
import { readDataDirectory } from '../../postgres/settings.js';
import { parseRepoUrl, secretsOf } from '../../storage/url.js';
import { defaultServerEnvFile, defaultSpoolDir, secretValues, serverEnvFileVars, walCommandLine } from '../pgrunbook-command.js';
import { parseDurationSec, type Desired } from './plan.js';
import type { EnvFilePlan, Inspection, Proposal, RepoPrep, WalCtx } from './types.js';

export function inspectionOf(ctx: WalCtx): Inspection {
  const i = ctx.state.inspection;
  if (!i) throw new Error('internal: the settings were not read (step "inspect" did not run)');
  return i;
}

export function proposalOf(ctx: WalCtx): Proposal {
  return ctx.state.proposal ?? { changes: [], restartNeeded: false };
}

export function repoPrepOf(ctx: WalCtx): RepoPrep {
  return ctx.state.repoPrep ?? { kind: 'file' };
}

export function nothingToDo(ctx: WalCtx): boolean {
  const prep = repoPrepOf(ctx);
  return proposalOf(ctx).changes.length === 0 && !prep.create?.length && !prep.writeEnvFile;
}

export function timeoutSec(ctx: WalCtx): number {
  return Number(ctx.params.timeout ?? 60);
}

/** The repository URL; inspect refuses to run without one. */
export function repoUrl(ctx: WalCtx): string {
  const repo = ctx.services.repo;
  if (!repo) throw new Error('no backup repository: pass the same --repo URL as the run being resumed (it is not journaled)');
  return repo;
}

/**
 * The archive_command to set: --archive-command when given; else `pgrunbook wal-push --repo URL %p`
 * with the absolute path of a `pgrunbook` on PATH (the server's PATH is not ours); else this
 * installation's node and dist/cli.js.
 */
export function desiredArchiveCommand(ctx: WalCtx): { command: string; program?: { node?: string; script: string } } {
  const override = ctx.params.archiveCommand;
  if (override) return { command: override };
  return walCommandLine('wal-push', ctx.services.repo ?? '', ctx.services.env, { envFile: ctx.state.envFile?.path, spool: ctx.state.spool });
}

/**
 * The spool of asynchronous archiving (a pusher pushes the .ready segments ahead; archive_command
 * returns at once for those): --spool-dir, else <parent of the data directory>/pgrunbook-<cluster>.spool
 * when the data directory is visible here. None with --no-async-archive or --archive-command.
 * Never inside the data directory: base backups copy that.
 */
export function planSpool(ctx: WalCtx, insp: Inspection): string | undefined {
  if (ctx.params.archiveCommand || ctx.params.asyncArchive === false) return undefined;
  const given = ctx.params.spoolDir;
  const dir = localDataDir(ctx) ?? insp.serverDataDirectory;
  const spool = given ? path.resolve(given) : dir && fs.existsSync(dir) ? defaultSpoolDir(dir, insp.clusterName) : undefined;
  if (spool && dir && (spool === path.resolve(dir) || spool.startsWith(`${path.resolve(dir)}${path.sep}`))) {
    throw new Error(`--spool-dir ${spool} is inside the data directory ${dir}: base backups would copy it; pass a directory next to it`);
  }
  return spool;
}

export function desiredOf(ctx: WalCtx): Desired {
  return {
    archiveCommand: desiredArchiveCommand(ctx).command,
    overrideGiven: Boolean(ctx.params.archiveCommand),
    repoUrl: ctx.services.repo ?? '',
    envFile: ctx.state.envFile?.path,
    spool: ctx.params.archiveCommand ? undefined : ctx.params.asyncArchive === false ? false : ctx.state.spool,
    archiveTimeoutSec: parseDurationSec(ctx.params.archiveTimeout ?? '60s') ?? 60,
  };
}

/**
 * Whether archive_command gets an env file, and where: only for pgrunbook's own wal-push into an
 * S3 or Azure repository whose variables are in our environment, and only when we know where the
 * server lives (--server-env-file, or its data directory visible here). The option is not called
 * --env-file: Node.js takes any --env-file* argument, even one after the script, as its own and
 * exits when that file does not exist yet (nodejs/node#54232).
 */
export function planEnvFile(ctx: WalCtx, insp: Inspection): EnvFilePlan | undefined {
  const svc = ctx.services;
  if (ctx.params.archiveCommand || !svc.repo) return undefined;
  const vars = serverEnvFileVars(svc.repo, svc.env);
  if (!vars) return undefined;
  const given = ctx.params.serverEnvFile;
  if (given) return { path: path.resolve(given), names: Object.keys(vars) };
  const dir = localDataDir(ctx) ?? insp.serverDataDirectory;
  if (!dir || !fs.existsSync(dir)) return undefined;
  return { path: defaultServerEnvFile(dir, insp.clusterName), names: Object.keys(vars) };
}

export function repoDescription(ctx: WalCtx): string {
  const repo = ctx.services.repo;
  if (!repo) return 'the repository';
  try {
    const loc = parseRepoUrl(repo, ctx.services.env);
    return loc.kind === 'file' ? `the repository ${loc.root}` : `the repository ${repo.replace(/\?.*$/, '')}`;
  } catch {
    return 'the repository';
  }
}

export function localDataDir(ctx: WalCtx): string | undefined {
  const pgdata = ctx.services.pgdata;
  return pgdata ? path.resolve(pgdata) : undefined;
}

/** The data directory as seen here: --pgdata, else what the server reported. */
export function dataDirOf(ctx: WalCtx): string | undefined {
  return localDataDir(ctx) ?? ctx.state.inspection?.serverDataDirectory;
}

export function controlSpec(ctx: WalCtx): ServerControlSpec {
  return serverControlFor(ctx.services.profile.server, localDataDir(ctx));
}

/** What the restart acts on, in the operator's terms: the data directory, else host:port. */
export function restartTarget(ctx: WalCtx): string {
  const spec = controlSpec(ctx);
  const where = dataDirOf(ctx) ?? describeEndpoint(ctx.services.connection);
  return spec.method === 'systemd' ? `${where} (systemd unit ${spec.unit})` : where;
}

/**
 * The text an operator types to allow the restart: the server's cluster_name when set (stable,
 * and what Debian's postgresql-common sets, e.g. "15/main"), else the data directory's base name
 * (from --pgdata, else the server's data_directory), else the systemd unit, else host:port.
 */
export function confirmName(ctx: WalCtx): string {
  const clusterName = ctx.state.inspection?.clusterName;
  if (clusterName) return clusterName;
  const dir = dataDirOf(ctx);
  if (dir) return path.basename(dir);
  const spec = controlSpec(ctx);
  if (spec.unit) return spec.unit;
  const c = ctx.services.connection;
  return `${c.host ?? 'localhost'}:${c.port ?? 5432}`;
}

/** What confirmName's text is, in words, for the confirmation prompt. */
export function confirmNameMeaning(ctx: WalCtx): string {
  if (ctx.state.inspection?.clusterName) return "the cluster's name (cluster_name)";
  const dir = dataDirOf(ctx);
  if (dir) return `the data directory's name (the last part of ${dir})`;
  if (controlSpec(ctx).unit) return "the server's systemd unit";
  return "the server's host:port";
}

/**
 * What the proposal was made for: server, repository, data directory. --repo, --host and --pgdata
 * are not journaled parameters, so a --resume without them (or with others) must not apply a
 * proposal made for another target. Hashed: the repository URL may carry credentials.
 */
export function targetFingerprint(ctx: WalCtx, serverDataDirectory: string | undefined): string {
  const svc = ctx.services;
  const parts = [describeEndpoint(svc.connection), svc.repo ?? '', localDataDir(ctx) ?? '', serverDataDirectory ?? ''];
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 16);
}

/** Mask the repository's credentials everywhere (again in each changing step: a resumed run skips inspect). */
export function registerRepoSecrets(ctx: WalCtx): void {
  const svc = ctx.services;
  if (!svc.repo) return;
  for (const secret of secretsOf(parseRepoUrl(svc.repo, svc.env))) ctx.addSecret(secret);
  for (const secret of secretValues(serverEnvFileVars(svc.repo, svc.env))) ctx.addSecret(secret);
}

/** Before changing anything: the server, repository and data directory are the ones inspected. */
export async function assertSameTarget(ctx: WalCtx): Promise<void> {
  repoUrl(ctx);
  registerRepoSecrets(ctx);
  const serverDataDirectory = await withPg(ctx.services.connection, readDataDirectory);
  if (targetFingerprint(ctx, serverDataDirectory) !== ctx.state.target) {
    throw new Error(
      'the server, --repo or --pgdata differ from the ones inspected at the start of this run (when resuming, pass the same --host, --port, --repo and --pgdata: they are not journaled). Nothing was changed; start a new run to inspect this target.',
    );
  }
}
