// Flags to typed params, with messages that name the flag and the fix.
import type { ParamSpec, Params, ParamValue, Procedure } from './types.js';

// Parsing the command line is the command registry's (src/commands/registry.ts, node:util parseArgs).
export type RawFlags = Record<string, string | boolean | string[]>;

export function flagName(paramName: string): string {
  return `--${paramName.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export function paramNameFromFlag(flag: string): string {
  return flag.replace(/^--/, '').replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/**
 * Typed params from flags, then environment variables, then profile defaults, then the
 * spec's default. Returns every problem at once so an operator fixes them in one go.
 */
export function resolveParams(
  procedure: Procedure,
  flags: RawFlags,
  env: NodeJS.ProcessEnv,
  defaults: Params = {},
): { params: Params; errors: string[] } {
  const errors: string[] = [];
  const params: Params = {};
  const known = new Set(procedure.params.map((p) => flagName(p.name).slice(2)));
  for (const key of Object.keys(flags)) {
    if (!known.has(key)) {
      const valid = [...known].map((k) => `--${k}`).join(', ') || '(none)';
      errors.push(`unknown option --${key} for procedure ${procedure.id}; its options are: ${valid}`);
    }
  }
  for (const spec of procedure.params) {
    const flag = flagName(spec.name);
    let raw: string | boolean | string[] | number | undefined = flags[flag.slice(2)];
    if (raw === undefined && spec.env && env[spec.env] !== undefined && env[spec.env] !== '') raw = env[spec.env];
    let value: ParamValue;
    if (raw === undefined) {
      value = defaults[spec.name] ?? spec.default;
    } else {
      const coerced = coerce(spec, raw);
      if ('error' in coerced) {
        errors.push(coerced.error);
        continue;
      }
      value = coerced.value;
    }
    if ((value === undefined || value === '') && spec.required) {
      errors.push(`missing ${flag}: ${spec.description}${spec.example ? ` (for example ${flag} ${spec.example})` : ''}`);
      continue;
    }
    if (value !== undefined) params[spec.name] = value;
  }
  // Cross-field checks run even after type errors, so one attempt shows every problem;
  // a validator tripping over a half-filled set must not hide the type errors.
  if (procedure.validate) {
    try {
      errors.push(...procedure.validate(params));
    } catch {
      if (errors.length === 0) throw new Error(`validation of ${procedure.id} parameters failed unexpectedly`);
    }
  }
  return { params, errors };
}

function coerce(spec: ParamSpec, raw: string | boolean | string[] | number): { value: ParamValue } | { error: string } {
  const flag = flagName(spec.name);
  const single = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  switch (spec.type) {
    case 'boolean': {
      if (typeof single === 'boolean') return { value: single };
      const s = String(single).toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(s)) return { value: true };
      if (['0', 'false', 'no', 'off'].includes(s)) return { value: false };
      return { error: `${flag}: expected true or false, got "${single}"` };
    }
    case 'number': {
      const n = Number(single);
      if (typeof single === 'boolean' || single === '' || !Number.isFinite(n)) {
        return { error: `${flag}: expected a number, got "${single}"${spec.example ? ` (for example ${flag} ${spec.example})` : ''}` };
      }
      return { value: n };
    }
    case 'choice': {
      const s = String(single);
      if (!spec.choices?.includes(s)) return { error: `${flag}: "${s}" is not one of: ${spec.choices?.join(', ')}` };
      return { value: s };
    }
    case 'list': {
      if (typeof raw === 'boolean') return { error: `${flag} needs a value${spec.example ? ` (for example ${flag} ${spec.example})` : ''}` };
      const parts = (Array.isArray(raw) ? raw : [String(raw)]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
      return { value: parts };
    }
    default:
      if (typeof single === 'boolean') return { error: `${flag} needs a value${spec.example ? ` (for example ${flag} ${spec.example})` : ''}` };
      return { value: String(single) };
  }
}
