// The status as text for people (the first line is the Nagios status line) and as JSON.
import type { StatusCheck, StatusReport } from './types.js';

export const SEVERITY_MARK: Record<StatusCheck['status'], string> = { ok: '✓', warning: '!', critical: '✗', unknown: '?' };

export function statusText(r: StatusReport): string {
  const lines: string[] = [r.headline];
  lines.push(`checked at ${r.generatedAt}`);
  lines.push(`repository ${r.repository.url ?? '(none)'}${r.repository.reachable ? '' : ' (UNREACHABLE)'}`);
  if (r.server) lines.push(`server ${r.server.endpoint}${r.server.reachable ? '' : ' (UNREACHABLE)'}`);
  if (r.skipped.length) lines.push(`skipped: ${r.skipped.join(', ')}`);
  lines.push('');
  const titleWidth = Math.min(28, Math.max(...r.checks.map((c) => c.title.length)));
  for (const c of r.checks) {
    lines.push(`${SEVERITY_MARK[c.status]} ${c.status.toUpperCase().padEnd(8)} ${c.title.padEnd(titleWidth)}  ${c.summary}`);
    if (c.hint && c.status !== 'ok') lines.push(`  ${' '.repeat(8)} ${' '.repeat(titleWidth)}  → ${c.hint}`);
  }
  lines.push('');
  lines.push(`exit ${r.exitCode} (0 ok, 1 warning, 2 critical, 3 unknown)`);
  return `${lines.join('\n')}\n`;
}

export function statusJson(r: StatusReport): string {
  return `${JSON.stringify(r, null, 2)}\n`;
}
