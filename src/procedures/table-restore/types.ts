// What a table restore is asked (its params) and what its steps share (its journaled state).
import type { StepContext } from '../../engine/types.js';
import type { Column, Leaf } from '../../postgres/tables.js';
import type { ChosenDump } from '../../repo/dump-files.js';
import type { ScratchState } from '../../restore/scratch.js';
import type { Typed } from '../define.js';
import type { WorkFileState } from '../logical-restore/steps-common.js';

export type Mode = 'new-table' | 'replace';

export type TableRestoreParams = {
  database: string;
  /** One table; or --tables, several restored at once (exactly one of them). */
  table?: string;
  tables?: string;
  dump?: string;
  mode?: Mode;
  newTable?: string;
  workDir?: string;
  /** Restore from a scratch cluster recovered to this target (pitr's syntax) instead of a dump. */
  at?: string;
  /** --at: stop just before the target (an xid or time target then excludes that transaction). */
  exclusive?: boolean;
  /** --at: where the scratch cluster is built (default the system temp directory). */
  scratchDir?: string;
};

/** What the preflight decided; every later step works from it. */
export type TableRestorePlan = {
  /** The dump restored from (undefined with --at: the scratch cluster is the source). */
  dump?: ChosenDump;
  /** --at: the recovery target the rows come from. */
  at?: string;
  database: string;
  schema: string;
  table: string;
  mode: Mode;
  /** new-table mode: the table created in production. */
  newTable?: string;
  tempDatabase: string;
  live: { exists: boolean; rows?: number };
  /** dump.json's count for the table, when it has one. */
  dumpRows?: number;
  pgRestore: string;
  psql: string;
  workDir: string;
  encoding: string;
  /** Replace mode: the copy runs with session_replication_role = replica (no trigger fires, foreign keys checked explicitly). */
  replica?: boolean;
  /** dump.json's counts of the table's leaf partitions, when dump.json has none for the partitioned table itself. */
  dumpCounts?: Record<string, number>;
  /** --tables: every table of the set (the first is schema/table above), with its new table in new-table mode. */
  set?: { schema: string; table: string; newTable?: string }[];
};

/** The table as restored into the temporary database. */
export type Restored = {
  rows: number;
  columns: Column[];
  /** A partitioned table: its rows are in these leaf partitions (the dump's). */
  partitioned?: boolean;
  leaves?: Leaf[];
};

export type TableRestoreState = WorkFileState & {
  plan?: TableRestorePlan;
  /** --at: the scratch cluster (journaled, so a resume can tear down what an interrupted attempt left). */
  scratch?: ScratchState;
  /** The temporary database exists: this run created it (and must drop it). */
  tempCreated?: boolean;
  restored?: Restored;
  counts?: { live: number | null; restored: number; dumpJson: number | null };
  copied?: { table: string; rows: number; columns: string[] };
  /** --tables: each table as it was at the target, by SCHEMA.TABLE. */
  restoredSet?: Record<string, Restored>;
  /** --tables: what the copy wrote, per table. */
  copiedSet?: { from: { schema: string; table: string }; into: { schema: string; table: string }; columns: string[] }[];
};

export type TableRestoreContext = StepContext<Typed<TableRestoreParams, TableRestoreState>>;

export function planOf(ctx: Pick<TableRestoreContext, 'state'>): TableRestorePlan {
  const p = ctx.state.plan;
  if (!p) throw new Error('the preflight step has not run in this run; start the table restore again');
  return p;
}

export function modeOf(params: Pick<TableRestoreParams, 'mode'>): Mode {
  return params.mode ?? 'new-table';
}

export function label(schema: string, table: string): string {
  return `${schema}.${table}`;
}

/** Where the rows go: the live table (replace) or the new one. */
export function targetTable(p: TableRestorePlan): { schema: string; table: string } {
  return { schema: p.schema, table: p.mode === 'replace' ? p.table : p.newTable! };
}

/** The text an operator types to allow replacing the rows: DATABASE.SCHEMA.TABLE. */
export function confirmText(p: Pick<TableRestorePlan, 'database' | 'schema' | 'table' | 'set'>): string {
  if (p.set) return `${p.database}.${p.set.map((t) => label(t.schema, t.table)).join(',')}`;
  return `${p.database}.${p.schema}.${p.table}`;
}

/** PGRUNBOOK_FAULT=table-restore:copy makes the copy fail after its first chunk of rows (tests). */
export const FAULT_ENV = 'PGRUNBOOK_FAULT';
export const FAULT_COPY = 'table-restore:copy';

/** Where the restored rows come from, for messages: the dump, or the scratch cluster at the target. */
export function sourceWords(p: Pick<TableRestorePlan, 'dump' | 'at'>): string {
  if (p.at) return `the scratch cluster recovered to ${p.at}`;
  return p.dump ? `the dump of ${p.dump.consistentAt ?? p.dump.id}` : 'the dump';
}

/** The dump of a run restoring from one (not --at). */
export function dumpOf(p: TableRestorePlan): ChosenDump {
  if (!p.dump) throw new Error('this table restore reads from a scratch cluster (--at), not a dump');
  return p.dump;
}
