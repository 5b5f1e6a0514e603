// Headless renderers: one human line per event, or one JSON object per line. Both only
// subscribe to runner events; neither touches Ink.
import type { Writable } from 'node:stream';
import type { RunEvent, RunSummary } from './types.js';
import { formatDuration, formatQuantity } from './format.js';

export type Reporter = (event: RunEvent) => void;

export function jsonLinesReporter(out: Writable): Reporter {
  return (event) => {
    out.write(`${JSON.stringify(event)}\n`);
  };
}

interface HumanOptions {
  color: boolean;
  /** Minimum seconds between progress lines (a log file wants few). */
  progressEverySec?: number;
}

export function humanReporter(out: Writable, opts: HumanOptions): Reporter {
  const paint = (code: string, text: string) => (opts.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const green = (t: string) => paint('32', t);
  const red = (t: string) => paint('31', t);
  const yellow = (t: string) => paint('33', t);
  const dim = (t: string) => paint('2', t);
  const bold = (t: string) => paint('1', t);
  let total = 0;
  const indexOf = new Map<string, number>();
  let lastProgressLine = 0;
  const every = (opts.progressEverySec ?? 2) * 1000;
  const line = (text: string) => out.write(`${text}\n`);

  return (event) => {
    switch (event.type) {
      case 'run-start': {
        total = event.steps.length;
        for (const [i, s] of event.steps.entries()) indexOf.set(s.id, i + 1);
        const mode = event.dryRun ? ' (dry run: nothing will be changed)' : event.resumedAt ? ` (resuming at ${event.resumedAt})` : '';
        line(bold(`${event.title}`) + dim(` [${event.procedure}] run ${event.runId}`) + mode);
        if (event.journalPath) line(dim(`journal: ${event.journalPath}`));
        break;
      }
      case 'step-start':
        line(`${bold(`[${event.index + 1}/${total}]`)} ${event.title}`);
        if (event.about) line(dim(`      ${event.about}`));
        break;
      case 'log': {
        const mark = event.level === 'error' ? red('  ✗ ') : event.level === 'warn' ? yellow('  ! ') : '    ';
        line(mark + event.message);
        break;
      }
      case 'progress': {
        const now = Date.now();
        const finished = event.total !== undefined && event.done >= event.total;
        if (!finished && now - lastProgressLine < every) break;
        lastProgressLine = now;
        const pct = event.total ? `${Math.floor((100 * event.done) / event.total)}% ` : '';
        const amount = `${formatQuantity(event.done, event.unit)}${event.total !== undefined ? ` of ${formatQuantity(event.total, event.unit)}` : ''}`;
        const rate = event.ratePerSec ? `, ${formatQuantity(event.ratePerSec, event.unit)}/s` : '';
        const eta = event.etaSec !== undefined && !finished ? `, about ${formatDuration(event.etaSec * 1000)} left` : '';
        line(dim(`    ${pct}${amount}${rate}${eta}`));
        break;
      }
      case 'check':
        line(`  ${event.ok ? green('✓') : red('✗')} ${event.name}${event.detail ? dim(`: ${event.detail}`) : ''}`);
        break;
      case 'fact':
        line(`  ${bold(event.label)}: ${event.value}`);
        break;
      case 'confirm-request':
        line(yellow(`  ? ${event.message}`));
        break;
      case 'confirm-answer':
        line(event.allowed ? green('    confirmed') : red(`    refused${event.reason ? `: ${event.reason}` : ''}`));
        break;
      case 'step-end': {
        const n = indexOf.get(event.stepId) ?? 0;
        const took = dim(` (${formatDuration(event.durationMs)})`);
        if (event.status === 'ok') line(`${green(`[${n}/${total}] ok`)}${took}`);
        else if (event.status === 'planned') line(dim(`[${n}/${total}] planned`));
        else if (event.status === 'skipped') line(dim(`[${n}/${total}] skipped${event.reason ? `: ${event.reason}` : ''}`));
        else line(red(`[${n}/${total}] ${event.status}${event.error ? `: ${event.error}` : ''}`) + took);
        break;
      }
      case 'run-end':
        for (const l of summaryLines(event.summary)) line(l.ok === undefined ? l.text : l.ok ? green(l.text) : red(l.text));
        break;
    }
  };
}

export function summaryLines(summary: RunSummary): { text: string; ok?: boolean }[] {
  const lines: { text: string; ok?: boolean }[] = [];
  const passed = summary.checks.filter((c) => c.ok).length;
  const failed = summary.checks.length - passed;
  const verdict: Record<RunSummary['status'], string> = {
    ok: 'done',
    planned: 'dry run complete: nothing was changed',
    failed: 'FAILED',
    'verification-failed': 'VERIFICATION FAILED',
    refused: 'STOPPED: confirmation refused or missing',
    interrupted: 'INTERRUPTED',
  };
  lines.push({ text: `${verdict[summary.status]} in ${formatDuration(summary.durationMs)} (exit ${summary.exitCode})`, ok: summary.exitCode === 0 });
  for (const f of summary.facts ?? []) lines.push({ text: `${f.label}: ${f.value}` });
  if (summary.checks.length) lines.push({ text: `checks: ${passed} passed, ${failed} failed`, ok: failed === 0 });
  for (const c of summary.checks.filter((x) => !x.ok)) lines.push({ text: `  ✗ ${c.name}${c.detail ? `: ${c.detail}` : ''}`, ok: false });
  if (summary.error && summary.status !== 'verification-failed') lines.push({ text: summary.error, ok: false });
  if (summary.hint) lines.push({ text: `next: ${summary.hint}` });
  for (const a of summary.advice ?? []) lines.push({ text: `next: ${a.text}${a.command ? `\n    ${a.command}` : ''}` });
  if (summary.journalPath) lines.push({ text: `journal: ${summary.journalPath}` });
  return lines;
}
