// Steps "apply" and "apply-restart": ALTER SYSTEM the proposal, reload, and (for wal_level or
// archive_mode) restart. Until the server went down everything written can be rolled back:
// the settings, the env file.
import type pg from 'pg';
import { withPg } from '../../postgres/client.js';
import { describeRestart, describeStart, restartServer, serverControlProblem, waitForConnections } from '../../postgres/server-control.js';
import {
  alterSystemReset,
  alterSystemResetText,
  alterSystemSet,
  alterSystemText,
  configFileErrors,
  postmasterStartTime,
  readAutoConf,
  readPostmasterStart,
  readSettings,
  reloadConf,
} from '../../postgres/settings.js';
import { assertSameTarget, controlSpec, desiredOf, proposalOf } from './context.js';
import { desiredValue, liveIsDesired, reloadedValueIs, shownValue, type Desired } from './plan.js';
import { createRepositoryDir, createSpoolDir, writeEnvFile } from './repository.js';
import type { Change, WalCtx } from './types.js';

/** postgresql.auto.conf's values before the change (undefined: not readable, roll back with RESET). */
type Prior = Record<string, string | null> | undefined;

/** What was written, and how to take it all back while the server still runs with its old settings. */
type Applied = {
  /** pg_postmaster_start_time() before: a restart changes it. */
  postmasterStart: string;
  undo(): Promise<void>;
};

/** Step "apply": write the settings and reload; no restart needed. */
export async function applyWithReload(ctx: WalCtx): Promise<void> {
  const changes = proposalOf(ctx).changes;
  const undoFiles = await prepareFiles(ctx);
  if (!changes.length) return;
  await writeSettings(ctx, changes, undoFiles);
  ctx.log(`applied: ${changes.map((c) => `${c.name} = ${c.to}`).join(', ')} (reloaded, no restart needed)`);
}

/** Step "apply-restart": write the settings, reload, restart, and check the new values are live. */
export async function applyAndRestart(ctx: WalCtx): Promise<void> {
  const problem = serverControlProblem(controlSpec(ctx));
  if (problem) throw new Error(`cannot restart: ${problem}`);
  const changes = proposalOf(ctx).changes;
  const undoFiles = await prepareFiles(ctx);
  const applied = await writeSettings(ctx, changes, undoFiles);
  const startedAt = await restart(ctx, changes, applied);
  ctx.log(`PostgreSQL restarted (up since ${startedAt})`);
  await checkLive(ctx, changes);
  ctx.log(`live now: ${changes.map((c) => `${c.name} = ${c.to}`).join(', ')}`);
}

/** After every confirmation, on the target inspected: the repository directory and the env file. Returns how to undo the env file. */
async function prepareFiles(ctx: WalCtx): Promise<() => Promise<void>> {
  await assertSameTarget(ctx);
  await createRepositoryDir(ctx);
  await createSpoolDir(ctx);
  return writeEnvFile(ctx);
}

/** ALTER SYSTEM each change, reload, and wait until the server shows them; on failure roll back the settings and the env file. */
async function writeSettings(ctx: WalCtx, changes: Change[], undoFiles: () => Promise<void>): Promise<Applied> {
  const conn = ctx.services.connection;
  const d = desiredOf(ctx);
  return withPg(conn, async (c) => {
    const postmasterStart = await readPostmasterStart(c);
    let prior: Prior;
    try {
      prior = await alterSystem(ctx, c, d, changes);
    } catch (err) {
      await undoFiles();
      throw err;
    }
    try {
      await waitForSettings(c, ctx, d, changes);
    } catch (err) {
      await rollBack(ctx, c, changes, prior);
      await undoFiles();
      throw new Error(`${(err as Error).message}; the settings were rolled back, nothing was changed`);
    }
    return {
      postmasterStart,
      undo: async () => {
        await withPg(conn, (c2) => rollBack(ctx, c2, changes, prior)).catch(() => undefined);
        await undoFiles();
      },
    };
  });
}

/** ALTER SYSTEM each change and reload. Returns the previous postgresql.auto.conf values; rolls back what it wrote if one fails. */
async function alterSystem(ctx: WalCtx, c: pg.Client, d: Desired, changes: Change[]): Promise<Prior> {
  const prior = await readAutoConf(
    c,
    changes.map((ch) => ch.name),
  );
  const done: Change[] = [];
  try {
    for (const ch of changes) {
      ctx.signal.throwIfAborted();
      await alterSystemSet(c, ch.name, desiredValue(d, ch.name));
      done.push(ch);
      ctx.log(alterSystemText(ch.name, desiredValue(d, ch.name)));
    }
    await reloadConf(c);
  } catch (err) {
    await rollBack(ctx, c, done, prior);
    throw new Error(`ALTER SYSTEM failed: ${(err as Error).message}; what was written has been rolled back, nothing was changed`);
  }
  return prior;
}

