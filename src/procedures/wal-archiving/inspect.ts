// Step "inspect": read what stands between this server and archiving into the repository, refuse
// what this procedure cannot fix (a standby, the wrong --pgdata, missing privileges, no way to
// restart), and record the proposal the later steps apply. Only reads.
import fsp from 'node:fs/promises';
import { shellQuote } from '../../engine/runner.js';
import { readArchiver } from '../../postgres/archiver.js';
import { describeEndpoint, withPg } from '../../postgres/client.js';
import { describeRestart, postmasterPort, serverControlProblem } from '../../postgres/server-control.js';
import { missingAlterSystemGrants, missingFunctionGrants, readFileSettings, readServerInfo, readSettings } from '../../postgres/settings.js';
import { confirmName, controlSpec, desiredOf, localDataDir, planEnvFile, planSpool, registerRepoSecrets, targetFingerprint } from './context.js';
import { archiverFindings, isSettingName, proposeChanges, READ_SETTINGS, settingFindings } from './plan.js';
import type { Finding, Inspection, LiveSetting, SettingName, WalCtx } from './types.js';

async function readInspection(ctx: WalCtx): Promise<Inspection> {
  const conn = ctx.services.connection;
  return withPg(conn, async (c) => {
    const info = await readServerInfo(c);
    const live: Partial<Record<SettingName, LiveSetting>> = {};
    let clusterName = '';
    for (const r of await readSettings(c, READ_SETTINGS)) {
      if (r.name === 'cluster_name') clusterName = r.setting;
      else if (isSettingName(r.name)) live[r.name] = { setting: r.setting, configured: r.resetVal, pendingRestart: r.pendingRestart };
    }
    if (info.superuser) {
      for (const [name, value] of Object.entries(await readFileSettings(c, READ_SETTINGS))) {
        const s = isSettingName(name) ? live[name] : undefined;
        if (s) s.fileValue = value;
      }
    }
    return {
      endpoint: describeEndpoint(conn),
      version: info.version,
      versionNum: info.versionNum,
      superuser: info.superuser,
      inRecovery: info.inRecovery,
      clusterName,
      port: info.port,
      serverDataDirectory: info.dataDirectory,
      currentLogfile: info.currentLogfile,
      postmasterStart: info.postmasterStart,
      live,
      archiver: await readArchiver(c),
      missingPrivileges: info.superuser ? [] : await missingFunctionGrants(c),
    };
  });
}

/** Read the server, record the proposal in the state, and say what was found. Throws what stops the procedure. */
export async function inspect(ctx: WalCtx): Promise<Finding[]> {
  const svc = ctx.services;
  if (!svc.repo) {
    // Bad usage (exit 2): nothing was tried.
    throw Object.assign(
      new Error('no backup repository: pass --repo URL (file:///var/backups/pg/main, s3://bucket/prefix, azure://container/prefix), set PGRUNBOOK_REPO, or save one in the profile'),
      { procedureExitCode: 2 },
    );
  }
  registerRepoSecrets(ctx);

  const insp = await readInspection(ctx);
  ctx.state.inspection = insp;
  ctx.state.target = targetFingerprint(ctx, insp.serverDataDirectory);
  const out: Finding[] = [];
  out.push({ text: `PostgreSQL ${insp.version} at ${insp.endpoint}${insp.clusterName ? `, cluster_name "${insp.clusterName}"` : ''}${insp.serverDataDirectory ? `, data directory ${insp.serverDataDirectory}` : ''}` });

  if (insp.inRecovery) {
    throw new Error(
      `the server at ${insp.endpoint} is in recovery (a standby): it cannot switch WAL segments, and with archive_mode=on a standby does not archive. Run this procedure against the primary.`,
    );
  }

  // --pgdata must be this server's data directory: a pg_ctl restart acts on it.
  const dataDir = localDataDir(ctx);
  if (dataDir) {
    const mismatch = await dataDirMismatch(dataDir, insp);
    if (mismatch) throw new Error(mismatch);
  }

  ctx.state.envFile = planEnvFile(ctx, insp);
  ctx.state.spool = planSpool(ctx, insp);
  const changes = proposeChanges(desiredOf(ctx), insp);
  const restartNeeded = changes.some((c) => c.restart);
  ctx.state.proposal = { changes, restartNeeded };
  out.push(...settingFindings(insp, changes), ...archiverFindings(insp.archiver));

  await refuseMissingPrivileges(ctx, insp, changes.map((c) => c.name));

  if (!changes.length) out.push({ text: 'the archiving settings are right; nothing to change (the last step still proves a segment arrives)' });
  else if (restartNeeded) {
    const spec = controlSpec(ctx);
    const problem = serverControlProblem(spec);
    if (problem) {
      throw new Error(
        `${changes.filter((c) => c.restart).map((c) => c.name).join(' and ')} must change, which needs a restart, but ${problem}` +
          (insp.serverDataDirectory && spec.method === 'pg_ctl' ? ` (the server reports data_directory = ${insp.serverDataDirectory})` : ''),
      );
    }
    out.push({ text: `a restart is needed (${describeRestart(spec)}); it is asked for with a typed confirmation (--confirm ${shellQuote(confirmName(ctx))}) before anything is changed`, level: 'warn' });
  }
  return out;
}

/** A non-superuser must be allowed ALTER SYSTEM on what changes, pg_switch_wal() and pg_reload_conf(). */
async function refuseMissingPrivileges(ctx: WalCtx, insp: Inspection, changing: SettingName[]): Promise<void> {
  const user = ctx.services.connection.user ?? '';
  if (changing.length && !insp.superuser) {
    const grants =
      insp.versionNum < 150000 ? ['ALTER SYSTEM needs a superuser before PostgreSQL 15'] : await missingAlterSystemGrants(ctx.services.connection, changing, user);
    if (grants.length) {
      throw new Error(`user "${user}" may not change these settings with ALTER SYSTEM. Connect as a superuser (--user postgres), or have one run: ${grants.join('; ')}`);
    }
  }
  if (insp.missingPrivileges.length) {
    throw new Error(`user "${user}" lacks privileges this procedure needs; connect as a superuser (--user postgres), or have one run: ${insp.missingPrivileges.join('; ')}`);
  }
}

async function dataDirMismatch(dataDir: string, insp: Inspection): Promise<string | undefined> {
  let real: string;
  try {
    real = await fsp.realpath(dataDir);
  } catch (e) {
    return `data directory ${dataDir} (--pgdata / PGDATA / profile) is not accessible here: ${(e as Error).message}. Pass the server's data directory${insp.serverDataDirectory ? ` (it reports ${insp.serverDataDirectory})` : ''}.`;
  }
  if (insp.serverDataDirectory) {
    const reported = insp.serverDataDirectory;
    const theirs = await fsp.realpath(reported).catch(() => reported);
    if (theirs !== real) {
      return `--pgdata ${dataDir} is not the data directory of the server at ${insp.endpoint}, which reports ${reported}. Pass the right --pgdata: a restart would act on the wrong cluster.`;
    }
    return undefined;
  }
  // Not allowed to read data_directory: compare the port in postmaster.pid instead. No
  // postmaster.pid: no server runs there, or we may not read it; pg_ctl will say so if it matters.
  const port = await postmasterPort(real);
  if (port !== undefined && port !== insp.port) {
    return `the server running on --pgdata ${dataDir} listens on port ${port}, but the server at ${insp.endpoint} on port ${insp.port}: pass the right --pgdata or --port.`;
  }
  return undefined;
}
