// `pgrunbook status`: backup ages, size deviations, WAL archive lag and archiver failures, as
// text, JSON or Prometheus text format, with the Nagios exit codes (0 ok, 1 warning,
// 2 critical, 3 unknown) so existing alerting can run it as a check.
import { parseArgv, FlagError, type RawFlags } from '../engine/params.js';
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

const BOOLEANS = ['json', 'prometheus', 'help'];
const VALUED = [
  'repo',
  'profile',
  'host',
  'port',
  'user',
  'dbname',
  'pgdata',
  'databases',
  'skip',
  'output',
  'now',
  'max-dump-age-hours',
  'max-base-backup-age-hours',
  'size-deviation-percent',
  'max-archive-lag-segments',
  'max-wal-age-hours',
  'max-verify-age-days',
];
const ALIASES: Record<string, string> = { '-h': '--host', '-p': '--port', '-U': '--user', '-d': '--dbname', '-D': '--pgdata' };
const THRESHOLD_FLAGS: Record<string, keyof StatusThresholds> = {
  'max-dump-age-hours': 'maxDumpAgeHours',
  'max-base-backup-age-hours': 'maxBaseBackupAgeHours',
  'size-deviation-percent': 'sizeDeviationPercent',
  'max-archive-lag-segments': 'maxArchiveLagSegments',
  'max-wal-age-hours': 'maxWalAgeHours',
  'max-verify-age-days': 'maxVerifyAgeDays',
};

export const STATUS_HELP = `pgrunbook status: are the backups fresh, complete and is WAL archiving keeping up?

Usage:
  pgrunbook status [--repo URL] [--profile NAME] [connection options] [--json | --prometheus] [--output FILE]

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
  No backup at all: critical. Repository or server unreachable: critical, and what needed it unknown.

Options:
  --repo URL                 backup repository (PGRUNBOOK_REPO, or the profile's)
  --profile NAME             saved settings (PGRUNBOOK_PROFILE); thresholds from its "monitoring"
  -h/--host, -p/--port, -U/--user, -d/--dbname   the server (libpq's PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ~/.pgpass)
  --databases A,B            databases whose dumps must exist (default: the profile's, else every database with dumps)
  --skip KINDS               leave out: base-backup, dump, wal, server (server: no connection; repository checks only)
  --max-dump-age-hours N, --max-base-backup-age-hours N, --size-deviation-percent N,
  --max-archive-lag-segments N, --max-wal-age-hours N, --max-verify-age-days N
                             thresholds (flags over the profile's "monitoring" over the defaults)
  --json                     the whole report as one JSON document
  --prometheus               Prometheus text format (gauges pgrunbook_*), e.g. for node_exporter's textfile collector
  --output FILE              write there instead of stdout, atomically (temp file + rename): the collector never reads half a file

Exit codes (the Nagios plugin convention):
  0 OK, 1 WARNING, 2 CRITICAL,
  3 UNKNOWN: the status cannot be determined: neither the repository nor the server can be reached, or bad usage
    (an unknown option, a bad URL, no repository given). Note that 2 here means critical, not bad usage as elsewhere.
`;

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
  const unknown = (message: string): number => {
    io.stderr.write(`pgrunbook status: ${message}\nsee: pgrunbook status --help\n`);
    if (wantsJson) io.stdout.write(JSON.stringify({ status: 'unknown', exitCode: EXIT_CODE.unknown, error: message }) + '\n');
    else if (!argv.includes('--prometheus')) io.stdout.write(`UNKNOWN: ${message}\n`);
    return EXIT_CODE.unknown;
  };

  // Unknown options first: parseArgv would take the word after one as its value.
  const strange = argv.filter((a) => a.startsWith('--') && a.length > 2).map((a) => a.slice(2).split('=')[0]).filter((n) => !BOOLEANS.includes(n) && !VALUED.includes(n));
  if (strange.length) return unknown(`unknown option${strange.length > 1 ? 's' : ''} ${strange.map((k) => `--${k}`).join(', ')}`);

  let flags: RawFlags;
  try {
    const parsed = parseArgv(argv, new Set(BOOLEANS), ALIASES);
    flags = parsed.flags;
    if (parsed.positionals.length) return unknown(`unexpected argument "${parsed.positionals[0]}"`);
  } catch (err) {
    if (err instanceof FlagError) return unknown(err.message);
    throw err;
  }
  const bad = Object.keys(flags).filter((k) => !BOOLEANS.includes(k) && !VALUED.includes(k));
  if (bad.length) return unknown(`unknown option${bad.length > 1 ? 's' : ''} ${bad.map((k) => `--${k}`).join(', ')}`);
  for (const b of BOOLEANS) if (flags[b] !== undefined && typeof flags[b] !== 'boolean') return unknown(`--${b} takes no value`);
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
    const databaseList = all(flags, 'databases')
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter(Boolean);

    const report = await checkStatus({
      repo: services.repo,
      env: io.env,
      connection: services.connection,
      thresholds: resolveThresholds(profile, overrides),
      now,
      databases: databaseList.length ? databaseList : profile.databases,
      skip,
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
    if (err instanceof StatusUsageError || err instanceof ProfileError || err instanceof ConnectionStringError || err instanceof UsageError) return unknown(err.message);
    throw err;
  }
}
