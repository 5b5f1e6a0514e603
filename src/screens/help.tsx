
import { Box, Text } from 'ink';
import { useKeys } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';

const SECTIONS: [string, [string, string][]][] = [
  ['Procedures (home)', [['↑ ↓  j k  g G', 'move'], ['Enter', 'choose'], ['s', 'backup status dashboard (with a repository)'], ['?', 'this help'], ['q', 'quit']]],
  ['Parameters', [['↑ ↓  Tab', 'move between fields'], ['type', 'edit; lists are comma-separated'], ['Space', 'toggle a yes/no field'], ['Ctrl-T', 'recovery target picker (pitr)'], ['Enter', 'next field; on the last one, run'], ['Esc', 'back']]],
  ['Running', [['y / n', 'answer a question'], ['type + Enter', 'a destructive step: type the name shown; Esc refuses'], ['Ctrl-C', 'stop: the step is recorded as interrupted; --resume RUN_ID continues']]],
  ['Report', [['Enter', 'back to the procedures'], ['?', 'this help'], ['q', 'quit with the run\'s exit code']]],
];

export function HelpOverlay({ onClose }: { onClose(): void }) {
  const { c } = useTheme();
  const { columns } = useTerminalSize();
  useKeys(() => onClose());
  return (
    <Box flexDirection="column" width={Math.max(40, columns)}>
      <Text bold color={c('cyan')}>
        pgrunbook keys
      </Text>
      {SECTIONS.map(([title, keys]) => (
        <Box key={title} flexDirection="column">
          <Text bold>{title}</Text>
          {keys.map(([k, what]) => (
            <Text key={k} wrap="truncate-end">
              {'  '}
              <Text color={c('yellow')}>{k.padEnd(14)}</Text> {what}
            </Text>
          ))}
        </Box>
      ))}
      <Text dimColor>any key closes this help</Text>
    </Box>
  );
}
