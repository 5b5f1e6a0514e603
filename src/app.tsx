// The Ink root: chooses the screen, routes Ctrl-C, and owns exiting. Screens report what
// happened (a pick, params, a finished run, a saved profile); the pure reducer (app-state.ts)
// decides what comes next, and exit() is called from an effect, after the last frame has been
// committed. Screens get what they read or do from screenServices (services/app-services.ts),
// built from the session's services, so no screen opens a repository or connects itself.
import type React from 'react';
import { useCallback, useEffect, useMemo, useReducer, useRef } from 'react';
import { render, useApp } from 'ink';
import { EXIT, UsageError, type Params, type Procedure, type RunSummary } from './engine/types.js';
import { resolveParams } from './engine/params.js';
import { errorMessage } from './engine/errors.js';
import { MASK } from './engine/mask.js';
import { ConnectionStringError, describeConnection } from './config/connection.js';
import { loadProfile, ProfileError } from './config/store.js';
import type { Profile } from './config/profile.js';
import { buildServices, profileDefaults, runContextOf, type ProcedureServices } from './procedures/services.js';
import { appReducer, initialAppState } from './app-state.js';
import { screenServices } from './services/app-services.js';
import { KeysProvider, isCtrlC, type Key } from './screens/keys.js';
import { AppThemeProvider, colorEnabled } from './screens/theme.js';
import { Home, menuOrder } from './screens/home.js';
import { HelpOverlay } from './screens/help.js';
import { ParamsForm } from './screens/params-form.js';
import { fieldPickers } from './screens/field-pickers.js';
import { ConnectScreen } from './screens/connect.js';
import { ProfilePicker } from './screens/profile-picker.js';
import { ResumeList } from './screens/resume-list.js';
import { RunScreen } from './screens/run-view.js';
import { Report } from './screens/report.js';
import { StatusDashboard, StatusPanel, statusPanelRows, useStatusFeed } from './screens/status-dashboard.js';

export interface TuiOptions {
  procedures: Procedure[];
  stateDir: string;
  env: NodeJS.ProcessEnv;
  profileName?: string;
}

export { appReducer, initialAppState, type AppAction, type AppState, type Screen } from './app-state.js';
export { RECOVERY_TARGET_PARAMS } from './screens/field-pickers.js';

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
  const { procedures, env } = props;
  const { exit } = useApp();
  // With nothing configured, the drill (a sandbox, nothing to set up) is the obvious first thing to try.
  const [state, dispatch] = useReducer(appReducer, { ...initialAppState, homeIndex: firstChoice(procedures, props.profileName, env, props.services) });
  const stateRef = useRef(state);
  stateRef.current = state;
  // The session: what the app was started with, until the operator switches profile.
  const services = state.session ? state.session.services : props.services;
  const profileName = state.session ? state.session.profileName : props.profileName;
  const secrets = useMemo(() => [services?.connection.password, env.PGPASSWORD].filter((s): s is string => Boolean(s)), [services, env]);
  // Everything the screens read or do, built from the session's services (services/app-services.ts).
  const sources = useMemo(() => screenServices(services, env, props.stateDir), [services, env, props.stateDir]);

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
        const { params } = resolveParams(procedure, {}, env, sources.formDefaults(procedure));
        dispatch({ type: 'pick', procedure, index, params });
      } else {
        dispatch({ type: 'pick', procedure, index });
      }
    },
    [env, sources],
  );
  const toHome = useCallback(() => dispatch({ type: 'home' }), []);
  const switchTo = useCallback(
    (name: string, notice: string) =>
      sources.servicesFor(name).then(
        (next) => dispatch({ type: 'session', session: { services: next, profileName: name }, notice }),
        (err: unknown) => {
          dispatch({ type: 'home' });
          dispatch({ type: 'notice', text: `profile ${name}: ${errorMessage(err)}`, error: true });
        },
      ),
    [sources],
  );
  const onResume = useCallback(
    (runId?: string) => {
      if (!runId) return toHome();
      sources.resume(runId).then(
        ({ point, services: resumed }) => {
          const procedure = procedures.find((p) => p.id === point.procedure);
          if (!procedure) throw new Error(`run ${runId} was procedure "${point.procedure}", which this pgrunbook does not know`);
          const { params, errors } = resolveParams(procedure, {}, env, { ...profileDefaults(procedure, resumed.profile), ...unmasked(point.params) });
          if (errors.length) throw new Error(`run ${runId} cannot resume here: ${errors.join('; ')}`);
          dispatch({ type: 'resume', procedure, point, services: resumed, params });
        },
      ).catch((err: unknown) => {
        dispatch({ type: 'home' });
        dispatch({ type: 'notice', text: errorMessage(err), error: true });
      });
    },
    [sources, procedures, env],
  );
  // Status of the backups, checked in the background when a repository is configured; again after each run.
  const statusFeed = useStatusFeed(sources.statusCheck);
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
          connection={connectionLabel(services, profileName)}
          initialIndex={state.homeIndex}
          banner={statusFeed ? <StatusPanel feed={statusFeed} /> : undefined}
          bannerRows={statusPanelRows(statusFeed)}
          notice={state.notice}
          onStatus={statusFeed ? (index) => dispatch({ type: 'status', index }) : undefined}
          onCommand={(command) => dispatch({ type: 'open', screen: command })}
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
          defaults={sources.formDefaults(screen.procedure)}
          pickers={fieldPickers(screen.procedure, sources)}
          draft={state.drafts[screen.procedure.id]}
          onSubmit={(params, values) => dispatch({ type: 'run', params, values })}
          onBack={(values) => {
            dispatch({ type: 'draft', procedure: screen.procedure.id, values });
            toHome();
          }}
        />
      );
      break;
    case 'run': {
      const runServices = screen.services ?? services;
      body = (
        <RunScreen
          key={screen.attempt}
          procedure={screen.procedure}
          params={screen.params}
          services={runServices}
          context={runServices ? runContextOf(runServices) : undefined}
          resume={screen.resume}
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
    }
    case 'status':
      body = statusFeed ? <StatusDashboard feed={statusFeed} onBack={toHome} /> : null;
      break;
    case 'connect':
      body = (
        <ConnectScreen
          draft={sources.connectDraft()}
          test={sources.testDraft}
          save={sources.saveDraft}
          onSaved={(result) => switchTo(result.profileName, result.message)}
          onBack={toHome}
        />
      );
      break;
    case 'profiles':
      body = <ProfilePicker current={profileName} list={sources.listProfiles} onDone={(name) => (name ? switchTo(name, `using profile ${name}`) : toHome())} />;
      break;
    case 'resume':
      body = <ResumeList list={sources.unfinishedRuns} onDone={onResume} />;
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

/** A journal's params without the masked secrets (those must be given again; none of the app's procedures has one). */
function unmasked(params: Params): Params {
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== MASK));
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
