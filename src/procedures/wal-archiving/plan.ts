// What the archiving settings should be, and the changes that get a server there: pure logic on
// what inspect read, no I/O.
import { shellQuote } from '../../engine/runner.js';
import type { ArchiverStats } from '../../postgres/archiver.js';
import { alterSystemText } from '../../postgres/settings.js';
import { percentEscape } from '../pgrunbook-command.js';
import type { Change, EnvFilePlan, Finding, Inspection, LiveSetting, RepoPrep, SettingName } from './types.js';

/** Settings read at inspection (cluster_name names the restart's confirmation). */
export const READ_SETTINGS = ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout', 'archive_library', 'cluster_name'];
/** The settings shown and proven, in the order an operator reads them. */
export const SHOWN_SETTINGS: SettingName[] = ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout'];

const MANAGED: readonly string[] = ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout', 'archive_library'] satisfies SettingName[];

export function isSettingName(name: string): name is SettingName {
  return MANAGED.includes(name);
}

/** What this run wants: the archive_command to set, the repository it must push into, the archive_timeout. */
export type Desired = {
  archiveCommand: string;
  /** --archive-command was given: only that exact command will do. */
  overrideGiven: boolean;
  repoUrl: string;
  envFile?: string;
  /** The spool archive_command must name (asynchronous); false: it must name none; undefined: either. */
  spool?: string | false;
  archiveTimeoutSec: number;
};

/** "60s", "5min", "1h", "90" (seconds) to seconds; undefined when not a positive duration. */
export function parseDurationSec(text: string): number | undefined {
  const m = /^\s*(\d+)\s*(ms|s|min|h|d)?\s*$/.exec(text);
  if (!m) return undefined;
  const factors: Record<string, number> = { ms: 0.001, s: 1, min: 60, h: 3600, d: 86400 };
  const sec = Number(m[1]) * factors[m[2] ?? 's'];
  return sec >= 1 && Number.isInteger(sec) ? sec : undefined;
}

/**
 * Whether an archive_command already does what we would set: exactly it, or (without an override)
 * a pgrunbook wal-push into the same repository, naming the same env file when one is wanted.
 */
