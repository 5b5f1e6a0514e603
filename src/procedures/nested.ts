// Running a real procedure as one step of another (the drill runs the same backup and
// restore procedures an operator would). The inner run's logs and progress show up in the
// outer step; its confirmations are answered by the outer procedure, which asked the
// operator for the whole story up front.
import { runProcedure } from '../engine/runner.js';
import type { Params, Procedure, RunStatus, RunSummary, StepContext, StepStatus } from '../engine/types.js';
import type { ProcedureServices } from './services.js';

export interface NestedOptions {
  /** The text a destructive inner step needs; the outer procedure owns the decision. */
  confirm?: string[];
  /** Prefix for the inner run's log lines. */
  label?: string;
}

/** What the outer run journals of an inner one, under `<label>Summary`. */
export type NestedRunSummary = { status: RunStatus; durationMs: number; steps: { id: string; status: StepStatus | 'pending'; durationMs?: number }[] };

/** The part of an outer procedure's State that nested runs write. */
export type NestedSummaries = { [key: `${string}Summary`]: NestedRunSummary | undefined };

/** What runNested needs of the outer step. */
export type NestedParent = Pick<StepContext, 'signal' | 'log' | 'progress'> & { readonly state: NestedSummaries };

export async function runNested(ctx: NestedParent, procedure: Procedure, params: Params, services: ProcedureServices, opts: NestedOptions = {}): Promise<RunSummary> {
  const label = opts.label ?? procedure.id;
  const summary = await runProcedure({
    procedure,
    params,
    services,
    signal: ctx.signal,
    journalPath: false,
    answer: async (request) => {
      if (!request.destructive) return { allowed: true };
      if (opts.confirm?.includes(request.destructive.expected)) return { allowed: true };
      return { allowed: false, reason: `${label}: unexpected destructive step "${request.destructive.what}"` };
    },
    onEvent: (e) => {
      if (e.type === 'step-start') ctx.log(`${label}: ${e.title}`);
      else if (e.type === 'log') ctx.log(`${label}: ${e.message}`, e.level);
      else if (e.type === 'progress') ctx.progress({ done: e.done, total: e.total, unit: e.unit, replay: e.replay });
      else if (e.type === 'fact') ctx.log(`${label}: ${e.label}: ${e.value}`);
      else if (e.type === 'check' && !e.ok) ctx.log(`${label}: ✗ ${e.name}${e.detail ? `: ${e.detail}` : ''}`, 'error');
    },
  });
  ctx.state[`${label}Summary`] = { status: summary.status, durationMs: summary.durationMs, steps: summary.steps.map((s) => ({ id: s.id, status: s.status, durationMs: s.durationMs })) };
  if (summary.exitCode !== 0) throw new Error(`${label} ${summary.status}: ${summary.error ?? 'see the log above'}`);
  return summary;
}
