// The incident drill, headless, for each kind of incident; and a drill whose restore is
// sabotaged (a WAL segment deleted from its repository) must fail.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { pgCtlStop } from '../src/postgres/pgctl.js';

describe('drill', () => {
  const env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };

  it.each(['bad-delete', 'dropped-table', 'lost-datadir'])('--procedure drill --yes --json recovers from %s and reports RTO and RPO', async (incident) => {
    // The classic recovery (pitr; the newest dump); find-target + table-restore --at: drill-at.test.ts.
    const r = await runCli(['--procedure', 'drill', '--incident', incident, '--via', 'classic', '--rows', '5000', '--yes', '--json'], env);
    const events = jsonLines(r.stdout);
    const end = events.at(-1)!;
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    expect(end.summary.status).toBe('ok');
    const checks = end.summary.checks as { name: string; ok: boolean; detail?: string }[];
    expect(checks.find((c) => c.name === 'context_graph:public.events')?.ok).toBe(true);
    expect(checks.find((c) => c.name === 'matih_control_plane:public.users')?.ok).toBe(true);
    expect(checks.find((c) => c.name === 'RTO measured')?.detail).toMatch(/\d/);
    expect(checks.find((c) => c.name === 'RPO measured')?.ok).toBe(true);
    expect(checks.find((c) => c.name === 'RPO measured')?.detail).toMatch(/^data lost: [\d.]+ s of commits$/);
    // Cleaned up after the (--yes) confirmation.
    const sandboxLine = events.find((e) => e.type === 'log' && String(e.message).startsWith('sandbox cluster in '))!;
    const dataDir = /sandbox cluster in (\S+)/.exec(String(sandboxLine.message))![1];
    expect(fs.existsSync(path.dirname(dataDir))).toBe(false);
  });

  it('fails when a WAL segment the restore needs is deleted from the repository', async () => {
    const child = startCli(['--procedure', 'drill', '--incident', 'bad-delete', '--via', 'classic', '--rows', '2000', '--yes', '--json'], env);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    // Once the workload is archived, remove the newest archived segment: the WAL between the
    // base backup and the incident now has a gap.
    const repoDir = await waitFor("the sandbox repository", () => /repository file:\/\/([^"\s]+)/.exec(out)?.[1]);
    await waitFor('the workload step to end', () => out.includes('"type":"step-end","time"') && /"stepId":"workload","status":"ok"/.test(out), 120_000);
    const segments = fs.readdirSync(path.join(repoDir, 'wal')).filter((f) => /^[0-9A-F]{24}\.(gz|zst)$/.test(f)).sort();
    fs.rmSync(path.join(repoDir, 'wal', segments[segments.length - 1]));
    const r = await child;
    try {
      expect(r.exitCode).toBe(1);
      const end = jsonLines(out).at(-1)!;
      expect(end.summary.status).toBe('failed');
      expect(end.summary.error).toMatch(/pitr failed/);
      expect(end.summary.error).toMatch(/gap/);
      expect(end.summary.steps.find((s: { id: string }) => s.id === 'verify').status).toBe('pending');
    } finally {
      // A failed drill keeps its sandbox for inspection (and --resume): remove it here.
      const dataDir = /sandbox cluster in (\S+)/.exec(out)![1];
      await pgCtlStop({ pgdata: dataDir, mode: 'immediate' }).catch(() => undefined);
      fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
    }
  });
});
