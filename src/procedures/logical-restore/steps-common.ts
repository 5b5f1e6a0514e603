// What logical-restore and table-restore do alike, as parts of their steps: the dump's private
// local copy (downloaded again when a resumed run finds it gone), deleting it, dropping a
// database the run created, the common preflight checks, and a refusal that says how to allow it.
import fsp from 'node:fs/promises';
import type { Params, StepContext } from '../../engine/types.js';
import { ConfirmationRefusedError } from '../../engine/types.js';
import { errorMessage } from '../../engine/runner.js';
import { formatBytes } from '../../engine/format.js';
import { byHand, dropDatabaseForce, maintenanceConnection } from '../../postgres/databases.js';
import { checkFreeSpace, checkWorkDir, downloadDump, freeSpaceMessage, removeWorkDir, type ChosenDump } from '../../repo/dump-files.js';
import type { Typed } from '../define.js';

export interface WorkFile {
  dir: string;
  file: string;
}

/** The state both restores keep about the dump's local copy. */
export type WorkFileState = { workFile?: WorkFile };

/** A step of either restore, as these helpers use it. */
export type RestoreContext = Pick<StepContext<Typed<Params, WorkFileState>>, 'state' | 'services' | 'signal' | 'log' | 'progress'>;

/** The dump's private temporary copy, downloaded again when missing (a resumed run, another host). */
export async function ensureDumpFile(ctx: RestoreContext, chosen: ChosenDump, workDir: string, opts: { progress?: boolean } = {}): Promise<WorkFile> {
  const existing = ctx.state.workFile;
  if (existing) {
    try {
      const st = await fsp.stat(existing.file);
      const expected = chosen.archiveSize ?? chosen.size;
      if (expected === undefined || st.size === expected) return existing;
    } catch {
      /* gone: download again */
    }
    await removeWorkDir(existing.dir).catch(() => {});
    delete ctx.state.workFile;
  }
  const got = await downloadDump(ctx.services.repo, ctx.services.env, chosen, workDir, {
    signal: ctx.signal,
    onStart: (message) => ctx.log(message),
    // Only the download step reports bytes: a step that downloads again (a resumed run) reports its own unit.
    onBytes: opts.progress ? (n) => ctx.progress({ done: n, total: chosen.size, unit: 'bytes' }) : undefined,
  });
  if (opts.progress) ctx.progress({ done: got.bytes, total: got.bytes, unit: 'bytes' });
  const wf = { dir: got.dir, file: got.file };
  ctx.state.workFile = wf;
  return wf;
}

/** Delete the dump's temporary copy (journaled state forgets it). Never throws. */
export async function dropWorkFile(ctx: RestoreContext): Promise<void> {
  const wf = ctx.state.workFile;
  if (!wf) return;
  try {
    await removeWorkDir(wf.dir);
    delete ctx.state.workFile;
  } catch (err) {
    ctx.log(`could not delete the temporary copy of the dump in ${wf.dir}: ${errorMessage(err)}; delete it by hand`, 'warn');
  }
}

/** Drop a database this run created, saying so; on failure say how to drop it by hand. Never throws. */
export async function dropOurDatabase(ctx: RestoreContext, name: string, why: string): Promise<boolean> {
  try {
    await dropDatabaseForce(await maintenanceConnection(ctx.services.connection, [name]), name);
    ctx.log(`dropped database ${name} (${why})`);
    return true;
  } catch (err) {
    ctx.log(`could not drop database ${name} (${why}): ${errorMessage(err)}. Drop it by hand: ${byHand.dropDatabase(name)}`, 'error');
    return false;
  }
}

/** Checks recorded as they are made; the problems among them refuse the run before anything is created. */
export class Preflight {
  readonly problems: string[] = [];
  constructor(private readonly ctx: Pick<StepContext, 'check'>) {}

  pass(name: string, detail: string): void {
    this.ctx.check(name, true, detail);
  }

  fail(name: string, message: string): void {
    this.ctx.check(name, false, message);
    this.problems.push(message);
  }

  /** `fn`'s result, or undefined with its error recorded as a failed check. */
  async attempt<T>(name: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      this.fail(name, errorMessage(err));
      return undefined;
    }
  }

  /** Throws "<prefix>: <every problem>. <after>" when a check failed. */
  refuseIfAny(prefix: string, after: string): void {
    if (this.problems.length) throw new Error(`${prefix}: ${this.problems.join('; ')}. ${after}`);
  }
}

/** The work directory can be written to and has room for the dump. */
export async function checkWorkDirectory(pf: Preflight, workDir: string, chosen: ChosenDump | undefined): Promise<void> {
  const bad = await checkWorkDir(workDir);
  if (bad) return pf.fail('work directory', bad);
  if (!chosen) return;
  const local = chosen.archiveSize ?? chosen.size ?? 0;
  const space = await checkFreeSpace(workDir, local);
  if (!space.ok) pf.fail('work directory', freeSpaceMessage(space, `the dump (${formatBytes(local)} once decompressed)`));
  else pf.pass('work directory', `${workDir}: ${formatBytes(space.free)} free, the dump's local copy takes ${formatBytes(local)}`);
}

/** A refusal (exit 4) whose hint says how to allow it. */
export function refusal(message: string, hint: string): ConfirmationRefusedError {
  return Object.assign(new ConfirmationRefusedError(message), { hint });
}

/** An interrupted confirmation is an interruption, not a refusal. */
export function throwIfInterrupted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason ?? new Error('interrupted');
}
