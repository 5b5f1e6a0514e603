#!/usr/bin/env node
// `npm start`'s prestart: builds dist/ only when a source is newer than the last build, so a
// start with nothing changed costs a few stat() calls instead of a TypeScript compile.
//
//   node scripts/ensure-built.mjs [--check]   (--check: say whether a build is needed, exit 1 if so)
//
// Up to date means: every src/*.ts(x) has its dist/*.js, and no source (nor tsconfig) is newer
// than the last build (the stamp this script writes after building, or dist/.tsbuildinfo that
// `npm run build` writes). A stale stamp only costs one more (incremental) build.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const stampFile = join(dist, '.ensure-built');

function walk(dir, out = []) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) walk(p, out);
    else if (/\.(ts|tsx)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

function mtime(p) {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Why a build is needed, or undefined when dist is current. */
export function staleReason() {
  const built = Math.max(mtime(stampFile) ?? 0, mtime(join(dist, '.tsbuildinfo')) ?? 0);
  if (!built) return 'dist/ was never built';
  for (const cfg of ['tsconfig.json', 'tsconfig.build.json']) {
    if ((mtime(join(root, cfg)) ?? 0) > built) return `${cfg} changed`;
  }
  for (const src of walk(join(root, 'src'))) {
    const out = join(dist, relative(join(root, 'src'), src)).replace(/\.tsx?$/, '.js');
    if (!existsSync(out)) return `${relative(root, out)} is missing`;
    if ((mtime(src) ?? 0) > built) return `${relative(root, src)} changed`;
  }
  return undefined;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const reason = staleReason();
  if (process.argv.includes('--check')) {
    process.stdout.write(reason ? `build needed: ${reason}\n` : 'dist is current\n');
    process.exit(reason ? 1 : 0);
  }
  if (reason) {
    process.stderr.write(`pgrunbook: building (${reason})...\n`);
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
    if (r.status !== 0) process.exit(r.status ?? 1);
    writeFileSync(stampFile, `${new Date().toISOString()}\n`);
  }
}
