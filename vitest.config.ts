import { defineConfig } from 'vitest/config';

// Clusters and storage servers are real processes: generous timeouts, and at most two
// test files at a time on the 2-core CI machines.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'test/**/*.test.tsx'],
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    // Ink prints only the final frame when CI is set (CI machines set CI=true); the TUI tests
    // need every frame. CLI subprocesses get a cleaned environment of their own.
    env: { CI: '0' },
  },
});
