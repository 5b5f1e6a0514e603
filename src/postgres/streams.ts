import type { Writable } from 'node:stream';

/** Resolves when a full writable can take more, or is gone: a child's stdin must not hold up a writer forever. */
export function drainedOrClosed(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      w.off('error', done);
      resolve();
    };
    w.once('drain', done);
    w.once('close', done);
    w.once('error', done);
  });
}
