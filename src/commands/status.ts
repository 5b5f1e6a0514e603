// `pgrunbook status`: backup ages, size deviations, WAL archive lag and archiver failures, as
// text, JSON or Prometheus text format, with the Nagios exit codes (0 ok, 1 warning,
// 2 critical, 3 unknown) so existing alerting can run it as a check.
import { CliUsageError, STATUS, checkPositionals, commandHelp, parseCommand, type RawFlags } from './registry.js';
import { checkRepoUrl } from './validate.js';
import { ConnectionStringError } from '../config/connection.js';
import { UsageError } from '../engine/types.js';
import { loadProfile, ProfileError } from '../config/store.js';
import type { Profile } from '../config/profile.js';
import { buildServices } from '../procedures/services.js';
import { checkStatus, parseSkip, resolveNow, resolveThresholds } from '../monitoring/status.js';
import { statusJson, statusText } from '../monitoring/render.js';
import { prometheusText, writeFileAtomic } from '../monitoring/prometheus.js';
import { EXIT_CODE, StatusUsageError, type StatusThresholds } from '../monitoring/types.js';
import { errorMessage } from '../engine/errors.js';
import { pgrunbookCommand } from '../engine/command-name.js';

const THRESHOLD_FLAGS: Record<string, keyof StatusThresholds> = {
  'max-dump-age-hours': 'maxDumpAgeHours',
  'max-base-backup-age-hours': 'maxBaseBackupAgeHours',
  'size-deviation-percent': 'sizeDeviationPercent',
  'max-archive-lag-segments': 'maxArchiveLagSegments',
  'max-wal-age-hours': 'maxWalAgeHours',
  'max-verify-age-days': 'maxVerifyAgeDays',
  'max-restore-test-age-days': 'maxRestoreTestAgeDays',
};

const STATUS_NOTES = `
Checks (each OK, WARNING, CRITICAL or UNKNOWN):
  last base backup      age of the newest complete base backup      warning over --max-base-backup-age-hours (26), critical over twice
  dump DB               age of each database's newest dump           warning over --max-dump-age-hours (2), critical over twice
  base backup / dump size   newest against the median of up to 10 before it: warning beyond --size-deviation-percent (50),
                        critical when it grew by more than twice that or shrank by more than twice that (at most 90%)
  archived WAL          age of the newest segment in the repository (alerts only with --max-wal-age-hours); none at all: critical
  recovery window       the newest base backup restores to the end of gap-free WAL; a gap or missing WAL: critical
  WAL archive lag       completed segments not yet archived (pg_current_wal_lsn vs pg_stat_archiver, cross-checked with
                        the repository): warning over --max-archive-lag-segments (100), critical over twice
  WAL archiver          archive_mode off, or failing now (last failure newer than last success): critical
  last verify           the last \`pgrunbook catalog --verify\`: found bad objects: critical (each named); older than
                        --max-verify-age-days (8): warning; never verified: a note only
  last restore test     the newest \`pgrunbook --procedure restore-test\` record: failed: critical; the newest passed
                        one older than --max-restore-test-age-days (8): warning; none at all after that age: critical
  No backup at all: critical. Repository or server unreachable: critical, and what needed it unknown.
  Thresholds: flags over the profile's "monitoring" over the defaults.

Exit codes (the Nagios plugin convention):
  0 OK, 1 WARNING, 2 CRITICAL,
  3 UNKNOWN: the status cannot be determined: neither the repository nor the server can be reached, or bad usage
    (an unknown option, a bad URL, no repository given). Note that 2 here means critical, not bad usage as elsewhere.
`;

export const STATUS_HELP = commandHelp(STATUS) + STATUS_NOTES;

export interface StatusIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

function last(flags: RawFlags, name: string): string | undefined {
  const v = flags[name];
  if (v === undefined || typeof v === 'boolean') return undefined;
  return Array.isArray(v) ? v[v.length - 1] : v;
}

function all(flags: RawFlags, name: string): string[] {
  const v = flags[name];
  if (v === undefined || typeof v === 'boolean') return [];
  return Array.isArray(v) ? v : [v];
}

export async function statusCommand(argv: string[], io: StatusIo): Promise<number> {
  const wantsJson = argv.includes('--json');
  const unknown = (message: string, hint = `see: ${pgrunbookCommand('status --help', io.env)}`): number => {
    io.stderr.write(`pgrunbook status: ${message}\nhint: ${hint}\n`);
    if (wantsJson) io.stdout.write(`${JSON.stringify({ status: 'unknown', exitCode: EXIT_CODE.unknown, error: message })}\n`);
    else if (!argv.includes('--prometheus')) io.stdout.write(`UNKNOWN: ${message}\n`);
    return EXIT_CODE.unknown;
  };

  let flags: RawFlags;
  try {
    const parsed = parseCommand(STATUS, argv);
    flags = parsed.flags;
    checkPositionals(STATUS, parsed.positionals);
  } catch (err) {
    if (err instanceof CliUsageError) return unknown(err.message, err.hint);
    throw err;
  }
  if (flags.help) {
    io.stdout.write(STATUS_HELP);
    return EXIT_CODE.ok;
  }
  if (flags.json && flags.prometheus) return unknown('--json and --prometheus exclude each other: pick one output format');

  try {
    const overrides: Partial<StatusThresholds> = {};
    for (const [flag, key] of Object.entries(THRESHOLD_FLAGS)) {
      const text = last(flags, flag);
      if (text === undefined) continue;
      const n = Number(text);
      if (!Number.isFinite(n) || n <= 0) return unknown(`--${flag} must be a positive number, got "${text}"`);
      overrides[key] = n;
    }
    const now = resolveNow(last(flags, 'now'), io.env);
    const skip = parseSkip(all(flags, 'skip'));

    const profileName = last(flags, 'profile') ?? (io.env.PGRUNBOOK_PROFILE || undefined);
    let profile: Profile = {};
    if (profileName) profile = await loadProfile(profileName, io.env);
    const services = buildServices(flags, io.env, profile, profileName);
    if (services.repo) checkRepoUrl(services.repo, io.env, { exit: EXIT_CODE.unknown, source: flags.repo !== undefined ? '--repo' : 'the repository' });
    const databaseList = all(flags, 'databases')
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter(Boolean);

    const report = await checkStatus({
      repo: services.repo,
      env: services.env,
      connection: services.connection,
      thresholds: resolveThresholds(profile, overrides),
      now,
      databases: databaseList.length ? databaseList : profile.databases,
      skip,
      pgdata: services.pgdata,
    });

    const body = flags.prometheus ? prometheusText(report) : flags.json ? statusJson(report) : statusText(report);
    const output = last(flags, 'output');
    if (output) {
      try {
        await writeFileAtomic(output, body);
      } catch (err) {
        return unknown(`cannot write ${output}: ${errorMessage(err)} (is the directory there and writable?)`);
      }
    } else {
      io.stdout.write(body);
    }
    return report.exitCode;
  } catch (err) {
    if (err instanceof ProfileError) return unknown(err.message, `list the saved profiles with: ${pgrunbookCommand('profile list', io.env)}`);
    if (err instanceof UsageError) return unknown(err.message, err.hint);
    if (err instanceof StatusUsageError || err instanceof ConnectionStringError) return unknown(err.message);
    throw err;
  }
}
