// The rule the screens live by, checked on their source: they get data from services the app
// hands them and render typed events; they never open a repository, connect to a server, run
// the status check themselves, parse log text, or cast services and state.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const dir = path.join(import.meta.dirname, '..', 'src', 'screens');
const sources = fs
  .readdirSync(dir)
  .filter((f) => /\.tsx?$/.test(f))
  .map((f) => ({ file: f, text: fs.readFileSync(path.join(dir, f), 'utf8') }));

/** Code lines only: comments may name what the code must not do. */
const code = (text: string) =>
  text
    .split('\n')
    .filter((l) => !/^\s*(\/\/|\*|\/\*\*)/.test(l))
    .join('\n');

describe('screens', () => {
  it('are there to check', () => {
    expect(sources.map((s) => s.file)).toEqual(expect.arrayContaining(['run-view.tsx', 'target-picker.tsx', 'status-dashboard.tsx']));
  });

  it('never open a repository or a store, connect, or run the status check', () => {
    const banned = [/\bopenRepository\s*\(/, /\bopenStore\s*\(/, /\bwithPg\s*\(/, /new\s+(pg\.)?Client\s*\(/, /\bcheckStatus\s*\(/, /\blastCommitInWindow\s*\(/];
    const found = sources.flatMap(({ file, text }) => banned.filter((re) => re.test(code(text))).map((re) => `${file}: ${re.source}`));
    expect(found).toEqual([]);
  });

  it('never read a log message for meaning, nor cast with `as`', () => {
    // What a screen may match text against: typed keys (keys.tsx) and the flag a validation
    // error names (params-form.tsx). Nothing else: a run's state comes from typed events.
    const allowedMatching = new Set(['keys.tsx', 'params-form.tsx']);
    const found = sources.flatMap(({ file, text }) =>
      code(text)
        .split('\n')
        .filter((l) => (!allowedMatching.has(file) && /\.(exec|test|match)\(|RegExp\(/.test(l)) || /[\w)\]]\s+as\s+(unknown|any|string|number|boolean|[A-Z{([])/.test(l))
        .map((l) => `${file}: ${l.trim()}`),
    );
    expect(found).toEqual([]);
  });
});
