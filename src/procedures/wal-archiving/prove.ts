// Step "prove": the settings are live, and a segment forced out by pg_switch_wal() arrives in
// the repository: the only proof that archiving works end to end. When it does not, the server
// log says why and the check says what to do.
import fsp from 'node:fs/promises';
import { archiveLogLines, firstReadable, logfilePath, switchAndWaitForArchive, telltaleLines, type ArchiveOutcome } from '../../postgres/archiver.js';
import { withPg } from '../../postgres/client.js';
import { postmasterEnvironmentNames, serverStderrFile } from '../../postgres/server-control.js';
import { readCurrentLogfile, readSettings } from '../../postgres/settings.js';
import { openRepository, type Repository } from '../../repo/repository.js';
import { walKey } from '../../repo/walarchive.js';
import { dataDirOf, desiredOf, repoPrepOf, repoUrl, timeoutSec } from './context.js';
import { adviceFor, desiredValue, liveIsDesired, READ_SETTINGS, shownValue } from './plan.js';
import type { WalCtx } from './types.js';

/** PostgreSQL retries a failing archive_command 3 times before pausing; that many failures after the switch is a real failure. */
const FAILURES_BEFORE_GIVING_UP = 3;

/** One check per archiving setting as it is now; false when any is not in effect. */
export async function checkSettingsLive(ctx: WalCtx): Promise<boolean> {
  const d = desiredOf(ctx);
  const rows = await withPg(ctx.services.connection, (c) => readSettings(c, READ_SETTINGS));
  let settingsOk = true;
  for (const name of ['wal_level', 'archive_mode', 'archive_command', 'archive_timeout', 'archive_library'] as const) {
    const row = rows.find((r) => r.name === name);
    if (!row) continue; // archive_library before PostgreSQL 15
    const value = shownValue({ setting: row.setting, configured: row.resetVal });
    const ok = liveIsDesired(d, name, value) && !row.pendingRestart;
    if (name === 'archive_library' && ok) continue;
    settingsOk &&= ok;
    const shown = name === 'archive_timeout' ? `${value}s` : value || "''";
    const pending = row.pendingRestart ? ' (a different value is pending a restart)' : '';
    ctx.check(name, ok, ok ? shown : `${shown}${pending}; expected ${desiredValue(d, name) || "''"}`);
  }
  if (!settingsOk) {
    ctx.check('segment archived', false, 'not attempted: the settings above are not in effect; run this procedure again (with --yes and --confirm) to apply them');
  }
  return settingsOk;
}

/**
 * Whether the running postmaster's environment holds credentials (names only): a server started
 * by hand from an operator's shell passes them to archive_command, and a proof that leans on them
 * fails after the next clean restart.
 */
export async function noteServerEnvironment(ctx: WalCtx): Promise<void> {
  const dataDir = dataDirOf(ctx);
  const names = dataDir ? await postmasterEnvironmentNames(dataDir) : undefined;
  if (!names) return;
  const envFile = ctx.state.envFile;
  const held = names.filter((n) => /^(AWS_|AZURE_STORAGE_|GOOGLE_APPLICATION_CREDENTIALS$|PGPASSWORD$)|SECRET|TOKEN|PASSWORD/.test(n));
  if (!held.length) {
    ctx.log(
      `the running server's environment holds no credentials${envFile ? `; archive_command reads the repository's from ${envFile.path}` : ''}: a segment archived now is archived after the next restart too`,
    );
    return;
  }
  const many = held.length > 1;
  ctx.log(
    `the running server's environment holds ${held.join(', ')} (from whoever started it): archive_command sees ${many ? 'them' : 'it'}, ` +
      `and ${many ? 'they are' : 'it is'} gone after a restart with a clean environment` +
      (envFile ? `; archive_command takes the repository's variables from ${envFile.path}, whose values win` : '') +
      `. Restart the server with pgrunbook or its service manager to drop ${many ? 'them' : 'it'}.`,
    'warn',
  );
}

