import { spawn } from 'node:child_process';
import * as path from 'node:path';

/** The built CLI's entry point. */
export const CLI = path.join(__dirname, '../../src/cli/main.js');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built `rootfs` CLI as a program. It sees this process's environment plus `env`, or
 * with `clean` only PATH and `env` (so that nothing of the test run's own settings leaks in).
 */
export function rootfs(args: string[], env: NodeJS.ProcessEnv = {}, opts: { clean?: boolean } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const base = opts.clean ? { PATH: process.env.PATH ?? '/usr/bin:/bin' } : process.env;
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...base, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
