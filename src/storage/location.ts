// What every repository location has in common, and the checks every driver's URL parser shares:
// tuning from the query, bucket/container + prefix, endpoints, and secret redaction.
//
// No driver and no SDK is imported here: wal-push loads this for every WAL segment.

import { resolveRetry } from './retry.js';
import { StorageError, validateKey, type ObjectStore, type RetryOptions, type StoreOptions } from './types.js';

export type Env = Record<string, string | undefined>;

export interface ResolvedTuning {
  retry: RetryOptions;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  partSize?: number;
  queueSize?: number;
  listPageSize: number;
}

/** A parsed repository URL: `kind` is its scheme and names the driver that opens it. */
export interface Location {
  kind: string;
  /** Tuning from openStore's options, overridden by the URL's query. */
  tuning: ResolvedTuning;
}

/** Locations in a bucket or container share these. */
export interface PrefixedLocation extends Location {
  /** Key prefix inside the bucket/container: '' or ending with '/'. */
  prefix: string;
}

/** How a driver's URLs read: parsed, described and scrubbed without loading the driver. */
export interface LocationSyntax<L extends Location> {
  /** Parses a URL of this driver's scheme; the generic checks (no user part, no fragment) are done. */
  parse(url: URL, env: Env, options: StoreOptions): L;
  /** The location as a URL without any secret: safe for logs, errors and screens. */
  describe(loc: L): string;
  /** Values that must never be printed; drivers scrub them from error messages. */
  secrets(loc: L): string[];
}

export interface DriverModule<L extends Location> {
  createStore(loc: L): ObjectStore;
}

export const URL_EXAMPLES = 'expected file:///path, an absolute path, s3://bucket/prefix or azure://container/prefix';

export function invalidUrl(message: string): StorageError {
  return new StorageError(`invalid repository URL: ${message}`, { code: 'invalid-url' });
}

export function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

export const nonEmpty = (v: string | null | undefined): string | undefined => (v ? v : undefined);

export function checkQuery(q: URLSearchParams, allowed: readonly string[], scheme: string): void {
  for (const name of new Set(q.keys())) {
    if (!allowed.includes(name)) {
      throw invalidUrl(`unknown query parameter '${name}' for ${scheme}:// (known: ${allowed.join(', ') || 'none'})`);
    }
    if (q.getAll(name).length > 1) throw invalidUrl(`query parameter '${name}' is given twice`);
  }
}

export const TUNING_PARAMS = ['partSize', 'queueSize', 'maxAttempts'] as const;

export function tuningFrom(q: URLSearchParams, options: StoreOptions): ResolvedTuning {
  const partSize = q.has('partSize') ? parseSize(q.get('partSize')!, 'partSize') : options.partSize;
  const queueSize = q.has('queueSize') ? parseIntParam(q.get('queueSize')!, 'queueSize', 1, 64) : options.queueSize;
  const maxAttempts = q.has('maxAttempts')
    ? parseIntParam(q.get('maxAttempts')!, 'maxAttempts', 1, 100)
    : options.retry?.maxAttempts;
  let retry: RetryOptions;
  try {
    retry = resolveRetry({ ...options.retry, maxAttempts });
  } catch (e) {
    throw new StorageError(`invalid retry options: ${(e as Error).message}`, { code: 'invalid-argument' });
  }
  return {
    retry,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
    partSize,
    queueSize,
    listPageSize: options.listPageSize ?? 1000,
  };
}

/** The tuning worth showing in a description (the sizes; retries are not part of "where"). */
export function describeTuning(tuning: ResolvedTuning, q: URLSearchParams): void {
  if (tuning.partSize) q.set('partSize', String(tuning.partSize));
  if (tuning.queueSize) q.set('queueSize', String(tuning.queueSize));
}

function parseIntParam(v: string, name: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw invalidUrl(`'${name}' must be an integer from ${min} to ${max}`);
  }
  return Number(v);
}

