// Runs in every test file before its own hooks. Its afterAll therefore runs after theirs (hooks
// unwind like a stack), when every cluster and server the file started is stopped: what the file
// made under the temporary directory goes then, whether its tests passed or failed.
import { afterAll } from 'vitest';
import { removeTempDirs } from './helpers/temp.js';

afterAll(() => {
  removeTempDirs();
});
