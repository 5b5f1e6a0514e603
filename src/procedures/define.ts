// How a procedure declares its types once: its params and shared state, and the services the
// run hands its steps. Steps then read ctx.params, ctx.state and ctx.services without casts.
import type { Params, Procedure, ProcedureTypes } from '../engine/types.js';
import type { ProcedureServices } from './services.js';

export interface Typed<P extends Params, S extends Record<string, unknown>> extends ProcedureTypes {
  params: P;
  state: S;
  services: ProcedureServices;
}

/** A typed procedure, as the registry and the runner take it. */
export function defineProcedure<P extends Params, S extends Record<string, unknown>>(procedure: Procedure<Typed<P, S>>): Procedure {
  return procedure;
}
