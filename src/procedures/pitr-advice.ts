// What to do after a point-in-time recovery that did not finish, from typed facts only: the
// step it failed at, the error's class and hint, the failed checks, and the run's state (where
// the original data directory went, whether replay stalled). Never from the error's text.
import path from 'node:path';
import type { Advice, RunFailure } from '../engine/types.js';
import { shellQuote } from '../engine/errors.js';
import type { RecoveryPlan } from '../restore/plan.js';

/** The parts of pitr's params and state the advice reads (declared here: pitr.ts imports this module). */
type PitrParams = { target: string; timeline?: number };
type PitrState = { staged?: string; movedAside?: string; stallPaused?: boolean; reached?: { lsn?: string }; plan?: Pick<RecoveryPlan, 'targetDetail' | 'timeline' | 'timelineSetting'>; serverLog?: string };

/** Errors that mean "this target cannot be reached from what the repository holds". */
const TARGET_ERRORS = new Set(['TargetOutsideWindowError', 'UnreachableTargetError']);
/** Errors that a retry can get past once their cause is fixed (a connection, the store). */
const TRANSIENT_ERRORS = new Set(['StorageError', 'ObjectNotFoundError', 'PgConnectionError', 'ServerControlError', 'PgCtlError', 'LockHeldError']);

export function pitrAdvice(failure: RunFailure, run: { runId: string; params: PitrParams; state: PitrState; services: { pgdata?: string } }): Advice[] {
  const { state, params, runId } = run;
  const out: Advice[] = [];
  const pgdata = run.services.pgdata ? path.resolve(run.services.pgdata) : undefined;
  const reachedShort = failure.failedChecks.includes('recovery stopped where planned');
  const targetProblem = (failure.errorName !== undefined && TARGET_ERRORS.has(failure.errorName)) || failure.failedChecks.includes('target inside a recovery window');

  if (!state.movedAside && (failure.stepId === 'preflight' || failure.stepId === 'stop')) {
    out.push({ kind: 'inspect', text: `Nothing was touched: the server and ${pgdata ?? 'its data directory'} are as they were.` });
  }
  if (targetProblem) {
    out.push({ kind: 'other-target', text: `Choose another target inside a recovery window (the picker, or pgrunbook catalog, shows them)${failure.hint ? `: ${failure.hint}` : '.'}` });
  }
  if (state.stallPaused) {
    out.push({ kind: 'resume', text: `Replay stalled short of the target and is paused there. If a WAL segment was missing, put it back in the repository, then resume: replay goes on from where it stopped.`, command: `pgrunbook --resume ${runId}` });
    out.push({ kind: 'other-target', text: `Or recover to a target before ${state.reached?.lsn ?? 'where replay stopped'} (a new run).` });
  } else if (reachedShort) {
    out.push({ kind: 'other-target', text: `Replay did not stop where the plan said (${state.plan?.targetDetail ?? params.target}): run pitr again with another target, or with exclusive set to stop just before it.` });
  }
  if ((reachedShort || targetProblem) && state.plan) {
    const tl = params.timeline ?? state.plan.timeline;
    out.push({
      kind: 'other-timeline',
      text: `This run followed timeline ${tl} (${state.plan.timelineSetting}). A target that lies on another branch needs that timeline: set timeline to it in a new run.`,
    });
  }
  if (state.movedAside && pgdata) {
    const failedCopy = `${pgdata}.failed-${runId}`;
    out.push({
      kind: 'move-back',
      text: `The original data directory is safe at ${state.movedAside}. To go back to it: stop the server, move the restored one aside, move the original back, start the server.`,
      command: `mv ${shellQuote(pgdata)} ${shellQuote(failedCopy)} && mv ${shellQuote(state.movedAside)} ${shellQuote(pgdata)}`,
    });
  }
  if (!out.some((a) => a.kind === 'resume') && failure.errorName !== undefined && TRANSIENT_ERRORS.has(failure.errorName)) {
    out.push({ kind: 'resume', text: `Fix the cause above (${failure.hint ?? 'the connection or the repository'}), then resume from "${failure.stepTitle}".`, command: `pgrunbook --resume ${runId}` });
  }
  if (failure.status === 'refused' && state.staged && !state.movedAside) {
    // A new run would unpack the backup again beside this copy: two copies where one had to fit.
    out.push({
      kind: 'resume',
      text: `The backup is unpacked and checked in ${state.staged}, kept for this run: resume it to go on from the confirmation without reading the backup again (headless: add the --confirm shown above). If you will not recover now, remove it: it holds a whole data directory.`,
      command: `pgrunbook --resume ${runId}`,
    });
    if (pgdata) out.push({ kind: 'fix', text: 'To remove the unpacked copy instead (it asks for its name):', command: `pgrunbook --procedure retention --data-dirs --pgdata ${shellQuote(pgdata)} --keep-data-dir-days 0` });
  }
  if (state.serverLog && failure.stepId === 'replay') out.push({ kind: 'inspect', text: `The server's log: ${state.serverLog}` });
  return out;
}
