// What the run view shows, as a pure function of the runner's events. No Ink, no React:
// unit-testable with plain event sequences. Bounded: the log tail keeps LOG_TAIL lines and
// the check list MAX_CHECKS entries, whatever a step emits.
import type { CheckResult, LogLevel, ReplayProgress, RunEvent, RunSummary, StepKind, StepProgress, StepStatus } from '../engine/types.js';

export const LOG_TAIL = 5;
export const MAX_CHECKS = 200;

export type StepState = 'pending' | 'running' | StepStatus;

export interface StepView {
  id: string;
  title: string;
  kind: StepKind;
  destructive: boolean;
  state: StepState;
  /** ms since the epoch, from the step-start event's time. */
  startedAt?: number;
  durationMs?: number;
  error?: string;
  reason?: string;
}

/** The latest progress event of a step, as the runner sent it (replay set for a WAL replay's). */
export type ProgressView = StepProgress;

/**
 * A WAL replay as the run reported it: the target the run was given (run-start's params) and
 * the latest typed replay progress (ProgressUpdate.replay) of any step. It outlives the step
 * that reported it, so a later question (promote?) can say where recovery paused.
 */
export interface ReplayInfo extends Partial<ReplayProgress> {
  target?: string;
  targetAction?: string;
}

export function replayInfoReducer(info: ReplayInfo, events: RunEvent[]): ReplayInfo {
  let next = info;
  for (const e of events) {
    if (e.type === 'run-start') {
      const { target, targetAction } = e.params;
      next = { target: typeof target === 'string' ? target : undefined, targetAction: typeof targetAction === 'string' ? targetAction : undefined };
    } else if (e.type === 'progress' && e.replay) {
      // Each report is the whole picture: a promotion after a pause replaces it.
      next = { target: next.target, targetAction: next.targetAction, ...e.replay };
    }
  }
  return next;
}

export interface LogLine {
  stepId: string;
  level: LogLevel;
  message: string;
}

export interface PendingConfirm {
  stepId: string;
  message: string;
  destructive?: { what: string; expected: string; means?: string };
  /** Counts confirm-requests, so a new request resets the typed text. */
  seq: number;
}

export interface RunViewState {
  runId?: string;
  procedure?: string;
  title?: string;
  journalPath?: string;
  dryRun: boolean;
  resumedAt?: string;
  startedAt?: number;
  steps: StepView[];
  currentStepId?: string;
  /** The current step's "about" text. */
  about?: string;
  /** The current step's latest progress; cleared when the step ends. */
  progress?: ProgressView;
  /** The run's WAL replay, once a step has reported one (replayInfoReducer). */
  replay: ReplayInfo;
  logs: LogLine[];
  /** Log lines dropped from the tail (they are in the journal). */
  logsDropped: number;
  checks: CheckResult[];
  checksDropped: number;
  confirm?: PendingConfirm;
  confirmSeq: number;
  /** The last confirmation's outcome, e.g. "refused: cancelled by the operator". */
  lastAnswer?: { stepId: string; allowed: boolean; reason?: string };
  summary?: RunSummary;
}

export type RunAction = { type: 'events'; events: RunEvent[] } | { type: 'event'; event: RunEvent } | { type: 'reset' };

export function initialRunState(steps: { id: string; title: string; kind: StepKind; destructive?: boolean }[] = []): RunViewState {
  return {
    dryRun: false,
    steps: steps.map((s) => ({ id: s.id, title: s.title, kind: s.kind, destructive: Boolean(s.destructive), state: 'pending' })),
    replay: {},
    logs: [],
    logsDropped: 0,
    checks: [],
    checksDropped: 0,
    confirmSeq: 0,
  };
}

export function runReducer(state: RunViewState, action: RunAction): RunViewState {
  switch (action.type) {
    case 'reset':
      return initialRunState(state.steps);
    case 'event':
      return applyEvent(state, action.event);
    case 'events':
      return action.events.reduce(applyEvent, state);
  }
}

function time(event: RunEvent): number {
  const t = Date.parse(event.time);
  return Number.isFinite(t) ? t : Date.now();
}

function updateStep(steps: StepView[], id: string, patch: Partial<StepView>): StepView[] {
  return steps.map((s) => (s.id === id ? { ...s, ...patch } : s));
}

