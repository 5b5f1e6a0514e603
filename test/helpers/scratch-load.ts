// What the scratch-recovery tests share: a pgbench load writing other tables for the whole test,
// md5 of a table's ordered rows, the moment between two writes, and no scratch directory left.
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { SandboxCluster } from '../../src/postgres/sandbox.js';
import { tempDir } from './cli.js';

/** pgbench inserting into `noise` (id serial) in `database` until stopped; returns a stopper. */
export function startNoise(cluster: SandboxCluster, database: string): { stop: () => Promise<void> } {
  const script = path.join(tempDir('pgrunbook-noise-'), 'noise.sql');
  fs.writeFileSync(script, 'INSERT INTO noise (pad) VALUES (md5(random()::text));\n');
  const proc: ResultPromise = execa(path.join(cluster.binDir, 'pgbench'), ['-n', '-f', script, '-c', '2', '-T', '900', '-R', '100', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', database], { reject: false, stdin: 'ignore' });
  return {
    async stop() {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

export async function tableMd5(cluster: SandboxCluster, database: string, table: string): Promise<string> {
  const [{ h }] = await cluster.query<{ h: string }>(`SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) AS h FROM ${table} t`, [], database);
  return h;
}

/** A moment strictly between the writes before it and after it. */
export async function momentNow(cluster: SandboxCluster): Promise<string> {
  await cluster.query('SELECT pg_sleep(0.05)');
  const [{ t }] = await cluster.query<{ t: Date }>('SELECT clock_timestamp() AS t');
  await cluster.query('SELECT pg_sleep(0.05)');
  return t.toISOString();
}

export function scratchLeft(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('pgrunbook-scratch-'));
}
