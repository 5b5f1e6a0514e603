// Every run appends JSON lines to <state dir>/runs/<run id>.jsonl: who, when, where, what,
// each step's start and end (with the shared state, so --resume can continue), the
// confirmations given, and the outcome. Records are masked by the caller before writing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import type { Params, RunContext, RunSummary, StepStatus } from './types.js';

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PGRUNBOOK_STATE_DIR) return path.resolve(env.PGRUNBOOK_STATE_DIR);
  const base = env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'pgrunbook');
}

export function newRunId(procedureId: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${procedureId}-${stamp}-${crypto.randomBytes(3).toString('hex')}`;
}

export function journalPathFor(stateDir: string, runId: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(runId)) throw new Error(`not a run id: ${runId}`);
  return path.join(stateDir, 'runs', `${runId}.jsonl`);
}

export type JournalRecord =
  | {
      rec: 'run-start';
      time: string;
      runId: string;
      procedure: string;
      params: Params;
      who: string;
      host: string;
      pid: number;
      /** Connection (no password), data directory, repository (no credentials), profile, answers. */
      context?: RunContext;
    }
  | { rec: 'resume'; time: string; runId: string; who: string; host: string; pid: number; fromStep?: string }
  | { rec: 'step-start'; time: string; stepId: string }
  | { rec: 'log'; time: string; stepId: string; level: string; message: string }
  | { rec: 'check'; time: string; stepId: string; name: string; ok: boolean; detail?: string }
  | { rec: 'confirm'; time: string; stepId: string; message: string; expected?: string; allowed: boolean; reason?: string }
  | {
      rec: 'step-end';
      time: string;
      stepId: string;
      status: StepStatus;
      durationMs: number;
      error?: string;
      state: Record<string, unknown>;
    }
  | { rec: 'run-end'; time: string; summary: RunSummary };

export class Journal {
  private fd: number;
  private closed = false;

  constructor(readonly path: string) {
    fs.mkdirSync(dirnameOf(path), { recursive: true, mode: 0o700 });
    this.fd = fs.openSync(path, 'a', 0o600);
  }

  append(record: JournalRecord): void {
    // A step left running after the run ended must not write through a reused descriptor.
    if (this.closed) return;
    fs.writeSync(this.fd, `${JSON.stringify(record)}\n`);
    // Step boundaries are what --resume relies on after a crash: make them durable.
    if (record.rec === 'step-end' || record.rec === 'run-end' || record.rec === 'confirm') fs.fsyncSync(this.fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

function dirnameOf(p: string): string {
  return path.dirname(p);
}

export function whoAmI(): string {
  try {
    return os.userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}

export function readJournal(file: string): JournalRecord[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: JournalRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as JournalRecord);
    } catch {
      // A crash can leave a torn last line; everything before it is still good.
    }
  }
  return out;
}

export interface ResumePoint {
  runId: string;
  journalPath: string;
  procedure: string;
  params: Params;
  state: Record<string, unknown>;
  completedSteps: string[];
  lastStatus?: RunSummary['status'];
  /** Absent in journals written before the context was recorded. */
  context?: RunContext;
}

/** What an earlier run finished, from its journal. Throws with an operator message when it cannot resume. */
export function readResumePoint(stateDir: string, runId: string): ResumePoint {
  let file: string;
  try {
    file = journalPathFor(stateDir, runId);
  } catch {
    throw new Error(`"${runId}" is not a run id. Run ids look like verify-20261124T155617Z-a1b2c3; list them with: ls ${path.join(stateDir, 'runs')}`);
  }
  if (!fs.existsSync(file)) {
    throw new Error(`no journal for run ${runId} in ${path.dirname(file)}. Check the run id, or set PGRUNBOOK_STATE_DIR to the state directory the run used.`);
  }
  const records = readJournal(file);
  const start = records.find((r) => r.rec === 'run-start');
  if (start?.rec !== 'run-start') throw new Error(`journal ${file} has no run-start record; it cannot be resumed`);
  const completed = new Set<string>();
  let state: Record<string, unknown> = {};
  let lastStatus: RunSummary['status'] | undefined;
  // Steps that ran after a failed one in the same attempt (checks still run after a failed
  // verification) checked a state that the resume will change: they run again.
  let failedInAttempt = false;
  for (const r of records) {
    if (r.rec === 'step-end') {
      state = r.state ?? state;
      if ((r.status === 'ok' || r.status === 'skipped') && !failedInAttempt) completed.add(r.stepId);
      if (r.status === 'failed' || r.status === 'interrupted') failedInAttempt = true;
    }
    if (r.rec === 'run-end') lastStatus = r.summary.status;
    if (r.rec === 'resume' || r.rec === 'run-start') {
      lastStatus = undefined;
      failedInAttempt = false;
    }
  }
  return {
    runId,
    journalPath: file,
    procedure: start.procedure,
    params: start.params,
    state,
    completedSteps: [...completed],
    lastStatus,
    context: start.context,
  };
}

export interface UnfinishedRun {
  runId: string;
  procedure: string;
  /** When the run (or its last resume) started. */
  startedAt: string;
  /** How the last attempt ended; undefined: it never recorded an end (killed). */
  lastStatus?: RunSummary['status'];
  /** The profile the run used, from its journal. */
  profile?: string;
  /** Steps done, of those the journal saw start. */
  completedSteps: number;
}

/**
 * The runs in `stateDir` started on `host` that did not finish successfully (failed,
 * interrupted, or never ended), newest first: what `r` on the app's Home offers to resume.
 */
export function listUnfinishedRuns(stateDir: string, host: string): UnfinishedRun[] {
  const dir = path.join(stateDir, 'runs');
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl'));
  } catch {
    return [];
  }
  const out: UnfinishedRun[] = [];
  for (const f of files) {
    let records: JournalRecord[];
    try {
      records = readJournal(path.join(dir, f));
    } catch {
      continue;
    }
    const start = records.find((r) => r.rec === 'run-start');
    if (start?.rec !== 'run-start' || start.host !== host) continue;
    let point: ResumePoint;
    try {
      point = readResumePoint(stateDir, start.runId);
    } catch {
      continue;
    }
    if (point.lastStatus === 'ok') continue;
    const lastStart = records.filter((r) => r.rec === 'resume' || r.rec === 'run-start').at(-1);
    out.push({
      runId: start.runId,
      procedure: start.procedure,
      startedAt: lastStart?.time ?? start.time,
      lastStatus: point.lastStatus,
      profile: start.context?.profile,
      completedSteps: point.completedSteps.length,
    });
  }
  return out.sort((a, b) => b.startedAt.localeCompare(a.startedAt));
}
