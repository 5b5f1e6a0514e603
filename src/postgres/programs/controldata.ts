// pg_controldata: what a stopped cluster's pg_control says about it.
import { loadExeca } from './execa-lazy.js';
import { findPgBinary } from '../binaries.js';

/** The "Database system identifier" of the cluster in `pgdata`, or undefined when pg_controldata cannot tell. */
export async function controlFileSystemIdentifier(pgdata: string): Promise<string | undefined> {
  const bin = await findPgBinary('pg_controldata');
  // A clean environment and the C locale: the labels are parsed.
  const { execa } = await loadExeca();
  const r = await execa(bin, [pgdata], { reject: false, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' }, extendEnv: false });
  const m = /Database system identifier:\s+(\d+)/.exec(String(r.stdout));
  return m?.[1];
}
