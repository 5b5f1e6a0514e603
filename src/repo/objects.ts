// Reading a small repository object (a metadata file, a record, a WAL file) whole.

import { buffer } from 'node:stream/consumers';
import { ObjectNotFoundError, type GetOptions, type ObjectStore } from '../storage/types.js';

/** The whole object; with `expectedSha256` the read fails on a checksum mismatch. */
export async function readObject(store: ObjectStore, key: string, opts: GetOptions = {}): Promise<Buffer> {
  const { body } = await store.get(key, opts);
  return buffer(body);
}

/** The whole object, or undefined when there is none. */
export async function readObjectIfExists(store: ObjectStore, key: string, opts: GetOptions = {}): Promise<Buffer | undefined> {
  try {
    return await readObject(store, key, opts);
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return undefined;
    throw err;
  }
}
