// Headless answers to confirm-requests, from flags: --yes for ordinary prompts, and for a
// destructive step an exact --confirm VALUE equal to what the TUI would make the operator type.
import type { ConfirmAnswerer } from './types.js';
import { shellQuote } from './errors.js';

export function headlessAnswerer(opts: { yes: boolean; confirm?: string[] }): ConfirmAnswerer {
  const given = opts.confirm ?? [];
  return async (request) => {
    if (request.destructive) {
      const expected = request.destructive.expected;
      if (given.includes(expected)) return { allowed: true };
      const need = `--confirm ${shellQuote(expected)}`;
      if (given.length > 0) {
        return {
          allowed: false,
          reason: `${request.destructive.what}: --confirm ${given.map(shellQuote).join(', ')} does not match; to allow it pass exactly ${need}`,
        };
      }
      return { allowed: false, reason: `${request.destructive.what}: refused without a typed confirmation; to allow it pass ${need}` };
    }
    if (opts.yes) return { allowed: true };
    return { allowed: false, reason: `"${request.message}" needs an answer; pass --yes to allow it` };
  };
}
