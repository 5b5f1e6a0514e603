// The run screen: starts the procedure, renders its events, and answers its confirmations.
// Event -> state is the pure runReducer (run-state.ts); events reach it in batches of at most
// 10 a second. The live area is sized to the terminal so it never fills it (Ink would then
// clear and repaint the whole screen on every frame).
import { useEffect, useReducer, useRef, useState } from 'react';
import { Box, Text } from 'ink';
import { Spinner } from '@inkjs/ui';
import { runProcedure } from '../engine/runner.js';
import { journalPathFor, newRunId } from '../engine/journal.js';
import { formatDuration } from '../engine/format.js';
import type { ConfirmAnswerer, Params, Procedure, RunContext, RunEvent, RunSummary } from '../engine/types.js';
import type { ResumeFrom } from '../engine/runner.js';
import { createEventBatcher, initialRunState, runReducer, type ReplayInfo, type RunViewState, type StepView } from './run-state.js';
import { ConfirmPrompt, confirmReducer, initialConfirmState, type ConfirmAnswer, type ConfirmInputState } from './confirm.js';
import { useKeys } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { STATE_COLOR, STATE_MARK, bar, clip, linesFor, percent, progressText } from './format.js';
import type { ProgressView } from './run-state.js';

// ---------------------------------------------------------------------------------------
// WAL replay: progress that carries a typed replay (ProgressUpdate.replay) gets a panel of its
// own: the target, the WAL replayed against it, where replay is and its last replayed commit.
// While a later question is open after replay paused (pitr's "promote?"), where it paused.
// Read from the run's typed events (run-start's params, progress.replay): no log text is
// parsed, and no procedure needs to know the UI.

/** "8.0 MiB of 16.0 MiB WAL · 2.0 MiB/s · about 4.0 s left": progressText naming what it counts. */
export function labelledProgressText(p: ProgressView, what: string): string {
  const [amounts, ...rest] = progressText(p).split(' · ');
  return [`${amounts} ${what}`, ...rest].join(' · ');
}

function describeReplayTarget(info: ReplayInfo): string {
  if (!info.target) return 'the target';
  if (info.target === 'latest') return 'latest (the end of the archived WAL)';
  return `${info.target}${info.targetAction ? `, then ${info.targetAction}` : ''}`;
}

/** Lines the replay panel takes. */
function replayPanelLines(info: ReplayInfo): number {
  return 2 + (info.lsn || info.commitTime ? 1 : 0);
}

export interface RunScreenProps {
  procedure: Procedure;
  params: Params;
  services?: unknown;
  /** Journaled in run-start (profile, connection, repository): what a later resume acts with. */
  context?: RunContext;
  /** Continue this run from where its journal stopped (Home's resume list). */
  resume?: ResumeFrom;
  stateDir: string;
  /** Aborted by the root on Ctrl-C. */
  signal: AbortSignal;
  /** The operator asked to stop; shown while the step winds down. */
  stopping?: boolean;
  secrets?: string[];
  onFinished(summary: RunSummary): void;
  /** Engine knobs, for tests. */
  progressIntervalMs?: number;
  abortGraceMs?: number;
}

/** Re-render every `ms` while `active`: the elapsed clock (at most 4 Hz). */
function useNow(active: boolean, ms = 250): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [active, ms]);
  return active ? Math.max(now, Date.now()) : now;
}

