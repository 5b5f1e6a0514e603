// The command registry: every command's options, declared once. Parsing (node:util parseArgs,
// strict), --help and shell completion are all made from these declarations.
// Kept light on purpose: wal-push and wal-fetch (run by PostgreSQL once per WAL segment) and
// --version import this module, so it imports nothing but node:util and the plain error types.
import { parseArgs } from 'node:util';
import { UsageError, type ParamSpec } from '../engine/types.js';

export type OptionType = 'string' | 'number' | 'boolean' | 'list' | 'choice';

export interface OptionDecl {
  /** The long flag without dashes, kebab-case (`state-dir`). */
  name: string;
  /** One letter (`h` for -h). */
  short?: string;
  type: OptionType;
  help: string;
  /** What the value is called in help (`URL`, `DIR`). */
  value?: string;
  default?: string | number | boolean | string[];
  choices?: string[];
  /** May be given more than once (each value kept). */
  multiple?: boolean;
  /** Never printed, logged or journaled. */
  secret?: boolean;
  /** Environment variable read when the flag is absent. */
  env?: string;
  /** A saved profile may supply it. */
  profile?: boolean;
  /** A boolean that also has a `--no-NAME` form. */
  negatable?: boolean;
  /** Completes file or directory names as its value. */
  completes?: 'file' | 'dir';
}

export interface CommandDecl {
  /** `status`, `wal-push`; `pgrunbook` for the top level. */
  name: string;
  summary: string;
  usage: string[];
  options: OptionDecl[];
  /** Positional arguments: how many at least and at most. */
  positionals?: { min: number; max: number; names: string };
  /** Prose printed after the options in --help. */
  notes?: string;
  /** Bad usage exit code, when not 2 (status follows the Nagios convention: 3). */
  usageExit?: number;
}

/** Bad usage of the command line: exit 2 (or the command's own), a message and what to do. */
export class CliUsageError extends UsageError {
  constructor(
    message: string,
    hint: string,
    readonly exitCode = 2,
  ) {
    super(message, hint);
    this.name = 'CliUsageError';
  }
}

const help: OptionDecl = { name: 'help', type: 'boolean', help: 'show this help and exit' };

const REPO_FORMS = 'file:///absolute/path, s3://bucket/prefix, azure://container/prefix';

/** Connection options shared by procedures, status and profile save (libpq's conventions). */
export const CONNECTION_OPTIONS: OptionDecl[] = [
  { name: 'host', short: 'h', type: 'string', value: 'HOST', help: 'server host or socket directory', env: 'PGHOST', profile: true },
  { name: 'port', short: 'p', type: 'number', value: 'PORT', help: 'server port', env: 'PGPORT', profile: true },
  { name: 'user', short: 'U', type: 'string', value: 'USER', help: 'database user; passwords from PGPASSWORD or ~/.pgpass', env: 'PGUSER', profile: true },
  { name: 'dbname', short: 'd', type: 'string', value: 'DB', help: 'database name, conninfo string or postgresql:// URI', env: 'PGDATABASE', profile: true },
];

const repoOption: OptionDecl = { name: 'repo', type: 'string', value: 'URL', help: `backup repository: ${REPO_FORMS}`, env: 'PGRUNBOOK_REPO', profile: true };
/** Only the file's path is ever taken on the command line: the passphrase itself never reaches argv. */
const repoKeyFileOption: OptionDecl = {
  name: 'repo-key-file',
  type: 'string',
  value: 'FILE',
  help: 'file (mode 0600) holding the passphrase of an encrypted repository; or PGRUNBOOK_REPO_KEY holds the passphrase itself',
  env: 'PGRUNBOOK_REPO_KEY_FILE',
  profile: true,
  completes: 'file',
};
const pgdataOption: OptionDecl = { name: 'pgdata', short: 'D', type: 'string', value: 'DIR', help: 'data directory', env: 'PGDATA', profile: true, completes: 'dir' };
const profileOption: OptionDecl = { name: 'profile', type: 'string', value: 'NAME', help: 'saved settings; flags and PG* variables override it', env: 'PGRUNBOOK_PROFILE' };

