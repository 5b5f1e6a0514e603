// `pgrunbook catalog [--repo URL] [--json]`: what the repository holds and what it can restore.
// `pgrunbook catalog --verify [--since DURATION|ISO-TIME] [--parallel N]`: read every object back
// and check it against its recorded checksum, the WAL for gaps, and base backups against their
// backup_manifest; the result is recorded in the repository (verify/last.json) for `status`.
// Exit codes: 0 intact, 3 a bad object (each named), 2 bad usage, 1 the repository cannot be read.
import { CATALOG, CliUsageError, checkPositionals, commandHelp, parseCommand, type RawFlags } from './registry.js';
import { checkRepoUrl } from './validate.js';
import { EXIT } from '../engine/types.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { openStore } from '../storage/url.js';
import { readCatalog, type Catalog } from '../repo/catalog.js';
import { RepositoryUnreadableError, VERIFY_RESULT_KEY, parseSince, recordVerifyResult, verifyRepository, type VerifyProgress, type VerifyResult } from '../repo/verify.js';
import { errorMessage } from '../engine/errors.js';
import { pgrunbookCommand } from '../engine/command-name.js';


export async function catalogCommand(
  argv: string[],
  io: { stdout: NodeJS.WritableStream; stderr?: NodeJS.WritableStream; env: NodeJS.ProcessEnv },
): Promise<number> {
  const wantsJson = argv.includes('--json');
  const usage = (message: string, hint = `see: ${pgrunbookCommand('catalog --help', io.env)}`): number => {
    io.stderr?.write(`pgrunbook catalog: ${message}\nhint: ${hint}\n`);
    if (wantsJson) io.stdout.write(`${JSON.stringify({ type: 'error', exitCode: EXIT.usage, message, hint })}\n`);
    return EXIT.usage;
  };
  let flags: RawFlags;
  try {
    const parsed = parseCommand(CATALOG, argv);
    flags = parsed.flags;
    checkPositionals(CATALOG, parsed.positionals);
  } catch (err) {
    if (err instanceof CliUsageError) return usage(err.message, err.hint);
    throw err;
  }
  if (flags.help) {
    io.stdout.write(commandHelp(CATALOG));
    return EXIT.ok;
  }
  if (!flags.verify && (flags.since !== undefined || flags.parallel !== undefined)) return usage('--since and --parallel go with --verify');
  let parallel = 4;
  if (flags.parallel !== undefined) {
    parallel = Number(flags.parallel);
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) return usage(`--parallel: expected a whole number from 1 to 64, got "${String(flags.parallel)}"`);
  }
  let since: Date | undefined;
  if (flags.since !== undefined) {
    since = parseSince(String(flags.since), new Date());
    if (!since) return usage(`--since: "${String(flags.since)}" is neither a duration (30m, 12h, 7d, 2w) nor an ISO 8601 time (2026-11-24T03:00:00Z)`);
  }
  const url = (flags.repo as string | undefined) ?? io.env.PGRUNBOOK_REPO;
  if (!url) return usage('no repository: pass --repo URL or set PGRUNBOOK_REPO', 'a repository URL is file:///path, s3://bucket/prefix or azure://container/prefix');
  try {
    checkRepoUrl(url, io.env, { source: flags.repo !== undefined ? '--repo' : 'PGRUNBOOK_REPO' });
  } catch (err) {
    if (err instanceof CliUsageError) return usage(err.message, err.hint);
    throw err;
  }

  let store;
  try {
    store = await openStore(url, io.env);
  } catch (err) {
    // A malformed URL is bad usage; anything else (credentials, network) is a repository that cannot be read.
    const code = (err as { code?: string }).code;
    if (code === 'invalid-url' || code === 'invalid-argument') return usage(errorMessage(err));
    throw err;
  }
  try {
    if (flags.verify) return await verifyCommand(store, { parallel, since, json: Boolean(flags.json) }, io);
    const catalog = await readCatalog(store);
    io.stdout.write(flags.json ? `${JSON.stringify(catalog, null, 2)}\n` : catalogText(catalog));
    return 0;
  } finally {
    await store.close().catch(() => undefined);
  }
}

async function verifyCommand(
  store: Awaited<ReturnType<typeof openStore>>,
  opts: { parallel: number; since?: Date; json: boolean },
  io: { stdout: NodeJS.WritableStream; stderr?: NodeJS.WritableStream },
): Promise<number> {
  let last: VerifyProgress | undefined;
  let lastLine = 0;
  let printed = '';
  const print = (p: VerifyProgress) => {
    const text = `verify: ${p.objectsDone}/${p.objectsTotal} objects, ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}\n`;
    if (text !== printed) io.stderr?.write(text);
    printed = text;
  };
  const timer = setInterval(() => {
    if (last) print(last);
    lastLine = Date.now();
  }, 1000);
  timer.unref();
  let result: VerifyResult;
  try {
    result = await verifyRepository(store, {
      parallel: opts.parallel,
      since: opts.since,
      onProgress: (p) => {
        last = p;
        if (lastLine === 0) {
          // The first line at once, so even a short run says what it is about to read.
          lastLine = Date.now();
          print(p);
        }
      },
    });
  } catch (err) {
    if (err instanceof RepositoryUnreadableError) {
      io.stderr?.write(`pgrunbook catalog --verify: ${err.message}\nNothing was verified. Check the URL, the credentials and the network (or that the backup volume is mounted), then run it again.\n`);
      if (opts.json) io.stdout.write(`${JSON.stringify({ type: 'error', exitCode: EXIT.failed, message: err.message })}\n`);
      return EXIT.failed;
    }
    throw err;
  } finally {
    clearInterval(timer);
  }
  if (last) print(last);
  let recordError: string | undefined;
  try {
    await recordVerifyResult(store, result);
  } catch (err) {
    recordError = `could not record the result as ${VERIFY_RESULT_KEY}: ${errorMessage(err)} (status will not see this verify; check write access to the repository)`;
    result.warnings.push(recordError);
  }
  io.stdout.write(opts.json ? `${JSON.stringify({ ...result, recorded: recordError ? false : VERIFY_RESULT_KEY }, null, 2)}\n` : verifyText(result, recordError));
  return result.ok ? EXIT.ok : EXIT.verification;
}

