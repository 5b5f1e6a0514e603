// Moved to ./programs/pg_dump.ts; kept so that modules not yet updated still compile.
export { StderrLines, findPgClientFor, serverMajor } from './programs/pg_dump.js';
