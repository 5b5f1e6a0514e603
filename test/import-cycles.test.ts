// The source tree has no import cycles (static, type-only, re-exports and dynamic import() all
// count), checked by scripts/check-import-cycles.mjs, which must also still see a cycle when there is one.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../scripts/check-import-cycles.mjs', import.meta.url));
const temps: string[] = [];

afterAll(async () => {
  for (const t of temps) await rm(t, { recursive: true, force: true });
});

async function check(root?: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run(process.execPath, root ? [script, root] : [script]);
    return { code: 0, out: stdout };
  } catch (e) {
    const err = e as { code: number; stdout: string };
    return { code: err.code, out: err.stdout };
  }
}

describe('import cycles', () => {
  it('src/ has none', async () => {
    const { code, out } = await check();
    expect(out).toMatch(/\d+ files, 0 import cycle\(s\)/);
    expect(code).toBe(0);
  });

  it('the check reports a cycle through a dynamic import and a type-only import', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgrunbook-cycles-'));
    temps.push(root);
    await mkdir(join(root, 'src', 'storage'), { recursive: true });
    await writeFile(join(root, 'src', 'storage', 'url.ts'), "export const load = () => import('./local.js');\n");
    await writeFile(join(root, 'src', 'storage', 'local.ts'), "import type { load } from './url.js';\nexport type L = typeof load;\n");
    await writeFile(join(root, 'src', 'ok.ts'), "import { load } from './storage/url.js';\nexport { load };\n");
    const { code, out } = await check(root);
    expect(out).toContain('cycle: src/storage/local.ts -> src/storage/url.ts -> src/storage/local.ts');
    expect(out).toContain('3 files, 1 import cycle(s)');
    expect(code).toBe(1);
  });
});
