#!/usr/bin/env node
// Entry point. PostgreSQL runs wal-push/wal-fetch once per WAL segment, so those are routed
// before anything heavy (React, Ink, cloud SDKs, conf) is loaded.
const argv = process.argv.slice(2);

async function run(): Promise<number> {
  const { main } = await import('./main.js');
  return main(argv);
}

run().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`pgrunbook: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
