// The built-in procedures, by id in menu order, each loaded only when asked for: a headless
// `--procedure backup-base` loads backup-base's ~50 modules, not every procedure's ~150 (about
// 0.1 s of start-up here, bench/README.md). The ids are checked against the procedures
// themselves by test/procedure-catalog.test.ts.
import type { Procedure } from '../engine/types.js';

const BUILT_IN: readonly { id: string; load: () => Promise<Procedure> }[] = [
  { id: 'verify', load: async () => (await import('./verify.js')).verifyProcedure },
  { id: 'backup-logical', load: async () => (await import('./backup-logical.js')).backupLogicalProcedure },
  { id: 'backup-base', load: async () => (await import('./backup-base.js')).backupBaseProcedure },
  { id: 'wal-archiving', load: async () => (await import('./wal-archiving.js')).walArchivingProcedure },
  { id: 'retention', load: async () => (await import('./retention.js')).retentionProcedure },
  { id: 'logical-restore', load: async () => (await import('./logical-restore.js')).logicalRestoreProcedure },
  { id: 'table-restore', load: async () => (await import('./table-restore.js')).tableRestoreProcedure },
  { id: 'pitr', load: async () => (await import('./pitr.js')).pitrProcedure },
  { id: 'promote', load: async () => (await import('./promote.js')).promoteProcedure },
  { id: 'drill', load: async () => (await import('./drill.js')).drillProcedure },
  { id: 'restore-test', load: async () => (await import('./restore-test.js')).restoreTestProcedure },
];

/** The built-in procedures' ids, in menu order. */
export const builtInProcedureIds: readonly string[] = BUILT_IN.map((b) => b.id);

/** One built-in procedure, loaded with what it imports; undefined for an unknown id. */
export async function loadBuiltInProcedure(id: string): Promise<Procedure | undefined> {
  return BUILT_IN.find((b) => b.id === id)?.load();
}

/** Every built-in procedure (the TUI, --list, --help), in menu order. */
export function loadBuiltInProcedures(): Promise<Procedure[]> {
  return Promise.all(BUILT_IN.map((b) => b.load()));
}
