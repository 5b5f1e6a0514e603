// The CLI behind `pgrunbook`: headless procedures, profiles, and the TUI when a person is
// at a terminal. Fast subcommands (wal-push, wal-fetch) are routed in cli.ts before this
// module loads, so they never pay for it.
import fs from 'node:fs';
import { EXIT, UsageError, type Params, type Procedure } from './engine/types.js';
import { FlagError, flagName, parseArgv, procedureBooleanFlags, resolveParams, type RawFlags } from './engine/params.js';
import { errorMessage, runProcedure, type RunSupervisor } from './engine/runner.js';
import { headlessAnswerer } from './engine/confirm.js';
import { humanReporter, jsonLinesReporter } from './engine/reporters.js';
import { defaultStateDir, journalPathFor, newRunId, readResumePoint } from './engine/journal.js';
import { MASK } from './engine/mask.js';
import { ConnectionStringError } from './config/connection.js';
import { loadProfile, ProfileError } from './config/store.js';
import type { Profile } from './config/profile.js';
import { buildServices, profileDefaults, runContextOf, type ProcedureServices } from './procedures/services.js';
import { loadProcedures } from './procedures/load.js';
import { profileCommand } from './config/command.js';

const GLOBAL_BOOLEANS = ['yes', 'json', 'dry-run', 'list', 'help', 'version'];
const GLOBAL_VALUED = ['procedure', 'profile', 'confirm', 'resume', 'host', 'port', 'user', 'dbname', 'pgdata', 'repo', 'state-dir'];
const ALIASES: Record<string, string> = { '-h': '--host', '-p': '--port', '-U': '--user', '-d': '--dbname', '-D': '--pgdata', '-y': '--yes', '-P': '--procedure' };

export interface MainIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  env: NodeJS.ProcessEnv;
}

