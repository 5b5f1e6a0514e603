// The final report: verdict, step timings, checks, where the journal is, and what to do next.
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import { summaryLines } from '../engine/reporters.js';
import type { RunSummary } from '../engine/types.js';
import { StepLine } from './run-view.js';
import type { StepView } from './run-state.js';
import { useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { linesFor } from './format.js';

export interface ReportState {
  choice?: 'home' | 'quit';
}

export function reportReducer(state: ReportState, action: { input: string; key: Key }): ReportState {
  if (state.choice) return state;
  if (action.key.return || action.key.escape) return { choice: 'home' };
  if (action.input === 'q') return { choice: 'quit' };
  return state;
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
}

export function Report({ summary, title, exiting, exitCode, onHome, onQuit }: ReportProps) {
  const { c } = useTheme();
  const { columns, rows } = useTerminalSize();
  const [state, dispatch] = useReducer(reportReducer, {});
  useKeys((input, key) => dispatch({ input, key }), !exiting);
  useEffect(() => {
    if (state.choice === 'home') onHome();
    else if (state.choice === 'quit') onQuit();
  }, [state.choice]);

  const width = Math.max(40, columns);
  const lines = summaryLines(summary);
  const verdict = lines[0];
  // Headline results (measured RTO, recovery point) go right under the verdict.
  const factTexts = new Set((summary.facts ?? []).map((f) => `${f.label}: ${f.value}`));
  const facts = lines.slice(1).filter((l) => factTexts.has(l.text));
  const rest = lines.slice(1).filter((l) => !factTexts.has(l.text) && !l.text.startsWith('  ✗ ') && !l.text.startsWith('checks: '));
  const steps: StepView[] = summary.steps.map((s) => ({ id: s.id, title: s.title, kind: s.kind, destructive: false, state: s.status, durationMs: s.durationMs, error: s.error }));
  const passed = summary.checks.filter((x) => x.ok).length;
  const failed = summary.checks.length - passed;
  // Failed checks first: they are what the operator must act on.
  const checks = [...summary.checks.filter((x) => !x.ok), ...summary.checks.filter((x) => x.ok)];
  const fixed = 2 + 1 + 1 + steps.length + 1 + (checks.length ? 1 : 0) + [...facts, ...rest].reduce((n, l) => n + linesFor(l.text, width), 0) + 2;
  const room = Math.max(0, rows - 1 - fixed);
  const shown = checks.length <= room ? checks.length : Math.max(0, room - 1);

  return (
    <Box flexDirection="column" width={width}>
      <Text bold wrap="truncate-end">
        {title ?? summary.procedure} <Text dimColor>· run {summary.runId}</Text>
      </Text>
      <Text bold color={c(verdict.ok ? 'green' : summary.status === 'interrupted' || summary.status === 'refused' ? 'yellow' : 'red')} wrap="wrap">
        {verdict.ok ? '✓ ' : '✗ '}
        {verdict.text}
      </Text>
      {facts.map((l) => (
        <Text key={l.text} wrap="wrap">
          {l.text}
        </Text>
      ))}
      <Text> </Text>
      <Text bold>Steps</Text>
      {steps.map((s, i) => (
        <StepLine key={s.id} step={s} index={i} total={steps.length} now={0} width={width} />
      ))}
      <Text> </Text>
      {checks.length ? (
        <Text bold>
          Checks: <Text color={c('green')}>{passed} passed</Text>, <Text color={failed ? c('red') : undefined}>{failed} failed</Text>
        </Text>
      ) : null}
      {checks.slice(0, shown).map((check, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: a fixed list of lines that never reorders
        <Text key={i} wrap="truncate-end">
          {'  '}
          <Text color={c(check.ok ? 'green' : 'red')}>{check.ok ? '✓' : '✗'}</Text> {check.name}
          {check.detail ? <Text dimColor>: {check.detail}</Text> : null}
        </Text>
      ))}
      {shown < checks.length ? <Text dimColor>{`  … ${checks.length - shown} more in the journal`}</Text> : null}
      {rest.map((l) => (
        <Text key={l.text} wrap="wrap" color={l.ok === false ? c('red') : undefined}>
          {l.text}
        </Text>
      ))}
      <Text> </Text>
      <Text dimColor wrap="truncate-end">
        {exiting ? `exiting with code ${exitCode ?? summary.exitCode}` : `Enter back to the procedures · q quit (exit ${summary.exitCode})`}
      </Text>
    </Box>
  );
}
