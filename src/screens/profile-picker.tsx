// Home's profile picker: the saved profiles (the one in use marked), Enter switches the app to
// the chosen one without a restart. The app hands in the list and does the switching.
import { PickList } from './pick-list.js';

export interface ProfilePickerProps {
  current?: string;
  list(): Promise<string[]>;
  onDone(name?: string): void;
}

export function ProfilePicker({ current, list, onDone }: ProfilePickerProps) {
  return (
    <PickList
      title="Profiles · Enter switches to the profile"
      initial={current ?? ''}
      load={async () => (await list()).map((name) => ({ value: name, label: name, detail: name === current ? 'in use' : undefined }))}
      empty="no profiles saved yet: press Esc, then c on Home to connect to a cluster and save one"
      onDone={onDone}
    />
  );
}