export async function main(argv: string[], io: MainIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env }): Promise<number> {
  const { env } = io;
  const json = argv.includes('--json');
  const fail = (code: number, message: string, hint?: string): number => {
    io.stderr.write(`pgrunbook: ${message}\n${hint ? `${hint}\n` : ''}`);
    if (json) io.stdout.write(JSON.stringify({ type: 'error', exitCode: code, message, hint }) + '\n');
    return code;
  };

  if (argv[0] === 'profile') {
    try {
      return await profileCommand(argv.slice(1), io);
    } catch (err) {
      return fail(EXIT.usage, errorMessage(err));
    }
  }

  if (argv[0] === 'catalog') {
    try {
      const { catalogCommand } = await import('./commands/catalog.js');
      return await catalogCommand(argv.slice(1), io);
    } catch (err) {
      return fail(EXIT.failed, errorMessage(err));
    }
  }

  if (argv[0] === 'status') {
    try {
      const { statusCommand } = await import('./commands/status.js');
      return await statusCommand(argv.slice(1), io);
    } catch (err) {
      // Nagios UNKNOWN: the status could not be determined.
      io.stderr.write(`pgrunbook status: ${errorMessage(err)}\n`);
      return 3;
    }
  }

  let procedures: Procedure[];
  try {
    procedures = await loadProcedures(env);
  } catch (err) {
    return fail(EXIT.usage, errorMessage(err));
  }
  const names = procedures.map((p) => p.id).join(', ');

  // The procedure decides which of its flags are booleans, so find it before parsing
  // (for --resume, from the run's journal).
  const procArg = rawFlagValue(argv, '--procedure', '-P') ?? preResumeProcedure(argv, env);
  const preProcedure = procArg ? procedures.find((p) => p.id === procArg) : undefined;

  let flags: RawFlags;
  let positionals: string[];
  try {
    ({ flags, positionals } = parseArgv(argv, new Set([...GLOBAL_BOOLEANS, ...(preProcedure ? procedureBooleanFlags(preProcedure) : [])]), ALIASES));
  } catch (err) {
    if (err instanceof FlagError) return fail(EXIT.usage, err.message, 'see: pgrunbook --help');
    throw err;
  }
  if (positionals.length) return fail(EXIT.usage, `unexpected argument "${positionals[0]}"`, 'see: pgrunbook --help');

  if (flags.version) {
    io.stdout.write(`${await packageVersion()}\n`);
    return EXIT.ok;
  }
  if (flags.list) {
    if (flags.json) io.stdout.write(JSON.stringify(procedures.map((p) => ({ id: p.id, group: p.group, title: p.title, summary: p.summary }))) + '\n');
    else for (const p of procedures) io.stdout.write(`${p.id.padEnd(16)} ${p.group.padEnd(8)} ${p.summary}\n`);
    return EXIT.ok;
  }

  const stateDir = flags['state-dir'] ? String(flags['state-dir']) : defaultStateDir(env);
  let procedure: Procedure | undefined;
  let resumeFrom: ReturnType<typeof readResumePoint> | undefined;

  if (flags.resume !== undefined) {
    try {
      resumeFrom = readResumePoint(stateDir, String(flags.resume));
    } catch (err) {
      return fail(EXIT.usage, errorMessage(err));
    }
    if (resumeFrom.lastStatus === 'ok') return fail(EXIT.usage, `run ${resumeFrom.runId} already finished successfully; nothing to resume`);
    procedure = procedures.find((p) => p.id === resumeFrom!.procedure);
    if (!procedure) return fail(EXIT.usage, `run ${resumeFrom.runId} was procedure "${resumeFrom.procedure}", which this pgrunbook does not know (procedures: ${names})`);
    if (flags.procedure !== undefined && flags.procedure !== procedure.id) {
      return fail(EXIT.usage, `--procedure ${String(flags.procedure)} does not match run ${resumeFrom.runId}, which is ${procedure.id}; drop --procedure when resuming`);
    }
  } else if (flags.procedure !== undefined) {
    const id = String(flags.procedure);
    procedure = procedures.find((p) => p.id === id);
    if (!procedure) return fail(EXIT.usage, `unknown procedure "${id}"; valid procedures: ${names}`, 'list them with: pgrunbook --list');
  }

  if (flags.help) {
    io.stdout.write(procedure ? procedureHelp(procedure) : generalHelp(procedures));
    return EXIT.ok;
  }

  if (!procedure) {
    if (!io.stdin.isTTY || !io.stdout.isTTY) {
      return fail(
        EXIT.usage,
        `no terminal here (stdin or stdout is not a TTY), so the guided app cannot run.`,
        `Run a procedure headless instead: pgrunbook --procedure NAME [options] (procedures: ${names}); see pgrunbook --help`,
      );
    }
    // Ink decides once, when it loads, whether it is in CI (then it prints only the final
    // frame). A person at a terminal with CI exported still needs every frame.
    delete process.env.CI;
    delete process.env.CONTINUOUS_INTEGRATION;
    const { runTui } = await import('./app.js');
    return runTui({ procedures, stateDir, env, profileName: flags.profile ? String(flags.profile) : env.PGRUNBOOK_PROFILE });
  }

  // Split flags: globals stay here, the rest are the procedure's.
  const procFlags: RawFlags = {};
  for (const [k, v] of Object.entries(flags)) if (!GLOBAL_BOOLEANS.includes(k) && !GLOBAL_VALUED.includes(k)) procFlags[k] = v;

  let profile: Profile = {};
  const journaled = resumeFrom?.context;
  const explicitProfile = flags.profile ? String(flags.profile) : env.PGRUNBOOK_PROFILE || undefined;
  if (journaled?.profile && explicitProfile && explicitProfile !== journaled.profile) {
    const source = flags.profile ? `--profile ${explicitProfile}` : `PGRUNBOOK_PROFILE=${explicitProfile}`;
    return fail(
      EXIT.usage,
      `${source} differs from the profile run ${resumeFrom!.runId} used, ${journaled.profile}.`,
      `A resume continues that run with its own settings: drop --profile (or unset PGRUNBOOK_PROFILE), or start a new run with: pgrunbook --procedure ${procedure.id} ...`,
    );
  }
  const profileName = explicitProfile ?? journaled?.profile;
  if (profileName) {
    try {
      profile = await loadProfile(profileName, env);
    } catch (err) {
      if (err instanceof ProfileError) return fail(EXIT.usage, err.message);
      throw err;
    }
  }

  let services: ProcedureServices;
  try {
    services = buildServices(flags, env, profile, profileName, resumeFrom && journaled ? { runId: resumeFrom.runId, procedure: procedure.id, context: journaled } : undefined);
  } catch (err) {
    if (err instanceof ConnectionStringError) return fail(EXIT.usage, err.message);
    if (err instanceof UsageError) return fail(EXIT.usage, err.message, err.hint);
    throw err;
  }
  if (journaled?.repoCredentialsDropped && services.repo === journaled.repo) {
    io.stderr.write(`pgrunbook: note: the repository URL of run ${resumeFrom!.runId} carried credentials, which are never journaled; they must come from the environment (AWS_*, AZURE_STORAGE_*) or give --repo with them again\n`);
  }

  // On resume, the journal's params come back, with flags given now taking precedence.
  // Secret params were never journaled: they must be given again.
  const journaledParams: Params = resumeFrom ? { ...resumeFrom.params } : {};
  const missingSecrets: string[] = [];
  for (const spec of procedure.params) {
    if (journaledParams[spec.name] === MASK) {
      delete journaledParams[spec.name];
      if (spec.secret && procFlags[flagName(spec.name).slice(2)] === undefined && !(spec.env && env[spec.env])) missingSecrets.push(flagName(spec.name));
    }
  }
  if (missingSecrets.length) return fail(EXIT.usage, `resuming needs the secret ${missingSecrets.join(', ')} again (secrets are never journaled)`);

  const { params, errors } = resolveParams(procedure, procFlags, env, { ...profileDefaults(procedure, profile), ...journaledParams });
  if (errors.length) {
    return fail(EXIT.usage, `bad parameters for ${procedure.id}:\n  ${errors.join('\n  ')}`, `see: pgrunbook --procedure ${procedure.id} --help`);
  }

  const color = Boolean(io.stdout.isTTY) && !('NO_COLOR' in env && env.NO_COLOR !== '');
  const report = flags.json ? jsonLinesReporter(io.stdout) : humanReporter(io.stdout, { color });
  const controller = new AbortController();
  // Every run ends with a run-end record and a summary, whatever happens: the supervisor is
  // how process-level events (a second Ctrl-C, an uncaught exception, an event loop that
  // drained under a step that can never finish, an exit from inside a step) reach the runner.
  const supervisor: RunSupervisor = {};
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupts++;
    if (interrupts === 1) {
      io.stderr.write(`\npgrunbook: ${sig} received; stopping the current step and recording where it stopped (press Ctrl-C again to quit at once)\n`);
      controller.abort(new Error(`interrupted by ${sig}`));
    } else {
      supervisor.endNow?.({ kind: 'signal', signal: sig });
      process.exit(EXIT.interrupted);
    }
  };
  const onUncaught = (err: unknown) => {
    if (supervisor.fault) {
      supervisor.fault({ kind: 'uncaught', error: err });
      return;
    }
    io.stderr.write(`pgrunbook: unexpected error: ${errorMessage(err)}\n`);
    process.exit(EXIT.failed);
  };
  const onBeforeExit = () => supervisor.fault?.({ kind: 'drained' });
  const onExit = (code: number) => {
    const summary = supervisor.endNow?.({ kind: 'exit', code });
    if (summary) process.exitCode = summary.exitCode;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  process.on('beforeExit', onBeforeExit);
  process.on('exit', onExit);
  let exitCode: number;
  try {
    const runId = resumeFrom?.runId ?? newRunId(procedure.id);
    const given = flags.confirm === undefined ? [] : Array.isArray(flags.confirm) ? flags.confirm : [String(flags.confirm)];
    // A resumed run keeps the answers its first attempt was given, for the same target.
    const confirm = [...new Set([...given, ...(journaled?.confirm ?? [])])];
    const yes = Boolean(flags.yes) || Boolean(journaled?.yes);
    const summary = await runProcedure({
      procedure,
      params,
      services,
      runId,
      answer: headlessAnswerer({ yes, confirm }),
      signal: controller.signal,
      dryRun: Boolean(flags['dry-run']),
      journalPath: journalPathFor(stateDir, runId),
      resume: resumeFrom
        ? { runId: resumeFrom.runId, journalPath: resumeFrom.journalPath, state: resumeFrom.state, completedSteps: resumeFrom.completedSteps }
        : undefined,
      onEvent: report,
      secrets: [services.connection.password, env.PGPASSWORD, ...confirmSecrets(procedure, params)].filter((s): s is string => Boolean(s)),
      context: runContextOf(services, { yes, confirm }),
      supervisor,
    });
    exitCode = summary.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    process.off('beforeExit', onBeforeExit);
    process.off('exit', onExit);
  }
  // A step left running (it ignored the stop, or can never finish) must not hold the process open.
  if (supervisor.leftRunning) process.exit(exitCode);
  return exitCode;
}

