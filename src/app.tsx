// The Ink root: chooses the screen, routes Ctrl-C, and owns exiting. Screens report what
// happened (a pick, params, a finished run); the root decides what comes next and calls
// exit() from an effect, after the last frame has been committed. It is also where screens
// get their services: the recovery timeline and the status check are built here from the
// procedures' services, so no screen opens a repository or connects to a server itself.
import type React from 'react';
import { useCallback, useEffect, useMemo, useReducer, useRef } from 'react';
import { render, useApp } from 'ink';
import { EXIT, UsageError, type Params, type Procedure, type RunSummary } from './engine/types.js';
import { resolveParams } from './engine/params.js';
import { ConnectionStringError, describeConnection } from './config/connection.js';
import { loadProfile, ProfileError } from './config/store.js';
import type { Profile } from './config/profile.js';
import { buildServices, profileDefaults, type ProcedureServices } from './procedures/services.js';
import { KeysProvider, isCtrlC, type Key } from './screens/keys.js';
import { AppThemeProvider, colorEnabled } from './screens/theme.js';
import { Home, menuOrder } from './screens/home.js';
import { HelpOverlay } from './screens/help.js';
import { ParamsForm, type FieldPicker } from './screens/params-form.js';
import { TargetPicker } from './screens/target-picker.js';
import { loadRecoveryTimeline, type RecoveryTimelineSource } from './services/recovery-timeline.js';
import { loadIncidentSource, type IncidentSource } from './services/incident-source.js';
import { checkStatus, statusOptionsFromServices } from './monitoring/status.js';
import { RunScreen } from './screens/run-view.js';
import { Report } from './screens/report.js';
import { StatusDashboard, StatusPanel, statusPanelRows, useStatusFeed } from './screens/status-dashboard.js';

export interface TuiOptions {
  procedures: Procedure[];
  stateDir: string;
  env: NodeJS.ProcessEnv;
  profileName?: string;
}

// ---------------------------------------------------------------------------------------
// Root state

export type Screen =
  | { name: 'home' }
  | { name: 'form'; procedure: Procedure }
  | { name: 'run'; procedure: Procedure; params: Params; attempt: number }
  | { name: 'report'; procedure: Procedure; summary: RunSummary }
  | { name: 'status' };

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
}

export type AppAction =
  | { type: 'pick'; procedure: Procedure; index: number; params?: Params }
  | { type: 'run'; params: Params }
  | { type: 'home' }
  | { type: 'status'; index: number }
  | { type: 'finished'; summary: RunSummary }
  | { type: 'ctrl-c' }
  | { type: 'quit'; code: number }
  | { type: 'help'; open: boolean };

