// Unpacking a base backup's tar stream (gzip or not) into a data directory with tar, as the
// directory's owner, while the stream's checksum is checked by whoever supplies it.
import zlib from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import { isRoot } from '../postgres/osuser.js';
import type { Owner } from './datadir.js';

export async function unpackTar(body: NodeJS.ReadableStream, opts: { dir: string; compression: string; owner: Owner; signal: AbortSignal; onBytes: (done: number) => void }): Promise<void> {
  let done = 0;
  body.on('data', (chunk: Buffer) => {
    done += chunk.length;
    opts.onBytes(done);
  });
  // --ignore-zeros: read to the end of the stream, past the end-of-archive blocks, so
  // tar never closes its input early and the whole object's checksum is checked.
  const tar = execa('tar', ['-x', '--ignore-zeros', '-f', '-', '-C', opts.dir], {
    ...(isRoot() ? { uid: opts.owner.uid, gid: opts.owner.gid } : {}),
    stdin: 'pipe',
    stdout: 'ignore',
    stderr: 'pipe',
    cancelSignal: opts.signal,
    reject: false,
  });
  const stages: (NodeJS.ReadableStream | NodeJS.ReadWriteStream | NodeJS.WritableStream)[] = [body];
  if (opts.compression === 'gzip') stages.push(zlib.createGunzip());
  stages.push(tar.stdin!);
  await pipeline(stages, { signal: opts.signal });
  const r = await tar;
  if (r.exitCode !== 0) throw new Error(`tar could not unpack the backup into ${opts.dir}: ${String(r.stderr).trim().slice(-500)}`);
}
