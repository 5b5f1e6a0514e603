#!/usr/bin/env node
// Entry point. PostgreSQL runs wal-push/wal-fetch once per WAL segment, so those (and
// --version) are routed before anything heavy (React, Ink, cloud SDKs, conf) is loaded: they
// import only their own module, the light command registry and the error helpers. The tool
// subcommands (status, catalog, profile, completion) skip main.ts too: they never load the
// procedures, the runner or the TUI.
import fs from 'node:fs';
import { errorReport } from './engine/errors.js';

const argv = process.argv.slice(2);

// `pgrunbook --list | head -2`: a reader that stops early is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

async function run(): Promise<number> {
  if (argv[0] === 'wal-push' || argv[0] === 'wal-fetch') {
    const { walCommand } = await import('./wal/command.js');
    return walCommand(argv[0], argv.slice(1));
  }
  if (argv.length === 1 && argv[0] === '--version') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (argv[0] === 'status' || argv[0] === 'catalog' || argv[0] === 'profile' || argv[0] === 'completion') {
    const { runToolSubcommand } = await import('./commands/subcommands.js');
    return runToolSubcommand(argv, { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env });
  }
  const { main } = await import('./main.js');
  return main(argv);
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

run().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // No stack traces for operators; PGRUNBOOK_DEBUG=1 shows one for a bug report.
    process.stderr.write(errorReport(err, { prefix: 'pgrunbook: unexpected error', hint: 'this is a bug: run it again with PGRUNBOOK_DEBUG=1 and report the output' }));
    process.exitCode = 1;
  },
);
