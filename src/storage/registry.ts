// The driver registry: URL scheme -> how to parse and describe its locations (always loaded, no
// SDK) and how to load the driver that opens them (a dynamic import, so that `wal-push` for a
// file:// repository never loads the AWS or Azure SDK).
//
// A new backend is one file exporting its LocationSyntax and createStore(), plus one
// registerDriver() line (below for the built-in ones; a test registers its own), plus a run of the
// shared contract suite (test/storage.contract.test.ts).

import { fileLocation } from './local-location.js';
import { azureLocation } from './azure-location.js';
import { s3Location } from './s3-location.js';
import { URL_EXAMPLES, invalidUrl, type DriverModule, type Location, type LocationSyntax } from './location.js';
import type { ObjectStore } from './types.js';

export interface Driver<L extends Location = Location> {
  kind: string;
  syntax: LocationSyntax<L>;
  /** Loads the driver's implementation (and its SDK) only when a store is opened. */
  load(): Promise<DriverModule<L>>;
}

const drivers = new Map<string, Driver>();

/** Registers the driver for `kind` (its URL scheme, without ':'). A kind is registered once. */
export function registerDriver<L extends Location>(
  kind: string,
  syntax: LocationSyntax<L>,
  load: () => Promise<DriverModule<L>>,
): void {
  if (!/^[a-z][a-z0-9+.-]*$/.test(kind)) throw new Error(`bad storage driver kind '${kind}'`);
  if (drivers.has(kind)) throw new Error(`a storage driver for '${kind}' is already registered`);
  drivers.set(kind, { kind, syntax, load } as Driver<Location>);
}

/** The driver for a scheme; an invalid-url error naming the known schemes when there is none. */
export function driverFor(kind: string): Driver {
  const driver = drivers.get(kind);
  if (!driver) throw invalidUrl(`unknown scheme '${kind}:' (${URL_EXAMPLES})`);
  return driver;
}

export function registeredKinds(): string[] {
  return [...drivers.keys()];
}

export async function openWithDriver(loc: Location): Promise<ObjectStore> {
  const mod = await driverFor(loc.kind).load();
  return mod.createStore(loc);
}

registerDriver('file', fileLocation, () => import('./local.js'));
registerDriver('s3', s3Location, () => import('./s3.js'));
registerDriver('azure', azureLocation, () => import('./azure.js'));
