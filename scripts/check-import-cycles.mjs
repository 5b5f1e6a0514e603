#!/usr/bin/env node
// Follows the relative imports of every file under src/ (static, `import type`, re-exports and
// dynamic import()) and reports each import cycle. Exit 1 when there is one.
//
//   node scripts/check-import-cycles.mjs [root]      (root defaults to this repository)

import { readdirSync, readFileSync, existsSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
const srcDir = join(root, 'src');

function sourceFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (/\.(ts|tsx|mts)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

// from '...', import('...'), export ... from '...'; comments are stripped first.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;

function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

/** The .ts file a relative specifier ('./x.js') names, as TypeScript's NodeNext resolution does. */
function resolveSpecifier(from, spec) {
  const base = resolve(dirname(from), spec);
  const candidates = [
    base.replace(/\.js$/, '.ts'),
    base.replace(/\.js$/, '.tsx'),
    base.replace(/\.mjs$/, '.mts'),
    base,
    `${base}.ts`,
    join(base, 'index.ts'),
  ];
  return candidates.find((c) => existsSync(c) && statSync(c).isFile());
}

export function importGraph(files) {
  const graph = new Map();
  for (const file of files) {
    const deps = new Set();
    for (const m of stripComments(readFileSync(file, 'utf8')).matchAll(SPECIFIER)) {
      const target = resolveSpecifier(file, m[2]);
      if (target) deps.add(target);
    }
    graph.set(file, [...deps]);
  }
  return graph;
}

/** Every elementary cycle found by a depth-first search, each reported once (rotated to its
 *  smallest file). */
export function findCycles(graph) {
  const cycles = new Map();
  const state = new Map(); // 1: on the stack, 2: done
  const stack = [];
  function visit(node) {
    state.set(node, 1);
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 1) {
        const cycle = stack.slice(stack.indexOf(next));
        const min = cycle.reduce((a, b) => (b < a ? b : a));
        const i = cycle.indexOf(min);
        const rotated = [...cycle.slice(i), ...cycle.slice(0, i)];
        cycles.set(rotated.join('\0'), rotated);
      } else if (!state.has(next)) {
        visit(next);
      }
    }
    stack.pop();
    state.set(node, 2);
  }
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return [...cycles.values()];
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const files = sourceFiles(srcDir);
  const cycles = findCycles(importGraph(files));
  const rel = (f) => relative(root, f);
  for (const c of cycles) console.log(`cycle: ${[...c, c[0]].map(rel).join(' -> ')}`);
  console.log(`${files.length} files, ${cycles.length} import cycle(s)`);
  process.exit(cycles.length ? 1 : 0);
}
