// One useInput for the whole app, owned by the root and gated on raw-mode support (Ink
// throws on a stdin that is not a TTY). Screens register their handler with useKeys; it is
// swapped in a layout effect, so the handler of a screen is live by the time its first
// frame is on the terminal and no key typed right after a screen change is lost.
import { createContext, useCallback, useContext, useLayoutEffect, useRef, type ReactNode } from 'react';
import { useInput, useStdin, type Key } from 'ink';

export type { Key };
export type KeyHandler = (input: string, key: Key) => void;

interface Registry {
  register(handler: KeyHandler): () => void;
}

const KeysContext = createContext<Registry | undefined>(undefined);

/**
 * Routes keys: `onKey` (the root's, e.g. Ctrl-C) sees every key first and returns true when it
 * consumed it; otherwise the most recently registered screen handler gets it.
 */
export function KeysProvider({ onKey, children }: { onKey?: (input: string, key: Key) => boolean; children: ReactNode }) {
  const { isRawModeSupported } = useStdin();
  const stack = useRef<KeyHandler[]>([]);
  const onKeyRef = useRef(onKey);
  onKeyRef.current = onKey;
  const registry = useRef<Registry>({
    register(handler) {
      stack.current.push(handler);
      return () => {
        const i = stack.current.lastIndexOf(handler);
        if (i >= 0) stack.current.splice(i, 1);
      };
    },
  });
  const route = useCallback((input: string, key: Key) => {
    if (onKeyRef.current?.(input, key)) return;
    stack.current.at(-1)?.(input, key);
  }, []);
  useInput(route, { isActive: Boolean(isRawModeSupported) });
  return <KeysContext.Provider value={registry.current}>{children}</KeysContext.Provider>;
}

/**
 * Receive keys while mounted (and while `active`). Keep what the keys change in a reducer:
 * keys that arrive within a few milliseconds see stale useState values (pitfall 5).
 * Mount one handler per screen; when several are mounted, the last registered gets the keys.
 */
export function useKeys(handler: KeyHandler, active = true): void {
  const registry = useContext(KeysContext);
  const latest = useRef(handler);
  useLayoutEffect(() => {
    latest.current = handler;
  });
  useLayoutEffect(() => {
    if (!registry || !active) return;
    return registry.register((input, key) => latest.current(input, key));
  }, [registry, active]);
}

/** Ctrl-C, however the terminal reports it. */
export function isCtrlC(input: string, key: Key): boolean {
  return (key.ctrl && input === 'c') || input === '\x03';
}

/**
 * Apply a key or a chunk of typed/pasted input to a text value. A chunk can carry editing
 * control characters (a fast Ctrl-U then text arrives as one chunk): Ctrl-U clears, Ctrl-W
 * deletes a word, Backspace/DEL deletes a character; other control characters are dropped.
 */
export function editText(text: string, input: string, key: Key): string {
  if (key.backspace || key.delete) return text.slice(0, -1);
  if (key.ctrl && input === 'u') return '';
  if (key.ctrl && input === 'w') return text.replace(/\S*\s*$/, '');
  if (key.ctrl || key.meta || key.escape || key.return || key.tab) return text;
  if (key.upArrow || key.downArrow || key.leftArrow || key.rightArrow || key.pageUp || key.pageDown || key.home || key.end) return text;
  let out = text;
  for (const ch of input) {
    if (ch === '\x15') out = '';
    else if (ch === '\x17') out = out.replace(/\S*\s*$/, '');
    else if (ch === '\x7f' || ch === '\b') out = out.slice(0, -1);
    // eslint-disable-next-line no-control-regex
    else if (!/[\x00-\x1f]/.test(ch)) out += ch;
  }
  return out;
}

/**
 * Typing into a field whose value may be selected (as a dialog box selects a field it focuses):
 * when selected, the first character typed replaces the value and Backspace clears it; else the
 * key edits the value (editText). Returns the value and whether it is still selected.
 */
export function typeOver(value: string, selected: boolean, input: string, key: Key): { value: string; selected: boolean } {
  if (!selected) return { value: editText(value, input, key), selected: false };
  if (key.backspace || key.delete) return { value: '', selected: false };
  const typed = input !== '' && !key.ctrl && !key.meta && !key.escape && !key.return && !key.tab;
  const text = editText(typed ? '' : value, input, key);
  if (!typed && text === value) return { value, selected: true };
  return { value: text, selected: false };
}
