// The built-in procedures load one at a time by id (src/procedures/index.ts): each id must be the
// id of the procedure it loads, and every procedure must be reachable by its id.
import { describe, expect, it } from 'vitest';
import { builtInProcedureIds, loadBuiltInProcedure, loadBuiltInProcedures } from '../src/procedures/index.js';
import { loadProcedure, procedureIds } from '../src/procedures/load.js';

describe('the procedure catalog', () => {
  it('loads each built-in procedure by its own id, in menu order; an unknown id loads nothing', async () => {
    const all = await loadBuiltInProcedures();
    expect(all.map((p) => p.id)).toEqual([...builtInProcedureIds]);
    for (const id of builtInProcedureIds) expect((await loadBuiltInProcedure(id))?.id).toBe(id);
    expect(await loadBuiltInProcedure('nope')).toBeUndefined();
    expect(await procedureIds({})).toEqual([...builtInProcedureIds]);
    expect((await loadProcedure('pitr', {}))?.id).toBe('pitr');
    expect(await loadProcedure('nope', {})).toBeUndefined();
  });
});
