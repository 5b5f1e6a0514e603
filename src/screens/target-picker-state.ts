// The recovery-target picker's state as a pure reducer: the catalog arriving, the window ends
// refined from the WAL, and every key (cursor moves, `l` latest, `e` the editor, Enter, Esc).
// Pitfall 5: one reducer, so a fast sequence of keys never reads stale state.
import type { Catalog } from '../repo/catalog.js';
import { editText, type Key } from './keys.js';
import { buildTimelineModel, checkTarget, chooseForTime, initialCursor, isoTime, moveCursor, targetTime, type CursorMove, type TimelineModel } from './recovery-timeline.js';

export interface PickerState {
  phase: 'loading' | 'ready' | 'failed';
  catalog?: Catalog;
  model?: TimelineModel;
  error?: string;
  /** Reading the windows' last commits from the archived WAL. */
  commits: 'none' | 'reading' | 'done';
  commitsProblem?: string;
  /** The cursor's time, ms. */
  cursor: number;
  /** `l` was pressed: the target is "latest". */
  latest: boolean;
  /** The operator has placed the cursor (it then stays put when the window ends are refined). */
  moved: boolean;
  editing: boolean;
  text: string;
  /** What the form field held when the picker opened. */
  initial: string;
  /** Why the last Enter was refused. */
  message?: string;
  result?: string;
  cancelled?: boolean;
}

export type PickerAction =
  | { type: 'loaded'; catalog: Catalog; axisWidth: number }
  | { type: 'failed'; error: string }
  | { type: 'commits-reading' }
  | { type: 'commits'; times: Record<string, string>; problem?: string; axisWidth: number }
  | { type: 'key'; input: string; key: Key; axisWidth: number };

export function initialPickerState(initial = ''): PickerState {
  return { phase: 'loading', commits: 'none', cursor: 0, latest: false, moved: false, editing: false, text: initial.trim(), initial: initial.trim() };
}

/** The target the cursor mode would hand back, and whether it may. */
export function cursorSelection(state: PickerState): { target: string; ok: true; backupId?: string } | { target: string; ok: false; reason: string } {
  if (!state.model) return { target: '', ok: false, reason: 'the catalog is not loaded' };
  if (state.latest) {
    const c = checkTarget(state.model, 'latest');
    return c.ok ? { target: 'latest', ok: true, backupId: c.backupId } : { target: 'latest', ok: false, reason: c.error };
  }
  const target = isoTime(state.cursor);
  const c = chooseForTime(state.model, state.cursor);
  return c.ok ? { target, ok: true, backupId: c.window.backupId } : { target, ok: false, reason: `it is ${c.reason}` };
}

function moveFor(input: string, key: Key): CursorMove | undefined {
  if (key.home) return 'home';
  if (key.end) return 'end';
  if (key.pageUp || (key.leftArrow && key.shift)) return 'bigLeft';
  if (key.pageDown || (key.rightArrow && key.shift)) return 'bigRight';
  if (key.leftArrow || input === 'h') return 'left';
  if (key.rightArrow) return 'right';
  if (input === 'H') return 'bigLeft';
  if (input === 'L') return 'bigRight';
  return undefined;
}

export function pickerReducer(state: PickerState, action: PickerAction): PickerState {
  if (state.result !== undefined || state.cancelled) return state;
  switch (action.type) {
    case 'loaded': {
      const model = buildTimelineModel(action.catalog);
      const init = state.initial;
      const next: PickerState = { ...state, phase: 'ready', catalog: action.catalog, model, error: undefined, cursor: initialCursor(model, action.axisWidth, targetTime(init)) };
      if (init === 'latest') next.latest = true;
      // A target the axis cannot show (lsn:, xid:, name:) opens in the editor, as typed.
      else if (init && targetTime(init) === undefined && !state.editing) return { ...next, editing: true, text: init };
      return next;
    }
    case 'failed':
      return { ...state, phase: 'failed', error: action.error, editing: true, text: state.editing ? state.text : state.initial };
    case 'commits-reading':
      return { ...state, commits: 'reading' };
    case 'commits': {
      const model = state.catalog ? buildTimelineModel(state.catalog, action.times) : state.model;
      // A cursor still on its default (the latest recoverable time) follows the refined end.
      const follow = model && !state.moved && targetTime(state.initial) === undefined;
      return { ...state, commits: 'done', commitsProblem: action.problem, model, cursor: follow ? initialCursor(model, action.axisWidth) : state.cursor };
    }
    case 'key':
      return state.editing ? editKey(state, action.input, action.key) : cursorKey(state, action.input, action.key, action.axisWidth);
  }
}

function editKey(state: PickerState, input: string, key: Key): PickerState {
  if (key.escape) {
    // Back to the timeline when there is one (a typed time moves the cursor there); else out.
    if (state.phase !== 'ready' || !state.model) return { ...state, cancelled: true };
    const t = targetTime(state.text);
    const cursor = t !== undefined ? Math.max(state.model.start, Math.min(state.model.end, t)) : state.cursor;
    return { ...state, editing: false, message: undefined, cursor, moved: state.moved || t !== undefined, latest: state.text.trim() === 'latest' ? true : t !== undefined ? false : state.latest };
  }
  if (key.return) {
    const c = checkTarget(state.phase === 'ready' ? state.model : undefined, state.text);
    return c.ok ? { ...state, result: c.target, message: undefined } : { ...state, message: c.error };
  }
  const text = editText(state.text, input, key);
  return text === state.text ? state : { ...state, text, message: undefined };
}

function cursorKey(state: PickerState, input: string, key: Key, axisWidth: number): PickerState {
  if (key.escape) return { ...state, cancelled: true };
  if (input === 'e' || input === '/') {
    const text = state.phase === 'ready' ? cursorSelection(state).target : state.text;
    return { ...state, editing: true, text, message: undefined };
  }
  if (state.phase !== 'ready' || !state.model) return state;
  if (input === 'l') return { ...state, latest: true, moved: true, cursor: moveCursor(state.model, state.cursor, axisWidth, 'end'), message: undefined };
  const move = moveFor(input, key);
  if (move) return { ...state, latest: false, moved: true, message: undefined, cursor: moveCursor(state.model, state.cursor, axisWidth, move) };
  if (key.return) {
    const sel = cursorSelection(state);
    return sel.ok ? { ...state, result: sel.target } : { ...state, message: `Cannot recover to ${sel.target}: ${sel.reason}.` };
  }
  return state;
}