export function applyEvent(state: RunViewState, event: RunEvent): RunViewState {
  switch (event.type) {
    case 'run-start': {
      const steps = event.steps.map((s): StepView => {
        const known = state.steps.find((k) => k.id === s.id);
        return known && known.state !== 'pending' ? known : { id: s.id, title: s.title, kind: s.kind, destructive: s.destructive, state: 'pending' };
      });
      return {
        ...state,
        runId: event.runId,
        procedure: event.procedure,
        title: event.title,
        journalPath: event.journalPath,
        dryRun: event.dryRun,
        resumedAt: event.resumedAt,
        startedAt: time(event),
        steps,
        replay: replayInfoReducer(state.replay, [event]),
      };
    }
    case 'step-start': {
      const exists = state.steps.some((s) => s.id === event.stepId);
      const steps = exists
        ? updateStep(state.steps, event.stepId, { state: 'running', startedAt: time(event), durationMs: undefined, error: undefined, reason: undefined })
        : [...state.steps, { id: event.stepId, title: event.title, kind: event.kind, destructive: false, state: 'running', startedAt: time(event) } satisfies StepView];
      return { ...state, steps, currentStepId: event.stepId, about: event.about, progress: undefined };
    }
    case 'log': {
      const logs = [...state.logs, { stepId: event.stepId, level: event.level, message: event.message }];
      const drop = Math.max(0, logs.length - LOG_TAIL);
      return { ...state, logs: drop ? logs.slice(drop) : logs, logsDropped: state.logsDropped + drop };
    }
    case 'progress': {
      const replay = event.replay ? replayInfoReducer(state.replay, [event]) : state.replay;
      if (state.currentStepId !== undefined && event.stepId !== state.currentStepId) return replay === state.replay ? state : { ...state, replay };
      const { stepId, done, total, unit, ratePerSec, etaSec } = event;
      return { ...state, replay, progress: { stepId, done, total, unit, ratePerSec, etaSec, replay: event.replay } };
    }
    case 'check': {
      const checks = [...state.checks, { stepId: event.stepId, name: event.name, ok: event.ok, detail: event.detail }];
      const drop = Math.max(0, checks.length - MAX_CHECKS);
      return { ...state, checks: drop ? checks.slice(drop) : checks, checksDropped: state.checksDropped + drop };
    }
    case 'fact': {
      const logs: LogLine[] = [...state.logs, { stepId: event.stepId, level: 'info', message: `${event.label}: ${event.value}` }];
      const drop = Math.max(0, logs.length - LOG_TAIL);
      return { ...state, logs: drop ? logs.slice(drop) : logs, logsDropped: state.logsDropped + drop };
    }
    case 'confirm-request': {
      const seq = state.confirmSeq + 1;
      return {
        ...state,
        confirmSeq: seq,
        confirm: { stepId: event.stepId, message: event.message, destructive: event.destructive, seq },
        lastAnswer: undefined,
      };
    }
    case 'confirm-answer':
      return { ...state, confirm: undefined, lastAnswer: { stepId: event.stepId, allowed: event.allowed, reason: event.reason } };
    case 'step-end': {
      const steps = updateStep(state.steps, event.stepId, { state: event.status, durationMs: event.durationMs, error: event.error, reason: event.reason });
      const current = state.currentStepId === event.stepId;
      return {
        ...state,
        steps,
        currentStepId: current ? undefined : state.currentStepId,
        about: current ? undefined : state.about,
        progress: state.progress?.stepId === event.stepId ? undefined : state.progress,
        confirm: state.confirm?.stepId === event.stepId ? undefined : state.confirm,
      };
    }
    case 'run-end':
      return { ...state, summary: event.summary, confirm: undefined, currentStepId: undefined, about: undefined, progress: undefined };
  }
}

export function isFinished(state: RunViewState): boolean {
  return state.summary !== undefined;
}

// ---------------------------------------------------------------------------------------
// Coalescing: the runner may emit progress and log events far faster than a terminal needs.
// Events are buffered and handed to the reducer in batches, at most every `intervalMs`
// (100 ms: 10 Hz). Within a batch a step's progress events collapse into the latest one.
// Events an operator must see at once (a step starting or ending, a confirmation, the end
// of the run) flush the buffer immediately, in order.

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

function isNodeTimer(h: unknown): h is NodeJS.Timeout {
  return typeof h === 'object' && h !== null && 'unref' in h;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => {
    if (isNodeTimer(h)) clearTimeout(h);
  },
  now: () => Date.now(),
};

const URGENT: ReadonlySet<RunEvent['type']> = new Set(['run-start', 'step-start', 'step-end', 'confirm-request', 'confirm-answer', 'run-end']);

export interface EventBatcher {
  push(event: RunEvent): void;
  /** Deliver whatever is buffered now. */
  flush(): void;
  /** Stop the timer; buffered events are delivered first. */
  close(): void;
}

function lastProgressOf(buffer: RunEvent[], stepId: string): number {
  for (let i = buffer.length - 1; i >= 0; i--) {
    const e = buffer[i];
    if (e.type === 'progress' && e.stepId === stepId) return i;
  }
  return -1;
}

export function createEventBatcher(deliver: (events: RunEvent[]) => void, intervalMs = 100, timers: Timers = realTimers): EventBatcher {
  let buffer: RunEvent[] = [];
  let timer: unknown;
  let lastFlush = -Infinity;
  let closed = false;

  const flush = () => {
    if (timer !== undefined) {
      timers.clearTimeout(timer);
      timer = undefined;
    }
    if (buffer.length === 0) return;
    const events = buffer;
    buffer = [];
    lastFlush = timers.now();
    deliver(events);
  };

  return {
    push(event) {
      if (closed) {
        deliver([event]);
        return;
      }
      if (event.type === 'progress') {
        const i = lastProgressOf(buffer, event.stepId);
        const last = i >= 0 ? buffer[i] : undefined;
        // A replay report is only replaced by another (a plain count must not erase where replay paused).
        const replaceable = last?.type === 'progress' && (event.replay !== undefined || last.replay === undefined);
        // Replace in place only when nothing else for that step came after it, so order holds.
        if (replaceable && buffer.slice(i + 1).every((e) => e.type === 'progress' || e.type === 'log' || e.type === 'check')) buffer[i] = event;
        else buffer.push(event);
      } else {
        buffer.push(event);
      }
      if (URGENT.has(event.type)) {
        flush();
        return;
      }
      if (timer === undefined) {
        const wait = Math.max(0, intervalMs - (timers.now() - lastFlush));
        timer = timers.setTimeout(() => {
          timer = undefined;
          flush();
        }, wait);
      }
    },
    flush,
    close() {
      flush();
      closed = true;
    },
  };
}
