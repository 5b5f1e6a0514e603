// Names in a table restore: the --table the operator wrote, the temporary database's, and the
// "did you mean" list when the table is not in the dump.
import { describeDump, type ChosenDump } from '../../repo/dump-files.js';
import { fitName } from '../logical-restore/names.js';
import { label } from './types.js';

/** "schema.table", "table" (schema public) or quoted parts ("My Schema"."Odd.Name"). */
export function parseTableName(text: string): { schema: string; table: string } | { error: string } {
  const parts: string[] = [];
  let i = 0;
  const s = text.trim();
  while (i <= s.length) {
    if (s[i] === '"') {
      let part = '';
      i++;
      for (;;) {
        if (i >= s.length) return { error: `--table: unterminated quote in "${text}"` };
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += s[i++];
      }
      parts.push(part);
    } else {
      const dot = s.indexOf('.', i);
      const end = dot < 0 ? s.length : dot;
      parts.push(s.slice(i, end));
      i = end;
    }
    if (i >= s.length) break;
    if (s[i] !== '.') return { error: `--table: unexpected "${s[i]}" in "${text}"; write SCHEMA.TABLE, quoting names with dots as "my.schema"."my.table"` };
    i++;
  }
  if (parts.length === 1) parts.unshift('public');
  if (parts.length !== 2 || parts.some((p) => p === '')) return { error: `--table: expected SCHEMA.TABLE or TABLE, got "${text}"` };
  return { schema: parts[0], table: parts[1] };
}

/** pgrunbook_tmp_<the run id's time and random part>: one per run, recognisable, never an existing name. */
export function tempDatabaseName(runId: string): string {
  const tail = runId.replace(/^table-restore-/, '').toLowerCase().replace(/[^a-z0-9]+/g, '_');
  return fitName('pgrunbook_tmp_', tail).slice(0, 63);
}

/** Names close to `wanted`, best first: for "did you mean". */
export function similarNames(wanted: string, candidates: string[], max = 8): string[] {
  const w = wanted.toLowerCase();
  const scored = candidates.map((c) => {
    const l = c.toLowerCase();
    const bare = l.includes('.') ? l.slice(l.indexOf('.') + 1) : l;
    const wBare = w.includes('.') ? w.slice(w.indexOf('.') + 1) : w;
    let score = Math.min(editDistance(w, l), editDistance(wBare, bare));
    if (bare.includes(wBare) || wBare.includes(bare)) score = Math.min(score, 1);
    return { c, score };
  });
  const wBare = w.includes('.') ? w.slice(w.indexOf('.') + 1) : w;
  const limit = Math.max(2, Math.floor(wBare.length / 3));
  return scored
    .filter((s) => s.score <= limit)
    .sort((a, b) => a.score - b.score || a.c.localeCompare(b.c))
    .slice(0, max)
    .map((s) => s.c);
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

export function notInDumpMessage(schema: string, table: string, p: { dump: ChosenDump }, candidates: string[]): string {
  const similar = similarNames(label(schema, table), candidates);
  return (
    `table ${label(schema, table)} is not in ${describeDump(p.dump)}` +
    (similar.length ? `; similar tables in the dump: ${similar.join(', ')}` : candidates.length ? `; it holds ${candidates.length} tables, none with a similar name` : '; the dump holds no tables') +
    `. Check --table (SCHEMA.TABLE; default schema public) and --dump`
  );
}

/** --table, parsed (validate has refused a bad one before any step runs); with --tables, the first of them. */
export function tableOf(params: { table?: string; tables?: string }): { schema: string; table: string } {
  return tableSetOf(params)[0];
}

/** --tables a,b (or --table a): every table, parsed. Quoted names may hold commas. */
export function tableSetOf(params: { table?: string; tables?: string }): { schema: string; table: string }[] {
  const list = params.tables !== undefined ? splitTables(params.tables) : [params.table ?? ''];
  return list.map((text) => {
    const t = parseTableName(text);
    if ('error' in t) throw new Error(params.tables !== undefined ? t.error.replace(/^--table/, '--tables') : t.error);
    return t;
  });
}

/** Split --tables at commas outside double quotes. */
export function splitTables(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out;
}

/** A catalog's quoted name (quote_ident or always-quoted) as SCHEMA.TABLE, unquoted: to compare names from either source. */
export function canonical(qualified: string): string {
  const t = parseTableName(qualified);
  return 'error' in t ? qualified : label(t.schema, t.table);
}