/** "16777216", "16MiB", "16M", "1GiB" */
function parseSize(v: string, name: string): number {
  const m = /^(\d+)\s*(|k|ki|kib|m|mi|mib|g|gi|gib)$/i.exec(v.trim());
  if (!m) throw invalidUrl(`'${name}' must be a size such as 16MiB`);
  const unit = m[2].toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  const n = Number(m[1]) * mult;
  if (n < 5 * 1024 ** 2 || n > 4000 * 1024 ** 2) throw invalidUrl(`'${name}' must be between 5MiB and 4000MiB`);
  return n;
}

export function parseBool(v: string, name: string): boolean {
  if (/^(true|1|yes)$/i.test(v)) return true;
  if (/^(false|0|no)$/i.test(v)) return false;
  throw invalidUrl(`'${name}' must be true or false`);
}

/** Bucket/container from the URL's host, prefix from its path, both checked. */
export function bucketAndPrefix(url: URL, what: string): { name: string; prefix: string } {
  const name = url.hostname;
  if (!name) throw invalidUrl(`the ${what} is missing (e.g. ${url.protocol}//my-${what}/prefix)`);
  if (url.port) throw invalidUrl(`a port after the ${what} name is not allowed; put the endpoint in ?endpoint=`);
  let path: string;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    throw invalidUrl('bad percent-encoding in the path');
  }
  path = path.replace(/^\/+/, '').replace(/\/+$/, '');
  if (path !== '') {
    try {
      validateKey(path);
    } catch (e) {
      throw invalidUrl(`bad prefix: ${(e as Error).message}`);
    }
  }
  return { name, prefix: path === '' ? '' : `${path}/` };
}

/**
 * The start of parsing an s3:// or azure:// URL: the query checked against the `allowed`
 * parameters, the bucket or container (`what`) from the host and the prefix from the path.
 */
export function parseBucketUrl(url: URL, allowed: readonly string[], scheme: string, what: string): { q: URLSearchParams; name: string; prefix: string } {
  const q = url.searchParams;
  checkQuery(q, allowed, scheme);
  return { q, ...bucketAndPrefix(url, what) };
}

/** The description of a bucket or container location: `scheme://name/prefix?query`, the query
 *  being `q` (the driver's settings) with the tuning worth showing. */
export function describeBucketUrl(scheme: string, name: string, prefix: string, tuning: ResolvedTuning, q: URLSearchParams): string {
  describeTuning(tuning, q);
  return withQuery(`${scheme}://${name}${prefixPart(prefix)}`, q);
}

export function normalizeEndpoint(raw: string, what: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw invalidUrl(`${what} is not a URL (e.g. http://127.0.0.1:9000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw invalidUrl(`${what} must be http:// or https://`);
  if (u.username || u.password) throw invalidUrl(`${what} must not contain credentials`);
  if (u.search || u.hash) throw invalidUrl(`${what} must not have a query or fragment`);
  return u.href.replace(/\/+$/, '');
}

/** '/a/b' for the prefix 'a/b/', each segment URL-encoded; '' for no prefix. */
export function prefixPart(prefix: string): string {
  if (!prefix) return '';
  return `/${prefix
    .slice(0, -1)
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/')}`;
}

/** `head?query`, keeping ':' and '/' readable in the query. */
export function withQuery(head: string, q: URLSearchParams): string {
  const qs = q.toString().replace(/%3A/gi, ':').replace(/%2F/gi, '/');
  return qs ? `${head}?${qs}` : head;
}

/**
 * Removes secrets from text bound for an error message: the given values (raw and URL-encoded) and
 * anything shaped like a signature, key or token.
 */
export function redactSecrets(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) {
    if (!s || s.length < 4) continue;
    for (const form of new Set([s, encodeURIComponent(s)])) out = out.split(form).join('***');
  }
  return out
    .replace(/([?&;](?:sig|signature|X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|secretAccessKey|sessionToken|accountKey|sas|sasToken|password|secret|token)=)[^&\s"';]+/gi, '$1***')
    .replace(/((?:AccountKey|SharedAccessSignature|SharedAccessKey)=)[^;\s"']+/gi, '$1***')
    .replace(/(SharedKey(?:Lite)?\s+[^:\s]+:)[A-Za-z0-9+/=]+/g, '$1***')
    .replace(/(Signature=)[0-9a-f]{16,}/gi, '$1***');
}
