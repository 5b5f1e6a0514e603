// bench/restore.ts's pgrunbook row: the newest complete base backup of REPO unpacked into DIR
// with the built code pitr's preflight runs (dist/restore/unpack.js), its SHA-256 checked.
//
//   node bench/restore-unpack.mjs file:///repo /empty/dir
import { openRepository } from '../dist/repo/repository.js';
import { unpackTar } from '../dist/restore/unpack.js';
import { ownerOf } from '../dist/postgres/osuser.js';

const [url, dir] = process.argv.slice(2);
const repo = await openRepository(url, process.env);
try {
  const meta = (await repo.catalog()).baseBackups.filter((b) => b.complete).at(-1)?.meta;
  const data = meta?.objects?.data;
  if (!data) throw new Error(`no complete base backup in ${url}`);
  const body = await repo.getVerified(data.key, data.sha256);
  const { files } = await unpackTar(body, { dir, compression: data.compression, owner: await ownerOf(dir), signal: new AbortController().signal, onBytes: () => {} });
  process.stdout.write(`${files} files from ${data.key}\n`);
} finally {
  await repo.close();
}
