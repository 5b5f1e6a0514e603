#!/usr/bin/env node
// Entry point. PostgreSQL runs wal-push/wal-fetch once per WAL segment, so those (and
// --version) are routed before anything heavy (React, Ink, cloud SDKs, conf) is loaded: this file
// imports nothing of ours at the top (--version loads it alone; the error helpers come only when
// something failed), and wal-push/wal-fetch load their own module, which loads the rest only once
// the arguments ask for it. The tool subcommands (status, catalog, profile, completion) skip
// main.ts too: they never load the procedures, the runner or the TUI.
import fs from 'node:fs';

const argv = process.argv.slice(2);

async function run(): Promise<number> {
  if (argv[0] === 'wal-push' || argv[0] === 'wal-fetch') {
    // Not a word on stdout unless --help asks (walCommand guards it then): process.stdout is made
    // on first use, and making it costs a wal-push milliseconds (more when it is a pipe, as
    // under the server's logging collector).
    const { walCommand } = await import('./wal/command.js');
    return walCommand(argv[0], argv.slice(1));
  }
  if (argv.length === 1 && argv[0] === '--version') {
    printLine(packageVersion());
    return 0;
  }
  // `pgrunbook --list | head -2`: a reader that stops early is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  if (argv[0] === 'status' || argv[0] === 'catalog' || argv[0] === 'profile' || argv[0] === 'completion') {
    const { runToolSubcommand } = await import('./commands/subcommands.js');
    return runToolSubcommand(argv, { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env });
  }
  const { main } = await import('./main.js');
  return main(argv);
}

/** One short line on stdout without making process.stdout (a stream, a few ms to set up). */
function printLine(text: string): void {
  try {
    fs.writeSync(1, `${text}\n`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') return; // the reader is gone: nothing worth a stack trace
    if (code !== 'EAGAIN') throw err;
    process.stdout.write(`${text}\n`); // a non-blocking pipe that is full: let the stream wait
  }
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
  async (err: unknown) => {
    process.exitCode = 1;
    // No stack traces for operators; PGRUNBOOK_DEBUG=1 shows one for a bug report.
    const hint = 'this is a bug: run it again with PGRUNBOOK_DEBUG=1 and report the output';
    try {
      const { errorReport } = await import('./engine/errors.js');
      process.stderr.write(errorReport(err, { prefix: 'pgrunbook: unexpected error', hint }));
    } catch {
      process.stderr.write(`pgrunbook: unexpected error: ${String(err)}\nhint: ${hint}\n`);
    }
  },
);
