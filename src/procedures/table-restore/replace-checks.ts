// Whether the live rows can be replaced without changing anything else: what other tables'
// foreign keys would do when the rows are deleted, and whether the table's triggers can be kept
// from firing. Pure decisions on what the catalog said; each result is one preflight check.
import { byHand } from '../../postgres/databases.js';
import { triggersToDisable, type ForeignKey, type Trigger } from '../../postgres/tables.js';
import { label } from './types.js';

export interface CheckOutcome {
  name: string;
  ok: boolean;
  detail: string;
}

interface ReplaceFacts {
  schema: string;
  table: string;
  user: string;
  /** Foreign keys of other tables referencing it. */
  refs: ForeignKey[];
  triggers: Trigger[];
  mayReplica: boolean;
  mayAlter: boolean;
}

const ON_DELETE: Record<string, string> = { c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' };

/** The foreign keys that reference the table: with session_replication_role = replica they stay as they are; without it, ON DELETE actions would change other tables. */
export function referencesCheck(f: ReplaceFacts): CheckOutcome {
  const referenced = f.refs.map((r) => `${r.child} (${r.name})`).join(', ');
  const changing = f.refs.filter((r) => r.onDelete in ON_DELETE);
  if (f.mayReplica) {
    // No trigger fires during the copy, ON DELETE actions included: the rows of the referencing
    // tables stay as they are, so every key they reference must come back.
    return {
      name: 'replace possible',
      ok: true,
      detail: f.refs.length ? `referenced by ${referenced}: every key they reference must be in the dump (checked before any change, and again before COMMIT)` : 'no other table references it',
    };
  }
  if (changing.length) {
    const what = changing.map((r) => `${r.child} (ON DELETE ${ON_DELETE[r.onDelete]})`).join(', ');
    return {
      name: 'replace possible',
      ok: false,
      detail:
        `deleting the rows of ${label(f.schema, f.table)} would change rows of other tables that reference it: ${what}, and user "${f.user}" may not set session_replication_role to keep them as they are. ` +
        `Connect as a superuser, or use --mode new-table and merge the rows you need by hand`,
    };
  }
  return {
    name: 'replace possible',
    ok: true,
    detail: f.refs.length
      ? `referenced by ${referenced} (user "${f.user}" may not set session_replication_role: if a deleted row is still referenced when checked, the replace fails and rolls back; deferrable constraints are checked at COMMIT. ` +
        `To keep the foreign keys' triggers from firing, connect as a superuser or have one run: ${byHand.grantReplicationRole(f.user)})`
      : 'no other table references it',
  };
}

/** The table's user triggers: none may fire for the deleted and restored rows. Undefined when it has none. */
export function triggersCheck(f: ReplaceFacts): CheckOutcome | undefined {
  if (!f.triggers.length) return undefined;
  const names = [...new Set(f.triggers.map((t) => `${t.table}: ${t.name}`))].join(', ');
  const toDisable = triggersToDisable(f.triggers, f.mayReplica);
  if (!toDisable.length) return { name: 'triggers', ok: true, detail: `${names}: they do not fire during the copy (session_replication_role = replica)` };
  if (!f.mayAlter) {
    return {
      name: 'triggers',
      ok: false,
      detail: `${label(f.schema, f.table)} has triggers (${names}) that would fire for every restored row, and user "${f.user}" may not disable them (it is not the table's owner or a superuser). Connect as its owner or a superuser, or use --mode new-table`,
    };
  }
  const other = f.triggers.filter((t) => !toDisable.includes(t));
  return {
    name: 'triggers',
    ok: true,
    detail:
      `${toDisable.map((t) => `${t.table}: ${t.name}`).join(', ')}: disabled inside the copy's transaction (they do not fire for the deleted and restored rows) and enabled again before COMMIT` +
      (other.length ? `; ${other.map((t) => `${t.table}: ${t.name}`).join(', ')}: do not fire during the copy (session_replication_role = replica)` : ''),
  };
}
