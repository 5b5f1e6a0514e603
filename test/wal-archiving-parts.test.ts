// The parts wal-archiving is built from, each on its own: the plan rules (what the settings
// should be, what changes), and against a real cluster of its own the settings module (ALTER
// SYSTEM with awkward values, its rollback) and the archiver module (a switched segment
// arriving, a failing archive_command being reported as failing).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverWritableDir } from './helpers/cli.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { withPg } from '../src/postgres/client.js';
import { switchAndWaitForArchive, telltaleLines } from '../src/postgres/archiver.js';
import { alterSystemReset, alterSystemSet, alterSystemText, readAutoConf, readSettings, reloadConf } from '../src/postgres/settings.js';
import { spoolFromCommand } from '../src/wal/spool.js';
import { archiveCommandMatches, parseDurationSec, proposeChanges, type Desired } from '../src/procedures/wal-archiving/plan.js';
import type { Inspection, LiveSetting } from '../src/procedures/wal-archiving/types.js';

const live = (setting: string, extra: Partial<LiveSetting> = {}): LiveSetting => ({ setting, configured: setting, pendingRestart: false, ...extra });

function inspection(settings: Inspection['live']): Inspection {
  return {
    endpoint: 'test',
    version: '15',
    versionNum: 150000,
    superuser: true,
    inRecovery: false,
    clusterName: '',
    port: 5432,
    postmasterStart: '',
    live: settings,
    archiver: { archivedCount: 0, lastArchivedWal: null, lastArchivedTime: null, failedCount: 0, lastFailedWal: null, lastFailedTime: null, failing: false },
    missingPrivileges: [],
  };
}

describe('wal-archiving plan rules', () => {
  const desired: Desired = {
    archiveCommand: "/usr/bin/pgrunbook wal-push --repo 'file:///var/backups/pg' %p",
    overrideGiven: false,
    repoUrl: 'file:///var/backups/pg',
    archiveTimeoutSec: 60,
  };

  it('parses durations in the units PostgreSQL takes, refusing zero and fractions of a second', () => {
    expect(parseDurationSec('60s')).toBe(60);
    expect(parseDurationSec('5min')).toBe(300);
    expect(parseDurationSec(' 2 h ')).toBe(7200);
    expect(parseDurationSec('90')).toBe(90);
    expect(parseDurationSec('0')).toBeUndefined();
    expect(parseDurationSec('500ms')).toBeUndefined();
    expect(parseDurationSec('soon')).toBeUndefined();
  });

  it('keeps a wal-push into the same repository and refuses one into another, or any other command under --archive-command', () => {
    const repo = desired.repoUrl;
    expect(archiveCommandMatches('pgrunbook wal-push --repo file:///var/backups/pg %p', desired.archiveCommand, false, repo)).toBe(true);
    expect(archiveCommandMatches("/opt/x/cli.js wal-push --repo 'file:///var/backups/pg' \"%p\"", desired.archiveCommand, false, repo)).toBe(true);
    expect(archiveCommandMatches('pgrunbook wal-push --repo file:///elsewhere %p', desired.archiveCommand, false, repo)).toBe(false);
    expect(archiveCommandMatches('cp %p /mnt/wal/%f', desired.archiveCommand, false, repo)).toBe(false);
    expect(archiveCommandMatches('pgrunbook wal-push --repo file:///var/backups/pg %p', '/usr/local/bin/mine %p', true, repo)).toBe(false);
    // An env file is wanted: the command must name it.
    expect(archiveCommandMatches('pgrunbook wal-push --repo file:///var/backups/pg %p', desired.archiveCommand, false, repo, '/etc/pg.env')).toBe(false);
    expect(archiveCommandMatches('pgrunbook wal-push --env-file /etc/pg.env --repo file:///var/backups/pg %p', desired.archiveCommand, false, repo, '/etc/pg.env')).toBe(true);
    // Asynchronous: the same spool is required; with --no-async-archive (false) none may be named.
    const async = "test /s/push/ok/%f -nt %p || exec pgrunbook wal-push --spool /s --repo file:///var/backups/pg %p";
    expect(archiveCommandMatches(async, desired.archiveCommand, false, repo, undefined, '/s')).toBe(true);
    expect(archiveCommandMatches(async, desired.archiveCommand, false, repo, undefined, '/other')).toBe(false);
    expect(archiveCommandMatches(async, desired.archiveCommand, false, repo, undefined, false)).toBe(false);
    expect(archiveCommandMatches('pgrunbook wal-push --repo file:///var/backups/pg %p', desired.archiveCommand, false, repo, undefined, '/s')).toBe(false);
    expect(archiveCommandMatches('pgrunbook wal-push --repo file:///var/backups/pg %p', desired.archiveCommand, false, repo, undefined, false)).toBe(true);
    expect(spoolFromCommand(`test '/a b/push/ok'/%f -nt %p || exec pgrunbook wal-push --spool '/a b' --repo x %p`)).toBe('/a b');
  });

  it('proposes a restart only for what is wrong now, and rewrites what the next restart would undo', () => {
    const fromOff = proposeChanges(
      desired,
      inspection({ wal_level: live('replica'), archive_mode: live('off'), archive_command: live('(disabled)', { configured: '' }), archive_timeout: live('0'), archive_library: live('') }),
    );
    expect(fromOff.map((c) => [c.name, c.restart])).toEqual([
      ['archive_mode', true],
      ['archive_command', false],
      ['archive_timeout', false],
    ]);
    expect(fromOff.find((c) => c.name === 'archive_timeout')?.to).toBe('60s');

    // Live values right, but postgresql.conf sets wal_level minimal for the next restart; archive_library wins over archive_command.
    const undone = proposeChanges(
      desired,
      inspection({
        wal_level: live('replica', { pendingRestart: true, fileValue: 'minimal' }),
        archive_mode: live('on', { pendingRestart: true, fileValue: 'always' }),
        archive_command: live(desired.archiveCommand),
        archive_timeout: live('300'),
        archive_library: live('basic_archive'),
      }),
    );
    expect(undone.map((c) => [c.name, c.restart])).toEqual([
      ['wal_level', false],
      ['archive_library', false],
    ]);
    expect(undone[0].why).toContain('next restart');
  });

  it('quotes the few lines the server log gives about a failure: the command\'s own output, then the verdict', () => {
    const lines = [
      '2026-11-24 16:37:16.913 UTC [16519] LOG:  archiver process started',
      'pgrunbook wal-push: cannot put wal/000000010000000000000003.gz: EACCES',
      '2026-11-24 16:37:17.001 UTC [16519] LOG:  archive command failed with exit code 1',
      '2026-11-24 16:37:17.001 UTC [16519] DETAIL:  The failed archive command was: ...',
    ];
    expect(telltaleLines(lines)).toEqual(['pgrunbook wal-push: cannot put wal/000000010000000000000003.gz: EACCES', 'LOG: archive command failed with exit code 1']);
  });
});

