// One step, run or planned: the destructive confirmation first, then the step's own promise,
// raced against an abort it does not honour in time and against the supervisor giving up on
// it. The outcome is data; the runner turns it into events, the journal and the exit code.
import { ConfirmationRefusedError, type ConfirmOptions, type Step, type StepContext, type StepStatus } from './types.js';
import { errorMessage, hintOf, ownExitCode, shellQuote } from './errors.js';
import { abortedThenGrace, type Abandoner } from './supervision.js';

export interface StepOutcome {
  status: StepStatus;
  error?: string;
  reason?: string;
  hint?: string;
  /** The thrown error's class name, for typed advice (RunFailure.errorName). */
  errorName?: string;
  /** A failure that carries its own exit code (e.g. 75, a lock held by another run; 3, corruption). */
  exitCode?: number;
}

/** What running a step needs from its run. */
export interface StepExecution {
  signal: AbortSignal;
  /** How long to wait for a step to honour an abort before recording it as interrupted. */
  abortGraceMs: number;
  abandoner: Abandoner;
  /** The fault that is ending the run, if one is. */
  fault(): string | undefined;
  /** A step was left running (it ignored an abort or can never settle). */
  leftRunning(): void;
  ask(step: Step, options: ConfirmOptions): Promise<{ allowed: boolean; reason?: string }>;
}

/** --dry-run: the step's plan lines as logs, and the confirmation it would ask for. No side effects. */
export async function planStep(step: Step, ctx: StepContext, exec: StepExecution): Promise<StepOutcome> {
  try {
    const planned = Promise.resolve().then(() => step.plan?.(ctx));
    const lines = (await Promise.race([planned, exec.abandoner.wait()]).finally(() => exec.abandoner.clear())) ?? [];
    if (lines === 'abandoned') return { status: 'failed', error: exec.fault() ?? 'the plan did not finish' };
    for (const line of lines) ctx.log(`would: ${line}`);
    if (step.destructive) {
      ctx.log(`would ask to confirm: ${step.destructive.what(ctx)} (type "${step.destructive.confirmText(ctx)}" or pass --confirm ${shellQuote(step.destructive.confirmText(ctx))})`, 'warn');
    }
    return { status: 'planned' };
  } catch (err) {
    return { status: 'failed', error: errorMessage(err) };
  }
}

export async function executeStep(step: Step, ctx: StepContext, exec: StepExecution): Promise<StepOutcome> {
  const { signal } = exec;
  if (step.destructive) {
    const what = step.destructive.what(ctx);
    const expected = step.destructive.confirmText(ctx);
    const answer = await exec.ask(step, {
      message: `${step.title}: this will ${what}. Type "${expected}" to continue.`,
      destructive: { what, expected, means: step.destructive.confirmMeaning?.(ctx) },
    });
    if (!answer.allowed) {
      if (signal.aborted) return { status: 'interrupted', error: 'interrupted' };
      return { status: 'refused', error: answer.reason ?? `not confirmed: ${what}`, hint: `to allow it headless, pass --confirm ${shellQuote(expected)}` };
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
  const watch = abortedThenGrace(signal, exec.abortGraceMs, () => settled);
  const result = await Promise.race([work, watch.promise, exec.abandoner.wait()]).finally(() => {
    watch.stop();
    exec.abandoner.clear();
  });
  if (result === 'abandoned') {
    exec.leftRunning();
    const fault = exec.fault();
    if (fault) return { status: 'failed', error: fault };
    return { status: 'interrupted', error: `interrupted; the step did not stop within ${exec.abortGraceMs} ms` };
  }
  if (signal.aborted) return { status: 'interrupted', error: 'interrupted' };
  if (result.ok) return { status: 'ok' };
  const err = result.err;
  if (err instanceof ConfirmationRefusedError) return { status: 'refused', error: err.message, hint: hintOf(err) };
  return { status: 'failed', error: errorMessage(err), hint: hintOf(err), exitCode: ownExitCode(err), errorName: err instanceof Error ? err.name : undefined };
}

/** The step's "about" text; a describe() that throws only loses the text. */
export function safeDescribe(step: Step, ctx: StepContext): string | undefined {
  try {
    return step.describe?.(ctx);
  } catch {
    return undefined;
  }
}
