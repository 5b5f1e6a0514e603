// Text that fits: word-wrapped at the terminal's width (never cut with "…": what is past the
// edge, a restore_command or a path, is often what matters), and a scrolling view for screens
// longer than the terminal. Pure wrapping and a pure scroll reducer; the view draws a window.
import { Box, Text } from 'ink';
import type { Key } from './keys.js';
import type { ColorName } from './theme.js';
import { useTheme } from './theme.js';

/** A line of a scrolled body: already wrapped to the width, with its style. */
export interface BodyLine {
  text: string;
  color?: ColorName;
  bold?: boolean;
  dim?: boolean;
}

/**
 * `text` word-wrapped to `width` columns: each input line on its own, words kept whole when they
 * fit, longer words (paths, URLs, commands) broken across lines with nothing left out.
 * `indent` is put before every continuation line.
 */
export function wrapText(text: string, width: number, indent = ''): string[] {
  const w = Math.max(8, width);
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const lead = raw.slice(0, raw.length - raw.trimStart().length);
    const words = raw.slice(lead.length).split(/ +/).filter((x) => x !== '');
    let line = lead;
    let started = false;
    const flush = () => {
      out.push(line.trimEnd());
      line = indent;
      started = false;
    };
    for (let word of words) {
      const sep = started ? ' ' : '';
      if (line.length + sep.length + word.length <= w) {
        line += sep + word;
        started = true;
        continue;
      }
      if (started) flush();
      // A word longer than a line is broken: every character stays.
      while (line.length + word.length > w) {
        const room = Math.max(1, w - line.length);
        line += word.slice(0, room);
        word = word.slice(room);
        out.push(line);
        line = indent;
      }
      line += word;
      started = word !== '';
    }
    if (started || out.length === 0 || raw.trim() === '') out.push(line.trimEnd());
  }
  return out;
}

/** Body lines for a text, wrapped, all in one style. */
export function bodyLines(text: string, width: number, style: Omit<BodyLine, 'text'> = {}, indent = ''): BodyLine[] {
  return wrapText(text, width, indent).map((t) => ({ ...style, text: t }));
}

export interface ScrollState {
  offset: number;
}

/** The offset after a key: ↑↓ a line, PgUp/PgDn (space, b) a page, Home/End (g, G) the ends. Undefined when the key is not a scroll key. */
export function scrollKey(offset: number, input: string, key: Key, total: number, height: number): number | undefined {
  const max = Math.max(0, total - height);
  const page = Math.max(1, height - 1);
  let next: number | undefined;
  if (key.upArrow || input === 'k') next = offset - 1;
  else if (key.downArrow || input === 'j') next = offset + 1;
  else if (key.pageUp || input === 'b') next = offset - page;
  else if (key.pageDown || input === ' ') next = offset + page;
  else if (key.home || input === 'g') next = 0;
  else if (key.end || input === 'G') next = max;
  return next === undefined ? undefined : Math.max(0, Math.min(max, next));
}

/** "lines 1-18 of 40 · ↑↓ PgUp/PgDn scroll", or "" when everything fits. */
export function scrollHint(offset: number, total: number, height: number): string {
  if (total <= height) return '';
  const last = Math.min(total, offset + height);
  return `lines ${offset + 1}-${last} of ${total} · ↑↓ PgUp/PgDn scroll`;
}

/** `height` lines of `lines` from `offset`; pads nothing, so a short body takes its own height. */
export function ScrollView({ lines, offset, height }: { lines: BodyLine[]; offset: number; height: number }) {
  const { c } = useTheme();
  const start = Math.max(0, Math.min(offset, Math.max(0, lines.length - height)));
  const shown = lines.slice(start, start + Math.max(0, height));
  return (
    <Box flexDirection="column">
      {shown.map((l, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: lines are positions in a scrolled window
        <Text key={start + i} wrap="truncate-end" color={l.color ? c(l.color) : undefined} bold={l.bold} dimColor={l.dim}>
          {l.text === '' ? ' ' : l.text}
        </Text>
      ))}
    </Box>
  );
}
