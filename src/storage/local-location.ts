// file:// repository URLs (and plain absolute paths): a local directory.

import { normalize } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { checkQuery, invalidUrl, trimSlash, tuningFrom, type Location, type LocationSyntax } from './location.js';
import type { StoreOptions } from './types.js';

export interface FileLocation extends Location {
  kind: 'file';
  root: string;
}

/** An absolute path, already checked to be one. */
export function fileLocationOfPath(path: string, options: StoreOptions): FileLocation {
  return { kind: 'file', root: trimSlash(normalize(path)), tuning: tuningFrom(new URLSearchParams(), options) };
}

export const fileLocation: LocationSyntax<FileLocation> = {
  parse(url, _env, options) {
    if (url.host !== '' && url.host !== 'localhost') {
      throw invalidUrl(`file:// URLs name a local directory: use file:///path (three slashes), not file://${url.host}/...`);
    }
    const q = url.searchParams;
    checkQuery(q, [], 'file');
    let root: string;
    try {
      root = trimSlash(normalize(fileURLToPath(url)));
    } catch {
      throw invalidUrl('bad file:// path (encoded slashes or NUL bytes are not allowed)');
    }
    return { kind: 'file', root, tuning: tuningFrom(q, options) };
  },
  describe: (loc) => pathToFileURL(loc.root).href,
  secrets: () => [],
};
