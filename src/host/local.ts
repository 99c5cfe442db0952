import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkArgv, checkEnv, type FileStat, type Host, type RunOptions, type RunResult } from './types';

/**
 * The machine the worker runs on. Each command runs in its own process group, so an abort kills
 * everything it started; `setpriv --pdeathsig KILL` makes the command die with the worker too, so
 * a killed worker leaves no build running behind its back.
 */
export class LocalHost implements Host {
  readonly description = 'local';

  run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    checkArgv(argv);
    checkEnv(opts.env);
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(opts.signal.reason ?? new Error('aborted'));
      const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...argv], {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
      const kill = () => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      opts.signal?.addEventListener('abort', kill, { once: true });
      child.stdout.on('data', (c: Buffer) => opts.onStdout?.(c));
      child.stderr.on('data', (c: Buffer) => opts.onStderr?.(c));
      child.stdin.on('error', () => {}); // a command that exits without reading its input
      child.stdin.end(opts.stdin ?? undefined);
      child.once('error', (err) => {
        opts.signal?.removeEventListener('abort', kill);
        reject(err);
      });
      child.once('close', (code, signal) => {
        opts.signal?.removeEventListener('abort', kill);
        if (opts.signal?.aborted) reject(opts.signal.reason ?? new Error('aborted'));
        else resolve({ code, signal });
      });
    });
  }

  async putFile(localPath: string, remotePath: string, mode?: number): Promise<void> {
    await fs.promises.copyFile(localPath, remotePath);
    if (mode !== undefined) await fs.promises.chmod(remotePath, mode);
  }

  async getFile(remotePath: string, localPath: string): Promise<void> {
    await fs.promises.copyFile(remotePath, localPath);
  }

  async writeFile(remotePath: string, data: Buffer | string, mode?: number): Promise<void> {
    await fs.promises.writeFile(remotePath, data, mode === undefined ? undefined : { mode });
    if (mode !== undefined) await fs.promises.chmod(remotePath, mode); // the umask applied to `mode` above
  }

  readFile(remotePath: string): Promise<Buffer> {
    return fs.promises.readFile(remotePath);
  }

  async stat(p: string): Promise<FileStat | null> {
    try {
      const st = await fs.promises.lstat(p);
      return { size: st.size, mode: st.mode, isFile: st.isFile(), isDirectory: st.isDirectory(), isSymbolicLink: st.isSymbolicLink() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw err;
    }
  }

  readlink(p: string): Promise<string> {
    return fs.promises.readlink(p);
  }

  async remove(p: string, opts: { recursive?: boolean } = {}): Promise<void> {
    if (!path.isAbsolute(p)) throw new Error(`refusing to remove a relative path: ${p}`);
    await fs.promises.rm(p, { force: true, recursive: opts.recursive ?? false });
  }

  async close(): Promise<void> {}
}