/** The server log to quote: --server-log, the profile's, pg_current_logfile(), or where the running server's stderr goes. */
async function findLogFile(ctx: WalCtx): Promise<string | undefined> {
  const dataDir = dataDirOf(ctx);
  const current = await readCurrentLogfile(ctx.services.connection).catch(() => undefined);
  return firstReadable([ctx.params.serverLog, ctx.services.profile.serverLog, logfilePath(current, dataDir), dataDir ? await serverStderrFile(dataDir) : undefined]);
}

/** Switch WAL and wait until the segment is in the repository; one check says how that went. */
export async function proveSegmentArrives(ctx: WalCtx): Promise<void> {
  const logFile = await findLogFile(ctx);
  const logOffset = logFile ? await fsp.stat(logFile).then((s) => s.size, () => 0) : 0;
  const repo = await openRepository(repoUrl(ctx), ctx.services.env);
  try {
    const outcome = await withPg(ctx.services.connection, (c) =>
      switchAndWaitForArchive(c, {
        timeoutMs: timeoutSec(ctx) * 1000,
        failuresBeforeGivingUp: FAILURES_BEFORE_GIVING_UP,
        locate: (seg) => locateSegment(repo, seg),
        onSwitched: (seg) => ctx.log(`switched WAL: segment ${seg} is complete and waits for archive_command`),
        signal: ctx.signal,
      }),
    );
    await reportOutcome(ctx, outcome, repo.describe(), logFile, logOffset);
  } finally {
    await repo.close().catch(() => undefined);
  }
}

/** The archived segment's key (compressed or not) and size, when it is there. */
async function locateSegment(repo: Repository, segment: string): Promise<{ key: string; size?: number } | undefined> {
  for (const key of [walKey(segment, 'zstd'), walKey(segment, 'gzip'), walKey(segment, 'none')]) {
    const info = await repo.store.head(key);
    if (info) return { key, size: info.size };
  }
  return undefined;
}

async function reportOutcome(ctx: WalCtx, outcome: ArchiveOutcome, where: string, logFile: string | undefined, logOffset: number): Promise<void> {
  const seg = outcome.segment;
  switch (outcome.kind) {
    case 'arrived':
      ctx.check('segment archived', true, `${seg} arrived in ${where} as ${outcome.key} (${outcome.size ?? '?'} bytes) ${outcome.ms} ms after the switch`);
      return;
    case 'elsewhere':
      ctx.check(
        'segment archived',
        false,
        `PostgreSQL reports ${seg} archived (pg_stat_archiver), but none of ${walKey(seg, 'zstd')}, ${walKey(seg, 'gzip')}, ${walKey(seg, 'none')} is in ${where}: ` +
          `archive_command stores WAL somewhere else. Point it at this repository (run again without --archive-command, or fix the wrapper).`,
      );
      return;
    case 'failing': {
      const lines = logFile ? await archiveLogLines(logFile, logOffset).catch(() => [] as string[]) : [];
      for (const l of lines) ctx.log(l, 'error');
      const logSays = lines.length
        ? `The server log (${logFile}) says: ${telltaleLines(lines).join(' | ')}. `
        : logFile
          ? `The server log (${logFile}) has no lines about it since the switch. `
          : 'The server log is not readable here (pass --server-log FILE); look in it for "archive command failed". ';
      ctx.check(
        'segment archived',
        false,
        `archive_command failed ${outcome.failures} times since the switch (last failed: ${outcome.lastFailedWal} at ${outcome.lastFailedTime}). ` +
          logSays +
          `What to do: ${adviceFor(lines, repoPrepOf(ctx))}; then run this procedure again. Until archiving works, WAL piles up in pg_wal and can fill the disk.`,
      );
      return;
    }
    case 'timeout':
      ctx.check(
        'segment archived',
        false,
        `${seg} was not archived within ${timeoutSec(ctx)} s (pg_stat_archiver.last_archived_wal = ${outcome.lastArchivedWal ?? 'none'}, no failures reported): ` +
          `the archiver may be working through a backlog or archive_command may hang. Check the pg_stat_archiver view and the server log${logFile ? ` (${logFile})` : ''}; ` +
          'run again with a longer --timeout.',
      );
  }
}
