// The storage layer's public surface. Importing it loads no SDK: drivers are loaded by openStore().
export * from './types.js';
export {
  describeLocation,
  openLocation,
  openStore,
  parseRepoUrl,
  redactSecrets,
  type AzureLocation,
  type Env,
  type FileLocation,
  type RepoLocation,
  type S3Location,
} from './url.js';
export { sha256Hex, HashingStream } from './checksum.js';
export { DEFAULT_RETRY, backoffDelay, isTransientError, withRetry } from './retry.js';
