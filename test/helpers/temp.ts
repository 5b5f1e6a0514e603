// Temporary directories for a test file, removed after it (test/setup.ts), passed or failed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const madeDirs: string[] = [];

export function tempDir(prefix = 'pgrunbook-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  madeDirs.push(dir);
  return dir;
}

/** Remove what tempDir made in this test file; test/setup.ts runs it after the file's own afterAll hooks. */
export function removeTempDirs(): void {
  for (const dir of madeDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}
