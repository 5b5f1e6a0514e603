// Benchmark: replaying archived WAL through restore_command, pgrunbook's (as pitr writes it: shell
// fast path from the prefetch spool, else `wal-fetch --spool`) against pgBackRest's archive-get
// with archive-async (lz4, process-max 2).
//
//   npm run build && node --import tsx bench/wal-fetch.ts [--scale 1] [--rounds 1] [--markdown FILE]
//
// Outline: a sandbox cluster archives into both repositories at once (archive_command runs
// pgrunbook wal-push, then pgbackrest archive-push); a pg_basebackup copy is taken, then a bulk
// load writes 64 x scale segments, all archived. Per round and per tool: a copy of the base
// backup with recovery.signal and the tool's restore_command is started, and timed until it
// leaves recovery (end of the archive reached, promoted).
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { appendFile, chown, cp, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSandboxCluster, findFreePort } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser, type OsIds } from '../src/postgres/osuser.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { lockAlive, readLock } from '../src/wal/spool.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const STANZA = 'bench';
const PGBACKREST = '/usr/bin/pgbackrest';
const q = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const log = (m: string) => process.stderr.write(`[wal-fetch] ${m}\n`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : Number.NaN;
};

const { values } = parseArgs({
  options: { scale: { type: 'string' }, rounds: { type: 'string' }, markdown: { type: 'string' }, 'no-pgbackrest': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
});
if (values.help) {
  console.log('usage: node --import tsx bench/wal-fetch.ts [--scale N (64 x N segments, default 1)] [--rounds N (default 1)] [--markdown FILE] [--no-pgbackrest]');
  process.exit(0);
}
const segments = Math.max(8, Math.round(64 * Number(values.scale ?? 1)));
const rounds = Number(values.rounds ?? 1);

function sh(command: string, ids: OsIds | undefined, cwd = '/'): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    const child = spawn('/bin/sh', ['-c', command], { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'], ...(ids ? { uid: ids.uid, gid: ids.gid } : {}) });
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

async function main(): Promise<void> {
  if (!existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npm run build` first');
  const ids = isRoot() ? await lookupUser('postgres') : undefined;
  const withPgbackrest = !values['no-pgbackrest'] && existsSync(PGBACKREST);
  const cluster = await createSandboxCluster({ name: 'wal-fetch', settings: { archive_mode: 'on', archive_command: '', wal_keep_size: '0', max_wal_size: '1GB' } });
  const bin = cluster.binDir;
  try {
    const own = async (d: string) => {
      await mkdir(d, { recursive: true, mode: 0o700 });
      if (ids) await chown(d, ids.uid, ids.gid);
      return d;
    };
    const repo = await own(path.join(cluster.baseDir, 'repo'));
    const side = await own(path.join(cluster.baseDir, 'pgbackrest'));
    for (const d of ['repo', 'spool', 'log', 'lock']) await own(path.join(side, d));
    const conf = path.join(side, 'pgbackrest.conf');
    const confText = (pgPath: string, port: number) =>
      [
        '[global]',
        `repo1-path=${side}/repo`,
        'compress-type=lz4',
        'archive-async=y',
        'process-max=2',
        `spool-path=${side}/spool`,
        `log-path=${side}/log`,
        `lock-path=${side}/lock`,
        'log-level-console=warn',
        'log-level-file=off',
        `[${STANZA}]`,
        `pg1-path=${pgPath}`,
        `pg1-socket-path=${cluster.host}`,
        `pg1-port=${port}`,
        '',
      ].join('\n');
    await writeFile(conf, confText(cluster.dataDir, cluster.port));
    if (ids) await chown(conf, ids.uid, ids.gid);
    const push = walCommandLine('wal-push', `file://${repo}`, process.env).command;
    if (withPgbackrest) {
      const r = await sh(`${PGBACKREST} --config=${q(conf)} --stanza=${STANZA} stanza-create`, ids);
      if (r.code !== 0) throw new Error(`stanza-create: ${r.out}`);
    }
    const archiveCommand = withPgbackrest ? `${push} && ${PGBACKREST} --config=${q(conf)} --stanza=${STANZA} --no-archive-async archive-push %p` : push;
    await cluster.psql(`ALTER SYSTEM SET archive_command = '${archiveCommand.replace(/'/g, "''")}'`);
    await cluster.psql('SELECT pg_reload_conf()');

    const base = path.join(cluster.baseDir, 'base');
    const bb = await sh(`${q(path.join(bin, 'pg_basebackup'))} -h ${q(cluster.host)} -p ${cluster.port} -U postgres -D ${q(base)} -X fetch -c fast`, ids);
    if (bb.code !== 0) throw new Error(`pg_basebackup: ${bb.out}`);
    log(`base backup taken; writing ${segments} segments of WAL`);
    await cluster.psql('CREATE TABLE load (id int, v text)');
    const startSeg = (await cluster.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f'))[0].f;
    for (;;) {
      const cur = (await cluster.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f'))[0].f;
      if (parseInt(cur.slice(16), 16) + parseInt(cur.slice(8, 16), 16) * 256 - (parseInt(startSeg.slice(16), 16) + parseInt(startSeg.slice(8, 16), 16) * 256) >= segments) break;
      await cluster.psql(`INSERT INTO load SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g`);
    }
    const last = (await cluster.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f'))[0].f;
    await cluster.psql('SELECT pg_switch_wal()');
    for (let i = 0; ; i++) {
      const [a] = await cluster.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
      if (a.w && a.w >= last) break;
      if (i > 12000) throw new Error('archiving did not catch up');
      await new Promise((r) => setTimeout(r, 50));
    }
    await cluster.stop('fast');
    log(`archived up to ${last}`);

    const spool = path.join(cluster.baseDir, 'pgrunbook-replay.spool');
    const tools = [{ label: 'pgrunbook wal-fetch with prefetch (as pitr writes it)', restore: walCommandLine('wal-fetch', `file://${repo}`, process.env, { spool }).command }];
    if (withPgbackrest) tools.push({ label: 'pgBackRest archive-get async (lz4, process-max 2)', restore: `${PGBACKREST} --config=${q(conf)} --stanza=${STANZA} archive-get %f "%p"` });
    const times = new Map<string, number[]>(tools.map((t) => [t.label, []]));
    for (let round = 0; round < rounds; round++) {
      for (const t of round % 2 ? [...tools].reverse() : tools) {
        const dir = path.join(cluster.baseDir, 'replay');
        await rm(dir, { recursive: true, force: true });
        // The previous round's prefetcher may still run (it idles out after 60 s): stop it first.
        const owner = readLock(path.join(spool, 'fetch', 'prefetcher.pid'));
        if (owner && lockAlive(owner)) process.kill(owner.pid, 'SIGTERM');
        for (let i = 0; i < 200 && owner && lockAlive(owner); i++) await new Promise((res) => setTimeout(res, 25));
        await rm(spool, { recursive: true, force: true, maxRetries: 5 });
        await rm(path.join(side, 'spool'), { recursive: true, force: true });
        await own(path.join(side, 'spool'));
        await cp(base, dir, { recursive: true });
        if (ids) await sh(`chown -R postgres:postgres ${q(dir)}`, undefined);
        const port = await findFreePort();
        if (withPgbackrest) {
          await writeFile(conf, confText(dir, port));
          if (ids) await chown(conf, ids.uid, ids.gid);
        }
        await appendFile(path.join(dir, 'postgresql.auto.conf'), `\nport = ${port}\narchive_mode = off\nrestore_command = '${t.restore.replace(/'/g, "''")}'\nrecovery_target_action = 'promote'\n`);
        await writeFile(path.join(dir, 'recovery.signal'), '');
        if (ids) await sh(`chown -R postgres:postgres ${q(dir)}`, undefined);
        const t0 = Date.now();
        const st = await sh(`${q(path.join(bin, 'pg_ctl'))} -D ${q(dir)} -l ${q(path.join(cluster.baseDir, 'replay.log'))} -o ${q(`-k ${cluster.host}`)} -w -t 600 start`, ids);
        if (st.code !== 0) throw new Error(`pg_ctl start: ${st.out}`);
        for (;;) {
          const r = await sh(`${q(path.join(bin, 'psql'))} -h ${q(cluster.host)} -p ${port} -U postgres -Atc 'SELECT pg_is_in_recovery()' postgres`, ids);
          if (r.out.trim() === 'f') break;
          if (Date.now() - t0 > 600_000) throw new Error('replay did not finish in 600 s');
          await new Promise((res) => setTimeout(res, 20));
        }
        const sec = (Date.now() - t0) / 1000;
        await sh(`${q(path.join(bin, 'pg_ctl'))} -D ${q(dir)} -m immediate stop`, ids);
        log(`round ${round + 1}: ${t.label}: ${sec.toFixed(2)} s`);
        times.get(t.label)!.push(sec);
      }
    }
    const ours = median(times.get(tools[0].label)!);
    const peer = tools[1] ? median(times.get(tools[1].label)!) : undefined;
    const lines = [
      `### WAL replay through restore_command (${segments} archived segments x ${rounds} round${rounds > 1 ? 's' : ''}, ${new Date().toISOString()})`,
      '',
      '| restore_command | median start-to-promoted (s) | rounds |',
      '|---|---|---|',
      ...tools.map((t) => `| ${t.label} | ${median(times.get(t.label)!).toFixed(2)} | ${times.get(t.label)!.map((x) => x.toFixed(2)).join(', ')} |`),
      '',
      peer ? `Time ratio pgrunbook / pgBackRest: **${(ours / peer).toFixed(2)}x** (goal <= 1.0x)` : 'Time ratio: no pgBackRest row',
      '',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    if (values.markdown) appendFileSync(values.markdown, `${lines.join('\n')}\n`);
  } finally {
    await cluster.remove();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`wal-fetch: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
