// Runs a procedure's steps in order and emits typed events. UIs subscribe to events and
// answer confirm-requests; the runner owns the journal, masking, progress throttling and
// the mapping from outcomes to exit codes.
import os from 'node:os';
import {
  ConfirmationRefusedError,
  EXIT,
  type CheckResult,
  type ConfirmAnswerer,
  type ConfirmOptions,
  type Params,
  type Procedure,
  type RunContext,
  type RunEvent,
  type RunStatus,
  type RunSummary,
  type Step,
  type StepContext,
  type StepStatus,
  type StepSummary,
} from './types.js';
import { Masker } from './mask.js';
import { Journal, newRunId, whoAmI, type JournalRecord } from './journal.js';

export interface ResumeFrom {
  runId: string;
  journalPath: string;
  state: Record<string, unknown>;
  completedSteps: string[];
}

/** Something went wrong outside the step's own promise. */
export type RunFault =
  /** An uncaught exception or unhandled rejection while the run was active. */
  | { kind: 'uncaught'; error: unknown }
  /** The event loop drained with a step's promise still pending: it can never settle. */
  | { kind: 'drained' };

/**
 * The CLI's line into a running run, for process-level events the runner cannot see itself.
 * The runner fills in `fault` and `endNow` while the run is active and clears them when it ends.
 */
export interface RunSupervisor {
  /** Stop the current step and end the run as failed (asynchronously, through the normal ending). */
  fault?: (fault: RunFault) => void;
  /** The process is ending now: record where the run stopped and write run-end synchronously. */
  endNow?: (how: { kind: 'signal'; signal: string } | { kind: 'exit'; code: number }) => RunSummary | undefined;
  /** Set when a step was left running (it ignored an abort or can never settle): exit promptly after the run. */
  leftRunning?: boolean;
}

export interface RunOptions {
  procedure: Procedure;
  params: Params;
  answer: ConfirmAnswerer;
  services?: unknown;
  signal?: AbortSignal;
  dryRun?: boolean;
  /** Where journals go; false for no journal (tests of pure behaviour, dry runs). */
  journalPath?: string | false;
  runId?: string;
  resume?: ResumeFrom;
  onEvent?: (event: RunEvent) => void;
  /** Values to mask everywhere (passwords found in flags or the environment). */
  secrets?: string[];
  /** Minimum interval between progress events for one step (the UI repaints at most this often). */
  progressIntervalMs?: number;
  /** How long to wait for a step to honour an abort before recording it as interrupted. */
  abortGraceMs?: number;
  /** Journaled in run-start: where the run acts (no secrets), for a later --resume. */
  context?: RunContext;
  supervisor?: RunSupervisor;
}

interface StepOutcome {
  status: StepStatus;
  error?: string;
  reason?: string;
  hint?: string;
  /** A failure that carries its own exit code (e.g. 75, a lock held by another run; 3, corruption). */
  exitCode?: number;
}

