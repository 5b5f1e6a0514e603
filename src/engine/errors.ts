// What a thrown value says to the runner and the operator: its message, its hint, its own
// exit code. Steps may throw anything (an Error, a string, undefined), so every reader here
// is defensive and never throws itself.
import { EXIT } from './types.js';

/** A message for anything a step may throw: an Error, a string, undefined, an object without a useful toString. */
export function errorMessage(err: unknown): string {
  try {
    if (err instanceof Error) return err.message || err.name || 'an error without a message';
    if (typeof err === 'string') return err || 'an empty string was thrown';
    if (err === undefined || err === null) return `failed without saying why (${String(err)} was thrown)`;
    const message = field(err, 'message');
    if (typeof message === 'string' && message) return message;
    const text = String(err);
    if (text && text !== '[object Object]') return text;
    return `a non-error value was thrown: ${JSON.stringify(err)?.slice(0, 200) ?? typeof err}`;
  } catch {
    return `a thrown ${typeof err} that cannot be shown`;
  }
}

/** The `hint` an error carries (what to do next), when it has one. */
export function hintOf(err: unknown): string | undefined {
  try {
    const hint = field(err, 'hint');
    return typeof hint === 'string' ? hint : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Opt-in only (execa's errors carry an unrelated exitCode): an error may name its exit code
 * (`procedureExitCode`, e.g. LockHeldError's 75), and one that reports damaged data
 * (`corrupt: true`, e.g. a checksum mismatch) is a failed verification, exit 3.
 */
export function ownExitCode(err: unknown): number | undefined {
  const own = field(err, 'procedureExitCode');
  if (typeof own === 'number' && Number.isInteger(own) && own > 0) return own;
  if (field(err, 'corrupt') === true) return EXIT.verification;
  return undefined;
}

/** A property of a thrown value, whatever its type (a getter may throw: callers catch). */
function field(value: unknown, name: string): unknown {
  if (typeof value !== 'object' || value === null) return undefined;
  return Reflect.get(value, name);
}

export function shellQuote(value: string): string {
  return /^[A-Za-z0-9@%_+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * What the CLI prints for an error: `pgrunbook: <what went wrong>` and `hint: <what to do>`.
 * A stack trace only with PGRUNBOOK_DEBUG=1 (for a bug report), never otherwise.
 */
export function errorReport(err: unknown, opts: { prefix?: string; hint?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const env = opts.env ?? process.env;
  const hint = hintOf(err) ?? opts.hint;
  const stack = env.PGRUNBOOK_DEBUG === '1' && err instanceof Error && err.stack ? `${err.stack}\n` : '';
  return `${opts.prefix ?? 'pgrunbook'}: ${errorMessage(err)}\n${hint ? `hint: ${hint}\n` : ''}${stack}`;
}

/** `pgrunbook: message` and `hint: ...` for a usage problem known by its text. */
export function usageReport(message: string, hint?: string, prefix = 'pgrunbook'): string {
  return `${prefix}: ${message}\n${hint ? `hint: ${hint}\n` : ''}`;
}
