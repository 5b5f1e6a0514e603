// backup_label, as pg_basebackup puts it at the top of the data directory: start LSN, checkpoint,
// start time.

export interface BackupLabel {
  startLsn?: string;
  startWalFile?: string;
  checkpointLsn?: string;
  backupMethod?: string;
  backupFrom?: string;
  /** START TIME as written, e.g. "2026-11-24 16:24:18 UTC". */
  startTimeText?: string;
  /** Parsed when its zone is UTC/GMT or a numeric offset. */
  startTime?: Date;
  label?: string;
  startTimeline?: number;
}

export function parseBackupLabel(text: string): BackupLabel {
  const out: BackupLabel = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z ]+): (.*)$/.exec(line.trim());
    if (!m) continue;
    const [, key, value] = m;
    switch (key) {
      case 'START WAL LOCATION': {
        const w = /^([0-9A-F]+\/[0-9A-F]+)(?: \(file ([0-9A-F]{24})\))?/i.exec(value);
        if (w) {
          out.startLsn = w[1].toUpperCase();
          out.startWalFile = w[2];
        }
        break;
      }
      case 'CHECKPOINT LOCATION':
        out.checkpointLsn = value.trim().toUpperCase();
        break;
      case 'BACKUP METHOD':
        out.backupMethod = value.trim();
        break;
      case 'BACKUP FROM':
        out.backupFrom = value.trim();
        break;
      case 'START TIME':
        out.startTimeText = value.trim();
        out.startTime = parseServerTime(value.trim());
        break;
      case 'LABEL':
        out.label = value;
        break;
      case 'START TIMELINE':
        out.startTimeline = Number(value.trim());
        break;
    }
  }
  return out;
}

/** "2026-11-24 16:24:18 UTC" / "... +02" / "... +0530"; undefined for zone abbreviations we cannot resolve. */
export function parseServerTime(text: string): Date | undefined {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)(?: (\S+))?$/.exec(text);
  if (!m) return undefined;
  const iso = `${m[1]}T${m[2]}`;
  const zone = m[3];
  let d: Date;
  if (!zone || zone === 'UTC' || zone === 'GMT' || zone === 'Z') d = new Date(`${iso}Z`);
  else if (/^[+-]\d\d(:?\d\d)?$/.test(zone)) d = new Date(iso + (zone.length === 3 ? `${zone}:00` : zone.includes(':') ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`));
  else return undefined;
  return Number.isNaN(d.getTime()) ? undefined : d;
}