/** Options for every procedure, and the top-level --list, --version, --help. */
export const GLOBAL: CommandDecl = {
  name: 'pgrunbook',
  summary: 'guided PostgreSQL backup and disaster recovery',
  usage: [
    'pgrunbook                                  the guided app (in a terminal)',
    'pgrunbook --procedure NAME [options]       run a procedure headless',
    'pgrunbook --resume RUN_ID [options]        continue an interrupted or failed run',
    'pgrunbook --list                           list procedures',
    'pgrunbook --procedure NAME --help          a procedure\'s options',
    'pgrunbook profile save|list|show|delete    manage saved profiles',
    'pgrunbook catalog [--repo URL] [--json]    backups, WAL, gaps and recovery windows in a repository',
    'pgrunbook catalog --verify [--since 7d] [--parallel N]   read every object back against its checksum',
    'pgrunbook find-target [--since 24h]        incidents in the archived WAL (DROP, TRUNCATE, mass DELETE) and the target before each',
    'pgrunbook status [--json|--prometheus]     backup ages, sizes, WAL archive lag; exit 0/1/2/3 (see status --help)',
    'pgrunbook wal-push %p                      archive_command: store one WAL file in the repository',
    'pgrunbook wal-fetch %f %p                  restore_command: fetch one WAL file from the repository',
    'pgrunbook completion bash|zsh|fish         shell completion (e.g. source <(pgrunbook completion bash))',
    'pgrunbook --version                        the version',
  ],
  options: [
    { name: 'procedure', short: 'P', type: 'string', value: 'NAME', help: 'the procedure to run headless (see --list)' },
    profileOption,
    ...CONNECTION_OPTIONS,
    pgdataOption,
    repoOption,
    repoKeyFileOption,
    { name: 'yes', short: 'y', type: 'boolean', help: 'answer yes to ordinary confirmations' },
    { name: 'confirm', type: 'string', multiple: true, value: 'VALUE', help: 'allow a destructive step: VALUE must equal the text the app would ask you to type' },
    { name: 'json', type: 'boolean', help: 'one JSON object per line; the last line is the run summary' },
    { name: 'dry-run', type: 'boolean', help: 'show the plan; change nothing' },
    { name: 'resume', type: 'string', value: 'RUN_ID', help: 'continue an interrupted or failed run at its first unfinished step' },
    { name: 'state-dir', type: 'string', value: 'DIR', help: 'where journals go (default ~/.local/state/pgrunbook)', env: 'PGRUNBOOK_STATE_DIR', completes: 'dir' },
    { name: 'list', type: 'boolean', help: 'list the procedures and exit' },
    { name: 'version', type: 'boolean', help: 'print the version and exit' },
    help,
  ],
  notes: `Exit codes: 0 done, 1 a step failed, 2 bad usage or parameters, 3 verification failed,
4 a confirmation was refused or missing, 75 the repository is locked by another run, 130 interrupted.
`,
};

const WAL_NOTES = `--env-file loads KEY=VALUE lines (the repository's credentials) from a file only its owner may read (chmod 600);
they override the environment.
Exit 0 means durably stored / fetched; anything else tells PostgreSQL to retry (push) or that the file is not available (fetch).
`;

const walCommon: OptionDecl[] = [
  { name: 'env-file', type: 'string', value: 'FILE', help: 'load KEY=VALUE lines (credentials) from a 0600 file', completes: 'file' },
  { ...repoOption, profile: false },
  { ...repoKeyFileOption, profile: false },
  { name: 'compress', type: 'choice', choices: ['zstd', 'gzip', 'none'], help: 'compression of stored WAL', env: 'PGRUNBOOK_WAL_COMPRESS', default: 'zstd' },
  { name: 'compress-level', type: 'number', value: '1-19', help: 'zstd level (1-19) or gzip level (1-9)', env: 'PGRUNBOOK_WAL_COMPRESS_LEVEL', default: 1 },
  { name: 'spool', type: 'string', value: 'DIR', help: 'asynchronous mode: a background worker pushes ahead (wal-push) or prefetches (wal-fetch) through this directory (mode 0700, the server\'s own)', completes: 'dir' },
  { name: 'verbose', type: 'boolean', help: 'say what was stored or fetched, and how long it took' },
  help,
];

/** wal-push and wal-fetch share their options and notes; they differ in what PostgreSQL passes them. */
function walCommand(name: string, summary: string, usage: string, positionals: { count: number; names: string }): CommandDecl {
  return { name, summary, usage: [usage], options: walCommon, positionals: { min: positionals.count, max: positionals.count, names: positionals.names }, notes: WAL_NOTES };
}

