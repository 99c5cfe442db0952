/**
 * The archive mirror debootstrap itself would use for a suite, read on the machine that runs
 * debootstrap (the build host, which may be reached over SSH): its suite script is sourced with a
 * `default_mirror` that prints its argument and stops, so no mirror is written in this project.
 */

const SCRIPT = 'default_mirror() { echo "$1"; exit 0; }; . "$1"; exit 1';

/** Runs argv with an environment where the mirror is wanted, and returns its stdout. */
export type ReadCommand = (argv: string[], env: Record<string, string>) => Promise<string>;

export async function debootstrapDefaultMirror(read: ReadCommand, suite: string): Promise<string> {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(suite)) throw new Error(`not a suite name: ${JSON.stringify(suite).slice(0, 40)}`);
  const script = `/usr/share/debootstrap/scripts/${suite}`;
  let stdout: string;
  try {
    stdout = await read(['sh', '-c', SCRIPT, 'sh', script], { ARCH: 'amd64', SUITE: suite });
  } catch (err) {
    throw new Error(
      `cannot read debootstrap's default mirror for ${suite} from ${script} (is debootstrap installed?): ${(err as Error).message.split('\n')[0]}`,
    );
  }
  const mirror = stdout.trim();
  if (!/^https?:\/\/\S+$/.test(mirror))
    throw new Error(`unexpected default mirror from ${script}: ${mirror.slice(0, 100)}`);
  return mirror;
}
