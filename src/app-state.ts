// The app's state and its pure reducer: which screen shows, Home's selection, the session (the
// profile and services the app runs against, switched without a restart), what the operator
// typed into each form (kept across a failed run), and how the app exits. app.tsx renders it.
import { EXIT, type Params, type Procedure, type RunSummary } from './engine/types.js';
import type { ResumePoint } from './engine/journal.js';
import type { ProcedureServices } from './procedures/services.js';
import type { FieldValue } from './screens/params-form.js';

export type Screen =
  | { name: 'home' }
  | { name: 'form'; procedure: Procedure }
  | { name: 'run'; procedure: Procedure; params: Params; attempt: number; resume?: ResumePoint; services?: ProcedureServices }
  | { name: 'report'; procedure: Procedure; summary: RunSummary }
  | { name: 'status' }
  | { name: 'connect' }
  | { name: 'profiles' }
  | { name: 'resume' };

/** The profile and services the app acts with; switched from the profile picker or the connection screen. */
export interface Session {
  services?: ProcedureServices;
  profileName?: string;
}

export interface AppState {
  screen: Screen;
  /** Home's selection, kept while other screens show. */
  homeIndex: number;
  /** The ? overlay is open (over home or a report). */
  help?: boolean;
  runs: number;
  /** Ctrl-C presses during the current run: 1 stops it, 2 quits at once. */
  stopping: number;
  /** Set once: the app exits with this code after the current frame is on screen. */
  exit?: { code: number; forced: boolean };
  /** Undefined: the session the app was started with (its props). */
  session?: Session;
  /** What the operator typed into each procedure's form, by procedure id, until a run of it succeeds. */
  drafts: Record<string, FieldValue[]>;
  /** One line for Home (a profile saved, a profile that failed to load). */
  notice?: { text: string; error?: boolean };
}

export type AppAction =
  | { type: 'pick'; procedure: Procedure; index: number; params?: Params }
  | { type: 'run'; params: Params; values?: FieldValue[] }
  | { type: 'draft'; procedure: string; values: FieldValue[] }
  | { type: 'home' }
  | { type: 'status'; index: number }
  | { type: 'open'; screen: 'connect' | 'profiles' | 'resume' }
  | { type: 'session'; session: Session; notice?: string }
  | { type: 'notice'; text: string; error?: boolean }
  | { type: 'resume'; procedure: Procedure; point: ResumePoint; services: ProcedureServices; params: Params }
  | { type: 'finished'; summary: RunSummary }
  | { type: 'ctrl-c' }
  | { type: 'quit'; code: number }
  | { type: 'help'; open: boolean };

export const initialAppState: AppState = { screen: { name: 'home' }, homeIndex: 0, runs: 0, stopping: 0, drafts: {} };

/** The exit code after a run the operator stopped with Ctrl-C. */
function interruptedCode(summary: RunSummary): number {
  return summary.status === 'interrupted' ? EXIT.interrupted : summary.exitCode;
}

export function appReducer(state: AppState, action: AppAction): AppState {
  if (state.exit) return state;
  const { screen } = state;
  switch (action.type) {
    case 'pick':
      if (screen.name !== 'home') return state;
      if (action.params) {
        const runs = state.runs + 1;
        return { ...state, homeIndex: action.index, runs, stopping: 0, notice: undefined, screen: { name: 'run', procedure: action.procedure, params: action.params, attempt: runs } };
      }
      return { ...state, homeIndex: action.index, notice: undefined, screen: { name: 'form', procedure: action.procedure } };
    case 'run': {
      if (screen.name !== 'form') return state;
      const runs = state.runs + 1;
      const drafts = action.values ? { ...state.drafts, [screen.procedure.id]: action.values } : state.drafts;
      return { ...state, runs, stopping: 0, drafts, screen: { name: 'run', procedure: screen.procedure, params: action.params, attempt: runs } };
    }
    case 'draft':
      return { ...state, drafts: { ...state.drafts, [action.procedure]: action.values } };
    case 'home':
      return screen.name === 'run' ? state : { ...state, screen: { name: 'home' } };
    case 'help':
      // Over home and reports only: a running procedure keeps its screen.
      return !action.open || screen.name === 'home' || screen.name === 'report' ? { ...state, help: action.open } : state;
    case 'status':
      return screen.name === 'home' ? { ...state, homeIndex: action.index, screen: { name: 'status' } } : state;
    case 'open':
      return screen.name === 'home' ? { ...state, notice: undefined, screen: { name: action.screen } } : state;
    case 'session':
      // Another cluster: what was typed for the old one does not carry over.
      return { ...state, session: action.session, drafts: {}, notice: action.notice ? { text: action.notice } : undefined, screen: screen.name === 'run' ? screen : { name: 'home' } };
    case 'notice':
      return { ...state, notice: { text: action.text, error: action.error } };
    case 'resume': {
      if (screen.name !== 'resume') return state;
      const runs = state.runs + 1;
      return {
        ...state,
        runs,
        stopping: 0,
        screen: { name: 'run', procedure: action.procedure, params: action.params, attempt: runs, resume: action.point, services: action.services },
      };
    }
    case 'finished': {
      if (screen.name !== 'run') return state;
      // A run that succeeded needs its draft no more; any other outcome keeps it for the retry.
      const drafts = { ...state.drafts };
      if (action.summary.status === 'ok') delete drafts[screen.procedure.id];
      const next: AppState = { ...state, drafts, screen: { name: 'report', procedure: screen.procedure, summary: action.summary } };
      // Stopped with Ctrl-C: show where it stopped, then exit.
      if (state.stopping > 0) next.exit = { code: interruptedCode(action.summary), forced: false };
      return next;
    }
    case 'ctrl-c':
      if (screen.name === 'run') {
        if (state.stopping > 0) return { ...state, stopping: state.stopping + 1, exit: { code: EXIT.interrupted, forced: true } };
        return { ...state, stopping: 1 };
      }
      if (screen.name === 'report') return { ...state, exit: { code: screen.summary.exitCode, forced: false } };
      return { ...state, exit: { code: EXIT.ok, forced: false } };
    case 'quit':
      return { ...state, exit: { code: action.code, forced: false } };
  }
}