export const WAL_PUSH = walCommand('wal-push', 'archive_command: store one WAL file in the repository', 'pgrunbook wal-push [--env-file FILE] [--repo URL] [--compress zstd|gzip|none] [--compress-level 1-19] [--spool DIR] %p', {
  count: 1,
  names: 'the WAL file path (%p)',
});

export const WAL_FETCH = walCommand('wal-fetch', 'restore_command: fetch one WAL file from the repository', 'pgrunbook wal-fetch [--env-file FILE] [--repo URL] [--spool DIR] %f %p', {
  count: 2,
  names: 'the WAL file name and destination path (%f %p)',
});

export const CATALOG: CommandDecl = {
  name: 'catalog',
  summary: 'what a repository holds and what it can restore; --verify reads every object back against its checksum',
  usage: ['pgrunbook catalog [--repo URL] [--json]', 'pgrunbook catalog --verify [--since DURATION|ISO-TIME] [--parallel N] [--repo URL] [--json]'],
  options: [
    repoOption,
    { ...repoKeyFileOption, profile: false },
    { name: 'json', type: 'boolean', help: 'the catalog (or the verify result) as JSON' },
    { name: 'verify', type: 'boolean', help: 'read every object back and check it against its recorded checksum' },
    { name: 'since', type: 'string', value: 'DURATION|ISO-TIME', help: 'with --verify: only objects written since (30m, 12h, 7d, 2w or an ISO 8601 time)' },
    { name: 'parallel', type: 'number', value: 'N', help: 'with --verify: objects read at once (1-64)', default: 4 },
    help,
  ],
  notes: 'Exit codes: 0 intact, 1 the repository cannot be read, 2 bad usage, 3 a bad object (each named).\n',
};

export const FIND_TARGET: CommandDecl = {
  name: 'find-target',
  summary: 'find DROP TABLE, TRUNCATE, DROP DATABASE and mass DELETE/UPDATE in the archived WAL, with the target just before each',
  usage: ['pgrunbook find-target [--since DURATION|ISO-TIME] [--until ISO-TIME] [--min-rows N] [--table NAME] [--repo URL] [connection options] [--json]'],
  options: [
    repoOption,
    profileOption,
    ...CONNECTION_OPTIONS,
    { name: 'since', type: 'string', value: 'DURATION|ISO-TIME', help: 'start of the window (30m, 12h, 7d or an ISO 8601 time with a zone)', default: '24h' },
    { name: 'until', type: 'string', value: 'DURATION|ISO-TIME', help: 'end of the window (default now)' },
    { name: 'min-rows', type: 'number', value: 'N', help: 'rows one transaction must delete or update in one table to be listed', default: 100 },
    { name: 'table', type: 'string', value: 'NAME', help: 'only incidents of this table (name or schema.name)' },
    { name: 'json', type: 'boolean', help: 'one JSON object per incident (kind, database, relation, xid, lsn, time, rows, target)' },
    help,
  ],
  notes:
    'Each incident\'s target is the text to pass to pitr --target or table-restore --at to get everything just before it.\n' +
    'Relations are named by the live cluster (the one the connection options reach) and, once dropped, by the dumps in the repository.\n' +
    'Exit codes: 0 done (incidents or none), 1 the repository or the server cannot be read, 2 bad usage, 3 a damaged WAL segment (named).\n',
};

