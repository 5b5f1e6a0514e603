// The params form: one field per ParamSpec. Text for string, number and list (the example
// as placeholder), a select for choice, a toggle for boolean. Enter on the last field (or on
// "Run") validates through the engine's resolveParams, exactly as headless flags would be;
// errors show under the field they name. All key handling is one pure reducer. A field can
// have a picker (the pitr target opens the recovery timeline; databases, tables, dumps and
// base backups open a pick list): Enter on it while it is empty, or Ctrl-T, shows the picker in
// place of the form, and its answer fills the field. A focused text field starts selected, as
// in a dialog box: the first key typed replaces what was pre-filled (← keeps it to edit).
import { useEffect, useReducer, type ReactNode } from 'react';
import { Box, Text } from 'ink';
import { flagName, resolveParams, type RawFlags } from '../engine/params.js';
import type { ParamSpec, Params, Procedure } from '../engine/types.js';
import { typeOver, useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { clip } from './format.js';

export type FieldValue = string | boolean;

export interface FormState {
  procedure: Procedure;
  env: NodeJS.ProcessEnv;
  defaults: Params;
  /** One per param, in order: text for string/number/list/choice, boolean for boolean. */
  values: FieldValue[];
  /** What each field started as (a boolean is only passed on when changed). */
  initial: FieldValue[];
  /** 0..params.length-1 are fields; params.length is the Run action. */
  focus: number;
  /** The focused text field's value is selected: typing replaces it, Backspace clears it. */
  selected: boolean;
  errors: string[];
  /** Names of the params that have a picker. */
  pickers: string[];
  /** The field whose picker is open. */
  picking?: number;
  /** Set when validation passed: the typed params to run with. */
  result?: Params;
  cancelled?: boolean;
}

export type FormAction = { type: 'key'; input: string; key: Key } | { type: 'submit' } | { type: 'picked'; value?: string };

/** A screen that chooses a field's value (shown instead of the form while open). */
export interface FieldPicker {
  /** What the picker does, for the key hint ("pick on the timeline"). */
  hint: string;
  /** `onDone(value)` fills the field; `onDone()` leaves it as it was. */
  render(props: { value: string; values: Record<string, string>; onDone(value?: string): void }): ReactNode;
}

/** Choices offered for a choice param; "" stands for "not set" when the param is optional without a default. */
export function choiceOptions(spec: ParamSpec, current?: string): string[] {
  const choices = spec.choices ?? [];
  const optional = !spec.required && spec.default === undefined;
  const opts = optional ? ['', ...choices] : [...choices];
  if (current !== undefined && !opts.includes(current)) opts.push(current);
  return opts;
}

function toText(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (Array.isArray(value)) return value.join(',');
  return String(value);
}

/**
 * Fields start from what headless would use with no flags: environment, profile, default; or,
 * given `draft` (what the operator typed last time, kept by the app across a failed run), from that.
 */
export function initFormState(procedure: Procedure, env: NodeJS.ProcessEnv, defaults: Params = {}, pickers: string[] = [], draft?: FieldValue[]): FormState {
  const { params } = resolveParams(procedure, {}, env, defaults);
  const values: FieldValue[] = procedure.params.map((spec) => {
    const v = params[spec.name];
    if (spec.type === 'boolean') return v === true;
    if (spec.type === 'choice') return v === undefined ? choiceOptions(spec)[0] ?? '' : String(v);
    return toText(v);
  });
  const typed = draft && draft.length === values.length && draft.every((v, i) => typeof v === typeof values[i]) ? draft : undefined;
  return { procedure, env, defaults, values: typed ? [...typed] : values, initial: [...values], focus: 0, selected: true, errors: [], pickers };
}

/** The form's values by param name, as text (what pickers read: the database a table list is of). */
export function valuesByName(state: FormState): Record<string, string> {
  return Object.fromEntries(state.procedure.params.map((spec, i) => [spec.name, String(state.values[i])]));
}

/** The flags the typed values amount to (what `--flag value` would be headless). */
export function formFlags(state: FormState): RawFlags {
  const flags: RawFlags = {};
  state.procedure.params.forEach((spec, i) => {
    const key = flagName(spec.name).slice(2);
    const v = state.values[i];
    if (spec.type === 'boolean') {
      if (v !== state.initial[i]) flags[key] = Boolean(v);
      return;
    }
    const text = String(v);
    if (text.trim() !== '') flags[key] = spec.type === 'list' || spec.secret ? text : text.trim();
  });
  return flags;
}

/** The field an error message is about: the first param whose flag it names. */
export function fieldForError(error: string, specs: ParamSpec[]): number {
  for (let i = 0; i < specs.length; i++) {
    const flag = flagName(specs[i].name).replace(/[-]/g, '\\-');
    if (new RegExp(`${flag}(?![a-z0-9-])`).test(error)) return i;
  }
  return -1;
}

export function validateForm(state: FormState): FormState {
  const { params, errors } = resolveParams(state.procedure, formFlags(state), state.env, state.defaults);
  if (errors.length) {
    const first = errors.map((e) => fieldForError(e, state.procedure.params)).find((i) => i >= 0);
    return { ...state, errors, result: undefined, focus: first ?? state.focus };
  }
  return { ...state, errors: [], result: params };
}

export function formReducer(state: FormState, action: FormAction): FormState {
  if (state.result || state.cancelled) return state;
  if (action.type === 'submit') return validateForm(state);
  if (action.type === 'picked') {
    const i = state.picking;
    if (i === undefined) return state;
    if (action.value === undefined) return { ...state, picking: undefined };
    const values = [...state.values];
    values[i] = action.value;
    // The picked value replaces what the field's errors were about; on to the next field.
    const errors = state.errors.filter((e) => fieldForError(e, state.procedure.params) !== i);
    return { ...state, values, picking: undefined, focus: Math.min(state.procedure.params.length, i + 1), selected: true, errors };
  }
  // The picker has the keys while it is open.
  if (state.picking !== undefined) return state;
  const { input, key } = action;
  const specs = state.procedure.params;
  const last = specs.length; // the Run action
  if (key.escape) return { ...state, cancelled: true };
  if (state.focus < last && state.pickers.includes(specs[state.focus].name)) {
    if ((key.ctrl && input === 't') || (key.return && String(state.values[state.focus]).trim() === '')) return { ...state, picking: state.focus };
  }
  if (key.upArrow || (key.tab && key.shift)) return { ...state, focus: Math.max(0, state.focus - 1), selected: true };
  if (key.downArrow || key.tab) return { ...state, focus: Math.min(last, state.focus + 1), selected: true };
  if (key.return) {
    if (state.focus >= last - 1) return validateForm(state);
    return { ...state, focus: state.focus + 1, selected: true };
  }
  if (state.focus >= last) return state;
  const spec = specs[state.focus];
  const value = state.values[state.focus];
  const set = (v: FieldValue): FormState => {
    const values = [...state.values];
    values[state.focus] = v;
    return { ...state, values };
  };
  if (spec.type === 'boolean') {
    if (input === ' ' || key.leftArrow || key.rightArrow) return set(!value);
    if (input === 'y') return set(true);
    if (input === 'n') return set(false);
    return state;
  }
  if (spec.type === 'choice') {
    const opts = choiceOptions(spec, String(value));
    const i = Math.max(0, opts.indexOf(String(value)));
    if (key.rightArrow || input === ' ') return set(opts[(i + 1) % opts.length]);
    if (key.leftArrow) return set(opts[(i - 1 + opts.length) % opts.length]);
    return state;
  }
  // ← or → on a selected value keeps it, to edit at its end.
  if (key.leftArrow || key.rightArrow) return state.selected ? { ...state, selected: false } : state;
  // Selected: the first key typed replaces the value, Backspace clears it.
  const typed = typeOver(String(value), state.selected, input, key);
  if (typed.value === value && typed.selected === state.selected) return state;
  return { ...set(typed.value), selected: typed.selected };
}

export interface ParamsFormProps {
  procedure: Procedure;
  env: NodeJS.ProcessEnv;
  defaults?: Params;
  /** Pickers by param name. */
  pickers?: Record<string, FieldPicker>;
  /** What the operator typed last time (kept by the app): the fields start from it. */
  draft?: FieldValue[];
  /** `values`: the fields as typed, for the app to keep (a failed run's form comes back as it was). */
  onSubmit(params: Params, values: FieldValue[]): void;
  onBack(values: FieldValue[]): void;
}

export function ParamsForm({ procedure, env, defaults, pickers, draft, onSubmit, onBack }: ParamsFormProps) {
  const { c } = useTheme();
  const { columns } = useTerminalSize();
  const [state, dispatch] = useReducer(formReducer, undefined, () => initFormState(procedure, env, defaults, Object.keys(pickers ?? {}), draft));
  useKeys((input, key) => dispatch({ type: 'key', input, key }));

  useEffect(() => {
    if (state.result) onSubmit(state.result, state.values);
    else if (state.cancelled) onBack(state.values);
  }, [state.result, state.cancelled]);

  const specs = procedure.params;
  const picker = state.picking !== undefined ? pickers?.[specs[state.picking].name] : undefined;
  if (picker && state.picking !== undefined) {
    return <>{picker.render({ value: String(state.values[state.picking]), values: valuesByName(state), onDone: (value) => dispatch({ type: 'picked', value }) })}</>;
  }

  const width = Math.max(40, columns);
  const labelWidth = Math.min(24, Math.max(...specs.map((s) => flagName(s.name).length - 2 + (s.required ? 2 : 0))) + 2);
  const fieldErrors = specs.map((): string[] => []);
  const otherErrors: string[] = [];
  for (const e of state.errors) {
    const i = fieldForError(e, specs);
    if (i >= 0) fieldErrors[i].push(e);
    else otherErrors.push(e);
  }
  const focused = state.focus < specs.length ? specs[state.focus] : undefined;
  const valueWidth = Math.max(10, width - labelWidth - 4);
  const focusedPicker = focused ? pickers?.[focused.name] : undefined;

  return (
    <Box flexDirection="column" width={width}>
      <Text bold wrap="truncate-end">
        {procedure.title} <Text dimColor>· parameters ({procedure.id})</Text>
      </Text>
      <Text> </Text>
      {specs.map((spec, i) => (
        <Box key={spec.name} flexDirection="column">
          <Box>
            <Text bold={i === state.focus}>{i === state.focus ? '› ' : '  '}</Text>
            <Box width={labelWidth}>
              <Text bold={i === state.focus} wrap="truncate-end">
                {flagName(spec.name).slice(2)}
                {spec.required ? <Text color={c('yellow')}> *</Text> : null}
              </Text>
            </Box>
            <FieldValueView spec={spec} value={state.values[i]} focused={i === state.focus} selected={i === state.focus && state.selected} width={valueWidth} />
          </Box>
          {fieldErrors[i].map((e) => (
            <Text key={e} color={c('red')} wrap="truncate-end">
              {'    ✗ '}
              {e}
            </Text>
          ))}
        </Box>
      ))}
      <Text bold={state.focus === specs.length} inverse={state.focus === specs.length}>
        {state.focus === specs.length ? '› ' : '  '}▶ Run {procedure.id}
      </Text>
      {otherErrors.map((e) => (
        <Text key={e} color={c('red')} wrap="wrap">
          ✗ {e}
        </Text>
      ))}
      <Text> </Text>
      {focused ? (
        <Text wrap="wrap" dimColor>
          {clip(describeSpec(focused), width * 2 - 4)}
        </Text>
      ) : (
        <Text dimColor wrap="wrap">
          Press Enter to check the values and start {procedure.title.toLowerCase()} ({procedure.steps.length} steps).
        </Text>
      )}
      {focused && fieldErrors[state.focus].length ? (
        <Text color={c('red')} wrap="wrap">
          {clip(fieldErrors[state.focus][0], width * 2 - 4)}
        </Text>
      ) : null}
      <Text> </Text>
      <Text dimColor wrap="truncate-end">
        {focusedPicker && String(state.values[state.focus]).trim() === ''
          ? `↑↓ move · type, or Enter/Ctrl-T ${focusedPicker.hint} · Esc back`
          : `↑↓ move · ${hintFor(focused, state.selected)}${focusedPicker ? ` · Ctrl-T ${focusedPicker.hint}` : ''} · Enter ${state.focus >= specs.length - 1 ? 'run' : 'next'} · Esc back`}
      </Text>
    </Box>
  );
}

function hintFor(spec: ParamSpec | undefined, selected: boolean): string {
  if (!spec) return 'Enter runs';
  if (spec.type === 'boolean') return 'Space toggles';
  if (spec.type === 'choice') return '←→ choose';
  const typing = selected ? 'type replaces · ← edit' : spec.type === 'list' ? 'type, comma-separated' : 'type to edit';
  return `${typing} · Ctrl-U clear`;
}

export function describeSpec(spec: ParamSpec): string {
  const extra = [
    spec.required ? 'required' : undefined,
    spec.default !== undefined ? `default ${toText(spec.default)}` : undefined,
    spec.env ? `or $${spec.env}` : undefined,
    spec.example ? `e.g. ${spec.example}` : undefined,
    `headless: ${flagName(spec.name)}`,
  ].filter(Boolean);
  return `${spec.description} (${extra.join('; ')})`;
}

function FieldValueView({ spec, value, focused, selected, width }: { spec: ParamSpec; value: FieldValue; focused: boolean; selected: boolean; width: number }) {
  const { c } = useTheme();
  if (spec.type === 'boolean') {
    return <Text bold={focused}>{value ? '[x] yes' : '[ ] no'}</Text>;
  }
  if (spec.type === 'choice') {
    const opts = choiceOptions(spec, String(value));
    return (
      <Text wrap="truncate-end">
        {focused ? '‹ ' : '  '}
        {opts.map((o, i) => {
          const label = o === '' ? '(none)' : o;
          const selected = o === value;
          return (
            <Text key={o || '(none)'} bold={selected} color={selected ? c('cyan') : undefined} dimColor={!selected}>
              {i ? ' ' : ''}
              {selected ? `[${label}]` : ` ${label} `}
            </Text>
          );
        })}
        {focused ? ' ›' : ''}
      </Text>
    );
  }
  const text = String(value);
  const shown = spec.secret ? '•'.repeat(text.length) : text;
  if (!shown) {
    return (
      <Text wrap="truncate-end">
        {focused ? <Text inverse> </Text> : null}
        <Text dimColor>{spec.example ? clip(`e.g. ${spec.example}`, width - 2) : ''}</Text>
      </Text>
    );
  }
  return (
    <Text wrap="truncate-start">
      <Text inverse={selected}>{shown.length > width - 1 ? `…${shown.slice(-(width - 2))}` : shown}</Text>
      {focused && !selected ? <Text inverse> </Text> : null}
    </Text>
  );
}
