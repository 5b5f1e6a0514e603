// How a run's outcome reads at the end: its exit code, what to do next, the failed checks in
// one line, and its params as they may be shown (secrets masked).
import { EXIT, type CheckResult, type Params, type Procedure, type RunStatus } from './types.js';
import type { Masker } from './mask.js';
import { pgrunbookCommand } from './command-name.js';

export function exitCodeFor(status: RunStatus): number {
  switch (status) {
    case 'ok':
    case 'planned':
      return EXIT.ok;
    case 'failed':
      return EXIT.failed;
    case 'verification-failed':
      return EXIT.verification;
    case 'refused':
      return EXIT.refused;
    case 'interrupted':
      return EXIT.interrupted;
  }
}

/**
 * What to do next when a run did not finish cleanly; `journaled` runs can be resumed. `exitCode` is
 * the failed step's own: bad usage (2) is fixed by giving the right option, which a resume takes.
 */
export function closingHint(status: RunStatus, runId: string, journaled: boolean, faulted: boolean, exitCode?: number): string | undefined {
  if (!journaled) return undefined;
  if (status === 'interrupted') return `continue with: ${pgrunbookCommand(`--resume ${runId}`)}`;
  if (faulted) return `this is a bug in pgrunbook or in the procedure, not a verdict on your data; read the journal, then continue with: ${pgrunbookCommand(`--resume ${runId}`)}`;
  if (status === 'failed' && exitCode === EXIT.usage) return `give what the error asks for, then continue with: ${pgrunbookCommand(`--resume ${runId} <the missing or corrected options>`)} (options given with --resume take precedence over the run's own)`;
  if (status === 'failed' || status === 'refused') return `fix the cause, then continue with: ${pgrunbookCommand(`--resume ${runId}`)}`;
  return undefined;
}

export function failedChecksText(checks: CheckResult[]): string {
  const failed = checks.filter((c) => !c.ok);
  return failed.map((c) => (c.detail ? `${c.name}: ${c.detail}` : c.name)).join('; ');
}

export function maskParams(procedure: Procedure, params: Params, masker: Masker): Params {
  const out: Params = {};
  for (const [key, value] of Object.entries(params)) {
    const spec = procedure.params.find((p) => p.name === key);
    if (spec?.secret && value !== undefined && value !== '') out[key] = '***';
    else out[key] = masker.deep(value);
  }
  return out;
}
