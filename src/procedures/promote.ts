// Ending a recovery that pitr left paused at its target: verify the server as it stands,
// then promote it (a new timeline) and clear the recovery target settings.
import type { StepContext } from '../engine/types.js';
import { promoteServer, replayStatus, resetRecoveryTargets } from '../postgres/recovery.js';
import { defineProcedure, type Typed } from './define.js';
import type { Reached } from './pitr.js';
import { verifyConnectStep, verifyDatabasesStep, verifyTablesStep, type VerifyParams, type VerifyState } from './verify.js';

export type PromoteParams = Pick<VerifyParams, 'databases' | 'criticalTables'>;
export type PromoteState = VerifyState & { reached?: Reached };

type Ctx = StepContext<Typed<PromoteParams, PromoteState>>;

export const promoteProcedure = defineProcedure<PromoteParams, PromoteState>({
  id: 'promote',
  title: 'Promote a paused recovery',
  summary: 'End a recovery paused at its target: verify, promote (new timeline), clear the recovery settings.',
  group: 'restore',
  params: [
    { name: 'databases', type: 'list', description: 'databases to verify (default: all)' },
    { name: 'criticalTables', type: 'list', description: 'tables to count, DATABASE:SCHEMA.TABLE[:MIN_ROWS]' },
  ],
  steps: [
    { ...verifyConnectStep, id: 'verify-connect' },
    { ...verifyDatabasesStep, id: 'verify-databases' },
    { ...verifyTablesStep, id: 'verify-tables' },
    {
      id: 'promote',
      title: 'Promote',
      kind: 'action',
      describe: () => 'Ending recovery: the server becomes read-write on a new timeline.',
      async run(ctx) {
        const s = await replayStatus(ctx.services.connection);
        if (!s.inRecovery) throw new Error('the server is not in recovery; there is nothing to promote');
        const ok = await ctx.confirm({ message: `Promote the server paused at ${s.replayLsn}${s.replayTime ? ` (last commit ${s.replayTime})` : ''}?` });
        if (!ok) throw Object.assign(new Error('promotion not confirmed; pass --yes to promote'), { hint: 'pass --yes' });
        await promote(ctx, s.replayLsn);
      },
    },
  ],
});

async function promote(ctx: Ctx, pausedAt: string | undefined): Promise<void> {
  const { currentLsn } = await promoteServer(ctx.services.connection);
  ctx.state.reached = { ...ctx.state.reached, promoted: true, promotedAt: currentLsn };
  if (pausedAt) ctx.progress({ done: 1, total: 1, unit: 'bytes', replay: { lsn: pausedAt, targetLsn: pausedAt, promoted: true } });
  ctx.log(`promoted: the server is read-write at ${currentLsn}`);
  // The recovery target must not linger: a later restart into recovery would stop there again.
  if (ctx.services.pgdata) {
    await resetRecoveryTargets(ctx.services.connection).catch((e: Error) => ctx.log(`could not clear the recovery target settings (${e.message}); remove them from postgresql.auto.conf by hand`, 'warn'));
  }
}