export function verifyText(r: VerifyResult, recordError?: string): string {
  const c = r.counts;
  const lines: string[] = [];
  lines.push(r.ok ? `OK: repository ${r.store} verified` : `CORRUPT: ${c.bad} bad object${c.bad === 1 ? '' : 's'} in ${r.store}`);
  lines.push(`scope: ${r.scope.all ? 'every object' : `objects written since ${r.scope.since}`}; ${c.objects} objects, ${formatBytes(c.bytes)} read in ${formatDuration(r.durationMs)} (${r.parallel} in parallel)`);
  const n = (k: number, one: string, many = `${one}s`) => `${k} ${k === 1 ? one : many}`;
  lines.push(
    `checked: ${n(c.verified, 'object')} against their recorded SHA-256 (${n(c.walFiles, 'WAL file')}, ${n(c.baseBackups, 'base backup')}, ${n(c.dumps, 'dump')}), ${n(c.manifestFiles, 'file')} inside base backups against backup_manifest; ${n(c.gaps, 'WAL gap')}`,
  );
  if (c.unverified) lines.push(`not checkable: ${c.unverified} objects have no recorded checksum (e.g. ${r.unverifiedKeys.slice(0, 3).join(', ')})`);
  for (const i of r.incomplete) lines.push(`incomplete ${i.kind} ${i.id}: no metadata file (${i.objects} objects, last written ${i.lastWritten}); not corruption, never offered for restore; retention removes it`);
  for (const b of r.bad) lines.push(`BAD ${b.key}: ${b.problem}: ${b.detail}`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  if (!r.ok) lines.push('Do not rely on the bad objects: take a new base backup / dump now, and restore from an older copy if one of them is needed.');
  if (!recordError) lines.push(`recorded as ${VERIFY_RESULT_KEY}`);
  return `${lines.join('\n')}\n`;
}

export function catalogText(c: Catalog): string {
  const lines: string[] = [`Repository ${c.store}`];
  const complete = c.baseBackups.filter((b) => b.complete);
  lines.push(`Base backups: ${complete.length} complete${c.baseBackups.length > complete.length ? `, ${c.baseBackups.length - complete.length} incomplete (never offered for restore)` : ''}`);
  for (const b of c.baseBackups) {
    if (b.complete && b.meta) lines.push(`  ${b.id}  timeline ${b.meta.timeline}  ${b.meta.startLsn} .. ${b.meta.stopLsn}  ended ${b.meta.stopTime}  ${formatBytes(b.bytes)}`);
    else lines.push(`  ${b.id}  INCOMPLETE${b.problem ? `: ${b.problem}` : ' (no backup.json)'}`);
  }
  const dumpsComplete = c.dumps.filter((d) => d.complete);
  lines.push(`Dumps: ${dumpsComplete.length} complete${c.dumps.length > dumpsComplete.length ? `, ${c.dumps.length - dumpsComplete.length} incomplete` : ''}`);
  for (const d of c.dumps) lines.push(`  ${d.database}/${d.id}  ${d.complete ? formatBytes(d.bytes) : `INCOMPLETE${d.problem ? `: ${d.problem}` : ''}`}`);
  lines.push(`WAL: ${c.wal.files} files, ${formatBytes(c.wal.bytes)}`);
  for (const t of c.wal.timelines) lines.push(`  timeline ${t.timeline}: ${t.first} .. ${t.last} (${t.segments} segments), last archived ${t.lastArchivedAt}`);
  if (c.gaps.length) {
    lines.push(`GAPS in the WAL archive (recovery cannot pass them):`);
    for (const g of c.gaps) lines.push(`  timeline ${g.timeline}: ${g.from}${g.missing > 1 ? ` .. ${g.to}` : ''} missing (${g.missing} segment${g.missing > 1 ? 's' : ''})`);
  }
  lines.push('Recovery windows:');
  if (!c.windows.length) lines.push('  none: no complete base backup');
  for (const w of c.windows) {
    if (w.unusable) lines.push(`  from ${w.backupId}: UNUSABLE: ${w.unusable}`);
    else
      lines.push(
        `  from ${w.backupId}: ${w.fromLsn} (${w.fromTime}) to ${w.toLsn}${w.toArchivedAt ? ` (archived ${w.toArchivedAt})` : ''}, timeline${w.timelines.length > 1 ? 's' : ''} ${w.timelines.join(' -> ')}${w.endedByGap ? `; ends at the gap at ${w.endedByGap.from}` : ''}`,
      );
  }
  return `${lines.join('\n')}\n`;
}
