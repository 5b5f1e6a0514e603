// Which form fields open a picker, and which: pitr's target opens the recovery timeline; a
// database, databases, table, dump or base backup field opens a pick list of what the cluster
// and the repository hold (tables and dumps of the database the form names).
import type { Procedure } from '../engine/types.js';
import type { RecoveryTimelineSource } from '../services/recovery-timeline.js';
import type { IncidentSource } from '../services/incident-source.js';
import type { ChoiceKind, FormChoices } from '../services/form-choices.js';
import type { FieldPicker } from './params-form.js';
import { PickList } from './pick-list.js';
import { TargetPicker } from './target-picker.js';

/** Params chosen on the recovery timeline instead of typed: procedure id -> param name. */
export const RECOVERY_TARGET_PARAMS: Record<string, string> = { pitr: 'target' };

/** Param name -> what its pick list lists. */
export const PICK_LISTS: Record<string, { kind: ChoiceKind; what: string }> = {
  database: { kind: 'database', what: 'databases' },
  databases: { kind: 'databases', what: 'databases' },
  table: { kind: 'table', what: 'tables' },
  dump: { kind: 'dump', what: 'dumps' },
  backup: { kind: 'backup', what: 'base backups' },
};

export function fieldPickers(procedure: Procedure, sources: { timeline: RecoveryTimelineSource; incidents?: IncidentSource; choices: FormChoices }): Record<string, FieldPicker> | undefined {
  const out: Record<string, FieldPicker> = {};
  const target = RECOVERY_TARGET_PARAMS[procedure.id];
  for (const spec of procedure.params) {
    if (spec.name === target) {
      out[spec.name] = {
        hint: 'pick on the timeline',
        render: ({ value, onDone }) => <TargetPicker source={sources.timeline} incidents={sources.incidents} initial={value} onDone={onDone} />,
      };
      continue;
    }
    const list = PICK_LISTS[spec.name];
    if (!list) continue;
    out[spec.name] = {
      hint: `list ${list.what}`,
      render: ({ value, values, onDone }) => {
        const database = list.kind === 'table' || list.kind === 'dump' ? values.database?.trim() || undefined : undefined;
        const of = database ? ` of ${database}` : '';
        return (
          <PickList
            title={`${procedure.id} · ${spec.name}: ${list.what}${of}`}
            initial={value}
            multi={list.kind === 'databases'}
            load={() => sources.choices.load(list.kind, { database })}
            empty={`no ${list.what}${of} ${list.kind === 'dump' || list.kind === 'backup' ? 'in the repository' : 'on the server'}`}
            onDone={onDone}
          />
        );
      },
    };
  }
  return Object.keys(out).length ? out : undefined;
}
