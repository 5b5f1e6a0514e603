// Colours, honouring NO_COLOR (https://no-color.org): when it is set and non-empty, no
// component gets a colour. Bold, dim and inverse are styles, not colours, and stay.
import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';
import { useStdout } from 'ink';
import { ThemeProvider, defaultTheme, extendTheme } from '@inkjs/ui';

export type ColorName = 'green' | 'red' | 'yellow' | 'cyan' | 'blue' | 'magenta' | 'gray';

export interface Theme {
  color: boolean;
  /** The colour to pass to <Text color>, or undefined when colours are off. */
  c(name: ColorName): ColorName | undefined;
}

export function makeTheme(color: boolean): Theme {
  return { color, c: (name) => (color ? name : undefined) };
}

export function colorEnabled(env: NodeJS.ProcessEnv): boolean {
  return !(env.NO_COLOR !== undefined && env.NO_COLOR !== '');
}

const ThemeContext = createContext<Theme>(makeTheme(true));

export function useTheme(): Theme {
  return useContext(ThemeContext);
}

// @inkjs/ui's spinner paints its frame blue; without colours it gets no colour.
const plainUiTheme = extendTheme(defaultTheme, {
  components: {
    Spinner: { styles: { frame: () => ({}) } },
  },
});

export function AppThemeProvider({ color, children }: { color: boolean; children: ReactNode }) {
  const theme = makeTheme(color);
  const inner = <ThemeContext.Provider value={theme}>{children}</ThemeContext.Provider>;
  return color ? inner : <ThemeProvider theme={plainUiTheme}>{inner}</ThemeProvider>;
}

export interface TerminalSize {
  columns: number;
  rows: number;
}

/** The terminal's size, following resizes. Defaults to 80x24 when the stream does not say. */
export function useTerminalSize(): TerminalSize {
  const { stdout } = useStdout();
  const read = (): TerminalSize => ({ columns: stdout.columns || 80, rows: stdout.rows || 24 });
  const [size, setSize] = useState(read);
  useEffect(() => {
    const onResize = () => setSize(read());
    stdout.on('resize', onResize);
    return () => {
      stdout.off('resize', onResize);
    };
  }, [stdout]);
  return size;
}
