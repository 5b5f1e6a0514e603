// The CLI behind `pgrunbook`: headless procedures, profiles, and the TUI when a person is
// at a terminal. Fast subcommands (wal-push, wal-fetch) are routed in cli.ts before this
// module loads, so they never pay for it.
import fs from 'node:fs';
import { EXIT, UsageError, type Params, type Procedure } from './engine/types.js';
import { flagName, resolveParams, type RawFlags } from './engine/params.js';
import { errorMessage, runProcedure, type RunSupervisor } from './engine/runner.js';
import { hintOf } from './engine/errors.js';
import { CliUsageError, GLOBAL, SUBCOMMANDS, optionLines, parseCommand, procedureOptions } from './commands/registry.js';
import { checkDataDir, checkRepoUrl, checkStateDir } from './commands/validate.js';
import { headlessAnswerer } from './engine/confirm.js';
import { humanReporter, jsonLinesReporter } from './engine/reporters.js';
import { defaultStateDir, journalPathFor, newRunId, readResumePoint } from './engine/journal.js';
import { MASK } from './engine/mask.js';
import { ConnectionStringError } from './config/connection.js';
import { loadProfile, ProfileError } from './config/store.js';
import type { Profile } from './config/profile.js';
import { buildServices, profileDefaults, runContextOf, type ProcedureServices } from './procedures/services.js';
import { loadProcedure, loadProcedures, procedureIds } from './procedures/load.js';
import { isToolSubcommand, runToolSubcommand } from './commands/subcommands.js';
import { pgrunbookCommand } from './engine/command-name.js';

const GLOBAL_NAMES = new Set(GLOBAL.options.map((o) => o.name));
const SUBCOMMAND_WORDS = Object.keys(SUBCOMMANDS);

export interface MainIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  env: NodeJS.ProcessEnv;
}

