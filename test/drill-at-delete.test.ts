// The drill's default recovery for bad-delete (dropped-table: drill-at-drop.test.ts, one drill per file to keep each short): find-target finds the incident
// in the sandbox's archived WAL, table-restore --at restores the table as it was just before it
// (a scratch cluster beside the sandbox), and the report shows the RPO gained over the dump.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonLines, runCli, tempDir } from './helpers/cli.js';

describe('drill through find-target and table-restore --at', () => {
  const env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };

  it.each(['bad-delete'])('--incident %s: found in the WAL, restored just before it, RPO gained reported', async (incident) => {
    const r = await runCli(['--procedure', 'drill', '--incident', incident, '--rows', '3000', '--yes', '--json'], env);
    const events = jsonLines(r.stdout);
    const end = events.at(-1)!;
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    const checks = end.summary.checks as { name: string; ok: boolean; detail?: string }[];
    expect(checks.find((c) => c.name === 'context_graph:public.events')?.ok).toBe(true);
    expect(checks.find((c) => c.name === 'matih_control_plane:public.users')?.ok).toBe(true);
    const facts = end.summary.facts as { label: string; value: string }[];
    expect(facts.find((f) => f.label === 'Found in the WAL')?.value).toMatch(incident === 'bad-delete' ? /^delete of public\.events/ : /^drop-table of public\.users/);
    expect(facts.find((f) => f.label === 'RPO gained')?.value).toMatch(/\d/);
    // The nested table-restore removed its scratch cluster; the drill removed its sandbox.
    expect(events.some((e) => e.type === 'log' && /table-restore: removed the scratch cluster .* \(the table restore is done\)/.test(String(e.message)))).toBe(true);
    const sandboxLine = events.find((e) => e.type === 'log' && String(e.message).startsWith('sandbox cluster in '))!;
    const dataDir = /sandbox cluster in (\S+)/.exec(String(sandboxLine.message))![1];
    expect(fs.existsSync(path.dirname(dataDir))).toBe(false);
  }, 400_000);
});
