// The retention plan in an operator's words, one line per item with its reason: what the
// plan step logs and the dry run prints.
import { formatBytes } from '../engine/format.js';
import type { DebrisItem, DebrisScan } from './debris.js';
import { planTotals, type RetentionPlan, type WalTallySummary } from './retention.js';

export const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** "2 temporary files and 1 empty directory" (or '' when there are none). */
export function debrisText(items: DebrisItem[]): string {
  const files = items.filter((i) => i.kind === 'temp-file').length;
  const dirs = items.length - files;
  return [files ? plural(files, 'temporary file') : '', dirs ? plural(dirs, 'empty directory', 'empty directories') : ''].filter(Boolean).join(' and ');
}

/** Every item of the plan with its reason; `nowGiven` when ages were measured from --now. */
export function describeRetentionPlan(plan: RetentionPlan, wal: WalTallySummary, debris: DebrisScan | undefined, nowGiven: boolean): string[] {
  const lines: string[] = [];
  if (nowGiven) lines.push(`ages measured from ${plan.now} (--now), not from the clock`);
  const size = (n: number) => formatBytes(n);
  for (const b of plan.expire.baseBackups) lines.push(`expire base backup ${b.id} (${size(b.bytes)}): ${b.reason}`);
  for (const b of plan.keep.baseBackups) lines.push(`keep base backup ${b.id}: ${b.reason}`);
  for (const d of plan.expire.dumps) lines.push(`expire dump ${d.database}/${d.id} (${size(d.bytes)}): ${d.reason}`);
  for (const d of plan.keep.dumps) lines.push(`keep dump ${d.database}/${d.id}: ${d.reason}`);
  const rule = plan.wal.rule;
  if (!rule) {
    lines.push(`keep all ${plural(wal.kept.files, 'WAL file')}: ${plan.wal.keepAllReason}`);
  } else {
    const line = `before ${rule.beforeSegment}, the start segment of the oldest kept base backup ${rule.oldestKeptBackup}${rule.maxTimeline > 1 ? `, on timelines up to ${rule.maxTimeline}` : ''}`;
    for (const r of wal.expired.runs) lines.push(`expire WAL ${r.from} .. ${r.to} (${plural(r.files, 'file')}, ${size(r.bytes)}): ${line}; no kept base backup needs it`);
    if (wal.expired.files === 0) lines.push(`no WAL expires: nothing is archived ${line}`);
    for (const r of wal.kept.runs) {
      const why = r.timeline > rule.maxTimeline ? `timeline ${r.timeline} is newer than the oldest kept base backup's` : `from ${rule.beforeSegment} (start of ${rule.oldestKeptBackup}) onward`;
      lines.push(`keep WAL ${r.from} .. ${r.to} (${plural(r.files, 'file')}, ${size(r.bytes)}): ${why}`);
    }
  }
  if (wal.histories.length) lines.push(`keep ${plural(wal.histories.length, 'timeline history file')} (${wal.histories.join(', ')}): always kept`);
  const clockNow = Date.now();
  for (const d of debris?.items ?? []) {
    const age = `${((clockNow - Date.parse(d.modified)) / 86_400_000).toFixed(1)} days ago`;
    lines.push(
      d.kind === 'temp-file'
        ? `remove temporary file ${d.path} (${size(d.bytes)}, last written ${d.modified}, ${age}): left behind by an upload that was killed`
        : `remove empty directory ${d.path} (last changed ${d.modified}, ${age}): left behind by a killed run`,
    );
  }
  if (debris && (debris.young.tempFiles || debris.young.emptyDirectories)) {
    const young = [debris.young.tempFiles ? plural(debris.young.tempFiles, 'temporary file') : '', debris.young.emptyDirectories ? plural(debris.young.emptyDirectories, 'empty directory', 'empty directories') : ''].filter(Boolean).join(' and ');
    lines.push(`keep ${young} younger than a day: an upload may still be writing ${debris.young.tempFiles + debris.young.emptyDirectories === 1 ? 'it' : 'them'}`);
  }
  for (const w of plan.warnings) lines.push(`warning: ${w}`);
  const t = planTotals(plan, wal.expired);
  const extra = debrisText(debris?.items ?? []);
  lines.push(
    t.objects === 0
      ? `nothing expires${extra ? `; ${extra} to remove` : ''}`
      : `in all: ${plural(t.baseBackups, 'base backup')}${t.incompleteBaseBackups ? ` (${t.incompleteBaseBackups} incomplete)` : ''}, ${plural(t.dumps, 'dump')} and ${plural(t.walFiles, 'WAL file')}: ${plural(t.objects, 'object')}, ${size(t.bytes)}${extra ? `; and ${extra}` : ''}`,
  );
  return lines;
}

