// Built-in procedures plus, optionally, a site's own from a module named by
// PGRUNBOOK_PROCEDURES_MODULE (it exports `procedures: Procedure[]`). Tests use it to run
// small procedures through the real CLI.
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Procedure } from '../engine/types.js';
import { procedures as builtIn } from './index.js';

export async function loadProcedures(env: NodeJS.ProcessEnv = process.env): Promise<Procedure[]> {
  const modulePath = env.PGRUNBOOK_PROCEDURES_MODULE;
  if (!modulePath) return builtIn;
  let mod: { procedures?: Procedure[] };
  try {
    mod = (await import(pathToFileURL(path.resolve(modulePath)).href)) as { procedures?: Procedure[] };
  } catch (err) {
    throw new Error(`PGRUNBOOK_PROCEDURES_MODULE=${modulePath} could not be loaded: ${(err as Error).message}`);
  }
  if (!Array.isArray(mod.procedures)) throw new Error(`PGRUNBOOK_PROCEDURES_MODULE=${modulePath} must export "procedures", an array of procedures`);
  const ids = new Set(builtIn.map((p) => p.id));
  const clash = mod.procedures.find((p) => ids.has(p.id));
  if (clash) throw new Error(`PGRUNBOOK_PROCEDURES_MODULE=${modulePath}: procedure "${clash.id}" clashes with a built-in one; rename it`);
  return [...builtIn, ...mod.procedures];
}
