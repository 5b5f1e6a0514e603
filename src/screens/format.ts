// Text helpers shared by the screens. Marks are characters plus words, so the screens read
// the same without colours (NO_COLOR) as with them.
import { formatDuration, formatQuantity } from '../engine/format.js';
import type { ProgressView, StepState } from './run-state.js';
import type { ColorName } from './theme.js';

export function percent(done: number, total: number): number {
  if (!(total > 0)) return 0;
  return Math.max(0, Math.min(100, Math.floor((100 * done) / total)));
}

/** A fixed-width bar: "██████░░░░". */
export function bar(done: number, total: number, width: number): string {
  const w = Math.max(1, width);
  const filled = total > 0 ? Math.max(0, Math.min(w, Math.floor((w * done) / total))) : 0;
  return '█'.repeat(filled) + '░'.repeat(w - filled);
}

/** "50 B of 100 B · 10 B/s · about 5.0 s left" */
export function progressText(p: ProgressView): string {
  const finished = p.total !== undefined && p.done >= p.total;
  const parts = [`${formatQuantity(p.done, p.unit)}${p.total !== undefined ? ` of ${formatQuantity(p.total, p.unit)}` : ''}`];
  if (p.ratePerSec !== undefined && p.ratePerSec > 0) parts.push(`${formatQuantity(p.ratePerSec, p.unit)}/s`);
  if (p.etaSec !== undefined && !finished) parts.push(`about ${formatDuration(p.etaSec * 1000)} left`);
  return parts.join(' · ');
}

export const STATE_MARK: Record<StepState, string> = {
  pending: '·',
  running: '›',
  ok: '✓',
  failed: '✗',
  skipped: '–',
  interrupted: '■',
  refused: '⊘',
  planned: '○',
};

export const STATE_COLOR: Partial<Record<StepState, ColorName>> = {
  ok: 'green',
  failed: 'red',
  interrupted: 'yellow',
  refused: 'yellow',
  running: 'cyan',
  skipped: 'gray',
};

/** Cut to `width` characters, ending with "…" when cut. */
export function clip(text: string, width: number): string {
  const w = Math.max(1, width);
  const one = text.replace(/\s*\n\s*/g, ' ');
  return one.length <= w ? one : `${one.slice(0, w - 1)}…`;
}

/** Lines a wrapped text takes, a little pessimistic (word wrap wastes some of each line). */
export function linesFor(text: string | undefined, columns: number): number {
  if (!text) return 0;
  const usable = Math.max(10, columns - 6);
  return text.split('\n').reduce((n, line) => n + Math.max(1, Math.ceil(line.length / usable)), 0);
}
