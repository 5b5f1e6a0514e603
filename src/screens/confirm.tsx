
import { Box, Text } from 'ink';
import type { Key } from './keys.js';
import { editText } from './keys.js';
import { useTheme } from './theme.js';

export interface ConfirmRequest {
  stepId: string;
  message: string;
  destructive?: { what: string; expected: string; means?: string };
}

export interface ConfirmAnswer {
  allowed: boolean;
  reason?: string;
}

export interface ConfirmInputState {
  /** Which request this state belongs to (a new request starts from scratch). */
  seq: number;
  text: string;
  /** Shown under the input after a refused attempt. */
  error?: string;
  attempts: number;
  /** Set once: the answer to hand to the runner. Further keys are ignored. */
  outcome?: ConfirmAnswer;
}

export type ConfirmInputAction =
  | { type: 'reset'; seq: number }
  | { type: 'key'; input: string; key: Key; request: ConfirmRequest }
  | { type: 'cancel'; reason: string };

export const CANCELLED = 'cancelled by the operator';
export const DECLINED = 'declined by the operator';

export function initialConfirmState(seq = 0): ConfirmInputState {
  return { seq, text: '', attempts: 0 };
}

export function confirmReducer(state: ConfirmInputState, action: ConfirmInputAction): ConfirmInputState {
  if (action.type === 'reset') return action.seq === state.seq ? state : initialConfirmState(action.seq);
  if (state.outcome) return state;
  if (action.type === 'cancel') return { ...state, outcome: { allowed: false, reason: action.reason } };
  const { input, key, request } = action;
  if (key.escape) {
    return { ...state, outcome: { allowed: false, reason: request.destructive ? CANCELLED : DECLINED } };
  }
  if (!request.destructive) {
    const k = input.toLowerCase();
    if (k === 'y') return { ...state, outcome: { allowed: true } };
    if (k === 'n') return { ...state, outcome: { allowed: false, reason: DECLINED } };
    return state;
  }
  const expected = request.destructive.expected;
  if (key.return) {
    if (state.text === expected) return { ...state, error: undefined, outcome: { allowed: true } };
    const attempts = state.attempts + 1;
    const typed = state.text === '' ? 'nothing typed' : `"${state.text}"`;
    return { ...state, attempts, error: `${typed} does not match. Type ${expected} exactly, or press Esc to cancel.` };
  }
  const text = editText(state.text, input, key);
  if (text === state.text) return state;
  return { ...state, text, error: undefined };
}

export function ConfirmPrompt({ request, state, stepTitle, columns }: { request: ConfirmRequest; state: ConfirmInputState; stepTitle?: string; columns: number }) {
  const { c } = useTheme();
  const width = Math.max(20, Math.min(columns, 100));
  if (!request.destructive) {
    return (
      <Box flexDirection="column" borderStyle="round" borderColor={c('yellow')} paddingX={1} width={width}>
        <Text bold>{stepTitle ? `Confirm: ${stepTitle}` : 'Confirm'}</Text>
        <Text wrap="wrap">{request.message}</Text>
        <Text>
          <Text bold>y</Text> yes · <Text bold>n</Text> no · <Text bold>Esc</Text> no
        </Text>
      </Box>
    );
  }
  const { what, expected, means } = request.destructive;
  return (
    <Box flexDirection="column" borderStyle="round" borderColor={c('red')} paddingX={1} width={width}>
      <Text bold color={c('red')}>
        ⚠ Destructive step{stepTitle ? `: ${stepTitle}` : ''}
      </Text>
      <Text wrap="wrap">This will {what}.</Text>
      <ConfirmWord expected={expected} means={means} />
      <Text wrap="truncate-start">
        {'> '}
        {state.text}
        <Text inverse> </Text>
      </Text>
      {state.error ? (
        <Text color={c('red')} wrap="wrap">
          ✗ {state.error}
        </Text>
      ) : null}
    </Box>
  );
}

/**
 * The word to type, set apart so it cannot be read as part of the sentence ("Type data and
 * press Enter" read as an instruction about data): on a line of its own, highlighted, with what
 * it is in words beside it.
 */
export function ConfirmWord({ expected, means }: { expected: string; means?: string }) {
  const { c } = useTheme();
  return (
    <Box flexDirection="column">
      <Text wrap="wrap">To continue, type{means ? ` ${means}` : ' this text exactly'}, then press Enter (Esc cancels):</Text>
      <Text wrap="wrap">
        {'  '}
        <Text inverse bold color={c('yellow')}>
          {` ${expected} `}
        </Text>
      </Text>
    </Box>
  );
}
