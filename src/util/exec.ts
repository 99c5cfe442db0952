import { execFile, spawn, type SpawnOptions } from 'node:child_process';

/** Result of a local command whose output is small enough to keep. */
export interface Captured {
  stdout: string;
  stderr: string;
}

/** Runs a local command (argv, no shell) and returns its output; throws with stderr's tail on failure. */
export function capture(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; maxBuffer?: number } = {},
): Promise<Captured> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: opts.env, cwd: opts.cwd, maxBuffer: opts.maxBuffer ?? 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const tail = String(stderr).trim().split('\n').slice(-15).join('\n');
          reject(
            new Error(
              `${[cmd, ...args].join(' ')} failed (${err.code ?? err.signal ?? err.message})${tail ? `:\n${tail}` : ''}`,
            ),
          );
        } else resolve({ stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** Runs a local command with its output passed through to ours; throws when it fails. */
export function passthrough(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal})`)),
    );
  });
}