export function RunScreen(props: RunScreenProps) {
  const { procedure } = props;
  const [state, dispatch] = useReducer(runReducer, procedure.steps.map((s) => ({ ...s, destructive: Boolean(s.destructive) })), initialRunState);
  const [confirmState, confirmDispatch] = useReducer(confirmReducer, 0, initialConfirmState);
  const pending = useRef<{ seq: number; resolve: (answer: ConfirmAnswer) => void } | undefined>(undefined);
  const started = useRef(false);
  const propsRef = useRef(props);
  propsRef.current = props;

  useEffect(() => {
    if (started.current) return;
    started.current = true;
    const p = propsRef.current;
    const runId = p.resume?.runId ?? newRunId(procedure.id);
    const batcher = createEventBatcher((events) => dispatch({ type: 'events', events }));
    let requests = 0;
    const onEvent = (event: RunEvent) => {
      if (event.type === 'confirm-request') requests++;
      batcher.push(event);
    };
    const answer: ConfirmAnswerer = () =>
      new Promise((resolve) => {
        if (p.signal.aborted) {
          resolve({ allowed: false, reason: 'interrupted by the operator' });
          return;
        }
        pending.current = { seq: requests, resolve };
      });
    const onAbort = () => {
      const waiting = pending.current;
      pending.current = undefined;
      waiting?.resolve({ allowed: false, reason: 'interrupted by the operator' });
    };
    p.signal.addEventListener('abort', onAbort);
    const startedAt = Date.now();
    Promise.resolve()
      .then(() =>
        runProcedure({
      procedure,
      params: p.params,
      services: p.services,
      context: p.context,
      resume: p.resume,
      runId,
      answer,
      signal: p.signal,
      journalPath: journalPathFor(p.stateDir, runId),
      onEvent,
      secrets: p.secrets,
      progressIntervalMs: p.progressIntervalMs ?? 100,
      abortGraceMs: p.abortGraceMs,
    }),
      )
      .catch((err: unknown) => {
        // The runner reports step failures in its summary; this is the run itself failing to
        // start (an unwritable state directory, say). Show it like any other failed run.
        const message = err instanceof Error ? err.message : String(err);
        const summary: RunSummary = {
          runId,
          procedure: procedure.id,
          status: 'failed',
          exitCode: 1,
          durationMs: Date.now() - startedAt,
          steps: procedure.steps.map((s) => ({ id: s.id, title: s.title, kind: s.kind, status: 'pending' })),
          checks: [],
          journalPath: undefined,
          error: `the run could not start: ${message}`,
          hint: `check that the state directory ${p.stateDir} exists and is writable`,
        };
        batcher.push({ type: 'run-end', time: new Date().toISOString(), runId, summary });
      })
      .finally(() => {
        batcher.close();
        p.signal.removeEventListener('abort', onAbort);
      });
  }, [procedure]);

  // Hand the operator's answer to the runner once the reducer has settled on one.
  useEffect(() => {
    const waiting = pending.current;
    if (!confirmState.outcome || !waiting || waiting.seq !== confirmState.seq) return;
    pending.current = undefined;
    waiting.resolve(confirmState.outcome);
  }, [confirmState]);

  // Tell the root once the run-end event is in (the root shows the report).
  const reported = useRef(false);
  useEffect(() => {
    if (state.summary && !reported.current) {
      reported.current = true;
      propsRef.current.onFinished(state.summary);
    }
  }, [state.summary]);

  useKeys((input, key) => {
    const request = state.confirm;
    if (!request || props.stopping) return;
    // A new request starts from an empty input.
    const base = confirmState.seq === request.seq ? undefined : request.seq;
    if (base !== undefined) confirmDispatch({ type: 'reset', seq: base });
    confirmDispatch({ type: 'key', input, key, request });
  });

  const now = useNow(!state.summary);
  const shownConfirm = state.confirm && confirmState.seq === state.confirm.seq ? confirmState : initialConfirmState(state.confirm?.seq ?? 0);
  return <RunView state={state} confirm={shownConfirm} now={now} stopping={Boolean(props.stopping)} />;
}

export interface RunViewProps {
  state: RunViewState;
  confirm?: ConfirmInputState;
  now: number;
  stopping?: boolean;
  /** Override the terminal size (tests). */
  size?: { columns: number; rows: number };
}

