// Built-in procedures plus, optionally, a site's own from a module named by
// PGRUNBOOK_PROCEDURES_MODULE (it exports `procedures: Procedure[]`). Tests use it to run
// small procedures through the real CLI.
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Procedure } from '../engine/types.js';
import { builtInProcedureIds, loadBuiltInProcedure, loadBuiltInProcedures } from './index.js';

/** Every procedure, in menu order: the built-in ones, then the site's. */
export async function loadProcedures(env: NodeJS.ProcessEnv = process.env): Promise<Procedure[]> {
  const builtIn = await loadBuiltInProcedures();
  const site = await loadSiteProcedures(env);
  return [...builtIn, ...site];
}

/** The procedure with this id, loading only it when it is a built-in one; undefined when none has it. */
export async function loadProcedure(id: string, env: NodeJS.ProcessEnv = process.env): Promise<Procedure | undefined> {
  const site = await loadSiteProcedures(env);
  return (await loadBuiltInProcedure(id)) ?? site.find((p) => p.id === id);
}

/** Every procedure id, in menu order, loading only the site's module (if any). */
export async function procedureIds(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  return [...builtInProcedureIds, ...(await loadSiteProcedures(env)).map((p) => p.id)];
}

async function loadSiteProcedures(env: NodeJS.ProcessEnv): Promise<Procedure[]> {
  const modulePath = env.PGRUNBOOK_PROCEDURES_MODULE;
  if (!modulePath) return [];
  let mod: { procedures?: Procedure[] };
  try {
    mod = (await import(pathToFileURL(path.resolve(modulePath)).href)) as { procedures?: Procedure[] };
  } catch (err) {
    throw new Error(`PGRUNBOOK_PROCEDURES_MODULE=${modulePath} could not be loaded: ${(err as Error).message}`);
  }
  if (!Array.isArray(mod.procedures)) throw new Error(`PGRUNBOOK_PROCEDURES_MODULE=${modulePath} must export "procedures", an array of procedures`);
  const ids = new Set(builtInProcedureIds);
  const clash = mod.procedures.find((p) => ids.has(p.id));
  if (clash) throw new Error(`PGRUNBOOK_PROCEDURES_MODULE=${modulePath}: procedure "${clash.id}" clashes with a built-in one; rename it`);
  return mod.procedures;
}
