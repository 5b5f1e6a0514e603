// The two ways a recovery plan fails before anything is touched: the repository is damaged,
// or the target is out of its reach.
/** A failure that means the repository's contents are damaged: exit 3, the object named. */
export class RepositoryCorruptError extends Error {
  readonly corrupt = true;
  constructor(
    message: string,
    readonly object: string,
  ) {
    super(message);
    this.name = 'RepositoryCorruptError';
  }
}

/** The target cannot be reached from what the repository holds: bad choice of target (exit 1 with the windows). */
export class UnreachableTargetError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'UnreachableTargetError';
  }
}
