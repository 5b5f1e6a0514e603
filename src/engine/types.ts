// The procedure model and the events a run emits. Nothing here knows about Ink,
// PostgreSQL or object storage: procedures bring their own adapters through `services`.

export type StepKind = 'check' | 'action' | 'verify';

export type ParamType = 'string' | 'number' | 'boolean' | 'list' | 'choice';

export interface ParamSpec {
  /** camelCase key in `params`; the headless flag is its kebab-case form (`--critical-tables`). */
  name: string;
  type: ParamType;
  description: string;
  required?: boolean;
  default?: string | number | boolean | string[];
  choices?: string[];
  /** Never printed, logged or journaled. */
  secret?: boolean;
  /** Environment variable read when the flag is absent (e.g. PGDATA). */
  env?: string;
  /** Example shown in help and the TUI form. */
  example?: string;
}

export type ParamValue = string | number | boolean | string[] | undefined;
export type Params = Record<string, ParamValue>;

/**
 * A procedure's types, declared once: its parameters (as parsed from its ParamSpecs), the state
 * its steps share (journaled, so JSON; every field optional until a step sets it) and the
 * services its steps use. Declare params and state with `type`, not `interface`, so a typed
 * procedure fits the registry's plain Procedure.
 */
export interface ProcedureTypes {
  params: object;
  state: object;
  services: unknown;
}

export interface Untyped extends ProcedureTypes {
  params: Params;
  state: Record<string, unknown>;
  services: unknown;
}

// Methods (not function-valued properties) on purpose: a typed procedure then fits the
// registry's untyped Procedure, whose steps receive what the runner builds.
export interface DestructiveSpec<T extends ProcedureTypes = Untyped> {
  /** What this step destroys or replaces, in an operator's words. */
  what(ctx: StepContext<T>): string;
  /** The exact text an operator must type (TUI) or pass as `--confirm` (headless). */
  confirmText(ctx: StepContext<T>): string;
  /** What that text is, in words ("the data directory's name"), shown beside it. */
  confirmMeaning?(ctx: StepContext<T>): string;
}

export interface Step<T extends ProcedureTypes = Untyped> {
  id: string;
  title: string;
  kind: StepKind;
  /** What the step is about to do and why, shown before it runs. */
  describe?(ctx: StepContext<T>): string;
  destructive?: DestructiveSpec<T>;
  /** Lines for `--dry-run`: the commands and objects it would touch. No side effects. */
  plan?(ctx: StepContext<T>): string[] | Promise<string[]>;
  /** Skip the step (recorded as skipped) when this returns a reason. */
  skipIf?(ctx: StepContext<T>): string | undefined;
  run(ctx: StepContext<T>): Promise<void>;
}

export type ProcedureGroup = 'backup' | 'restore' | 'verify' | 'drill' | 'other';

export interface Procedure<T extends ProcedureTypes = Untyped> {
  id: string;
  title: string;
  summary: string;
  group: ProcedureGroup;
  params: ParamSpec[];
  /** Cross-field validation after types are checked; each message names the flag and the fix. */
  validate?(params: Partial<T['params']>): string[];
  steps: Step<T>[];
  /**
   * What to do after a run that did not finish (failed, refused, verification failed), from
   * typed facts: the failing step, the error's class and hint, and the run's state (e.g. where
   * the data directory was moved). Shown by the report; replaces the generic resume hint.
   */
  advise?(failure: RunFailure, run: { runId: string; params: T['params']; state: T['state']; services: T['services'] }): Advice[];
}

/** A run's failure as data, for the report's headline and for `advise`: never parsed from text. */
export interface RunFailure {
  status: 'failed' | 'verification-failed' | 'refused';
  stepId: string;
  stepTitle: string;
  /** The thrown error's class name (e.g. UnreachableTargetError), when a step threw. */
  errorName?: string;
  /** The thrown error's hint, when it had one. */
  hint?: string;
  /** Names of the checks that failed. */
  failedChecks: string[];
}

/** One thing to do next. `kind` lets a screen order and mark them; `command` is copyable as is. */
export interface Advice {
  kind: 'move-back' | 'other-target' | 'other-timeline' | 'resume' | 'inspect' | 'fix';
  text: string;
  command?: string;
}

export interface ProgressUpdate {
  done: number;
  total?: number;
  unit: string;
  /** WAL replay, typed for every renderer (no one parses log text): where replay is, against where it must get to. */
  replay?: ReplayProgress;
}

export interface ReplayProgress {
  /** pg_last_wal_replay_lsn() now. */
  lsn: string;
  /** Where the plan says replay must get to. */
  targetLsn: string;
  /** The last replayed commit's time (ISO 8601, microseconds), when there is one. */
  commitTime?: string;
  paused?: boolean;
  promoted?: boolean;
}

export interface ConfirmOptions {
  message: string;
  /** Set for destructive confirmations: the operator must type `expected`. */
  destructive?: { what: string; expected: string; means?: string };
}

export interface CheckResult {
  stepId: string;
  name: string;
  ok: boolean;
  detail?: string;
}

