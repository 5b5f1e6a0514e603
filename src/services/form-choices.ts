// What the params form offers as pick lists, read from the cluster and the repository the app
// runs against: databases (size), tables of one database (rows, size), dumps of one database
// and base backups (time, size), newest first. The app builds it from its services; the form
// only calls these functions.
import type { ConnectionSettings } from '../config/connection.js';
import { formatBytes } from '../engine/format.js';
import { listDatabases, listTables } from '../postgres/listing.js';
import { openRepository } from '../repo/repository.js';
import type { Catalog } from '../repo/catalog.js';

export interface Choice {
  value: string;
  /** One line: what the operator recognises it by. */
  label: string;
  /** Time, size: shown dimmed beside the label. */
  detail?: string;
}

export type ChoiceKind = 'database' | 'databases' | 'table' | 'dump' | 'backup';

export interface FormChoices {
  /** Choices for a field of this kind; `database` narrows tables and dumps. */
  load(kind: ChoiceKind, opts: { database?: string; signal?: AbortSignal }): Promise<Choice[]>;
}

const when = (iso: string | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC') : 'time unknown');

export function dumpChoices(catalog: Catalog, database: string | undefined): Choice[] {
  return catalog.dumps
    .filter((d) => d.complete && (!database || d.database === database))
    .sort((a, b) => (b.meta?.stopTime ?? b.id).localeCompare(a.meta?.stopTime ?? a.id))
    .map((d) => ({ value: d.id, label: `${d.id}${database ? '' : `  ${d.database}`}`, detail: `${when(d.meta?.consistentAt ?? d.meta?.stopTime)} · ${formatBytes(d.meta?.size ?? d.bytes)}` }));
}

export function baseBackupChoices(catalog: Catalog): Choice[] {
  return catalog.baseBackups
    .filter((b) => b.complete)
    .sort((a, b) => (b.meta?.stopTime ?? b.id).localeCompare(a.meta?.stopTime ?? a.id))
    .map((b) => ({ value: b.id, label: b.id, detail: `${when(b.meta?.stopTime)} · timeline ${b.meta?.timeline ?? '?'} · ${formatBytes(b.meta?.size ?? b.bytes)}` }));
}

/** The pick lists of the cluster at `connection` and the repository at `repo` (opened anew each time). */
export function formChoicesFor(connection: ConnectionSettings, repo: string | undefined, env: NodeJS.ProcessEnv): FormChoices {
  const catalog = async () => {
    const r = await openRepository(repo, env);
    try {
      return await r.catalog();
    } finally {
      await r.close();
    }
  };
  return {
    async load(kind, opts) {
      switch (kind) {
        case 'database':
        case 'databases':
          return (await listDatabases(connection)).map((d) => ({ value: d.name, label: d.name, detail: formatBytes(d.bytes) }));
        case 'table': {
          if (!opts.database) throw new Error('choose the database first: its tables are listed from it');
          const tables = await listTables({ ...connection, database: opts.database });
          return tables.map((t) => ({ value: t.name, label: t.name, detail: `${t.rowsEstimate >= 0 ? `~${t.rowsEstimate} rows · ` : ''}${formatBytes(t.bytes)}` }));
        }
        case 'dump':
          return dumpChoices(await catalog(), opts.database);
        case 'backup':
          return baseBackupChoices(await catalog());
      }
    },
  };
}
