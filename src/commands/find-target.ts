// `pgrunbook find-target`: the incidents in the archived WAL of a window (DROP TABLE, TRUNCATE,
// DROP DATABASE, mass DELETE/UPDATE), newest first, each with the recovery target just before
// it. Read-only: nothing is stopped or written; WAL is fetched into a temporary directory.
import { CliUsageError, FIND_TARGET, checkPositionals, commandHelp, parseCommand, type RawFlags } from './registry.js';
import { checkRepoUrl } from './validate.js';
import { EXIT, UsageError } from '../engine/types.js';
import { errorMessage } from '../engine/errors.js';
import { loadProfile, ProfileError } from '../config/store.js';
import { ConnectionStringError } from '../config/connection.js';
import type { Profile } from '../config/profile.js';
import { buildServices } from '../procedures/services.js';
import { parseSince } from '../repo/verify.js';
import { IdentityMismatchError } from '../repo/identity.js';
import { RepositoryCorruptError } from '../restore/errors.js';
import { scanIncidents, type Incident } from '../restore/incidents.js';

export interface FindTargetIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

function last(flags: RawFlags, name: string): string | undefined {
  const v = flags[name];
  if (v === undefined || typeof v === 'boolean') return undefined;
  return Array.isArray(v) ? v[v.length - 1] : String(v);
}

/** A duration back from now, or an ISO time that names its zone. */
function parseWhen(flag: string, text: string, now: Date): Date | { error: string } {
  if (/^\d{4}-\d\d-\d\d/.test(text.trim()) && !/(Z|[+-]\d\d(:?\d\d)?)$/i.test(text.trim())) {
    return { error: `--${flag} ${text}: add a time zone, so there is no doubt which moment you mean (e.g. ${text}Z)` };
  }
  return parseSince(text, now) ?? { error: `--${flag}: "${text}" is neither a duration (30m, 12h, 7d) nor an ISO 8601 time with a zone (2026-11-24T03:00:00Z)` };
}

export function incidentLine(i: Incident): string {
  const what = i.kind === 'drop-database' ? `database ${i.database}` : `${i.relation ?? '(unnamed relation)'} in ${i.database}`;
  const rows = i.rows === null ? '' : `, ${i.rows} rows`;
  return `${i.time}  ${i.kind.padEnd(13)} ${what}${rows}  xid ${i.xid} at ${i.lsn}  target ${i.target}${i.detail ? `\n    ${i.detail}` : ''}`;
}

export async function findTargetCommand(argv: string[], io: FindTargetIo): Promise<number> {
  const wantsJson = argv.includes('--json');
  const fail = (code: number, message: string, hint: string): number => {
    io.stderr.write(`pgrunbook find-target: ${message}\nhint: ${hint}\n`);
    if (wantsJson) io.stdout.write(`${JSON.stringify({ type: 'error', exitCode: code, message, hint })}\n`);
    return code;
  };
  const usage = (message: string, hint = 'see: pgrunbook find-target --help') => fail(EXIT.usage, message, hint);
  let flags: RawFlags;
  try {
    const parsed = parseCommand(FIND_TARGET, argv);
    flags = parsed.flags;
    checkPositionals(FIND_TARGET, parsed.positionals);
  } catch (err) {
    if (err instanceof CliUsageError) return usage(err.message, err.hint);
    throw err;
  }
  if (flags.help) {
    io.stdout.write(commandHelp(FIND_TARGET));
    return EXIT.ok;
  }
  const now = new Date();
  const since = parseWhen('since', last(flags, 'since') ?? '24h', now);
  if ('error' in since) return usage(since.error);
  const untilText = last(flags, 'until');
  const until = untilText === undefined ? now : parseWhen('until', untilText, now);
  if ('error' in until) return usage(until.error);
  if (until <= since) return usage(`the window is empty: --since ${since.toISOString()} is not before --until ${until.toISOString()}`);
  const minRowsText = last(flags, 'min-rows');
  const minRows = minRowsText === undefined ? 100 : Number(minRowsText);
  if (!Number.isInteger(minRows) || minRows < 1) return usage(`--min-rows: expected a whole number of at least 1, got "${minRowsText}"`);

  try {
    const profileName = last(flags, 'profile') ?? (io.env.PGRUNBOOK_PROFILE || undefined);
    let profile: Profile = {};
    if (profileName) profile = await loadProfile(profileName, io.env);
    const services = buildServices(flags, io.env, profile, profileName);
    if (!services.repo) return usage('no repository: pass --repo URL or set PGRUNBOOK_REPO', 'a repository URL is file:///path, s3://bucket/prefix or azure://container/prefix');
    checkRepoUrl(services.repo, io.env, { source: flags.repo !== undefined ? '--repo' : 'the repository' });
    const report = await scanIncidents({
      repoUrl: services.repo,
      env: io.env,
      connection: services.connection,
      since,
      until,
      minRows,
      table: last(flags, 'table'),
      onSegment: (name, done, total) => {
        if (done % 16 === 0 || done === total) io.stderr.write(`read ${done}/${total} WAL segments (${name})\n`);
      },
    });
    for (const p of report.problems) io.stderr.write(`warning: ${p}\n`);
    if (wantsJson) {
      for (const i of report.incidents) {
        io.stdout.write(`${JSON.stringify({ kind: i.kind, database: i.database, relation: i.relation ?? null, xid: i.xid, lsn: i.lsn, time: i.time, rows: i.rows, target: i.target, ...(i.detail ? { detail: i.detail } : {}) })}\n`);
      }
    } else {
      io.stdout.write(`window ${since.toISOString()} .. ${until.toISOString()}: ${report.segments.length} WAL segments read on timeline ${report.timeline}, ${report.incidents.length} incident(s)\n`);
      for (const i of report.incidents) io.stdout.write(`${incidentLine(i)}\n`);
      if (report.incidents.length) io.stdout.write('Restore to just before one: pgrunbook --procedure pitr --target <target>   (or table-restore --at <target>)\n');
    }
    return EXIT.ok;
  } catch (err) {
    if (err instanceof ProfileError) return usage(err.message, 'list the saved profiles with: pgrunbook profile list');
    if (err instanceof UsageError) return usage(err.message, err.hint);
    if (err instanceof CliUsageError) return usage(err.message, err.hint);
    if (err instanceof ConnectionStringError) return usage(err.message);
    if (err instanceof RepositoryCorruptError) return fail(EXIT.verification, err.message, 'run pgrunbook catalog --verify to see every damaged object; restore the segment from another copy');
    if (err instanceof IdentityMismatchError) return fail(EXIT.failed, err.message, err.hint);
    return fail(EXIT.failed, errorMessage(err), 'check the repository URL and the connection (relations are named by the live cluster), then run it again');
  }
}
