// The grading rules every status check shares: how far over a threshold is a warning or
// critical, and the check that says "unknown" when what it needs could not be reached.
import type { CheckKind, Severity, StatusCheck } from './types.js';

/** warning over `warnAt`, critical over twice that. */
export function gradeAbove(value: number, warnAt: number): Severity {
  if (value > 2 * warnAt) return 'critical';
  if (value > warnAt) return 'warning';
  return 'ok';
}

export function sizeCriticalShrink(t: number): number {
  return Math.min(2 * t, 0.9);
}

export function gradeDeviation(ratio: number, percent: number): Severity {
  const t = percent / 100;
  if (ratio > 2 * t || ratio < -sizeCriticalShrink(t)) return 'critical';
  if (Math.abs(ratio) > t) return 'warning';
  return 'ok';
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function unknownCheck(id: string, kind: CheckKind, title: string, why: string, database?: string): StatusCheck {
  return { id, kind, title, status: 'unknown', summary: why, ...(database !== undefined ? { database } : {}) };
}
