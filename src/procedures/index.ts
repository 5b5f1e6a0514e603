import type { Procedure } from '../engine/types.js';
import { verifyProcedure } from './verify.js';

/** Every procedure the CLI and the TUI offer, in menu order. */
export const procedures: Procedure[] = [verifyProcedure];

export function findProcedure(id: string): Procedure | undefined {
  return procedures.find((p) => p.id === id);
}
