// What a step sees while it runs (StepContext): its params, state and services, and the
// calls that become events: log, progress (throttled, with rate and ETA), check, fact and
// confirm. Everything a step reports is masked before it is journaled or emitted.
import type { CheckResult, ConfirmAnswerer, ConfirmOptions, Params, ProgressUpdate, ReplayProgress, RunEvent, Step, StepContext } from './types.js';
import type { Masker } from './mask.js';
import type { JournalRecord } from './journal.js';
import { errorMessage } from './errors.js';

/** The run a step context belongs to: what it reads and where its reports go. */
export interface RunScope {
  runId: string;
  procedureId: string;
  params: Params;
  services: unknown;
  /** Shared by every step of the run, journaled after each. */
  state: Record<string, unknown>;
  dryRun: boolean;
  signal: AbortSignal;
  masker: Masker;
  /** Minimum interval between progress events for one step. */
  progressIntervalMs: number;
  answer: ConfirmAnswerer;
  record(rec: JournalRecord): void;
  emit(event: RunEvent): void;
  /** The run's headline results, in order; a later fact with the same label replaces the earlier. */
  facts: { label: string; value: string }[];
}

const now = () => new Date().toISOString();

export function makeContext(run: RunScope, step: Step, stepChecks: CheckResult[]): StepContext {
  const { runId, masker } = run;
  const throttle = progressThrottle(run.progressIntervalMs);
  return {
    runId,
    procedureId: run.procedureId,
    stepId: step.id,
    params: run.params,
    signal: run.signal,
    dryRun: run.dryRun,
    state: run.state,
    services: run.services,
    log(message, level = 'info') {
      const text = masker.text(message);
      run.record({ rec: 'log', time: now(), stepId: step.id, level, message: text });
      run.emit({ type: 'log', time: now(), runId, stepId: step.id, level, message: text });
    },
    progress(update) {
      const rate = throttle(update);
      if (!rate) return;
      const { done, total, unit, replay } = update;
      run.emit({ type: 'progress', time: now(), runId, stepId: step.id, done, total, unit, ...rate.estimate, ...(replay ? { replay } : {}) });
    },
    async confirm(options: ConfirmOptions) {
      return (await askConfirmation(run, step, options)).allowed;
    },
    check(name, ok, detail) {
      const result: CheckResult = { stepId: step.id, name: masker.text(name), ok, detail: detail === undefined ? undefined : masker.text(detail) };
      stepChecks.push(result);
      run.record({ rec: 'check', time: now(), ...result });
      run.emit({ type: 'check', time: now(), runId, ...result });
    },
    addSecret(value: string) {
      masker.add(value);
    },
    fact(label, value) {
      const fact = { label: masker.text(label), value: masker.text(value) };
      const existing = run.facts.findIndex((f) => f.label === fact.label);
      if (existing >= 0) run.facts[existing] = fact;
      else run.facts.push(fact);
      run.record({ rec: 'log', time: now(), stepId: step.id, level: 'info', message: `${fact.label}: ${fact.value}` });
      run.emit({ type: 'fact', time: now(), runId, stepId: step.id, ...fact });
    },
  };
}

/**
 * At most one progress event per interval, but never drops the last one (done reaches total)
 * nor a replay that has just paused or been promoted: the screen must show those at once.
 * Returns the rate and ETA for an update that goes out, undefined for one that does not.
 */
function progressThrottle(intervalMs: number): (update: ProgressUpdate) => { estimate: { ratePerSec?: number; etaSec?: number } } | undefined {
  let lastAt = 0;
  let first: { at: number; done: number } | undefined;
  let lastReplay: ReplayProgress | undefined;
  return ({ done, total, replay }) => {
    const t = Date.now();
    if (!first) first = { at: t, done };
    const finished = total !== undefined && done >= total;
    const turned = replay !== undefined && (Boolean(replay.paused) !== Boolean(lastReplay?.paused) || Boolean(replay.promoted) !== Boolean(lastReplay?.promoted));
    if (!finished && !turned && t - lastAt < intervalMs) return undefined;
    lastAt = t;
    if (replay) lastReplay = replay;
    const elapsed = (t - first.at) / 1000;
    const ratePerSec = elapsed > 0.2 ? (done - first.done) / elapsed : undefined;
    const etaSec = ratePerSec && total !== undefined && ratePerSec > 0 ? Math.max(0, (total - done) / ratePerSec) : undefined;
    return { estimate: { ratePerSec, etaSec } };
  };
}

/** Asks the answerer (the operator or the flags), journals and emits the answer. An abort answers "no". */
export async function askConfirmation(run: RunScope, step: Step, options: ConfirmOptions): Promise<{ allowed: boolean; reason?: string }> {
  const { runId, signal, masker } = run;
  run.emit({ type: 'confirm-request', time: now(), runId, stepId: step.id, message: options.message, destructive: options.destructive });
  let allowed = false;
  let reason: string | undefined;
  try {
    // An abort (Ctrl-C) while a question is open answers it "no": no answerer can hold up the stop.
    let onAbort = () => {};
    const aborted = new Promise<{ allowed: boolean; reason?: string }>((resolve) => {
      onAbort = () => resolve({ allowed: false, reason: 'interrupted' });
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    const answer = await Promise.race([run.answer({ stepId: step.id, message: options.message, destructive: options.destructive }), aborted]).finally(() =>
      signal.removeEventListener('abort', onAbort),
    );
    allowed = answer.allowed;
    reason = answer.reason;
  } catch (err) {
    reason = errorMessage(err);
  }
  run.record({
    rec: 'confirm',
    time: now(),
    stepId: step.id,
    message: masker.text(options.message),
    expected: options.destructive?.expected,
    allowed,
    reason,
  });
  run.emit({ type: 'confirm-answer', time: now(), runId, stepId: step.id, allowed, reason });
  return { allowed, reason };
}
