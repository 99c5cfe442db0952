import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkArgv, checkEnv, type FileStat, type Host, type RunOptions, type RunResult } from './types';

/**
 * What of the worker's own environment a command on this machine sees: the worker holds
 * credentials (AWS keys, the Temporal API key, the local S3 secret, an SSH agent) that a build's
 * commands — and through mmdebstrap and apt, the image's maintainer scripts — must never see.
 * Kept: the basics (PATH, HOME, TMPDIR, locale, TZ), the proxy settings in both spellings (the
 * downloads need them), where the trusted CA certificates are (behind a TLS-inspecting proxy
 * nothing downloads without them), and the Go and npm download settings. TERM is not kept: the
 * commands write to pipes, not to a terminal. Anything a command needs beyond this it gets
 * through `RunOptions.env`. (An SSH build host's commands see sshd's environment, never the worker's.)
 */
const INHERITED = new Set([
  'PATH',
  'HOME',
  'TMPDIR',
  'TZ',
  'LANG',
  'LANGUAGE',
  'http_proxy',
  'https_proxy',
  'ftp_proxy',
  'all_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'FTP_PROXY',
  'ALL_PROXY',
  'NO_PROXY',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
  'CURL_CA_BUNDLE',
  'NODE_EXTRA_CA_CERTS',
  'GIT_SSL_CAINFO',
  'XDG_CACHE_HOME',
  'XDG_CONFIG_HOME',
  'GOPROXY',
  'GOSUMDB',
  'GOPRIVATE',
  'GONOPROXY',
  'GONOSUMDB',
  'npm_config_registry',
  'NPM_CONFIG_REGISTRY',
]);

/** The allow-listed part of `env` (see INHERITED). */
export function inheritedEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const [k, v] of Object.entries(env))
    if (v !== undefined && (INHERITED.has(k) || /^LC_[A-Z]+$/.test(k))) kept[k] = v;
  return kept;
}

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
        env: { ...inheritedEnv(), ...opts.env },
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
      return {
        size: st.size,
        mode: st.mode,
        isFile: st.isFile(),
        isDirectory: st.isDirectory(),
        isSymbolicLink: st.isSymbolicLink(),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
        return null;
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