export interface StepContext<T extends ProcedureTypes = Untyped> {
  readonly runId: string;
  readonly procedureId: string;
  readonly stepId: string;
  readonly params: T['params'];
  readonly signal: AbortSignal;
  readonly dryRun: boolean;
  /** Shared between steps and journaled after each step; survives --resume. Keep it JSON. */
  readonly state: T['state'];
  /** Opaque to the engine: procedures bring their adapters (pg, storage, config). */
  readonly services: T['services'];
  log(message: string, level?: LogLevel): void;
  progress(update: ProgressUpdate): void;
  confirm(options: ConfirmOptions): Promise<boolean>;
  check(name: string, ok: boolean, detail?: string): void;
  /** Register a secret value met while running (a password read from a file, a token) so it is masked everywhere. */
  addSecret(value: string): void;
  /** A headline result for the final report (e.g. "RTO", "7.8 s"): shown first, kept in the summary. */
  fact(label: string, value: string): void;
}

export type LogLevel = 'info' | 'warn' | 'error';

export type StepStatus = 'ok' | 'failed' | 'skipped' | 'interrupted' | 'refused' | 'planned';

export type RunStatus = 'ok' | 'failed' | 'verification-failed' | 'refused' | 'interrupted' | 'planned';

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  verification: 3,
  refused: 4,
  interrupted: 130,
} as const;

export interface StepSummary {
  id: string;
  title: string;
  kind: StepKind;
  status: StepStatus | 'pending';
  durationMs?: number;
  error?: string;
}

export interface RunSummary {
  runId: string;
  procedure: string;
  status: RunStatus;
  exitCode: number;
  durationMs: number;
  steps: StepSummary[];
  checks: CheckResult[];
  /** Headline results the steps reported (measured RTO, recovery point, ...), in order. */
  facts?: { label: string; value: string }[];
  journalPath?: string;
  error?: string;
  /** What to do next, when the run did not finish cleanly. */
  hint?: string;
  /** The failure as data (step, error class, failed checks), when the run did not finish. */
  failure?: RunFailure;
  /** What to do next, from the procedure's `advise`; when present the report shows it instead of `hint`. */
  advice?: Advice[];
}

/**
 * Where a run acted, journaled in its run-start record so `--resume RUN_ID` alone can carry
 * on against the same server, data directory and repository. Never holds a password or a
 * credential: the connection is host/port/user/dbname, and secrets in the repository URL's
 * query are dropped before it gets here.
 */
export interface RunContext {
  connection?: { host?: string; port?: number; user?: string; dbname?: string; sslmode?: string };
  pgdata?: string;
  repo?: string;
  /** True when credentials were dropped from the repository URL (they must come from the environment or --repo again). */
  repoCredentialsDropped?: boolean;
  profile?: string;
  /** The answers given up front (--yes, --confirm): a resumed run of the same target keeps them. */
  yes?: boolean;
  confirm?: string[];
}

/** A step's progress as the run reports it: the step's update, with the runner's rate and ETA. */
export interface StepProgress extends ProgressUpdate {
  stepId: string;
  ratePerSec?: number;
  etaSec?: number;
  /** Carried from ProgressUpdate.replay unchanged: renderers draw WAL replay from this, never from log text. */
  replay?: ReplayProgress;
}

interface EventBase {
  time: string;
  runId: string;
}

export type RunEvent =
  | (EventBase & {
      type: 'run-start';
      procedure: string;
      title: string;
      params: Params;
      steps: { id: string; title: string; kind: StepKind; destructive: boolean }[];
      journalPath?: string;
      resumedAt?: string;
      dryRun: boolean;
    })
  | (EventBase & { type: 'step-start'; stepId: string; title: string; index: number; kind: StepKind; about?: string })
  | (EventBase & { type: 'log'; stepId: string; level: LogLevel; message: string })
  | (EventBase & { type: 'progress' } & StepProgress)
  | (EventBase & { type: 'check'; stepId: string; name: string; ok: boolean; detail?: string })
  | (EventBase & { type: 'fact'; stepId: string; label: string; value: string })
  | (EventBase & {
      type: 'confirm-request';
      stepId: string;
      message: string;
      destructive?: { what: string; expected: string; means?: string };
    })
  | (EventBase & { type: 'confirm-answer'; stepId: string; allowed: boolean; reason?: string })
  | (EventBase & {
      type: 'step-end';
      stepId: string;
      status: StepStatus;
      durationMs: number;
      error?: string;
      reason?: string;
    })
  | (EventBase & { type: 'run-end'; summary: RunSummary });

export type RunEventType = RunEvent['type'];

/** Answers confirm-requests: the TUI asks the operator, headless answers from flags. */
export type ConfirmAnswerer = (request: { stepId: string; message: string; destructive?: { what: string; expected: string; means?: string } }) => Promise<{
    allowed: boolean;
    /** Why it was refused, and what would allow it (e.g. "pass --confirm prod-main"). */
    reason?: string;
  }>

export class UsageError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Thrown by a step to end the run as refused (exit 4) without it counting as a failure. */
export class ConfirmationRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfirmationRefusedError';
  }
}