/** The value of a valued flag in raw argv (`--name V`, `--name=V` or the short alias), before parsing. */
function rawFlagValue(argv: string[], long: string, short?: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === long || (short && argv[i] === short)) return argv[i + 1];
    if (argv[i].startsWith(`${long}=`)) return argv[i].slice(long.length + 1);
  }
  return undefined;
}

/** The procedure of the run named by --resume, when its journal can be read (errors come later). */
function preResumeProcedure(argv: string[], env: NodeJS.ProcessEnv): string | undefined {
  const runId = rawFlagValue(argv, '--resume');
  if (!runId) return undefined;
  try {
    const stateDir = rawFlagValue(argv, '--state-dir') ?? defaultStateDir(env);
    return readResumePoint(stateDir, runId).procedure;
  } catch {
    return undefined;
  }
}

function confirmSecrets(procedure: Procedure, params: Params): string[] {
  return procedure.params.filter((p) => p.secret && typeof params[p.name] === 'string').map((p) => params[p.name] as string);
}

async function packageVersion(): Promise<string> {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

export function generalHelp(procedures: Procedure[]): string {
  return `pgrunbook: guided PostgreSQL backup and disaster recovery

Usage:
  pgrunbook                                  the guided app (in a terminal)
  pgrunbook --procedure NAME [options]       run a procedure headless
  pgrunbook --resume RUN_ID [options]        continue an interrupted or failed run
  pgrunbook --list                           list procedures
  pgrunbook --procedure NAME --help          a procedure's options
  pgrunbook profile save|list|show|delete    manage saved profiles
  pgrunbook catalog [--repo URL] [--json]    backups, WAL, gaps and recovery windows in a repository
  pgrunbook catalog --verify [--since 7d] [--parallel N]   read every object back against its checksum
  pgrunbook status [--json|--prometheus]     backup ages, sizes, WAL archive lag; exit 0/1/2/3 (see status --help)
  pgrunbook wal-push %p                      archive_command: store one WAL file in the repository
  pgrunbook wal-fetch %f %p                  restore_command: fetch one WAL file from the repository

Procedures:
${procedures.map((p) => `  ${p.id.padEnd(16)} ${p.summary}`).join('\n')}

Options for every procedure:
  --profile NAME        saved settings (or PGRUNBOOK_PROFILE); flags and PG* variables override it
  -h, --host HOST       server host or socket directory (PGHOST)
  -p, --port PORT       server port (PGPORT)
  -U, --user USER       database user (PGUSER); passwords from PGPASSWORD or ~/.pgpass
  -d, --dbname DB       database name, conninfo string or postgresql:// URI (PGDATABASE)
  -D, --pgdata DIR      data directory (PGDATA)
  --repo URL            backup repository: file:///path, s3://bucket/prefix, azure://container/prefix (PGRUNBOOK_REPO)
  --yes                 answer yes to ordinary confirmations
  --confirm VALUE       allow a destructive step: VALUE must equal the text the app would ask you to type
  --json                one JSON object per line; the last line is the run summary
  --dry-run             show the plan; change nothing
  --state-dir DIR       where journals go (PGRUNBOOK_STATE_DIR; default ~/.local/state/pgrunbook)

Exit codes: 0 done, 1 a step failed, 2 bad usage or parameters, 3 verification failed,
4 a confirmation was refused or missing, 130 interrupted.
`;
}

export function procedureHelp(p: Procedure): string {
  const lines = p.params.map((spec) => {
    const flag = flagName(spec.name) + (spec.type === 'boolean' ? '' : ` ${spec.type === 'choice' ? spec.choices?.join('|') : spec.type === 'number' ? 'N' : 'VALUE'}`);
    const extra = [spec.required ? 'required' : undefined, spec.default !== undefined ? `default ${String(spec.default)}` : undefined, spec.env ? `or ${spec.env}` : undefined, spec.example ? `e.g. ${spec.example}` : undefined]
      .filter(Boolean)
      .join('; ');
    return `  ${flag.padEnd(34)} ${spec.description}${extra ? ` (${extra})` : ''}`;
  });
  const steps = p.steps.map((s, i) => `  ${i + 1}. ${s.title}${s.destructive ? '  [destructive: needs --confirm]' : ''}`);
  return `${p.title} (${p.id})
${p.summary}

Steps:
${steps.join('\n')}

Options:
${lines.join('\n') || '  (none)'}

Plus the options for every procedure: see pgrunbook --help.
`;
}
