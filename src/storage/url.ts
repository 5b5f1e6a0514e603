// Repository URLs: parsing, secret-free descriptions, and openStore().
//
//   file:///var/backups/pg/main          (a plain absolute path is accepted too)
//   s3://bucket/prefix?region=..&endpoint=..&forcePathStyle=true&sse=aws:kms&kmsKeyId=..
//   azure://container/prefix?endpoint=http://127.0.0.1:10000/devstoreaccount1
//
// Each scheme's syntax lives with its driver (local-location.ts, s3-location.ts,
// azure-location.ts) and is found through the registry (registry.ts), which loads a driver with a
// dynamic import(): a file:// repository never loads the AWS or Azure SDK, which keeps `wal-push`
// (run by PostgreSQL once per WAL segment) fast to start.

import { isAbsolute } from 'node:path';
import { fileLocationOfPath, type FileLocation } from './local-location.js';
import { URL_EXAMPLES, invalidUrl, type Env, type Location } from './location.js';
import { driverFor, openWithDriver } from './registry.js';
import type { AzureLocation } from './azure-location.js';
import type { S3Location } from './s3-location.js';
import type { ObjectStore, StoreOptions } from './types.js';

export type { Env, ResolvedTuning } from './location.js';
export { redactSecrets } from './location.js';
export type { FileLocation } from './local-location.js';
export type { S3Location, S3Sse } from './s3-location.js';
export type { AzureAuth, AzureLocation } from './azure-location.js';

/** The built-in locations, which the application may look into (e.g. a file repository's root).
 *  A location of a driver registered elsewhere (a test's) is passed through untouched. */
export type RepoLocation = FileLocation | S3Location | AzureLocation;

export function parseRepoUrl(input: string, env: Env = process.env, options: StoreOptions = {}): RepoLocation {
  if (typeof input !== 'string' || input.trim() === '') throw invalidUrl(`empty (${URL_EXAMPLES})`);
  input = input.trim();
  if (!/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(input)) {
    if (!isAbsolute(input)) {
      throw invalidUrl(
        `'${input}' is a relative path; give an absolute path (PostgreSQL runs archive_command from the data directory)`,
      );
    }
    return fileLocationOfPath(input, options);
  }
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw invalidUrl(`not a valid URL (${URL_EXAMPLES})`);
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  if (url.username || url.password) {
    throw invalidUrl(
      `credentials in the URL's user part are not supported: use the query or the ${
        scheme === 'azure' ? 'AZURE_STORAGE_*' : 'AWS_*'
      } environment variables`,
    );
  }
  if (url.hash) throw invalidUrl('fragments (#...) are not allowed');
  // Only the built-in kinds are inspected by the application; other kinds only travel back here.
  return driverFor(scheme).syntax.parse(url, env, options) as RepoLocation;
}

/** The location as a URL without any secret (credentials are never part of it). */
export function describeLocation(loc: Location): string {
  return driverFor(loc.kind).syntax.describe(loc);
}

/** Values that must never be printed; drivers scrub them from error messages. */
export function secretsOf(loc: Location): string[] {
  return driverFor(loc.kind).syntax.secrets(loc);
}

/**
 * Opens the store named by a repository URL (or absolute path). `env` supplies the variables the
 * SDKs would read (credentials, region, endpoint); `options` tunes retries, timeouts and part sizes
 * (the URL's query wins over it).
 */
export async function openStore(url: string, env: Env = process.env, options: StoreOptions = {}): Promise<ObjectStore> {
  return openLocation(parseRepoUrl(url, env, options));
}

export async function openLocation(loc: Location): Promise<ObjectStore> {
  return openWithDriver(loc);
}