export function archiveCommandMatches(current: string, desired: string, overrideGiven: boolean, repoUrl: string, envFile?: string, spool?: string | false): boolean {
  if (current === desired) return true;
  if (overrideGiven || !current) return false;
  const forms = (v: string) => new Set([v, shellQuote(v), `'${v}'`, `"${v}"`].map(percentEscape));
  const pushes = /(^|[\s/'"])(pgrunbook|cli\.js)['"]?\s+wal-push(\s|$)/.test(current);
  const sameRepo = [...forms(repoUrl)].some((u) => current.includes(`--repo ${u}`) || current.includes(`--repo=${u}`));
  const sameEnvFile = envFile
    ? [...forms(envFile)].some((f) => current.includes(`--env-file ${f}`) || current.includes(`--env-file=${f}`))
    : true; // none wanted (no credentials here, or the server is remote): keep one the command already names
  const sameSpool =
    spool === undefined ? true : spool === false ? !/--spool[\s=]/.test(current) : [...forms(spool)].some((d) => current.includes(`--spool ${d}`) || current.includes(`--spool=${d}`));
  return pushes && sameRepo && sameEnvFile && sameSpool && /(^|\s)["']?%p["']?(\s|$)/.test(current);
}

export function desiredValue(d: Desired, name: SettingName): string {
  switch (name) {
    case 'wal_level':
      return 'replica';
    case 'archive_mode':
      return 'on';
    case 'archive_command':
      return d.archiveCommand;
    case 'archive_timeout':
      return `${d.archiveTimeoutSec}s`;
    case 'archive_library':
      return '';
  }
}

/** Whether a live pg_settings value is what we want (archive_timeout in seconds, as pg_settings shows it). */
export function liveIsDesired(d: Desired, name: SettingName, live: string): boolean {
  switch (name) {
    case 'wal_level':
      return live === 'replica' || live === 'logical';
    case 'archive_mode':
      return live === 'on' || live === 'always';
    case 'archive_command':
      return archiveCommandMatches(live, d.archiveCommand, d.overrideGiven, d.repoUrl, d.envFile, d.spool);
    case 'archive_timeout':
      return Number(live) > 0;
    case 'archive_library':
      return live === '';
  }
}

/** Whether a value shown after a reload is the one applied (archive_timeout in seconds, as pg_settings shows it). */
export function reloadedValueIs(d: Desired, name: SettingName, value: string): boolean {
  return name === 'archive_timeout' ? Number(value) === d.archiveTimeoutSec : value === desiredValue(d, name);
}

/** The value an operator would recognise: archive_command is "(disabled)" in pg_settings while archive_mode is off. */
export function shownValue(s: { setting: string; configured: string } | undefined): string {
  if (!s) return '';
  return s.setting === '(disabled)' ? s.configured : s.setting;
}

/**
 * A restart-only setting with pending_restart: the configuration files give it another value, which
 * the next restart brings. Fine when that value is also right (e.g. wal_level logical); when it is
 * not, or unknown (pg_file_settings needs a superuser), it must be written again.
 */
function nextRestartKeeps(d: Desired, name: SettingName, s: LiveSetting): boolean {
  if (!s.pendingRestart) return true;
  return s.fileValue !== undefined && liveIsDesired(d, name, s.fileValue);
}

/** A restart-only setting (wal_level, archive_mode) that is wrong now or will be after the next restart. */
function restartSettingChange(d: Desired, name: 'wal_level' | 'archive_mode', s: LiveSetting, whyNow: string, whyLater: string): Change | undefined {
  const liveOk = liveIsDesired(d, name, s.setting);
  if (liveOk && nextRestartKeeps(d, name, s)) return undefined;
  return { name, from: s.setting, to: desiredValue(d, name), restart: !liveOk, why: liveOk ? whyLater : whyNow };
}

export function proposeChanges(d: Desired, insp: Inspection): Change[] {
  const live = insp.live;
  const command = shownValue(live.archive_command);
  const changes: (Change | undefined)[] = [
    restartSettingChange(
      d,
      'wal_level',
      live.wal_level!,
      'wal_level minimal leaves out what recovery from a base backup and archived WAL needs',
      'the configuration files set it to minimal at the next restart',
    ),
    restartSettingChange(d, 'archive_mode', live.archive_mode!, 'without it PostgreSQL never runs archive_command', 'the configuration files turn archiving off at the next restart'),
    liveIsDesired(d, 'archive_command', command)
      ? undefined
      : {
          name: 'archive_command',
          from: command || "''",
          to: desiredValue(d, 'archive_command'),
          restart: false,
          why: command ? 'it does not archive into this repository' : 'it is empty, so nothing is archived',
        },
    liveIsDesired(d, 'archive_timeout', live.archive_timeout!.setting)
      ? undefined
      : {
          name: 'archive_timeout',
          from: '0 (off)',
          to: desiredValue(d, 'archive_timeout'),
          restart: false,
          why: 'with 0 a quiet server keeps a partly filled segment unarchived indefinitely; this bounds the data that can be lost (RPO)',
        },
    live.archive_library && live.archive_library.setting !== ''
      ? { name: 'archive_library', from: live.archive_library.setting, to: "''", restart: false, why: 'when archive_library is set PostgreSQL ignores archive_command' }
      : undefined,
  ];
  return changes.filter((c): c is Change => c !== undefined);
}

/** One line per setting: ok, or what it needs and why. */
export function settingFindings(insp: Inspection, changes: Change[]): Finding[] {
  const out: Finding[] = [];
  for (const name of SHOWN_SETTINGS) {
    const change = changes.find((c) => c.name === name);
    const value = name === 'archive_timeout' ? `${insp.live.archive_timeout?.setting ?? '?'}s` : shownValue(insp.live[name]) || "''";
    if (!change) out.push({ text: `${name} = ${value}: ok` });
    else out.push({ text: `${name} = ${change.from}: needs ${change.to}${change.restart ? ' (takes effect only after a restart)' : ''}: ${change.why}`, level: 'warn' });
  }
  const lib = changes.find((c) => c.name === 'archive_library');
  if (lib) out.push({ text: `archive_library = ${lib.from}: needs '' (${lib.why})`, level: 'warn' });
  return out;
}

export function archiverFindings(a: ArchiverStats): Finding[] {
  const out: Finding[] = [
    {
      text:
        `pg_stat_archiver: ${a.archivedCount} archived${a.lastArchivedWal ? ` (last ${a.lastArchivedWal} at ${a.lastArchivedTime})` : ''}, ` +
        `${a.failedCount} failed${a.lastFailedWal ? ` (last ${a.lastFailedWal} at ${a.lastFailedTime})` : ''}`,
      level: a.failing ? 'warn' : 'info',
    },
  ];
  if (a.failing) out.push({ text: `archiving is failing right now: ${a.lastFailedWal} could not be archived; WAL accumulates in pg_wal until it works`, level: 'warn' });
  return out;
}

/** The settings that need the restart, in words ("wal_level and archive_mode"). */
export function restartNames(changes: Change[]): string {
  return (
    changes
      .filter((c) => c.restart)
      .map((c) => c.name)
      .join(' and ') || 'wal_level and archive_mode'
  );
}

export function alterLines(d: Desired, changes: Change[]): string[] {
  return changes.map((c) => alterSystemText(c.name, desiredValue(d, c.name)));
}

/** The files the apply steps create: the repository directory, the server's env file. */
export function createLines(prep: RepoPrep, envFile: EnvFilePlan | undefined): string[] {
  const out: string[] = [];
  if (prep.create?.length) {
    const dirs = prep.create.map(shellQuote).join(' ');
    out.push(`mkdir ${dirs}; chown ${prep.serverUser?.name}:${prep.serverUser?.groupName} ${dirs}`);
  }
  if (envFile && prep.writeEnvFile) out.push(`write ${envFile.path} (mode 0600, owner ${ownerText(prep)}): ${envFile.names.join(', ')}`);
  return out;
}

export function ownerText(prep: RepoPrep): string {
  return prep.serverUser ? `${prep.serverUser.name}:${prep.serverUser.groupName}` : 'this user';
}

/** What to do about an archive_command that failed, from what the server log says. */
export function adviceFor(lines: string[], prep: RepoPrep): string {
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

export function capitalize(s: string): string {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}