export const initialAppState: AppState = { screen: { name: 'home' }, homeIndex: 0, runs: 0, stopping: 0 };

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
        return { ...state, homeIndex: action.index, runs, stopping: 0, screen: { name: 'run', procedure: action.procedure, params: action.params, attempt: runs } };
      }
      return { ...state, homeIndex: action.index, screen: { name: 'form', procedure: action.procedure } };
    case 'run': {
      if (screen.name !== 'form') return state;
      const runs = state.runs + 1;
      return { ...state, runs, stopping: 0, screen: { name: 'run', procedure: screen.procedure, params: action.params, attempt: runs } };
    }
    case 'home':
      return screen.name === 'run' ? state : { ...state, screen: { name: 'home' } };
    case 'help':
      // Over home and reports only: a running procedure keeps its screen.
      return !action.open || screen.name === 'home' || screen.name === 'report' ? { ...state, help: action.open } : state;
    case 'status':
      return screen.name === 'home' ? { ...state, homeIndex: action.index, screen: { name: 'status' } } : state;
    case 'finished': {
      if (screen.name !== 'run') return state;
      const next: AppState = { ...state, screen: { name: 'report', procedure: screen.procedure, summary: action.summary } };
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

// ---------------------------------------------------------------------------------------
// The App

/** Params chosen on the recovery timeline instead of typed: procedure id -> param name. */
export const RECOVERY_TARGET_PARAMS: Record<string, string> = { pitr: 'target' };

function pickersFor(procedure: Procedure, timeline: RecoveryTimelineSource, incidents?: IncidentSource): Record<string, FieldPicker> | undefined {
  const param = RECOVERY_TARGET_PARAMS[procedure.id];
  if (!param || !procedure.params.some((p) => p.name === param)) return undefined;
  return {
    [param]: {
      hint: 'pick on the timeline',
      render: ({ value, onDone }) => <TargetPicker source={timeline} incidents={incidents} initial={value} onDone={onDone} />,
    },
  };
}

export interface AppProps {
  procedures: Procedure[];
  stateDir: string;
  env: NodeJS.ProcessEnv;
  /** Handed to procedures (from buildServices); the screens' services are built from it. */
  services?: ProcedureServices;
  profileName?: string;
  /** Called once, just before the app exits; `forced` when a second Ctrl-C did not wait for the step. */
  onExit?(code: number, info: { forced: boolean }): void;
  /** Aborting it acts like Ctrl-C (runTui wires SIGTERM and SIGHUP to it). */
  interrupt?: AbortSignal;
  /** Engine knobs (tests). */
  progressIntervalMs?: number;
  abortGraceMs?: number;
}

/** Where the app acts, for Home's connection line. */
export function connectionLabel(services: ProcedureServices | undefined, profileName?: string): string | undefined {
  if (!services) return profileName ? `profile ${profileName}` : undefined;
  const name = services.profileName ?? profileName;
  let where: string;
  try {
    where = describeConnection(services.connection);
  } catch {
    where = 'connection from PG* variables';
  }
  return `${name ? `profile ${name}` : 'no profile'} · ${where}${services.repo ? ` · repo ${services.repo}` : ''}`;
}

/** The drill when nothing is configured (no profile, no PG* connection, no repository); else the first procedure. */
export function firstChoice(procedures: Procedure[], profileName: string | undefined, env: NodeJS.ProcessEnv, services: ProcedureServices | undefined): number {
  const configured = Boolean(profileName || env.PGHOST || env.PGPORT || env.PGDATABASE || env.PGRUNBOOK_REPO || services?.repo);
  if (configured) return 0;
  return Math.max(0, menuOrder(procedures).findIndex((p) => p.id === 'drill'));
}

export function App(props: AppProps) {
  const { procedures, env, services } = props;
  const { exit } = useApp();
  // With nothing configured, the drill (a sandbox, nothing to set up) is the obvious first thing to try.
  const [state, dispatch] = useReducer(appReducer, { ...initialAppState, homeIndex: firstChoice(procedures, props.profileName, env, services) });
  const stateRef = useRef(state);
  stateRef.current = state;
  const profile = services?.profile;
  const secrets = useMemo(() => [services?.connection.password, env.PGPASSWORD].filter((s): s is string => Boolean(s)), [services, env]);
  // The screens' services: the recovery timeline of the configured repository (opened anew
  // each time the picker opens), and the status check when there is a repository to check.
  const timeline = useMemo(() => loadRecoveryTimeline(services?.repo, services?.env ?? env), [services, env]);
  // find-target's incidents for the picker's "find the incident" list (f).
  const incidents = useMemo(() => (services?.repo ? loadIncidentSource(services.repo, services.env, services.connection) : undefined), [services]);
  const statusCheck = useMemo(() => (services?.repo ? () => checkStatus(statusOptionsFromServices(services)) : undefined), [services]);

  // One AbortController per run; Ctrl-C aborts it and the runner records the interrupted step.
  const attempt = state.screen.name === 'run' ? state.screen.attempt : -1;
  const controller = useMemo(() => new AbortController(), [attempt]);
  useEffect(() => {
    if (state.stopping > 0 && !controller.signal.aborted) controller.abort(new Error('interrupted by the operator (Ctrl-C)'));
  }, [state.stopping, controller]);

  useEffect(() => {
    const signal = props.interrupt;
    if (!signal) return;
    const onAbort = () => dispatch({ type: 'ctrl-c' });
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  }, [props.interrupt]);

  // The only place that exits: after the frame that shows why has been committed.
  useEffect(() => {
    if (!state.exit) return;
    props.onExit?.(state.exit.code, { forced: state.exit.forced });
    exit();
  }, [state.exit]);

  const onKey = useCallback((input: string, key: Key) => {
    if (input === '?' && !stateRef.current.help && (stateRef.current.screen.name === 'home' || stateRef.current.screen.name === 'report')) {
      dispatch({ type: 'help', open: true });
      return true;
    }
    if (!isCtrlC(input, key)) return false;
    dispatch({ type: 'ctrl-c' });
    return true;
  }, []);

  const onPick = useCallback(
    (procedure: Procedure, index: number) => {
      if (procedure.params.length === 0) {
        // Nothing to ask: straight to the run.
        const { params } = resolveParams(procedure, {}, env, profileDefaults(procedure, profile));
        dispatch({ type: 'pick', procedure, index, params });
      } else {
        dispatch({ type: 'pick', procedure, index });
      }
    },
    [env, profile],
  );
  const toHome = useCallback(() => dispatch({ type: 'home' }), []);
  // Status of the backups, checked in the background when a repository is configured; again after each run.
  const statusFeed = useStatusFeed(statusCheck);
  useEffect(() => {
    if (state.screen.name === 'report') statusFeed?.refresh();
  }, [state.screen.name]);
  const onFinished = useCallback((summary: RunSummary) => dispatch({ type: 'finished', summary }), []);

  const { screen } = state;
  let body: React.ReactNode;
  switch (screen.name) {
    case 'home':
      body = (
        <Home
          procedures={procedures}
          connection={connectionLabel(services, props.profileName)}
          initialIndex={state.homeIndex}
          banner={statusFeed ? <StatusPanel feed={statusFeed} /> : undefined}
          bannerRows={statusPanelRows(statusFeed)}
          onStatus={statusFeed ? (index) => dispatch({ type: 'status', index }) : undefined}
          onPick={onPick}
          onQuit={() => dispatch({ type: 'quit', code: EXIT.ok })}
        />
      );
      break;
    case 'form':
      body = (
        <ParamsForm
          key={screen.procedure.id}
          procedure={screen.procedure}
          env={env}
          defaults={profileDefaults(screen.procedure, profile)}
          pickers={pickersFor(screen.procedure, timeline, incidents)}
          onSubmit={(params) => dispatch({ type: 'run', params })}
          onBack={toHome}
        />
      );
      break;
    case 'run':
      body = (
        <RunScreen
          key={screen.attempt}
          procedure={screen.procedure}
          params={screen.params}
          services={services}
          stateDir={props.stateDir}
          signal={controller.signal}
          stopping={state.stopping > 0}
          secrets={secrets}
          onFinished={onFinished}
          progressIntervalMs={props.progressIntervalMs}
          abortGraceMs={props.abortGraceMs}
        />
      );
      break;
    case 'status':
      body = statusFeed ? <StatusDashboard feed={statusFeed} onBack={toHome} /> : null;
      break;
    case 'report':
      body = (
        <Report
          summary={screen.summary}
          title={screen.procedure.title}
          exiting={state.exit !== undefined}
          exitCode={state.exit?.code}
          onHome={toHome}
          onQuit={() => dispatch({ type: 'quit', code: screen.summary.exitCode })}
        />
      );
      break;
  }

  if (state.help) body = <HelpOverlay onClose={() => dispatch({ type: 'help', open: false })} />;

  return (
    <AppThemeProvider color={colorEnabled(env)}>
      <KeysProvider onKey={onKey}>{body}</KeysProvider>
    </AppThemeProvider>
  );
}

// ---------------------------------------------------------------------------------------
// Entry from the CLI

export async function runTui(opts: TuiOptions): Promise<number> {
  const profileName = opts.profileName || undefined;
  let profile: Profile = {};
  if (profileName) {
    try {
      profile = await loadProfile(profileName, opts.env);
    } catch (err) {
      if (err instanceof ProfileError) {
        process.stderr.write(`pgrunbook: ${err.message}\n`);
        return EXIT.usage;
      }
      throw err;
    }
  }
  let services: ProcedureServices;
  try {
    services = buildServices({}, opts.env, profile, profileName);
  } catch (err) {
    if (err instanceof ConnectionStringError || err instanceof UsageError) {
      process.stderr.write(`pgrunbook: ${err.message}\n`);
      return EXIT.usage;
    }
    throw err;
  }

  let code: number = EXIT.ok;
  let forced = false;
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  try {
    const instance = render(
      <App
        procedures={opts.procedures}
        stateDir={opts.stateDir}
        env={opts.env}
        services={services}
        profileName={profileName}
        interrupt={interrupt.signal}
        onExit={(c, info) => {
          code = c;
          forced = info.forced;
        }}
      />,
      { exitOnCtrlC: false },
    );
    await instance.waitUntilExit();
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
  }
  // Ink never calls process.exit; the exit code is ours to set.
  process.exitCode = code;
  // A second Ctrl-C means "now", even if a step ignores the abort (as headless does).
  if (forced) process.exit(code);
  return code;
}