describe('settings and archiver against a real server', () => {
  let cluster: SandboxCluster;
  let walDir: string;

  beforeAll(async () => {
    walDir = await serverWritableDir('pgrunbook-walparts-');
    cluster = await createSandboxCluster({
      name: 'wal-archiving-parts',
      settings: { archive_mode: 'on', archive_command: `cp %p ${walDir}/%f` },
    });
  });

  afterAll(async () => {
    await cluster?.remove();
    if (walDir) fs.rmSync(walDir, { recursive: true, force: true });
  });

  it('ALTER SYSTEM takes a value with quotes and backslashes exactly, shows it as run, and its rollback leaves postgresql.auto.conf as before', async () => {
    const awkward = "printf '%s\\n' it's %p";
    expect(alterSystemText('archive_command', 'on')).toBe("ALTER SYSTEM SET archive_command = 'on'");
    expect(alterSystemText('archive_command', awkward)).toBe("ALTER SYSTEM SET archive_command = E'printf ''%s\\\\n'' it''s %p'");
    await withPg(cluster.connection(), async (c) => {
      const before = await readAutoConf(c, ['archive_command']);
      expect(before).toEqual({ archive_command: null });
      await alterSystemSet(c, 'archive_command', awkward);
      expect(await readAutoConf(c, ['archive_command'])).toEqual({ archive_command: awkward });
      await alterSystemReset(c, 'archive_command');
      await reloadConf(c);
      expect(await readAutoConf(c, ['archive_command'])).toEqual({ archive_command: null });
      const [row] = await readSettings(c, ['archive_command']);
      expect(row.setting).toBe(`cp %p ${walDir}/%f`);
    });
  });

  it('a switched segment is seen archived and located; a failing archive_command is reported failing, not arrived', async () => {
    const locateIn = (dir: string) => async (seg: string) => (fs.existsSync(path.join(dir, seg)) ? { key: seg, size: fs.statSync(path.join(dir, seg)).size } : undefined);
    const arrived = await withPg(cluster.connection(), (c) => switchAndWaitForArchive(c, { timeoutMs: 30_000, failuresBeforeGivingUp: 3, locate: locateIn(walDir) }));
    expect(arrived.kind).toBe('arrived');
    expect(fs.existsSync(path.join(walDir, arrived.segment))).toBe(true);

    await withPg(cluster.connection(), async (c) => {
      await alterSystemSet(c, 'archive_command', 'echo simulated failure >&2; exit 1');
      await reloadConf(c);
    });
    try {
      const failing = await withPg(cluster.connection(), (c) => switchAndWaitForArchive(c, { timeoutMs: 60_000, failuresBeforeGivingUp: 1, locate: locateIn(walDir) }));
      expect(failing.kind).toBe('failing');
      expect(failing.kind === 'failing' && failing.failures).toBeGreaterThanOrEqual(1);
      expect(fs.existsSync(path.join(walDir, failing.segment))).toBe(false);
    } finally {
      await withPg(cluster.connection(), async (c) => {
        await alterSystemReset(c, 'archive_command');
        await reloadConf(c);
      });
    }
  });
});