export const STATUS: CommandDecl = {
  name: 'status',
  summary: 'are the backups fresh, complete and is WAL archiving keeping up?',
  usage: ['pgrunbook status [--repo URL] [--profile NAME] [connection options] [--json | --prometheus] [--output FILE]'],
  options: [
    { ...repoOption, help: "backup repository (or the profile's)" },
    repoKeyFileOption,
    { ...profileOption, help: 'saved settings; thresholds from its "monitoring"' },
    ...CONNECTION_OPTIONS,
    pgdataOption,
    { name: 'databases', type: 'list', multiple: true, value: 'A,B', help: "databases whose dumps must exist (default: the profile's, else every database with dumps)" },
    { name: 'skip', type: 'list', multiple: true, value: 'KINDS', help: 'leave out: base-backup, dump, wal, server (server: no connection; repository checks only)' },
    { name: 'max-dump-age-hours', type: 'number', value: 'N', help: 'dump age warning threshold', default: 2 },
    { name: 'max-base-backup-age-hours', type: 'number', value: 'N', help: 'base backup age warning threshold', default: 26 },
    { name: 'size-deviation-percent', type: 'number', value: 'N', help: 'size deviation warning threshold', default: 50 },
    { name: 'max-archive-lag-segments', type: 'number', value: 'N', help: 'WAL archive lag warning threshold', default: 100 },
    { name: 'max-wal-age-hours', type: 'number', value: 'N', help: 'newest archived WAL age warning threshold (off by default)' },
    { name: 'max-verify-age-days', type: 'number', value: 'N', help: 'last catalog --verify age warning threshold', default: 8 },
    { name: 'max-restore-test-age-days', type: 'number', value: 'N', help: 'last passed restore-test age warning threshold (critical when the last one failed)', default: 8 },
    { name: 'now', type: 'string', value: 'TIME', help: 'the time to judge ages against (tests)', env: 'PGRUNBOOK_NOW' },
    { name: 'json', type: 'boolean', help: 'the whole report as one JSON document' },
    { name: 'prometheus', type: 'boolean', help: "Prometheus text format (gauges pgrunbook_*), e.g. for node_exporter's textfile collector" },
    { name: 'output', type: 'string', value: 'FILE', help: 'write there instead of stdout, atomically (temp file + rename)', completes: 'file' },
    help,
  ],
  usageExit: 3,
};

export const PROFILE: CommandDecl = {
  name: 'profile',
  summary: 'manage saved settings without editing JSON',
  usage: [
    'pgrunbook profile save NAME [options]',
    'pgrunbook profile list',
    'pgrunbook profile show NAME',
    'pgrunbook profile delete NAME',
  ],
  options: [
    ...CONNECTION_OPTIONS,
    pgdataOption,
    { name: 'databases', type: 'list', value: 'a,b', help: 'databases to back up and verify' },
    { name: 'critical-tables', type: 'list', value: 'db:schema.table[:min],...', help: 'tables whose row counts are checked' },
    repoOption,
    { ...repoKeyFileOption, env: undefined, profile: false, help: 'file holding the encrypted repository\'s passphrase (the profile stores the path, never the passphrase)' },
    { name: 'server-log', type: 'string', value: 'FILE', help: "the server's log file", completes: 'file' },
    { name: 'server-control', type: 'choice', choices: ['pg_ctl', 'systemd', 'commands'], help: 'how pgrunbook stops and starts the server' },
    { name: 'systemd-unit', type: 'string', value: 'UNIT', help: 'with --server-control systemd' },
    { name: 'start-command', type: 'string', value: 'CMD', help: 'with --server-control commands' },
    { name: 'stop-command', type: 'string', value: 'CMD', help: 'with --server-control commands' },
    { name: 'server-env', type: 'list', value: 'NAME,...', help: 'variables the server gets from our environment when pgrunbook starts it' },
    help,
  ],
  positionals: { min: 1, max: 2, names: 'save|list|show|delete [NAME]' },
  notes: 'Passwords belong in ~/.pgpass or PGPASSWORD; a profile that holds one is stored mode 0600.\n',
};

export const COMPLETION: CommandDecl = {
  name: 'completion',
  summary: 'print a shell completion script',
  usage: ['pgrunbook completion bash|zsh|fish     e.g. source <(pgrunbook completion bash)'],
  options: [help],
  positionals: { min: 1, max: 1, names: 'the shell: bash, zsh or fish' },
};

/** Every subcommand, by its first word. */
export const SUBCOMMANDS: Record<string, CommandDecl> = {
  status: STATUS,
  catalog: CATALOG,
  'find-target': FIND_TARGET,
  'wal-push': WAL_PUSH,
  'wal-fetch': WAL_FETCH,
  profile: PROFILE,
  completion: COMPLETION,
};

