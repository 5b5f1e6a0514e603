// execa, loaded the first time a program is run through it rather than when pgrunbook starts: its
// 119 modules cost every process start about 100 ms (bench/startup.ts), and most runs of the
// quick commands never need it.
let loading: Promise<typeof import('execa')> | undefined;

export function loadExeca(): Promise<typeof import('execa')> {
  loading ??= import('execa');
  return loading;
}
