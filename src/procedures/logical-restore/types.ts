// What a logical restore is asked (its params) and what its steps share (its journaled state).
import type { StepContext } from '../../engine/types.js';
import type { ChosenDump } from '../../repo/dump-files.js';
import type { ScratchState } from '../../restore/scratch.js';
import type { Typed } from '../define.js';
import type { WorkFileState } from './steps-common.js';

export type LogicalRestoreParams = {
  database: string;
  dump?: string;
  newDatabase?: string;
  jobs?: number;
  swap?: boolean;
  workDir?: string;
  /** Restore the database as it was at this moment (pitr's target syntax), from a scratch cluster. */
  at?: string;
  exclusive?: boolean;
  scratchDir?: string;
};

/** What the preflight decided; every later step works from it. */
export type LogicalRestorePlan = {
  /** With --at, a stand-in naming the target (at/scratch-source-dump): the scratch cluster is the source. */
  dump: ChosenDump;
  at?: string;
  newDatabase: string;
  /** The original's name after a swap: <db>_replaced_<stamp>. */
  replacedName: string;
  originalExists: boolean;
  pgRestore: string;
  pgRestoreVersion: string;
  jobs: number;
  workDir: string;
  /** Superuser: owners and privileges restored as dumped; otherwise --no-owner --no-privileges. */
  keepOwners: boolean;
  serverVersionNum: number;
  /** The original database's owner on the server at the checks (undefined when it does not exist). */
  originalOwner?: string;
  /** The user restoring. */
  user: string;
};

export type LogicalRestoreState = WorkFileState & {
  plan?: LogicalRestorePlan;
  /** --at: the scratch cluster, its tables' counts at the target, and whether its dump is made. */
  scratch?: ScratchState;
  scratchCounts?: Record<string, number>;
  scratchDumped?: boolean;
  /** Entries in the dump's table of contents (the restore's progress total). */
  tocEntries?: number;
  /** The owner the dump records for the database. */
  dumpOwner?: string;
  /** The new database exists (this run created it), and pg_restore finished into it. */
  created?: boolean;
  restored?: boolean;
  /** The role the new database was given (undefined: the restoring user). */
  owner?: string;
  countsOk?: boolean;
  connectionStrings?: { form: string; from: string; to: string }[];
  swapOids?: { restored?: string; original?: string };
  swapped?: boolean;
};

export type LogicalRestoreContext = StepContext<Typed<LogicalRestoreParams, LogicalRestoreState>>;

export const MAX_JOBS = 32;

export function planOf(ctx: Pick<LogicalRestoreContext, 'state'>): LogicalRestorePlan {
  const p = ctx.state.plan;
  if (!p) throw new Error('the preflight step has not run in this run; start the restore again');
  return p;
}