export async function main(argv: string[], io: MainIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env }): Promise<number> {
  const { env } = io;
  const cmd = (args: string) => pgrunbookCommand(args, env);
  const json = argv.includes('--json');
  const fail = (code: number, message: string, hint?: string): number => {
    io.stderr.write(`pgrunbook: ${message}\n${hint ? `hint: ${hint}\n` : ''}`);
    if (json) io.stdout.write(`${JSON.stringify({ type: 'error', exitCode: code, message, hint })}\n`);
    return code;
  };

  const failWith = (err: unknown, code: number = EXIT.usage, hint?: string): number =>
    fail(err instanceof CliUsageError ? err.exitCode : code, errorMessage(err), hintOf(err) ?? hint);

  // Also routed by cli.ts before this module loads; kept here so main(argv) handles every command.
  if (isToolSubcommand(argv[0])) return runToolSubcommand(argv, io);

  // Procedures load one at a time: a headless run loads only its own (start-up, bench/README.md).
  let ids: string[];
  try {
    ids = await procedureIds(env);
  } catch (err) {
    return fail(EXIT.usage, errorMessage(err), 'fix or unset PGRUNBOOK_PROCEDURES_MODULE');
  }
  const names = ids.join(', ');
  const known = (id: string | undefined): id is string => id !== undefined && ids.includes(id);

  // The procedure decides which options exist and which are booleans, so find it before parsing
  // (for --resume, from the run's journal).
  const procArg = rawFlagValue(argv, '--procedure', '-P');
  if (procArg !== undefined && !procArg.startsWith('-') && !known(procArg)) {
    return fail(EXIT.usage, `unknown procedure "${procArg}"; valid procedures: ${names}`, `list them with: ${cmd('--list')}`);
  }
  const preId = procArg ?? preResumeProcedure(argv, env);
  const preProcedure = known(preId) ? await loadProcedure(preId, env) : undefined;

  let flags: RawFlags;
  let positionals: string[];
  try {
    ({ flags, positionals } = parseCommand(GLOBAL, argv, preProcedure
      ? { extra: procedureOptions(preProcedure.params).filter((o) => !GLOBAL_NAMES.has(o.name)), forWhat: `procedure ${preProcedure.id}`, helpCommand: cmd(`--procedure ${preProcedure.id} --help`) }
      : {}));
  } catch (err) {
    return failWith(err);
  }
  if (positionals.length) {
    const hint = SUBCOMMAND_WORDS.includes(positionals[0]) ? `"${positionals[0]}" is a command: put it first, e.g. ${cmd(`${positionals[0]} --help`)}` : `see: ${cmd('--help')}`;
    return fail(EXIT.usage, `unexpected argument "${positionals[0]}"`, hint);
  }

  if (flags.version) {
    io.stdout.write(`${await packageVersion()}\n`);
    return EXIT.ok;
  }
  if (flags.list) {
    const procedures = await loadProcedures(env);
    if (flags.json) io.stdout.write(`${JSON.stringify(procedures.map((p) => ({ id: p.id, group: p.group, title: p.title, summary: p.summary })))}\n`);
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
    procedure = known(resumeFrom.procedure) ? await loadProcedure(resumeFrom.procedure, env) : undefined;
    if (!procedure) return fail(EXIT.usage, `run ${resumeFrom.runId} was procedure "${resumeFrom.procedure}", which this pgrunbook does not know (procedures: ${names})`);
    if (flags.procedure !== undefined && flags.procedure !== procedure.id) {
      return fail(EXIT.usage, `--procedure ${String(flags.procedure)} does not match run ${resumeFrom.runId}, which is ${procedure.id}; drop --procedure when resuming`);
    }
  } else if (flags.procedure !== undefined) {
    const id = String(flags.procedure);
    procedure = known(id) ? await loadProcedure(id, env) : undefined;
    if (!procedure) return fail(EXIT.usage, `unknown procedure "${id}"; valid procedures: ${names}`, `list them with: ${cmd('--list')}`);
  }

  if (flags.help) {
    io.stdout.write(procedure ? procedureHelp(procedure) : generalHelp(await loadProcedures(env)));
    return EXIT.ok;
  }

  if (!procedure) {
    if (!io.stdin.isTTY || !io.stdout.isTTY) {
      return fail(
        EXIT.usage,
        `no terminal here (stdin or stdout is not a TTY), so the guided app cannot run.`,
        `Run a procedure headless instead: ${cmd('--procedure NAME [options]')} (procedures: ${names}); see ${cmd('--help')}`,
      );
    }
    // Ink decides once, when it loads, whether it is in CI (then it prints only the final
    // frame). A person at a terminal with CI exported still needs every frame.
    delete process.env.CI;
    delete process.env.CONTINUOUS_INTEGRATION;
    const { runTui } = await import('./app.js');
    return runTui({ procedures: await loadProcedures(env), stateDir, env, profileName: flags.profile ? String(flags.profile) : env.PGRUNBOOK_PROFILE });
  }

  // Split flags: globals stay here, the rest are the procedure's.
  const procFlags: RawFlags = {};
  for (const [k, v] of Object.entries(flags)) if (!GLOBAL_NAMES.has(k)) procFlags[k] = v;

  let profile: Profile = {};
  const journaled = resumeFrom?.context;
  const explicitProfile = flags.profile ? String(flags.profile) : env.PGRUNBOOK_PROFILE || undefined;
  if (journaled?.profile && explicitProfile && explicitProfile !== journaled.profile) {
    const source = flags.profile ? `--profile ${explicitProfile}` : `PGRUNBOOK_PROFILE=${explicitProfile}`;
    return fail(
      EXIT.usage,
      `${source} differs from the profile run ${resumeFrom!.runId} used, ${journaled.profile}.`,
      `A resume continues that run with its own settings: drop --profile (or unset PGRUNBOOK_PROFILE), or start a new run with: ${cmd(`--procedure ${procedure.id} ...`)}`,
    );
  }
  const profileName = explicitProfile ?? journaled?.profile;
  if (profileName) {
    try {
      profile = await loadProfile(profileName, env);
    } catch (err) {
      if (err instanceof ProfileError) return fail(EXIT.usage, err.message, `list the saved profiles with: ${cmd('profile list')}`);
      throw err;
    }
  }

  let services: ProcedureServices;
  try {
    services = buildServices(flags, env, profile, profileName, resumeFrom && journaled ? { runId: resumeFrom.runId, procedure: procedure.id, context: journaled } : undefined);
  } catch (err) {
    if (err instanceof ConnectionStringError) return fail(EXIT.usage, err.message, `see: ${cmd('--help')} (connection options)`);
    if (err instanceof UsageError) return fail(EXIT.usage, err.message, err.hint);
    throw err;
  }
  // Cheap checks of what the command line names, before any step runs.
  try {
    if (services.repo) checkRepoUrl(services.repo, env, { source: flags.repo !== undefined ? '--repo' : env.PGRUNBOOK_REPO ? 'PGRUNBOOK_REPO' : 'the repository' });
    if (services.pgdata) checkDataDir(services.pgdata, flags.pgdata !== undefined ? '--pgdata' : 'the data directory');
    if (!flags['dry-run']) checkStateDir(stateDir, flags['state-dir'] !== undefined ? '--state-dir' : env.PGRUNBOOK_STATE_DIR ? 'PGRUNBOOK_STATE_DIR' : 'the state directory');
  } catch (err) {
    return failWith(err);
  }
  // A repository key (or its file) is checked against the repository before any step runs: a
  // wrong key, or a key for an unencrypted repository, is refused with nothing done.
  if (services.repo && (services.env.PGRUNBOOK_REPO_KEY_FILE || services.env.PGRUNBOOK_REPO_KEY)) {
    const refusal = await checkRepoKey(services.repo, services.env);
    if (refusal) return failWith(refusal);
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
    return fail(EXIT.usage, `bad parameters for ${procedure.id}:\n  ${errors.join('\n  ')}`, `see: ${cmd(`--procedure ${procedure.id} --help`)}`);
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
      secrets: [services.connection.password, env.PGPASSWORD, env.PGRUNBOOK_REPO_KEY, ...confirmSecrets(procedure, params)].filter((s): s is string => Boolean(s)),
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

/** The RepoKeyError opening the repository with the run's key gives, if any; other failures are left to the steps, which report them in context. */
async function checkRepoKey(repo: string, env: NodeJS.ProcessEnv): Promise<unknown> {
  const { openRepoStore, RepoKeyError } = await import('./repo/encryption.js');
  try {
    await (await openRepoStore(repo, env)).close();
    return undefined;
  } catch (err) {
    return err instanceof RepoKeyError ? err : undefined;
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
  const perRun = GLOBAL.options.filter((o) => !['list', 'version', 'help'].includes(o.name));
  return `pgrunbook: ${GLOBAL.summary}

Usage:
${GLOBAL.usage.map((u) => `  ${u}`).join('\n')}

Procedures:
${procedures.map((p) => `  ${p.id.padEnd(16)} ${p.summary}`).join('\n')}

Options for every procedure:
${optionLines(perRun)}

Each command has its own --help (pgrunbook status --help, pgrunbook --procedure NAME --help).
${GLOBAL.notes ?? ''}`;
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
