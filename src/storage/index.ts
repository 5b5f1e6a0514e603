// The storage layer's public surface: moving bytes. Importing it loads no SDK: drivers are loaded by
// openStore() through the registry. What the bytes mean (the repository) is in src/repo/.
export * from './types.js';
export {
  describeLocation,
  openLocation,
  openStore,
  parseRepoUrl,
  redactSecrets,
  secretsOf,
  type AzureLocation,
  type Env,
  type FileLocation,
  type RepoLocation,
  type S3Location,
} from './url.js';
export { registerDriver, registeredKinds, type Driver } from './registry.js';
export type { DriverModule, Location, LocationSyntax } from './location.js';
export { sha256Hex, HashingStream } from './checksum.js';
export { DEFAULT_RETRY, backoffDelay, isTransientError, withRetry } from './retry.js';
