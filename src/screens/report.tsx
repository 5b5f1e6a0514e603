// The final report. The headline stays on top whatever follows: the verdict, and for a failure
// the step it failed at and its cause in one line. Below it a body that scrolls (↑↓ PgUp/PgDn):
// the headline results, what to do next (the procedure's typed advice: move the original data
// directory back, another target, another timeline; the generic hint only when there is none),
// the full cause wrapped, the steps, every check, and the ids of the run and its journal.
// Nothing is cut with "…" and nothing is left "in the journal": it wraps and scrolls.
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import { formatDuration } from '../engine/format.js';
import type { Advice, RunSummary } from '../engine/types.js';
import { StepLine } from './run-view.js';
import type { StepView } from './run-state.js';
import { useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { clip } from './format.js';
import { ScrollView, bodyLines, scrollHint, scrollKey, type BodyLine } from './scroll.js';

export interface ReportState {
  choice?: 'home' | 'quit';
  offset: number;
}

export type ReportAction = { input: string; key: Key; total: number; height: number };

export function reportReducer(state: ReportState, action: ReportAction): ReportState {
  if (state.choice) return state;
  if (action.key.return || action.key.escape) return { ...state, choice: 'home' };
  if (action.input === 'q') return { ...state, choice: 'quit' };
  const offset = scrollKey(state.offset, action.input, action.key, action.total, action.height);
  return offset === undefined || offset === state.offset ? state : { ...state, offset };
}

export interface ReportProps {
  summary: RunSummary;
  title?: string;
  /** The app exits right after showing this (Ctrl-C): no key hints. */
  exiting?: boolean;
  /** The code the app exits with, when exiting. */
  exitCode?: number;
  onHome(): void;
  onQuit(): void;
  /** Override the terminal size (tests). */
  size?: { columns: number; rows: number };
}

const VERDICT: Record<RunSummary['status'], string> = {
  ok: 'done',
  planned: 'dry run complete: nothing was changed',
  failed: 'FAILED',
  'verification-failed': 'VERIFICATION FAILED',
  refused: 'STOPPED: confirmation refused or missing',
  interrupted: 'INTERRUPTED',
};

const ADVICE_MARK: Record<Advice['kind'], string> = {
  'move-back': '↩',
  'other-target': '→',
  'other-timeline': '⑂',
  resume: '↻',
  inspect: '•',
  fix: '•',
};

/** The headline: verdict, the failing step and its cause in one line (the body has it in full). */
export function reportHeadline(summary: RunSummary): { verdict: string; step?: string; cause?: string } {
  const verdict = `${VERDICT[summary.status]} in ${formatDuration(summary.durationMs)} (exit ${summary.exitCode})`;
  const index = summary.failure ? summary.steps.findIndex((s) => s.id === summary.failure?.stepId) : summary.steps.findIndex((s) => s.status === 'failed' || s.status === 'refused');
  const failed = index >= 0 ? summary.steps[index] : undefined;
  const step = failed ? `at step ${index + 1}/${summary.steps.length}: ${failed.title}` : undefined;
  const causeText = failed?.error ?? (summary.status === 'ok' || summary.status === 'planned' ? undefined : summary.error);
  const cause = causeText?.split('\n').find((l) => l.trim() !== '')?.trim();
  return { verdict, step, cause };
}

/** The scrolled body, wrapped to `width`. */
export function reportBody(summary: RunSummary, width: number): { lines: BodyLine[]; stepsAt: number } {
  const lines: BodyLine[] = [];
  const gap = () => lines.push({ text: '' });
  for (const f of summary.facts ?? []) lines.push(...bodyLines(`${f.label}: ${f.value}`, width, {}, '    '));
  const advice = summary.advice ?? [];
  if (advice.length || summary.hint) {
    if (lines.length) gap();
    lines.push({ text: 'What to do next', bold: true });
    for (const a of advice) {
      lines.push(...bodyLines(`${ADVICE_MARK[a.kind]} ${a.text}`, width, { color: a.kind === 'move-back' ? 'yellow' : undefined }, '  '));
      if (a.command) lines.push(...bodyLines(`    ${a.command}`, width, { bold: true }, '    '));
    }
    if (!advice.length && summary.hint) lines.push(...bodyLines(`next: ${summary.hint}`, width, {}, '      '));
  }
  const cause = summary.error && summary.status !== 'verification-failed' && summary.status !== 'ok' ? summary.error : undefined;
  if (cause) {
    gap();
    lines.push({ text: 'Cause', bold: true });
    lines.push(...bodyLines(cause, width, { color: 'red' }));
  }
  gap();
  lines.push({ text: 'Steps', bold: true });
  const stepsAt = lines.length;
  for (let i = 0; i < summary.steps.length; i++) lines.push({ text: '' }); // StepLine rows, drawn by the screen
  if (summary.checks.length) {
    const passed = summary.checks.filter((x) => x.ok).length;
    gap();
    lines.push({ text: `Checks: ${passed} passed, ${summary.checks.length - passed} failed`, bold: true });
    // Failed checks first: they are what the operator must act on.
    const ordered = [...summary.checks.filter((x) => !x.ok), ...summary.checks.filter((x) => x.ok)];
    for (const check of ordered) {
      lines.push(...bodyLines(`  ${check.ok ? '✓' : '✗'} ${check.name}${check.detail ? `: ${check.detail}` : ''}`, width, { color: check.ok ? undefined : 'red', dim: check.ok }, '      '));
    }
  }
  gap();
  lines.push(...bodyLines(`run id: ${summary.runId}`, width, { dim: true }, '    '));
  if (summary.journalPath) lines.push(...bodyLines(`journal: ${summary.journalPath}`, width, { dim: true }, '    '));
  return { lines, stepsAt };
}

export function Report({ summary, title, exiting, exitCode, onHome, onQuit, size }: ReportProps) {
  const { c } = useTheme();
  const terminal = useTerminalSize();
  const { columns, rows } = size ?? terminal;
  const width = Math.max(40, columns);
  const head = reportHeadline(summary);
  const { lines, stepsAt } = reportBody(summary, width);
  // Header: title, verdict, step and cause when failed; footer: one line.
  const headerLines = 2 + (head.step ? 1 : 0) + (head.cause ? 1 : 0);
  const height = Math.max(3, rows - 1 - headerLines - 1);
  const [state, dispatch] = useReducer(reportReducer, { offset: 0 });
  useKeys((input, key) => dispatch({ input, key, total: lines.length, height }), !exiting);
  useEffect(() => {
    if (state.choice === 'home') onHome();
    else if (state.choice === 'quit') onQuit();
  }, [state.choice]);

  const ok = summary.exitCode === 0;
  const color = c(ok ? 'green' : summary.status === 'interrupted' || summary.status === 'refused' ? 'yellow' : 'red');
  const offset = Math.max(0, Math.min(state.offset, Math.max(0, lines.length - height)));
  const steps: StepView[] = summary.steps.map((s) => ({ id: s.id, title: s.title, kind: s.kind, destructive: false, state: s.status, durationMs: s.durationMs, error: s.error }));
  // Step lines are drawn as StepLine (marks, state and time in columns) where they fall in the window.
  const before = lines.slice(0, stepsAt);
  const after = lines.slice(stepsAt + steps.length);
  const window = { from: offset, to: offset + height };
  const part = (from: number, list: BodyLine[]) => {
    const a = Math.max(window.from, from);
    const b = Math.min(window.to, from + list.length);
    return b > a ? <ScrollView lines={list.slice(a - from, b - from)} offset={0} height={b - a} /> : null;
  };
  const stepFrom = Math.max(window.from, stepsAt);
  const stepTo = Math.min(window.to, stepsAt + steps.length);
  const hint = scrollHint(offset, lines.length, height);

  return (
    <Box flexDirection="column" width={width}>
      <Text bold wrap="truncate-end">
        {clip(title ?? summary.procedure, Math.max(10, width - summary.runId.length - 8))} <Text dimColor>· run {summary.runId}</Text>
      </Text>
      <Text bold color={color} wrap="truncate-end">
        {ok ? '✓ ' : '✗ '}
        {head.verdict}
      </Text>
      {head.step ? (
        <Text bold wrap="truncate-end">
          {clip(head.step, width)}
        </Text>
      ) : null}
      {head.cause ? (
        <Text color={c('red')} wrap="truncate-end">
          {clip(head.cause, width)}
        </Text>
      ) : null}
      <Box flexDirection="column" height={Math.min(height, lines.length)}>
        {part(0, before)}
        {steps.slice(Math.max(0, stepFrom - stepsAt), Math.max(0, stepTo - stepsAt)).map((s) => {
          const i = steps.indexOf(s);
          return <StepLine key={s.id} step={s} index={i} total={steps.length} now={0} width={width} />;
        })}
        {part(stepsAt + steps.length, after)}
      </Box>
      <Text dimColor wrap="truncate-end">
        {exiting ? `exiting with code ${exitCode ?? summary.exitCode}` : `${hint ? `${hint} · ` : ''}Enter back · q quit (exit ${summary.exitCode})`}
      </Text>
    </Box>
  );
}
