// Runs a procedure's steps in order and emits typed events. UIs subscribe to events and
// answer confirm-requests; the runner owns the journal, masking, progress throttling and
// the mapping from outcomes to exit codes. A step's context is step-context.ts, running one
// step is step-executor.ts, what ends a run from outside is supervision.ts, and the summary's
// wording is summary.ts.
import os from 'node:os';
import type {
  Advice,
  RunFailure,
  CheckResult,
  ConfirmAnswerer,
  Params,
  Procedure,
  RunContext,
  RunEvent,
  RunStatus,
  RunSummary,
  Step,
  StepSummary,
} from './types.js';
import { Masker } from './mask.js';
import { Journal, newRunId, whoAmI, type JournalRecord } from './journal.js';
import { errorMessage } from './errors.js';
import { Abandoner, type EndNow, type RunSupervisor } from './supervision.js';
import { askConfirmation, makeContext, type RunScope } from './step-context.js';
import { executeStep, planStep, safeDescribe, type StepExecution, type StepOutcome } from './step-executor.js';
import { closingHint, exitCodeFor, failedChecksText, maskParams } from './summary.js';

// Other modules import these from the runner.
export { errorMessage, shellQuote } from './errors.js';
export { exitCodeFor, maskParams } from './summary.js';
export type { RunFault, RunSupervisor } from './supervision.js';

export interface ResumeFrom {
  runId: string;
  journalPath: string;
  state: Record<string, unknown>;
  completedSteps: string[];
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
  const abandoner = new Abandoner();
  const raiseFault = (message: string, abandon: boolean) => {
    if (ended) return;
    // A stubborn step after Ctrl-C that can never settle: stop waiting, it stays an interruption.
    if (!(abandon && controller.signal.aborted && !fault)) fault ??= message;
    if (!controller.signal.aborted) controller.abort(new Error(message));
    if (abandon) abandoner.abandon();
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
  // The step the run failed at, as data for the report and the procedure's advise() (declared
  // before finish() can run, like runExitCode).
  let failedAt: Omit<RunFailure, 'status'> | undefined;
  if (journalOpenError !== undefined) {
    return finish('failed', `cannot write the journal ${journalPath}: ${journalOpenError}; nothing was run`, 'check that the state directory exists and is writable (PGRUNBOOK_STATE_DIR or --state-dir)');
  }

  let runStatus: RunStatus = dryRun ? 'planned' : 'ok';
  let runError: string | undefined;
  let runHint: string | undefined;
  let verificationFailed = false;

  const scope: RunScope = {
    runId,
    procedureId: procedure.id,
    params: opts.params,
    services: opts.services,
    state,
    dryRun,
    signal: controller.signal,
    masker,
    progressIntervalMs: progressInterval,
    answer: opts.answer,
    record,
    emit,
    facts,
  };
  const execution: StepExecution = {
    signal: controller.signal,
    abortGraceMs,
    abandoner,
    fault: () => fault,
    leftRunning: () => {
      if (supervisor) supervisor.leftRunning = true;
    },
    ask: (step, options) => askConfirmation(scope, step, options),
  };

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
        const ctx = makeContext(scope, step, stepChecks);
        const skipReason = step.skipIf?.(ctx);
        emit({ type: 'step-start', time: now(), runId, stepId: step.id, title: step.title, index, kind: step.kind, about: safeDescribe(step, ctx) });
        record({ rec: 'step-start', time: now(), stepId: step.id });
        if (skipReason) outcome = { status: 'skipped', reason: skipReason };
        else if (dryRun) outcome = await planStep(step, ctx, execution);
        else outcome = await executeStep(step, ctx, execution);
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
      if (!failedAt && (outcome.status === 'failed' || outcome.status === 'refused')) {
        failedAt = { stepId: step.id, stepTitle: step.title, errorName: outcome.errorName, hint: outcome.hint, failedChecks: stepChecks.filter((c) => !c.ok).map((c) => c.name) };
      }
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

  /** The failure as data and the procedure's advice for it (a bug in advise() costs only the advice). */
  function failureOf(status: RunStatus): Pick<RunSummary, 'failure' | 'advice'> {
    if (fault || !failedAt || (status !== 'failed' && status !== 'verification-failed' && status !== 'refused')) return {};
    const failure: RunFailure = { status, ...failedAt };
    let advice: Advice[] | undefined;
    try {
      advice = procedure.advise?.(failure, { runId, params: opts.params, state, services: opts.services });
    } catch {
      advice = undefined;
    }
    return { failure, advice: advice?.length ? advice : undefined };
  }

  /** Writes run-end and emits it, once, whatever path ends the run. */
  function finish(status: RunStatus, error: string | undefined, hint: string | undefined): RunSummary {
    if (ended) return ended;
    if (status === 'interrupted') error ??= 'interrupted';
    hint ??= closingHint(status, runId, journal !== undefined, fault !== undefined, runExitCode);
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
      ...failureOf(status),
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
  function endNow(how: EndNow): RunSummary | undefined {
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
}
