import { expect } from 'vitest';
// A small parser of Prometheus' text exposition format (0.0.4), strict enough to catch what
// the textfile collector would reject: samples before their TYPE, a family split in two,
// duplicate series, bad label syntax, values that are not numbers.

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Exposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: PromSample[];
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const m = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(text.slice(i));
    if (!m) throw new Error(`bad label syntax at "${text.slice(i)}"`);
    i += m[0].length;
    let value = '';
    for (;;) {
      if (i >= text.length) throw new Error(`unterminated label value in "${text}"`);
      const ch = text[i++];
      if (ch === '"') break;
      if (ch === '\\') {
        const next = text[i++];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`bad escape \\${next} in "${text}"`);
      } else value += ch;
    }
    if (m[1] in labels) throw new Error(`label ${m[1]} given twice`);
    labels[m[1]] = value;
    const rest = /^\s*(,|$)/.exec(text.slice(i));
    if (!rest) throw new Error(`expected "," after a label in "${text}"`);
    i += rest[0].length;
  }
  return labels;
}

function parseValue(v: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  if (v === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) throw new Error(`not a sample value: "${v}"`);
  return Number(v);
}

export function parseExposition(text: string): Exposition {
  const out: Exposition = { help: new Map(), type: new Map(), samples: [] };
  const finished = new Set<string>();
  let current: string | undefined;
  const seen = new Set<string>();
  expect(text.endsWith('\n'), 'the exposition ends with a newline').toBe(true);
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      const [, what, name, rest] = m;
      if (current !== name) {
        if (current) finished.add(current);
        if (finished.has(name)) throw new Error(`family ${name} appears twice`);
        current = name;
      }
      if (what === 'HELP') {
        if (out.help.has(name)) throw new Error(`HELP for ${name} twice`);
        out.help.set(name, rest);
      } else {
        if (out.type.has(name)) throw new Error(`TYPE for ${name} twice`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`bad TYPE ${rest}`);
        if (out.samples.some((s) => s.name === name)) throw new Error(`TYPE for ${name} after its samples`);
        out.type.set(name, rest);
      }
      continue;
    }
    if (line.startsWith('#')) continue;
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$/.exec(line);
    if (!m) throw new Error(`not a sample line: "${line}"`);
    const [, name, labelText, value] = m;
    if (current !== name) throw new Error(`sample ${name} outside its family (current: ${current})`);
    if (!out.type.has(name)) throw new Error(`sample ${name} before its TYPE`);
    const labels = labelText ? parseLabels(labelText) : {};
    const id = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(id)) throw new Error(`duplicate series ${id}`);
    seen.add(id);
    out.samples.push({ name, labels, value: parseValue(value) });
  }
  return out;
}

export function sample(e: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const s = e.samples.find((x) => x.name === name && Object.keys(labels).every((k) => x.labels[k] === labels[k]) && Object.keys(x.labels).length === Object.keys(labels).length);
  return s?.value;
}
