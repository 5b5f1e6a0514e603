// Helpers for ink-testing-library tests: it renders every commit and has no waitUntilExit,
// so tests wait (with a deadline) for the frame they expect before typing the next key.
import type { Key } from 'ink';

// eslint-disable-next-line no-control-regex
export const stripAnsi = (s: string) => s.replace(/\x1B\[[0-9;?]*[A-Za-z]/g, '');

/** Poll `probe` until it returns a value, failing after `timeoutMs` with `describeFailure()`. */
export async function poll<T>(probe: () => T | undefined, describeFailure: () => string, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describeFailure()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Poll until the last frame satisfies `predicate` (a string: the frame contains it). */
export async function waitForFrame(lastFrame: () => string | undefined, predicate: string | RegExp | ((frame: string) => boolean), timeoutMs = 8000): Promise<string> {
  const test = typeof predicate === 'string' ? (f: string) => f.includes(predicate) : predicate instanceof RegExp ? (f: string) => predicate.test(f) : predicate;
  return poll(
    () => {
      const frame = stripAnsi(lastFrame() ?? '');
      return test(frame) ? frame : undefined;
    },
    () => `no frame matched ${typeof predicate === 'function' ? 'the predicate' : String(predicate)}; last frame:\n${stripAnsi(lastFrame() ?? '(none)')}`,
    timeoutMs,
  );
}

/** A promise the test releases when it chooses. */
export function gate() {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { promise, release };
}

/** An Ink Key with every flag off but the ones given. */
export function key(partial: Partial<Key> = {}): Key {
  return {
    upArrow: false,
    downArrow: false,
    leftArrow: false,
    rightArrow: false,
    pageDown: false,
    pageUp: false,
    home: false,
    end: false,
    return: false,
    escape: false,
    ctrl: false,
    shift: false,
    tab: false,
    backspace: false,
    delete: false,
    meta: false,
    super: false,
    hyper: false,
    capsLock: false,
    numLock: false,
    ...partial,
  } as Key;
}
