// The recovery-target picker's state as a pure reducer: the catalog arriving, the window ends
// refined from the WAL, and every key (cursor moves, `l` latest, `e` the editor, Enter, Esc).
// Pitfall 5: one reducer, so a fast sequence of keys never reads stale state.
import type { Catalog } from '../repo/catalog.js';
import { editText, type Key } from './keys.js';
import type { ServerWalPosition, WalActivity } from '../services/recovery-timeline.js';
import { buildTimelineModel, checkTarget, chooseForLsn, chooseForTime, initialCursor, isoTime, moveCursor, targetTime, type CursorMove, type TimelineModel } from './recovery-timeline.js';
import { commitPath, describeCommitTarget, newestTimeline } from './recovery-timeline-activity.js';
import { parseLsn } from '../repo/walnames.js';
import { parseTarget } from '../restore/target.js';

/** Other form fields a pick implies: a commit is stopped just before (exclusive), on its timeline. */
export type PickAlso = { exclusive: boolean; timeline: string };

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
  /** What the result implies for other fields (exclusive, timeline). */
  resultAlso?: PickAlso;
  cancelled?: boolean;
  /** Commits and restore points read from the archived WAL (the service's scanActivity). */
  activity?: WalActivity;
  activityState: 'none' | 'reading' | 'done';
  activityProblem?: string;
  /** The timeline whose commits the cursor steps through (default: the newest). */
  timeline?: number;
  /** Index into commitPath(timeline) when the cursor is on a commit; undefined: time mode. */
  commit?: number;
  /** The server's WAL against the archive, when the app has a connection. */
  server?: ServerWalPosition;
  /** `s` asked for a WAL switch (the screen runs it), then its outcome. */
  switching?: 'requested' | 'running' | 'done' | 'failed';
  switchMessage?: string;
  /** Bumped to read the catalog and the WAL again (after a switch). */
  loads: number;
}

export type PickerAction =
  | { type: 'loaded'; catalog: Catalog; axisWidth: number }
  | { type: 'failed'; error: string }
  | { type: 'commits-reading' }
  | { type: 'commits'; times: Record<string, string>; problem?: string; axisWidth: number }
  | { type: 'key'; input: string; key: Key; axisWidth: number }
  | { type: 'activity-reading' }
  | { type: 'activity'; activity?: WalActivity; problem?: string }
  | { type: 'server'; server?: ServerWalPosition }
  | { type: 'switch'; phase: 'running' | 'done' | 'failed'; message?: string; reload?: boolean };

export function initialPickerState(initial = ''): PickerState {
  return { phase: 'loading', commits: 'none', cursor: 0, latest: false, moved: false, editing: false, text: initial.trim(), initial: initial.trim(), activityState: 'none', loads: 0 };
}

/** The commits the cursor steps through: the chosen timeline's path. */
export function pathOf(state: PickerState) {
  if (!state.model || !state.activity || state.timeline === undefined) return [];
  return commitPath(state.model, state.activity, state.timeline);
}

/** The commit under the cursor, in commit mode. */
export function selectedCommit(state: PickerState) {
  return state.commit === undefined ? undefined : pathOf(state)[state.commit];
}

function newest(state: PickerState): number | undefined {
  return state.model ? newestTimeline(state.model, state.activity) : undefined;
}

function alsoFor(state: PickerState, exclusive: boolean): PickAlso {
  const tl = state.timeline;
  return { exclusive, timeline: tl !== undefined && tl !== newest(state) ? String(tl) : '' };
}

/** The target the cursor mode would hand back, and whether it may. */
export function cursorSelection(state: PickerState): { target: string; ok: true; backupId?: string; also?: PickAlso; label?: string } | { target: string; ok: false; reason: string; label?: string } {
  if (!state.model) return { target: '', ok: false, reason: 'the catalog is not loaded' };
  const commit = state.latest ? undefined : selectedCommit(state);
  if (commit) {
    // Stop just before this transaction: recovery_target_xid with recovery_target_inclusive off.
    const target = `xid:${commit.xid}`;
    const label = describeCommitTarget(commit);
    const c = chooseForLsn(state.model, parseLsn(commit.lsn));
    return c.ok ? { target, ok: true, backupId: c.window.backupId, also: alsoFor(state, true), label } : { target, ok: false, reason: `its commit is ${c.reason}`, label };
  }
  if (state.latest) {
    const c = checkTarget(state.model, 'latest');
    return c.ok ? { target: 'latest', ok: true, backupId: c.backupId, also: alsoFor(state, false) } : { target: 'latest', ok: false, reason: c.error };
  }
  const target = isoTime(state.cursor);
  const c = chooseForTime(state.model, state.cursor);
  return c.ok ? { target, ok: true, backupId: c.window.backupId, also: alsoFor(state, false) } : { target, ok: false, reason: `it is ${c.reason}` };
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
      const keep = state.model !== undefined && state.moved;
      const next: PickerState = { ...state, phase: 'ready', catalog: action.catalog, model, error: undefined, cursor: keep ? state.cursor : initialCursor(model, action.axisWidth, targetTime(init)) };
      if (keep) return next;
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
    case 'activity-reading':
      return { ...state, activityState: 'reading' };
    case 'activity':
      return withActivity(state, action.activity, action.problem);
    case 'server':
      return { ...state, server: action.server };
    case 'switch':
      // A reload reads the server and the WAL again: what was shown of them is stale until then.
      return action.reload
        ? { ...state, switching: action.phase, switchMessage: action.message, loads: state.loads + 1, server: undefined, activityState: 'reading' }
        : { ...state, switching: action.phase, switchMessage: action.message };
    case 'key':
      return state.editing ? editKey(state, action.input, action.key) : cursorKey(state, action.input, action.key, action.axisWidth);
  }
}