export function kebab(paramName: string): string {
  return paramName.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** A procedure's options, from its ParamSpecs. */
export function procedureOptions(params: ParamSpec[]): OptionDecl[] {
  return params.map((p) => ({
    name: kebab(p.name),
    type: p.type,
    help: p.description,
    value: p.type === 'choice' ? p.choices?.join('|') : p.type === 'number' ? 'N' : p.type === 'boolean' ? undefined : 'VALUE',
    default: p.default,
    choices: p.choices,
    multiple: p.type === 'list',
    secret: p.secret,
    env: p.env,
    negatable: p.type === 'boolean',
  }));
}

export type RawFlags = Record<string, string | boolean | string[]>;

/**
 * Parse argv strictly against a command's options. Throws CliUsageError: `unknown option --bogus
 * for <command>` (with a hint naming --help), `--repo needs a value`, `--json takes no value`.
 */
export function parseCommand(decl: CommandDecl, argv: string[], opts: { extra?: OptionDecl[]; forWhat?: string; helpCommand?: string } = {}): { flags: RawFlags; positionals: string[] } {
  const all = [...decl.options, ...(opts.extra ?? [])];
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const o of all) {
    config[o.name] = { type: o.type === 'boolean' ? 'boolean' : 'string', ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
    if (o.negatable) config[`no-${o.name}`] = { type: 'boolean' };
  }
  const forWhat = opts.forWhat ?? decl.name;
  const helpCommand = opts.helpCommand ?? (decl.name === 'pgrunbook' ? 'pgrunbook --help' : `pgrunbook ${decl.name} --help`);
  const exit = decl.usageExit ?? 2;
  let parsed: { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: config, strict: true, allowPositionals: true });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const message = (err as Error).message;
    const named = /'(-[^' ]*)/.exec(message)?.[1] ?? '';
    const longName = /--([A-Za-z0-9-]+)/.exec(message)?.[1];
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      throw new CliUsageError(`unknown option ${named.split('=')[0]} for ${forWhat}`, `see the valid options: ${helpCommand}`, exit);
    }
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && longName) {
      if (/does not take an argument/.test(message)) throw new CliUsageError(`--${longName} takes no value`, `see: ${helpCommand}`, exit);
      const decl1 = all.find((o) => o.name === longName);
      throw new CliUsageError(`--${longName} needs a value`, `give it as --${longName} ${decl1?.value ?? 'VALUE'} (or --${longName}=VALUE); see: ${helpCommand}`, exit);
    }
    throw new CliUsageError(message, `see: ${helpCommand}`, exit);
  }
  const flags: RawFlags = {};
  for (const [k, v] of Object.entries(parsed.values)) {
    if (v === undefined) continue;
    if (k.startsWith('no-') && config[k.slice(3)] && all.find((o) => o.name === k.slice(3))?.negatable) {
      flags[k.slice(3)] = false;
      continue;
    }
    flags[k] = Array.isArray(v) ? v.map(String) : v;
  }
  return { flags, positionals: parsed.positionals };
}

/** One line per option: `  -h, --host HOST   help (PGHOST; default ...)`. */
export function optionLines(options: OptionDecl[]): string {
  return options
    .map((o) => {
      const value = o.type === 'boolean' ? '' : ` ${o.value ?? (o.choices ? o.choices.join('|') : 'VALUE')}`;
      const flag = `${o.short ? `-${o.short}, ` : '    '}--${o.name}${value}`;
      const extra = [
        o.env ? `or ${o.env}` : undefined,
        o.profile ? 'or the profile' : undefined,
        o.default !== undefined ? `default ${String(o.default)}` : undefined,
        o.multiple ? 'may repeat' : undefined,
        o.secret ? 'secret' : undefined,
      ]
        .filter(Boolean)
        .join('; ');
      return `  ${flag.padEnd(34)} ${o.help}${extra ? ` (${extra})` : ''}`;
    })
    .join('\n');
}

export function commandHelp(decl: CommandDecl): string {
  return `pgrunbook ${decl.name}: ${decl.summary}

Usage:
${decl.usage.map((u) => `  ${u}`).join('\n')}

Options:
${optionLines(decl.options)}
${decl.notes ? `\n${decl.notes}` : ''}`;
}

/** Positional count check, with the command's own usage as the hint. */
export function checkPositionals(decl: CommandDecl, positionals: string[]): void {
  const p = decl.positionals ?? { min: 0, max: 0, names: '' };
  if (positionals.length > p.max) {
    throw new CliUsageError(`unexpected argument "${positionals[p.max]}" for ${decl.name}`, `usage: ${decl.usage[0]}; see: pgrunbook ${decl.name} --help`, decl.usageExit ?? 2);
  }
  if (positionals.length < p.min) {
    throw new CliUsageError(`${decl.name} expects ${p.names}`, `usage: ${decl.usage[0]}; see: pgrunbook ${decl.name} --help`, decl.usageExit ?? 2);
  }
}
