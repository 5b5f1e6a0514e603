import type { Procedure } from '../engine/types.js';
import { verifyProcedure } from './verify.js';
import { walArchivingProcedure } from './wal-archiving.js';
import { backupBaseProcedure } from './backup-base.js';
import { backupLogicalProcedure } from './backup-logical.js';
import { retentionProcedure } from './retention.js';
import { logicalRestoreProcedure } from './logical-restore.js';
import { tableRestoreProcedure } from './table-restore.js';
import { pitrProcedure } from './pitr.js';
import { promoteProcedure } from './promote.js';
import { drillProcedure } from './drill.js';
import { restoreTestProcedure } from './restore-test.js';

/** Every procedure the CLI and the TUI offer, in menu order. */
export const procedures: Procedure[] = [verifyProcedure, backupLogicalProcedure, backupBaseProcedure, walArchivingProcedure, retentionProcedure, logicalRestoreProcedure, tableRestoreProcedure, pitrProcedure, promoteProcedure, drillProcedure, restoreTestProcedure];

export function findProcedure(id: string): Procedure | undefined {
  return procedures.find((p) => p.id === id);
}