/** Commits arrived: the cursor steps by commit from now on, starting on the last one (or the one nearest a time it was put at). */
function withActivity(state: PickerState, activity: WalActivity | undefined, problem?: string): PickerState {
  const next: PickerState = { ...state, activity, activityState: 'done', activityProblem: problem };
  if (!activity || !state.model) return next;
  // Until the operator moves, the cursor follows the newest timeline's last commit (also after a reload).
  const timeline = state.moved && state.timeline !== undefined ? state.timeline : newestTimeline(state.model, activity);
  const withTl = { ...next, timeline };
  const path = pathOf(withTl);
  if (!path.length) return { ...withTl, commit: undefined };
  const previous = state.moved ? selectedCommit(state) : undefined;
  const parsed = parseTarget(state.initial);
  const initialXid = 'kind' in parsed && parsed.kind === 'xid' ? parsed.xid : undefined;
  let commit = path.length - 1;
  if (previous) commit = Math.max(0, path.findIndex((c) => c.xid === previous.xid && c.timeline === previous.timeline));
  else if (initialXid) commit = Math.max(0, path.findIndex((c) => c.xid === initialXid));
  else if (targetTime(state.initial) !== undefined) commit = nearestCommit(path, state.cursor);
  return { ...withTl, commit, cursor: path[commit].ms, latest: state.latest && state.moved ? state.latest : false };
}

function nearestCommit(path: { ms: number }[], t: number): number {
  let best = 0;
  for (let i = 0; i < path.length; i++) if (Math.abs(path[i].ms - t) < Math.abs(path[best].ms - t)) best = i;
  return best;
}

/** Keys in commit mode: ← → one commit (symmetric), PgUp/PgDn ten, Home/End the ends, ↑ ↓ another timeline. */
function commitKey(state: PickerState, input: string, key: Key): PickerState | undefined {
  const path = pathOf(state);
  if (!path.length || state.commit === undefined) return undefined;
  let i: number | undefined;
  if (key.home) i = 0;
  else if (key.end) i = path.length - 1;
  else if (key.pageUp || (key.leftArrow && key.shift) || input === 'H') i = state.commit - 10;
  else if (key.pageDown || (key.rightArrow && key.shift) || input === 'L') i = state.commit + 10;
  else if (key.leftArrow || input === 'h') i = state.commit - 1;
  else if (key.rightArrow) i = state.commit + 1;
  if (i !== undefined) {
    const commit = Math.max(0, Math.min(path.length - 1, i));
    return { ...state, commit, cursor: path[commit].ms, latest: false, moved: true, message: undefined };
  }
  if (key.upArrow || key.downArrow) {
    const tls = [...new Set(state.activity!.commits.map((c) => c.timeline))].sort((a, b) => a - b);
    const at = tls.indexOf(state.timeline ?? tls[tls.length - 1]);
    const timeline = tls[Math.max(0, Math.min(tls.length - 1, at + (key.upArrow ? -1 : 1)))];
    if (timeline === state.timeline) return state;
    const moved = { ...state, timeline };
    const other = pathOf(moved);
    if (!other.length) return { ...moved, commit: undefined };
    const commit = nearestCommit(other, state.cursor);
    return { ...moved, commit, cursor: other[commit].ms, moved: true, message: undefined };
  }
  return undefined;
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
    // A typed target says what it means; exclusive and timeline go back to their defaults.
    return c.ok ? { ...state, result: c.target, resultAlso: { exclusive: false, timeline: '' }, message: undefined } : { ...state, message: c.error };
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
  if (input === 's' && state.server && !state.server.inRecovery && state.switching !== 'requested' && state.switching !== 'running') return { ...state, switching: 'requested', switchMessage: undefined };
  if (input === 'l') return { ...state, latest: true, moved: true, cursor: moveCursor(state.model, state.cursor, axisWidth, 'end'), message: undefined };
  const byCommit = commitKey(state, input, key);
  if (byCommit) return byCommit;
  const move = moveFor(input, key);
  if (move) return { ...state, latest: false, moved: true, message: undefined, cursor: moveCursor(state.model, state.cursor, axisWidth, move) };
  if (key.return) {
    const sel = cursorSelection(state);
    return sel.ok ? { ...state, result: sel.target, resultAlso: sel.also } : { ...state, message: `Cannot recover to ${sel.label ?? sel.target}: ${sel.reason}.` };
  }
  return state;
}