export async function runProcedure(opts: RunOptions): Promise<RunSummary> {
  const { procedure } = opts;
  const runId = opts.resume?.runId ?? opts.runId ?? newRunId(procedure.id);
  const dryRun = Boolean(opts.dryRun);
  const masker = new Masker();
  for (const s of opts.secrets ?? []) masker.add(s);
  for (const spec of procedure.params) {
    const v = opts.params[spec.name];
    if (spec.secret && typeof v === 'string') masker.add(v);
  }
  const maskedParams = maskParams(procedure, opts.params, masker);
  const journalPath = dryRun ? undefined : opts.resume?.journalPath ?? (opts.journalPath || undefined);
  let journal: Journal | undefined;
  let journalOpenError: string | undefined;
  if (journalPath) {
    try {
      journal = new Journal(journalPath);
    } catch (err) {
      journalOpenError = errorMessage(err);
    }
  }
  const progressInterval = opts.progressIntervalMs ?? 125;
  const abortGraceMs = opts.abortGraceMs ?? 10_000;
  const supervisor = opts.supervisor;

  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(opts.signal?.reason);
  if (opts.signal?.aborted) controller.abort(opts.signal.reason);
  else opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  const runStarted = Date.now();
  const now = () => new Date().toISOString();
  const emit = (event: RunEvent) => {
    try {
      opts.onEvent?.(masker.deep(event));
    } catch {
      // A subscriber's bug must not break the run.
    }
  };

  const state: Record<string, unknown> = { ...(opts.resume?.state ?? {}) };
  const completed = new Set(opts.resume?.completedSteps ?? []);
  const checks: CheckResult[] = [];
  const facts: { label: string; value: string }[] = [];
  const stepSummaries: StepSummary[] = procedure.steps.map((s) => ({ id: s.id, title: s.title, kind: s.kind, status: 'pending' }));

  // What ends the run early from outside a step's own promise (see RunSupervisor).
  let ended: RunSummary | undefined;
  let current: { step: Step; index: number; started: number } | undefined;
  let fault: string | undefined;
  let abandonCurrent: (() => void) | undefined;
  const raiseFault = (message: string, abandon: boolean) => {
    if (ended) return;
    // A stubborn step after Ctrl-C that can never settle: stop waiting, it stays an interruption.
    if (!(abandon && controller.signal.aborted && !fault)) fault ??= message;
    if (!controller.signal.aborted) controller.abort(new Error(message));
    if (abandon) abandonCurrent?.();
  };
  // A journal that cannot be written mid-run ends the run: --resume could not trust it.
  const record = (rec: JournalRecord) => {
    if (!journal) return;
    try {
      journal.append(rec);
    } catch (err) {
      raiseFault(`cannot write the journal ${journalPath}: ${errorMessage(err)}; nothing after this point ran`, false);
    }
  };
  const stepTitle = () => (current ? `step "${current.step.title}"` : 'the run');
  if (supervisor) {
    supervisor.leftRunning = false;
    supervisor.fault = (f) => {
      if (f.kind === 'drained') raiseFault(`${stepTitle()} ended without finishing (internal error); nothing after it ran`, true);
      else raiseFault(`internal error during ${stepTitle()}: ${errorMessage(f.error)}; nothing after it ran`, false);
    };
    supervisor.endNow = (how) => endNow(how);
  }

  const firstOpen = procedure.steps.find((s) => !completed.has(s.id))?.id;
  if (journal) {
    const base = { time: now(), runId, who: whoAmI(), host: os.hostname(), pid: process.pid };
    if (opts.resume) record({ rec: 'resume', ...base, fromStep: firstOpen });
    else record({ rec: 'run-start', ...base, procedure: procedure.id, params: maskedParams, context: opts.context ? masker.deep(opts.context) : undefined });
  }

  emit({
    type: 'run-start',
    time: now(),
    runId,
    procedure: procedure.id,
    title: procedure.title,
    params: maskedParams,
    steps: procedure.steps.map((s) => ({ id: s.id, title: s.title, kind: s.kind, destructive: Boolean(s.destructive) })),
    journalPath: journal ? journalPath : undefined,
    resumedAt: opts.resume ? firstOpen : undefined,
    dryRun,
  });

  // Declared before finish() can run: a failure's own exit code (75 a held lock, 3 corruption).
  let runExitCode: number | undefined;
  if (journalOpenError !== undefined) {
    return finish('failed', `cannot write the journal ${journalPath}: ${journalOpenError}; nothing was run`, 'check that the state directory exists and is writable (PGRUNBOOK_STATE_DIR or --state-dir)');
  }

  let runStatus: RunStatus = dryRun ? 'planned' : 'ok';
  let runError: string | undefined;
  let runHint: string | undefined;
  let verificationFailed = false;
  let lastRefusalReason: string | undefined;

  try {
    for (let index = 0; index < procedure.steps.length; index++) {
      const step = procedure.steps[index];
      const summary = stepSummaries[index];

      if (completed.has(step.id)) {
        summary.status = 'skipped';
        summary.durationMs = 0;
        emit({ type: 'step-end', time: now(), runId, stepId: step.id, status: 'skipped', durationMs: 0, reason: `done in an earlier attempt of ${runId}` });
        continue;
      }
      if (controller.signal.aborted) {
        runStatus = 'interrupted';
        break;
      }
      // After a failed verification, further checks still run (a full checklist helps),
      // but nothing that changes the system does.
      if (verificationFailed && step.kind === 'action') break;

      const started = Date.now();
      const stepChecks: CheckResult[] = [];
      current = { step, index, started };
      let outcome: StepOutcome;
      try {
        const ctx = makeContext(step, stepChecks);
        const skipReason = step.skipIf?.(ctx);
        emit({ type: 'step-start', time: now(), runId, stepId: step.id, title: step.title, index, kind: step.kind, about: safeDescribe(step, ctx) });
        record({ rec: 'step-start', time: now(), stepId: step.id });
        if (skipReason) outcome = { status: 'skipped', reason: skipReason };
        else if (dryRun) outcome = await planStep(step, ctx);
        else outcome = await executeStep(step, ctx);
      } catch (err) {
        // The step's own failures are caught in executeStep; this is the runner or a step hook (skipIf, destructive texts).
        outcome = { status: 'failed', error: `internal error: ${errorMessage(err)}` };
      }
      if (ended) return ended;
      if (fault) outcome = { status: 'failed', error: fault };
      if (outcome.status === 'ok' && stepChecks.some((c) => !c.ok)) {
        outcome = { status: 'failed', reason: 'verification failed', error: failedChecksText(stepChecks) };
        verificationFailed = true;
      }

      const durationMs = Date.now() - started;
      summary.status = outcome.status;
      summary.durationMs = durationMs;
      summary.error = outcome.error;
      checks.push(...stepChecks);
      record({
        rec: 'step-end',
        time: now(),
        stepId: step.id,
        status: outcome.status,
        durationMs,
        error: outcome.error === undefined ? undefined : masker.text(outcome.error),
        state: masker.deep(state),
      });
      current = undefined;
      emit({ type: 'step-end', time: now(), runId, stepId: step.id, status: outcome.status, durationMs, error: outcome.error, reason: outcome.reason });

      if (fault) break;
      if (outcome.status === 'failed' && !verificationFailed) {
        runStatus = 'failed';
        runError = `step "${step.title}" failed: ${outcome.error}`;
        runHint = outcome.hint;
        runExitCode = outcome.exitCode;
        break;
      }
      if (outcome.status === 'refused') {
        runStatus = 'refused';
        runError = outcome.error;
        runHint = outcome.hint;
        break;
      }
      if (outcome.status === 'interrupted') {
        runStatus = 'interrupted';
        break;
      }
    }
  } catch (err) {
    if (ended) return ended;
    runStatus = 'failed';
    runError = `internal error: ${errorMessage(err)}`;
  }
  if (ended) return ended;

  if (runStatus === 'ok' && verificationFailed) {
    runStatus = 'verification-failed';
    runError = failedChecksText(checks);
  }
  if (fault) {
    runStatus = 'failed';
    runError = fault;
    runHint = undefined;
  }
  return finish(runStatus, runError, runHint);

  /** Writes run-end and emits it, once, whatever path ends the run. */
  function finish(status: RunStatus, error: string | undefined, hint: string | undefined): RunSummary {
    if (ended) return ended;
    if (status === 'interrupted') {
      error ??= 'interrupted';
      if (journal) hint ??= `continue with: pgrunbook --resume ${runId}`;
    } else if (fault && journal) {
      hint ??= `this is a bug in pgrunbook or in the procedure, not a verdict on your data; read the journal, then continue with: pgrunbook --resume ${runId}`;
    } else if ((status === 'failed' || status === 'refused') && journal) {
      hint ??= `fix the cause, then continue with: pgrunbook --resume ${runId}`;
    }
    const summary: RunSummary = {
      runId,
      procedure: procedure.id,
      status,
      exitCode: status === 'failed' && runExitCode !== undefined ? runExitCode : exitCodeFor(status),
      durationMs: Date.now() - runStarted,
      steps: stepSummaries,
      checks,
      facts,
      journalPath: journal ? journalPath : undefined,
      error: error === undefined ? undefined : masker.text(error),
      hint: hint === undefined ? undefined : masker.text(hint),
    };
    const masked = masker.deep(summary);
    ended = masked;
    if (supervisor) {
      supervisor.fault = undefined;
      supervisor.endNow = undefined;
    }
    if (journal) {
      try {
        journal.append({ rec: 'run-end', time: now(), summary: masked });
      } catch {
        // Nothing more can be recorded; the summary still reaches the operator.
      }
      journal.close();
    }
    opts.signal?.removeEventListener('abort', onOuterAbort);
    emit({ type: 'run-end', time: now(), runId, summary: masked });
    return masked;
  }

  /** The process is ending now (a second Ctrl-C, an exit during a step): record it synchronously. */
  function endNow(how: { kind: 'signal'; signal: string } | { kind: 'exit'; code: number }): RunSummary | undefined {
    if (ended) return undefined;
    const what = stepTitle();
    const status: RunStatus = how.kind === 'signal' ? 'interrupted' : 'failed';
    const error =
      how.kind === 'signal'
        ? `interrupted by a second ${how.signal}: ${what} was stopped at once and may have been cut off part way`
        : `${what} ended without finishing (internal error: the process was exiting with code ${how.code}); nothing after it ran`;
    if (current) {
      const s = stepSummaries[current.index];
      s.status = status === 'interrupted' ? 'interrupted' : 'failed';
      s.durationMs = Date.now() - current.started;
      s.error = error;
      record({ rec: 'step-end', time: now(), stepId: current.step.id, status: s.status, durationMs: s.durationMs, error: masker.text(error), state: masker.deep(state) });
      emit({ type: 'step-end', time: now(), runId, stepId: current.step.id, status: s.status, durationMs: s.durationMs, error });
      current = undefined;
    }
    if (supervisor) supervisor.leftRunning = true;
    if (how.kind === 'exit') fault ??= error;
    return finish(status, error, undefined);
  }

  function makeContext(step: Step, stepChecks: CheckResult[]): StepContext {
    let lastProgressAt = 0;
    let firstProgress: { at: number; done: number } | undefined;
    return {
      runId,
      procedureId: procedure.id,
      stepId: step.id,
      params: opts.params,
      signal: controller.signal,
      dryRun,
      state,
      services: opts.services,
      log(message, level = 'info') {
        const text = masker.text(message);
        record({ rec: 'log', time: now(), stepId: step.id, level, message: text });
        emit({ type: 'log', time: now(), runId, stepId: step.id, level, message: text });
      },
      progress({ done, total, unit }) {
        const t = Date.now();
        if (!firstProgress) firstProgress = { at: t, done };
        const finished = total !== undefined && done >= total;
        if (!finished && t - lastProgressAt < progressInterval) return;
        lastProgressAt = t;
        const elapsed = (t - firstProgress.at) / 1000;
        const ratePerSec = elapsed > 0.2 ? (done - firstProgress.done) / elapsed : undefined;
        const etaSec = ratePerSec && total !== undefined && ratePerSec > 0 ? Math.max(0, (total - done) / ratePerSec) : undefined;
        emit({ type: 'progress', time: now(), runId, stepId: step.id, done, total, unit, ratePerSec, etaSec });
      },
      async confirm(options: ConfirmOptions) {
        return askConfirmation(step, options);
      },
      check(name, ok, detail) {
        const result: CheckResult = { stepId: step.id, name: masker.text(name), ok, detail: detail === undefined ? undefined : masker.text(detail) };
        stepChecks.push(result);
        record({ rec: 'check', time: now(), ...result });
        emit({ type: 'check', time: now(), runId, ...result });
      },
      addSecret(value: string) {
        masker.add(value);
      },
      fact(label, value) {
        const fact = { label: masker.text(label), value: masker.text(value) };
        const existing = facts.findIndex((f) => f.label === fact.label);
        if (existing >= 0) facts[existing] = fact;
        else facts.push(fact);
        record({ rec: 'log', time: now(), stepId: step.id, level: 'info', message: `${fact.label}: ${fact.value}` });
        emit({ type: 'fact', time: now(), runId, stepId: step.id, ...fact });
      },
    };
  }

  async function askConfirmation(step: Step, options: ConfirmOptions): Promise<boolean> {
    emit({ type: 'confirm-request', time: now(), runId, stepId: step.id, message: options.message, destructive: options.destructive });
    let allowed = false;
    let reason: string | undefined;
    try {
      // An abort (Ctrl-C) while a question is open answers it "no": no answerer can hold up the stop.
      let onAbort: (() => void) | undefined;
      const aborted = new Promise<{ allowed: boolean; reason?: string }>((resolve) => {
        onAbort = () => resolve({ allowed: false, reason: 'interrupted' });
        if (controller.signal.aborted) onAbort();
        else controller.signal.addEventListener('abort', onAbort, { once: true });
      });
      const answer = await Promise.race([opts.answer({ stepId: step.id, message: options.message, destructive: options.destructive }), aborted]).finally(() =>
        controller.signal.removeEventListener('abort', onAbort!),
      );
      allowed = answer.allowed;
      reason = answer.reason;
    } catch (err) {
      reason = errorMessage(err);
    }
    record({
      rec: 'confirm',
      time: now(),
      stepId: step.id,
      message: masker.text(options.message),
      expected: options.destructive?.expected,
      allowed,
      reason,
    });
    emit({ type: 'confirm-answer', time: now(), runId, stepId: step.id, allowed, reason });
    lastRefusalReason = reason;
    return allowed;
  }

  async function planStep(step: Step, ctx: StepContext): Promise<StepOutcome> {
    try {
      const planned = Promise.resolve().then(() => step.plan?.(ctx));
      const lines = (await Promise.race([planned, abandonable()]).finally(() => (abandonCurrent = undefined))) ?? [];
      if (lines === 'abandoned') return { status: 'failed', error: fault ?? 'the plan did not finish' };
      for (const line of lines) ctx.log(`would: ${line}`);
      if (step.destructive) {
        ctx.log(`would ask to confirm: ${step.destructive.what(ctx)} (type "${step.destructive.confirmText(ctx)}" or pass --confirm ${shellQuote(step.destructive.confirmText(ctx))})`, 'warn');
      }
      return { status: 'planned' };
    } catch (err) {
      return { status: 'failed', error: errorMessage(err) };
    }
  }

  async function executeStep(step: Step, ctx: StepContext): Promise<StepOutcome> {
    if (step.destructive) {
      const what = step.destructive.what(ctx);
      const expected = step.destructive.confirmText(ctx);
      const allowed = await askConfirmation(step, {
        message: `${step.title}: this will ${what}. Type "${expected}" to continue.`,
        destructive: { what, expected },
      });
      if (!allowed) {
        if (controller.signal.aborted) return { status: 'interrupted', error: 'interrupted' };
        const message = lastRefusalReason ?? `not confirmed: ${what}`;
        return { status: 'refused', error: message, hint: `to allow it headless, pass --confirm ${shellQuote(expected)}` };
      }
    }
    let settled = false;
    const work = Promise.resolve()
      .then(() => step.run(ctx))
      .then(
        () => ({ ok: true as const }),
        (err: unknown) => ({ ok: false as const, err }),
      )
      .finally(() => {
        settled = true;
      });
    const watch = abortedThenGrace(controller.signal, abortGraceMs, () => settled);
    const result = await Promise.race([work, watch.promise, abandonable()]).finally(() => {
      watch.stop();
      abandonCurrent = undefined;
    });
    if (result === 'abandoned') {
      if (supervisor) supervisor.leftRunning = true;
      if (fault) return { status: 'failed', error: fault };
      return { status: 'interrupted', error: `interrupted; the step did not stop within ${abortGraceMs} ms` };
    }
    if (result.ok) {
      if (controller.signal.aborted) return { status: 'interrupted', error: 'interrupted' };
      return { status: 'ok' };
    }
    if (controller.signal.aborted) return { status: 'interrupted', error: 'interrupted' };
    const err = result.err;
    if (err instanceof ConfirmationRefusedError) {
      return { status: 'refused', error: err.message, hint: hintOf(err) };
    }
    return { status: 'failed', error: errorMessage(err), hint: hintOf(err), exitCode: ownExitCode(err) };
  }

  /** Resolves 'abandoned' when the supervisor says the current step can never settle. */
  function abandonable(): Promise<'abandoned'> {
    return new Promise((resolve) => {
      abandonCurrent = () => resolve('abandoned');
    });
  }
}

