import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { projectRoot } from '../../src/util/paths';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A bench script's path: `bench/<name>` in the checkout, or its compiled `dist/bench/<name>`. */
export const benchPath = (name: string, compiled = false): string =>
  path.join(projectRoot(), ...(compiled ? ['dist'] : []), 'bench', name);

/** Runs a program to its end, with this process's environment plus `env`; its output is kept. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
