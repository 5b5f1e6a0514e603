// The tool subcommands that are not procedures (profile, completion, catalog, status). cli.ts
// routes them here before main.ts loads, so `pgrunbook status` never pays for the procedures,
// the runner or the TUI; each imports its own module only when it is the one asked for.
import { CliUsageError } from './registry.js';
import { EXIT } from '../engine/types.js';
import { errorMessage, hintOf } from '../engine/errors.js';
import { pgrunbookCommand } from '../engine/command-name.js';

export interface SubcommandIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  env: NodeJS.ProcessEnv;
}

export const TOOL_SUBCOMMANDS = ['profile', 'completion', 'catalog', 'status', 'find-target'] as const;
export type ToolSubcommand = (typeof TOOL_SUBCOMMANDS)[number];

export function isToolSubcommand(word: string | undefined): word is ToolSubcommand {
  return (TOOL_SUBCOMMANDS as readonly string[]).includes(word ?? '');
}

/** Runs `argv[0]` (one of TOOL_SUBCOMMANDS) with the rest of argv; returns its exit code. */
export async function runToolSubcommand(argv: string[], io: SubcommandIo): Promise<number> {
  const json = argv.includes('--json');
  const fail = (err: unknown, code: number, hint: string): number => {
    const exitCode = err instanceof CliUsageError ? err.exitCode : code;
    const message = errorMessage(err);
    const shown = hintOf(err) ?? hint;
    io.stderr.write(`pgrunbook: ${message}\nhint: ${shown}\n`);
    if (json) io.stdout.write(`${JSON.stringify({ type: 'error', exitCode, message, hint: shown })}\n`);
    return exitCode;
  };
  const rest = argv.slice(1);
  switch (argv[0]) {
    case 'profile':
      try {
        const { profileCommand } = await import('../config/command.js');
        return await profileCommand(rest, io);
      } catch (err) {
        return fail(err, EXIT.usage, `see: ${pgrunbookCommand('profile --help', io.env)}`);
      }
    case 'completion':
      try {
        const { completionCommand } = await import('./completion.js');
        return await completionCommand(rest, io);
      } catch (err) {
        return fail(err, EXIT.usage, `see: ${pgrunbookCommand('completion --help', io.env)}`);
      }
    case 'catalog':
      try {
        const { catalogCommand } = await import('./catalog.js');
        return await catalogCommand(rest, io);
      } catch (err) {
        return fail(err, EXIT.failed, 'check the repository URL, the credentials and the network, then run it again');
      }
    case 'find-target':
      try {
        const { findTargetCommand } = await import('./find-target.js');
        return await findTargetCommand(rest, io);
      } catch (err) {
        return fail(err, EXIT.failed, 'check the repository URL and the connection, then run it again');
      }
    case 'status':
      try {
        const { statusCommand } = await import('./status.js');
        return await statusCommand(rest, io);
      } catch (err) {
        // Nagios UNKNOWN: the status could not be determined.
        io.stderr.write(`pgrunbook status: ${errorMessage(err)}\n`);
        return 3;
      }
    default:
      throw new Error(`not a tool subcommand: ${String(argv[0])}`);
  }
}