export function RunView({ state, confirm, now, stopping, size }: RunViewProps) {
  const { c } = useTheme();
  const terminal = useTerminalSize();
  const { columns, rows } = size ?? terminal;
  const width = Math.max(40, columns);
  const elapsed = state.startedAt !== undefined ? formatDuration(Math.max(0, (state.summary ? state.startedAt + state.summary.durationMs : now) - state.startedAt)) : '';
  const current = state.steps.find((s) => s.id === state.currentStepId);

  // Budget: everything but the check list and the log tail is fixed; those two get what is left.
  const confirmLines = state.confirm ? 2 + 1 + linesFor(`This will ${state.confirm.destructive?.what ?? state.confirm.message}.`, width - 4) + 2 + (confirm?.error ? linesFor(confirm.error, width - 4) : 0) : 0;
  const aboutText = state.about ? clip(state.about, width * 2 - 10) : undefined;
  const { replay, progress } = state;
  const replaying = progress?.replay !== undefined;
  const pausedAsk = state.confirm !== undefined && !replaying && Boolean(replay.paused) && !replay.promoted;
  const progressLines = replaying ? replayPanelLines(replay) : progress ? 1 : 0;
  const fixed = 1 + state.steps.length + 1 + (aboutText ? linesFor(aboutText, width) : 0) + progressLines + (pausedAsk ? 1 : 0) + confirmLines + 1 + (stopping ? 1 : 0);
  const avail = Math.max(0, rows - 1 - fixed);
  const checkHeader = state.checks.length ? 1 : 0;
  let checksShown = Math.min(state.checks.length, Math.max(0, avail - checkHeader - Math.min(state.logs.length, 2)));
  const logsShown = Math.min(state.logs.length, Math.max(0, avail - checkHeader - checksShown));
  checksShown = Math.min(state.checks.length, Math.max(0, avail - checkHeader - logsShown));
  const passed = state.checks.filter((x) => x.ok).length;
  const failed = state.checks.length - passed;

  return (
    <Box flexDirection="column" width={width}>
      <Box justifyContent="space-between">
        <Text bold wrap="truncate-end">
          {clip(`${state.title ?? state.procedure ?? ''}${state.runId ? ` · run ${state.runId}` : ''}`, width - 22)}
        </Text>
        <Text>{elapsed ? `elapsed ${elapsed}` : ''}</Text>
      </Box>
      {state.steps.map((s, i) => (
        <StepLine key={s.id} step={s} index={i} total={state.steps.length} now={now} width={width} waiting={state.confirm?.stepId === s.id} />
      ))}
      <Text> </Text>
      {aboutText ? (
        <Text dimColor wrap="wrap">
          {aboutText}
        </Text>
      ) : null}
      {progress ? replaying ? <ReplayPanel info={replay} progress={progress} width={width} /> : <ProgressLine progress={progress} width={width} /> : null}
      {pausedAsk ? (
        <Text wrap="truncate-end" color={c('yellow')}>
          {'  '}Paused{replay.lsn ? ` at ${replay.lsn}` : ''}
          {replay.commitTime ? `, last replayed commit ${replay.commitTime}` : ''}
        </Text>
      ) : null}
      {state.confirm && confirm ? (
        <ConfirmPrompt request={state.confirm} state={confirm} stepTitle={current?.title} columns={width} />
      ) : null}
      {checkHeader ? (
        <Text>
          checks: <Text color={c('green')}>{passed} ✓</Text>
          {failed ? <Text color={c('red')}> {failed} ✗</Text> : null}
          {state.checks.length > checksShown ? <Text dimColor> (last {checksShown} shown)</Text> : null}
        </Text>
      ) : null}
      {state.checks.slice(state.checks.length - checksShown).map((check, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: the index is offset by what scrolled away, so a line keeps its key
        <Text key={`c${state.checksDropped + state.checks.length - checksShown + i}`} wrap="truncate-end">
          {'  '}
          <Text color={c(check.ok ? 'green' : 'red')}>{check.ok ? '✓' : '✗'}</Text> {check.name}
          {check.detail ? <Text dimColor>: {check.detail}</Text> : null}
        </Text>
      ))}
      {state.logs.slice(state.logs.length - logsShown).map((line, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: the index is offset by what scrolled away, so a line keeps its key
        <Text key={`l${state.logsDropped + state.logs.length - logsShown + i}`} wrap="truncate-end" color={line.level === 'error' ? c('red') : line.level === 'warn' ? c('yellow') : undefined} dimColor={line.level === 'info'}>
          {line.level === 'error' ? '  ✗ ' : line.level === 'warn' ? '  ! ' : '    '}
          {line.message}
        </Text>
      ))}
      {stopping ? (
        <Text color={c('yellow')} wrap="truncate-end">
          Stopping: waiting for the step to stop cleanly and the journal to record it (Ctrl-C again quits at once)
        </Text>
      ) : null}
      <Text dimColor wrap="truncate-end">
        {state.confirm ? (state.confirm.destructive ? 'type the text · Enter confirm · Esc cancel · Ctrl-C stop' : 'y yes · n no · Ctrl-C stop') : 'Ctrl-C stop (the journal records where; --resume continues)'}
      </Text>
    </Box>
  );
}

