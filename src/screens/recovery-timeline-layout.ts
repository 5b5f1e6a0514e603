// The recovery timeline laid out as rows of characters, `width` columns wide (the axis part
// only; the screen adds the row labels). Every mark is a character, so the timeline reads the
// same without colour.
import { MARK, columnOf, labelTime, type TimelineModel } from './recovery-timeline.js';

export interface TimelineRows {
  width: number;
  /** Start of the oldest window and end of the newest, labelled at their columns. */
  labels: string;
  /** B at each base backup's stop time (! when it opens no window). */
  backups: string;
  /** Column of the backup the cursor's time would use (drawn inverse). */
  chosenColumn?: number;
  /** ━ covered by a window, ╳ lost to a gap in the WAL archive, · nothing archived. */
  wal: string;
  /** Gap labels under the ╳ runs (the first missing segment); empty when there are none. */
  gaps: string;
  /** ▲ under the cursor. */
  cursor: string;
  cursorColumn: number;
}

function place(row: string[], col: number, rawText: string): boolean {
  const text = rawText.slice(0, row.length);
  const start = Math.max(0, Math.min(row.length - text.length, col));
  for (let i = start; i < start + text.length; i++) if (row[i] !== ' ') return false;
  for (let i = 0; i < text.length; i++) row[start + i] = text[i];
  return true;
}

export function layoutTimeline(model: TimelineModel, width: number, cursor: number, chosenBackupId?: string): TimelineRows {
  const w = Math.max(10, width);
  const col = (t: number) => columnOf(model, t, w);

  // WAL coverage: ╳ from the end of a window a gap cut short up to the next window's start; ━ over windows.
  const wal: string[] = Array(w).fill(MARK.missing);
  const starts = model.windows.map((x) => x.from).sort((a, b) => a - b);
  for (const win of model.windows) {
    if (!win.endedByGap) continue;
    const next = starts.find((s) => s > win.to);
    const last = next !== undefined ? col(next) - 1 : w - 1;
    for (let c = col(win.to) + 1; c <= last; c++) wal[c] = MARK.gap;
  }
  for (const win of model.windows) for (let c = col(win.from); c <= col(win.to); c++) wal[c] = MARK.covered;

  const backups: string[] = Array(w).fill(' ');
  let chosenColumn: number | undefined;
  for (const b of model.backups) {
    const c = col(b.stopTime);
    if (backups[c] !== MARK.backup) backups[c] = b.usable ? MARK.backup : MARK.unusableBackup;
    if (b.id === chosenBackupId) chosenColumn = c;
  }

  // Labels: the recoverable range's ends, at their columns; only the span if they would collide.
  const labels: string[] = Array(w).fill(' ');
  if (model.windows.length) {
    const first = Math.min(...model.windows.map((x) => x.from));
    const last = Math.max(...model.windows.map((x) => x.to));
    const a = labelTime(first);
    const b = labelTime(last);
    const ac = col(first);
    const bc = col(last) - b.length + 1;
    if (Math.max(0, Math.min(w - a.length, ac)) + a.length + 1 <= Math.max(0, Math.min(w - b.length, bc))) {
      place(labels, ac, a);
      place(labels, bc, b);
    } else {
      place(labels, 0, `${a} → ${b}`.slice(0, w));
    }
  }

  // Gap labels: the first missing segment, where the ╳ run starts.
  const gapRow: string[] = Array(w).fill(' ');
  for (const win of [...model.windows].sort((x, y) => x.to - y.to)) {
    if (!win.endedByGap) continue;
    const g = win.endedByGap;
    const text = `╳ ${g.from}${g.missing > 1 ? ` +${g.missing - 1}` : ''}`;
    if (!place(gapRow, col(win.to) + 1, text)) place(gapRow, col(win.to) + 1, `╳ ${g.from.slice(-8)}`);
  }

  const cursorColumn = col(cursor);
  const cursorRow = ' '.repeat(cursorColumn) + MARK.cursor + ' '.repeat(w - cursorColumn - 1);

  return {
    width: w,
    labels: labels.join(''),
    backups: backups.join(''),
    chosenColumn,
    wal: wal.join(''),
    gaps: gapRow.join('').trimEnd() ? gapRow.join('') : '',
    cursor: cursorRow,
    cursorColumn,
  };
}
