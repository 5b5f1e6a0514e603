// Ages, sizes and ratios the way an on-call engineer reads them.
import { formatBytes } from '../engine/format.js';

/** 45 s, 12 min, 1 h, 3 h 5 min, 2 d 4 h. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(s / 3600);
  const restMin = Math.round((s - h * 3600) / 60);
  if (h < 48) return restMin ? `${h} h ${restMin} min` : `${h} h`;
  const d = Math.floor(h / 24);
  const restH = h - d * 24;
  return restH ? `${d} d ${restH} h` : `${d} d`;
}

export function formatBytesShort(n: number): string {
  return formatBytes(n);
}

/** +12%, -40%, +900%. */
export function formatRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return ratio > 0 ? '+inf%' : '-inf%';
  const pct = Math.round(ratio * 100);
  return `${pct >= 0 ? '+' : ''}${pct}%`;
}
