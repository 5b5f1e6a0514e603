// A new storage backend is one file (test/fixtures/memory-store.ts) plus one registry line: this
// test registers an in-memory driver and runs the same ObjectStore contract as file, S3 and Azure.

import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { registerDriver, registeredKinds } from '../src/storage/registry.js';
import { describeLocation, openStore, parseRepoUrl } from '../src/storage/url.js';
import { StorageError } from '../src/storage/types.js';
import { objectStoreContract, type Harness } from './helpers/store-contract.js';
import { memoryBuckets, memoryLocation } from './fixtures/memory-store.js';

registerDriver('memory', memoryLocation, () => import('./fixtures/memory-store.js'));

const names: string[] = [];

afterAll(() => {
  for (const n of names) memoryBuckets.delete(n);
});

async function memoryHarness(): Promise<Harness> {
  const name = `contract-${randomBytes(4).toString('hex')}`;
  names.push(name);
  return {
    url: `memory://${name}`,
    env: {},
    async flipByte(key, offset) {
      const o = memoryBuckets.get(name)?.get(`${key}`);
      if (!o) throw new Error(`no object '${key}' in memory://${name}`);
      const bytes = Buffer.from(o.bytes);
      bytes[offset] ^= 0xff;
      o.bytes = bytes;
    },
    dispose: async () => {
      memoryBuckets.delete(name);
    },
  };
}

// The 200 MiB child-process case needs a driver a fresh node process can open by URL: a driver a
// test registers exists only in the test's process.
objectStoreContract('memory', memoryHarness, { childProcess: false });

describe('registering a driver', () => {
  it('makes its scheme a repository URL like the built-in ones', async () => {
    expect(registeredKinds()).toEqual(['file', 's3', 'azure', 'memory']);
    const loc = parseRepoUrl('memory://reg-test', {});
    expect(loc).toMatchObject({ kind: 'memory', name: 'reg-test' });
    expect(describeLocation(loc)).toBe('memory://reg-test');
    const store = await openStore('memory://reg-test', {});
    names.push('reg-test');
    await store.put('a/b', Buffer.from('x'));
    expect(memoryBuckets.get('reg-test')?.get('a/b')?.bytes.toString()).toBe('x');
    await store.close();
  });

  it('refuses a second driver for a kind, and an unknown scheme stays an invalid URL', () => {
    expect(() => registerDriver('memory', memoryLocation, () => import('./fixtures/memory-store.js'))).toThrow(
      /already registered/,
    );
    expect(() => registerDriver('s3', memoryLocation, () => import('./fixtures/memory-store.js'))).toThrow(
      /already registered/,
    );
    expect(() => parseRepoUrl('nosuch://x', {})).toThrow(StorageError);
    expect(() => parseRepoUrl('memory://x/path', {})).toThrow(/no path/);
  });
});
