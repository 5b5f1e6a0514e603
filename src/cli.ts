#!/usr/bin/env node
// Entry point. PostgreSQL runs wal-push/wal-fetch once per WAL segment, so those are routed
// before anything heavy (React, Ink, cloud SDKs, conf) is loaded.
const argv = process.argv.slice(2);

async function run(): Promise<number> {
  if (argv[0] === 'wal-push' || argv[0] === 'wal-fetch') {
    const { walCommand } = await import('./wal/command.js');
    return walCommand(argv[0], argv.slice(1));
  }
  const { main } = await import('./main.js');
  return main(argv);
}

run().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // No stack traces for operators; PGRUNBOOK_DEBUG=1 shows one for a bug report.
    const detail = err instanceof Error ? (process.env.PGRUNBOOK_DEBUG ? (err.stack ?? err.message) : err.message || err.name) : String(err);
    process.stderr.write(`pgrunbook: unexpected error: ${detail}\n`);
    process.exitCode = 1;
  },
);
