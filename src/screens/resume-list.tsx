// Home's resume list: the runs of this host that did not finish (failed, interrupted, or cut
// off), newest first; Enter resumes the chosen one in the app, with the profile its journal names.
import type { UnfinishedRun } from '../engine/journal.js';
import { PickList } from './pick-list.js';

export interface ResumeListProps {
  list(): Promise<UnfinishedRun[]>;
  onDone(runId?: string): void;
}

const STATUS_WORD: Record<string, string> = { failed: 'failed', interrupted: 'interrupted', 'verification-failed': 'verification failed', refused: 'refused' };

export function describeRun(r: UnfinishedRun): string {
  const how = r.lastStatus ? (STATUS_WORD[r.lastStatus] ?? r.lastStatus) : 'never ended';
  const when = r.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return `${how} · ${r.completedSteps} step${r.completedSteps === 1 ? '' : 's'} done${r.profile ? ` · profile ${r.profile}` : ''} · ${when}`;
}

export function ResumeList({ list, onDone }: ResumeListProps) {
  return (
    <PickList
      title="Unfinished runs on this host · Enter resumes one from where it stopped"
      load={async () => (await list()).map((r) => ({ value: r.runId, label: r.runId, detail: describeRun(r) }))}
      empty="no unfinished runs on this host"
      onDone={onDone}
    />
  );
}