export function StepLine({ step, index, total, now, width, waiting }: { step: StepView; index: number; total: number; now: number; width: number; waiting?: boolean }) {
  const { c } = useTheme();
  const duration =
    step.durationMs !== undefined ? formatDuration(step.durationMs) : step.state === 'running' && step.startedAt !== undefined ? formatDuration(Math.max(0, now - step.startedAt)) : '';
  const n = `${index + 1}/${total}`.padStart(String(total).length * 2 + 1);
  const stateWord = waiting ? 'waiting' : step.state;
  const titleWidth = Math.max(10, width - n.length - 3 - 12 - 11);
  const note = step.state === 'skipped' && step.reason ? ` (${step.reason})` : (step.state === 'failed' || step.state === 'refused') && step.error ? ` (${step.error})` : '';
  return (
    <Box>
      <Box width={2}>
        {waiting ? <Text color={c('yellow')}>?</Text> : step.state === 'running' ? <Spinner /> : <Text color={c(STATE_COLOR[step.state] ?? 'gray')}>{STATE_MARK[step.state]}</Text>}
      </Box>
      <Text dimColor>{n} </Text>
      <Box width={titleWidth}>
        <Text wrap="truncate-end" bold={step.state === 'running'} dimColor={step.state === 'pending'}>
          {step.title}
          {note ? <Text dimColor>{note}</Text> : null}
        </Text>
      </Box>
      <Box width={12} marginLeft={1}>
        <Text color={waiting ? c('yellow') : c(STATE_COLOR[step.state] ?? 'gray')} dimColor={step.state === 'pending'}>
          {stateWord}
        </Text>
      </Box>
      <Box width={10} justifyContent="flex-end">
        <Text dimColor>{duration}</Text>
      </Box>
    </Box>
  );
}

function ReplayPanel({ info, progress, width }: { info: ReplayInfo; progress: ProgressView; width: number }) {
  const { c } = useTheme();
  return (
    <Box flexDirection="column">
      <Text wrap="truncate-end">
        <Text bold>  WAL replay</Text> <Text dimColor>→</Text> {describeReplayTarget(info)}
      </Text>
      <ProgressLine progress={progress} width={width} what="WAL" />
      {info.lsn || info.commitTime ? (
        <Text wrap="truncate-end" color={info.paused ? c('yellow') : info.promoted ? c('green') : undefined}>
          {'  '}
          {info.promoted ? 'promoted: ' : info.paused ? 'paused at the target: ' : ''}
          {info.lsn ? `replayed to ${info.lsn}` : ''}
          {info.lsn && info.targetLsn && !info.paused && !info.promoted ? <Text dimColor> of {info.targetLsn}</Text> : null}
          {info.commitTime ? `${info.lsn ? ', ' : ''}last replayed commit ${info.commitTime}` : ''}
        </Text>
      ) : null}
    </Box>
  );
}

function ProgressLine({ progress, width, what }: { progress: RunViewState['progress'] & object; width: number; what?: string }) {
  const { c } = useTheme();
  const text = what ? labelledProgressText(progress, what) : progressText(progress);
  if (progress.total === undefined) {
    return (
      <Text wrap="truncate-end">
        {'  '}
        {text}
      </Text>
    );
  }
  const pct = percent(progress.done, progress.total);
  // The bar takes what the numbers leave, 10 to 30 columns, so the line fits in one row.
  const barWidth = Math.max(10, Math.min(30, width - 2 - 1 - 5 - text.length - 1));
  return (
    <Text wrap="truncate-end">
      {'  '}
      <Text color={c('cyan')}>{bar(progress.done, progress.total, barWidth)}</Text> {String(pct).padStart(3)}% <Text dimColor>{text}</Text>
    </Text>
  );
}
