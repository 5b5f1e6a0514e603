// Moved to ./formats/tar.ts and ./formats/backup_manifest.ts; kept so that modules not yet updated still compile.
export { TarFormatError, TarReader, type TarEntry, type TarEntrySink } from './formats/tar.js';
export { Crc32c, ManifestError, ManifestReader, manifestChecksummer, type ManifestFile } from './formats/backup_manifest.js';