function hintOf(err: unknown): string | undefined {
  try {
    const hint = (err as { hint?: unknown } | null | undefined)?.hint;
    return typeof hint === 'string' ? hint : undefined;
  } catch {
    return undefined;
  }
}

/** Resolves 'abandoned' when an abort is not honoured within the grace period; stop() detaches it. */
function abortedThenGrace(signal: AbortSignal, graceMs: number, isSettled: () => boolean): { promise: Promise<'abandoned'>; stop: () => void } {
  let onAbort = () => {};
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<'abandoned'>((resolve) => {
    onAbort = () => {
      // Give the step time to stop and clean up; only then stop waiting for it.
      timer = setTimeout(() => {
        if (!isSettled()) resolve('abandoned');
      }, graceMs);
      timer.unref();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  return {
    promise,
    stop: () => {
      signal.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
    },
  };
}

function safeDescribe(step: Step, ctx: StepContext): string | undefined {
  try {
    return step.describe?.(ctx);
  } catch {
    return undefined;
  }
}

function failedChecksText(checks: CheckResult[]): string {
  const failed = checks.filter((c) => !c.ok);
  return failed.map((c) => (c.detail ? `${c.name}: ${c.detail}` : c.name)).join('; ');
}

/**
 * Opt-in only (execa's errors carry an unrelated exitCode): an error may name its exit code
 * (`procedureExitCode`, e.g. LockHeldError's 75), and one that reports damaged data
 * (`corrupt: true`, e.g. a checksum mismatch) is a failed verification, exit 3.
 */
function ownExitCode(err: unknown): number | undefined {
  const own = (err as { procedureExitCode?: unknown } | undefined)?.procedureExitCode;
  if (typeof own === 'number' && Number.isInteger(own) && own > 0) return own;
  if ((err as { corrupt?: unknown } | undefined)?.corrupt === true) return EXIT.verification;
  return undefined;
}

export function exitCodeFor(status: RunStatus): number {
  switch (status) {
    case 'ok':
    case 'planned':
      return EXIT.ok;
    case 'failed':
      return EXIT.failed;
    case 'verification-failed':
      return EXIT.verification;
    case 'refused':
      return EXIT.refused;
    case 'interrupted':
      return EXIT.interrupted;
  }
}

export function maskParams(procedure: Procedure, params: Params, masker: Masker): Params {
  const out: Params = {};
  for (const [key, value] of Object.entries(params)) {
    const spec = procedure.params.find((p) => p.name === key);
    if (spec?.secret && value !== undefined && value !== '') out[key] = '***';
    else out[key] = masker.deep(value);
  }
  return out;
}

/** A message for anything a step may throw: an Error, a string, undefined, an object without a useful toString. */
export function errorMessage(err: unknown): string {
  try {
    if (err instanceof Error) return err.message || err.name || 'an error without a message';
    if (typeof err === 'string') return err || 'an empty string was thrown';
    if (err === undefined || err === null) return `failed without saying why (${String(err)} was thrown)`;
    const message = (err as { message?: unknown }).message;
    if (typeof message === 'string' && message) return message;
    const text = String(err);
    if (text && text !== '[object Object]') return text;
    return `a non-error value was thrown: ${JSON.stringify(err)?.slice(0, 200) ?? typeof err}`;
  } catch {
    return `a thrown ${typeof err} that cannot be shown`;
  }
}

export function shellQuote(value: string): string {
  return /^[A-Za-z0-9@%_+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}
