// The logical restore's checks, all before anything is created: the dump, the server and the
// user's rights, the new database's name, pg_restore, room for the dump's copy; and the swap's
// typed confirmation, asked now so that a swap that will be refused leaves nothing behind.
import os from 'node:os';
import { shellQuote } from '../../engine/runner.js';
import { describeConnection } from '../../config/connection.js';
import { byHand, serverAndRole } from '../../postgres/databases.js';
import { findPgClientFor } from '../../postgres/programs/pg_dump.js';
import { findPgRestore } from '../../postgres/programs/pg_restore.js';
import { chooseDump, describeDump, withRepository } from '../../repo/dump-files.js';
import { planLogicalScratch, scratchSourceDump } from './at.js';
import { fitName, nameStamp } from './names.js';
import { Preflight, checkWorkDirectory, refusal, throwIfInterrupted } from './steps-common.js';
import type { LogicalRestoreContext, LogicalRestoreParams, LogicalRestorePlan } from './types.js';

export function workDirParam(params: Pick<LogicalRestoreParams, 'workDir'>): string {
  return params.workDir ?? os.tmpdir();
}

export function newDatabaseParam(params: Pick<LogicalRestoreParams, 'database' | 'newDatabase'>): string {
  return params.newDatabase ?? `${params.database}_restored_<YYYYMMDDHHMM>`;
}

/** The swap in an operator's words, before the preflight (names to come) and after it (names decided). */
export function swapWhat(ctx: Pick<LogicalRestoreContext, 'params' | 'state'>): string {
  const p = ctx.state.plan;
  const orig = ctx.params.database;
  const restored = p?.newDatabase ?? ctx.params.newDatabase ?? `${orig}_restored_<stamp>`;
  const replaced = p?.replacedName ?? `${orig}_replaced_<stamp>`;
  if (p && !p.originalExists) return `rename database ${restored} to ${orig} (${orig} does not exist any more)`;
  return `rename database ${orig} to ${replaced} and ${restored} to ${orig} (connections to ${orig} are terminated)`;
}

export async function preflight(ctx: LogicalRestoreContext): Promise<void> {
  const { database } = ctx.params;
  const pf = new Preflight(ctx);

  // pg_restore's place and version, looked up (and cached) while the repository and the server answer.
  const warm = findPgClientFor('pg_restore', 0).catch(() => {});
  const conn = ctx.services.connection;
  // The server is asked while the repository answers; its checks are reported after the dump's.
  const serverRead = serverAndRole(conn);
  serverRead.catch(() => {});
  const at = ctx.params.at;
  const chosen = at
    ? scratchSourceDump(database, at)
    : await withRepository(ctx.services.repo, ctx.services.env, (repo) =>
        pf.attempt('dump', async () => {
          const { chosen } = await chooseDump(repo, database, ctx.params.dump);
          pf.pass('dump', `${describeDump(chosen)} in ${repo.describe()}`);
          return chosen;
        }),
      );

  const stamp = nameStamp();
  const newDatabase = ctx.params.newDatabase ?? fitName(database, `_restored_${stamp}`);
  const replacedName = fitName(database, `_replaced_${stamp}`);
  const server = await pf.attempt('server reachable', () => serverRead);
  if (server) {
    pf.pass('server reachable', `${describeConnection(conn)}, PostgreSQL ${server.version}`);
    if (server.databases.has(newDatabase)) {
      pf.fail(
        'new database name free',
        `database "${newDatabase}" already exists on ${describeConnection(conn)}: pgrunbook never restores over a database. ` +
          `Choose another name with --new-database NAME, or drop "${newDatabase}" yourself if it is not needed`,
      );
    } else {
      pf.pass('new database name free', newDatabase);
    }
    if (!server.superuser && !server.createdb) {
      pf.fail('may create databases', `user "${server.user}" may not create databases (needs CREATEDB or superuser): ${byHand.allowCreatedb(server.user)}, or connect as another user`);
    }
    const originalExists = server.databases.has(database);
    const originalOwner = server.databases.get(database);
    if (ctx.params.swap) {
      if (originalExists && server.databases.has(replacedName)) {
        pf.fail('swap possible', `database "${replacedName}" already exists, so the original cannot be kept under that name; run the swap again in a minute`);
      } else if (originalExists && !server.superuser && originalOwner !== server.user) {
        pf.fail('swap possible', `user "${server.user}" may not rename database "${database}" (owned by "${originalOwner}"): connect as its owner or a superuser, or leave out --swap`);
      } else {
        pf.pass('swap possible', originalExists ? `${database} -> ${replacedName}, ${newDatabase} -> ${database}` : `${database} does not exist: ${newDatabase} will just be renamed to ${database}`);
      }
    }
    if (!originalExists) ctx.log(`database ${database} does not exist on this server any more: the new database gets the server's default encoding and locale`, 'warn');

    await warm;
    const pgRestore = await pf.attempt('pg_restore', () => findPgRestore(server.versionNum, chosen?.pgDumpVersion));
    if (pgRestore) pf.pass('pg_restore', `${pgRestore.path} ${pgRestore.version}${chosen?.pgDumpVersion ? ` (dump made by pg_dump ${chosen.pgDumpVersion})` : ''}`);

    const workDir = workDirParam(ctx.params);
    if (!at) await checkWorkDirectory(pf, workDir, chosen);
    // --at: the recovery plan (backup and WAL read with their checksums) and room for the scratch cluster, last.
    if (at && !pf.problems.length) {
      const scratch = await pf.attempt('scratch recovery', () => planLogicalScratch(ctx, at));
      if (scratch) ctx.state.scratch = scratch;
    }

    if (!pf.problems.length && chosen && pgRestore) {
      const p: LogicalRestorePlan = {
        dump: chosen,
        at,
        newDatabase,
        replacedName,
        originalExists,
        pgRestore: pgRestore.path,
        pgRestoreVersion: pgRestore.version,
        jobs: ctx.params.jobs ?? 2,
        workDir,
        keepOwners: server.superuser,
        serverVersionNum: server.versionNum,
        originalOwner,
        user: server.user,
      };
      ctx.state.plan = p;
      if (!p.keepOwners) ctx.log(`user "${server.user}" is not a superuser: objects are restored owned by "${server.user}" (pg_restore --no-owner --no-privileges)`, 'warn');
    }
  }
  pf.refuseIfAny('cannot restore', 'Nothing was created');

  if (ctx.params.swap) await confirmSwapUpFront(ctx);
}

/** The swap's typed confirmation, asked before anything is created; the swap step asks again right before renaming. */
async function confirmSwapUpFront(ctx: LogicalRestoreContext): Promise<void> {
  const what = swapWhat(ctx);
  const expected = ctx.params.database;
  const allowed = await ctx.confirm({ message: `After the restore and its checks: ${what}. Type "${expected}" to continue.`, destructive: { what, expected } });
  if (allowed) return;
  throwIfInterrupted(ctx.signal);
  delete ctx.state.plan;
  throw refusal(
    `not confirmed: ${what} (--swap); to allow it pass --confirm ${shellQuote(expected)}, or leave out --swap. Nothing was created`,
    `to allow it, run the restore again with --confirm ${shellQuote(expected)}, or without --swap`,
  );
}
