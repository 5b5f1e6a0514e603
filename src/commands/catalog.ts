// `pgrunbook catalog [--repo URL] [--json]`: what the repository holds and what it can restore.
import { parseArgv } from '../engine/params.js';
import { formatBytes } from '../engine/format.js';
import { openStore } from '../storage/url.js';
import { readCatalog, type Catalog } from '../storage/catalog.js';

export async function catalogCommand(argv: string[], io: { stdout: NodeJS.WritableStream; env: NodeJS.ProcessEnv }): Promise<number> {
  const { flags, positionals } = parseArgv(argv, new Set(['json']));
  const unknown = Object.keys(flags).filter((k) => !['json', 'repo'].includes(k));
  if (unknown.length || positionals.length) throw new Error(`usage: pgrunbook catalog [--repo URL] [--json] (unknown: ${[...unknown.map((k) => '--' + k), ...positionals].join(' ')})`);
  const url = (flags.repo as string | undefined) ?? io.env.PGRUNBOOK_REPO;
  if (!url) throw new Error('no repository: pass --repo URL or set PGRUNBOOK_REPO (file:///path, s3://bucket/prefix, azure://container/prefix)');
  const store = await openStore(url, io.env);
  try {
    const catalog = await readCatalog(store);
    io.stdout.write(flags.json ? JSON.stringify(catalog, null, 2) + '\n' : catalogText(catalog));
    return 0;
  } finally {
    await store.close().catch(() => undefined);
  }
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
  return lines.join('\n') + '\n';
}