async function rollBack(ctx: WalCtx, c: pg.Client, changes: Change[], prior: Prior): Promise<void> {
  for (const ch of changes) {
    const before = prior?.[ch.name];
    try {
      if (before === undefined || before === null) await alterSystemReset(c, ch.name);
      else await alterSystemSet(c, ch.name, before);
      ctx.log(`rolled back: ${before === undefined || before === null ? alterSystemResetText(ch.name) : alterSystemText(ch.name, before)}`, 'warn');
    } catch (err) {
      ctx.log(`could not roll back ${ch.name} (${(err as Error).message}); remove its line from postgresql.auto.conf by hand`, 'error');
    }
  }
  await reloadConf(c).catch(() => undefined);
}

/**
 * After pg_reload_conf(): wait until settings that need no restart show their new value and
 * those that do show pending_restart (the reload reaches backends asynchronously).
 */
async function waitForSettings(c: pg.Client, ctx: WalCtx, d: Desired, changes: Change[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = await readSettings(
      c,
      changes.map((ch) => ch.name),
    );
    const waiting = changes.filter((ch) => {
      const row = rows.find((r) => r.name === ch.name);
      if (!row) return true;
      if (ch.restart) return !row.pendingRestart;
      return !reloadedValueIs(d, ch.name, shownValue({ setting: row.setting, configured: row.resetVal }));
    });
    if (!waiting.length) {
      const pending = changes.filter((ch) => ch.restart).map((ch) => ch.name);
      if (pending.length) ctx.log(`after the reload PostgreSQL reports pending_restart for ${pending.join(' and ')}: a restart is needed for ${pending.length > 1 ? 'them' : 'it'} to take effect`, 'warn');
      return;
    }
    if (Date.now() > deadline) {
      const errors = await configFileErrors(c);
      throw new Error(
        `the server did not take ${waiting.map((w) => w.name).join(', ')} within ${timeoutMs / 1000} s after pg_reload_conf()` +
          (errors.length ? ` (configuration errors: ${errors.join('; ')})` : ''),
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Restart the server and wait for it; returns its new start time. A restart that never began rolls everything back. */
async function restart(ctx: WalCtx, changes: Change[], applied: Applied): Promise<string | undefined> {
  const conn = ctx.services.connection;
  const spec = controlSpec(ctx);
  const names = changes.map((c) => c.name).join(', ');
  const rollBackNow = async (why: string): Promise<never> => {
    await applied.undo();
    throw new Error(`${why}. PostgreSQL kept running with its old settings; the new ones were rolled back, so nothing changed. Fix the cause and run this procedure again.`);
  };

  ctx.log(`restarting PostgreSQL: ${describeRestart(spec)}`, 'warn');
  // No abort signal: stopping pg_ctl or systemctl half-way can leave the server down.
  let restartError: Error | undefined;
  try {
    const r = await restartServer(spec, { mode: 'fast' });
    if (r.logFile) ctx.log(`the server writes its log to ${r.logFile}`);
  } catch (err) {
    restartError = err as Error;
  }

  const up = await waitForConnections(conn, restartError ? 5_000 : 120_000);
  const after = up ? await postmasterStartTime(conn) : undefined;
  if (restartError) {
    if (after === applied.postmasterStart) await rollBackNow(`the restart failed before the server stopped: ${restartError.message}`);
    if (!after) {
      throw new Error(
        `${restartError.message}\nPostgreSQL does not accept connections after the failed restart. The new settings are in postgresql.auto.conf ` +
          `(${names}). Find the cause in the server log, then start it: ${describeStart(spec)}. ` +
          `To start with the old settings instead, remove those lines from ${spec.pgdata ?? 'DATADIR'}/postgresql.auto.conf first.`,
      );
    }
    ctx.log(`the restart reported an error, but the server is back (started ${after}): ${restartError.message}`, 'warn');
  } else if (!up) {
    throw new Error(
      `PostgreSQL did not accept connections within 120 s after the restart (${describeRestart(spec)}). Check the server log and its status; ` +
        `start it with: ${describeStart(spec)}. The new settings are in postgresql.auto.conf (${names}).`,
    );
  } else if (after === applied.postmasterStart) {
    await rollBackNow(`the restart command succeeded but the server was not restarted (pg_postmaster_start_time is still ${applied.postmasterStart}); check the profile's server control`);
  }
  return after;
}

/** After the restart every change must be live, with nothing pending. */
async function checkLive(ctx: WalCtx, changes: Change[]): Promise<void> {
  const d = desiredOf(ctx);
  const rows = await withPg(ctx.services.connection, (c) =>
    readSettings(
      c,
      changes.map((ch) => ch.name),
    ),
  );
  const notLive = changes.filter((ch) => {
    const row = rows.find((r) => r.name === ch.name);
    return !row || row.pendingRestart || (ch.restart && !liveIsDesired(d, ch.name, row.setting));
  });
  if (notLive.length) {
    throw new Error(
      `after the restart ${notLive.map((c) => c.name).join(', ')} still do not have the new values: another configuration source overrides them (see the pg_file_settings view), or the server was started with -c options`,
    );
  }
}
