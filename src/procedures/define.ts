// How a procedure declares its types once: its params and shared state, and the services the
// run hands its steps. Steps then read ctx.params, ctx.state and ctx.services without casts.
import type { Procedure, ProcedureTypes } from '../engine/types.js';
import type { ProcedureServices } from './services.js';

export interface Typed<P extends object, S extends object> extends ProcedureTypes {
  params: P;
  state: S;
  services: ProcedureServices;
}

/** A typed procedure, as the registry and the runner take it. */
export function defineProcedure<P extends object, S extends object>(procedure: Procedure<Typed<P, S>>): Procedure {
  return procedure;
}
