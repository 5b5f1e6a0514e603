// What ends a step from outside its own promise: an abort it does not honour in time, a fault
// the CLI sees at the process level (an uncaught exception, an event loop that drained with
// the step still pending), or the process ending now.
import type { RunSummary } from './types.js';

/** Something went wrong outside the step's own promise. */
export type RunFault =
  /** An uncaught exception or unhandled rejection while the run was active. */
  | { kind: 'uncaught'; error: unknown }
  /** The event loop drained with a step's promise still pending: it can never settle. */
  | { kind: 'drained' };

export type EndNow = { kind: 'signal'; signal: string } | { kind: 'exit'; code: number };

/**
 * The CLI's line into a running run, for process-level events the runner cannot see itself.
 * The runner fills in `fault` and `endNow` while the run is active and clears them when it ends.
 */
export interface RunSupervisor {
  /** Stop the current step and end the run as failed (asynchronously, through the normal ending). */
  fault?: (fault: RunFault) => void;
  /** The process is ending now: record where the run stopped and write run-end synchronously. */
  endNow?: (how: EndNow) => RunSummary | undefined;
  /** Set when a step was left running (it ignored an abort or can never settle): exit promptly after the run. */
  leftRunning?: boolean;
}

/** Lets the runner stop waiting for the current step's promise: the supervisor says it can never settle. */
export class Abandoner {
  private resolve: (() => void) | undefined;

  /** Resolves 'abandoned' when abandon() is called before clear(). */
  wait(): Promise<'abandoned'> {
    return new Promise((resolve) => {
      this.resolve = () => resolve('abandoned');
    });
  }

  clear(): void {
    this.resolve = undefined;
  }

  abandon(): void {
    this.resolve?.();
  }
}

/** Resolves 'abandoned' when an abort is not honoured within the grace period; stop() detaches it. */
export function abortedThenGrace(signal: AbortSignal, graceMs: number, isSettled: () => boolean): { promise: Promise<'abandoned'>; stop: () => void } {
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
