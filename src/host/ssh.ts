import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2';
import { checkArgv, checkEnv, type FileStat, type Host, type RunOptions, type RunResult } from './types';

/** POSIX shell single-quoting: the remote shell hands the argument over byte for byte. */
export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** OpenSSH's fingerprint of a raw public key blob: `SHA256:` + unpadded base64. */
export function sshFingerprint(keyBlob: Buffer): string {
  return `SHA256:${crypto.createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

/**
 * The server offered a host key other than the pinned one. Retrying cannot fix that (the pin is
 * stale, or another machine answers at that address): the activities turn it into a
 * non-retryable failure, so the step pauses for the operator at once.
 */
export class HostKeyMismatchError extends Error {}

export interface SshHostOptions {
  host: string;
  port: number;
  user: string;
  /** Private key file on this machine; read at connect, never logged or sent anywhere but sshd. */
  keyPath: string;
  /** The pinned host key fingerprint, `SHA256:…`. Any other key is refused before authenticating. */
  hostKeySha256: string;
  keepaliveIntervalMs?: number;
  readyTimeoutMs?: number;
}

/**
 * Each command runs as `sh -c 'echo $$ > PIDFILE; cd DIR; exec "$@"'` with every argument quoted:
 * sshd makes the command a process-group leader, so its PID names the whole group, and an abort
 * kills the group through a second channel (OpenSSH does not act on channel signal requests).
 */
const WRAPPER = 'echo $$ > "$1" || exit 126; cd -- "$2" || exit 126; shift 2; exec "$@"';
// `kill -9 -PGID`: the one spelling of "kill the group" that dash, the usual /bin/sh, accepts.
const KILLER =
  'pid=$(cat -- "$1" 2>/dev/null) && { kill -9 "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null; }; rm -f -- "$1"';

export class SshHost implements Host {
  readonly description: string;
  private sftpChannel?: Promise<SFTPWrapper>;
  private counter = 0;

  private constructor(
    private readonly client: Client,
    private readonly pidDir: string,
    opts: SshHostOptions,
  ) {
    this.description = `${opts.user}@${opts.host}:${opts.port}`;
  }

  /** Connects, checking the host key against the pinned fingerprint before anything else. */
  static async connect(opts: SshHostOptions): Promise<SshHost> {
    const where = `${opts.user}@${opts.host}:${opts.port}`;
    let privateKey: Buffer;
    try {
      privateKey = fs.readFileSync(opts.keyPath);
    } catch (err) {
      throw new Error(`cannot read the SSH key ${opts.keyPath} for ${where} (${(err as NodeJS.ErrnoException).code})`);
    }
    const client = new Client();
    let offered: string | undefined;
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', (err: Error & { level?: string }) => {
        if (offered && offered !== opts.hostKeySha256) {
          reject(
            new HostKeyMismatchError(
              `host key mismatch for ${where}: expected ${opts.hostKeySha256}, got ${offered} (refusing to connect)`,
            ),
          );
        } else if (err.level === 'client-authentication') {
          reject(
            new Error(`SSH authentication failed for ${where} with key ${opts.keyPath} (the server did not accept it)`),
          );
        } else if (err.level === 'client-timeout') {
          reject(new Error(`SSH connection to ${where} timed out`));
        } else {
          reject(new Error(`SSH connection to ${where} failed: ${err.message}`));
        }
      });
      client.connect({
        host: opts.host,
        port: opts.port,
        username: opts.user,
        privateKey,
        hostVerifier: (key: Buffer) => {
          offered = sshFingerprint(key);
          return offered === opts.hostKeySha256;
        },
        keepaliveInterval: opts.keepaliveIntervalMs ?? 15_000,
        keepaliveCountMax: 4,
        readyTimeout: opts.readyTimeoutMs ?? 20_000,
      });
    });
    try {
      const dir = await execCapture(client, `mktemp -d ${shellQuote('/tmp/rootfs-ssh.XXXXXXXX')}`);
      if (!/^\/tmp\/rootfs-ssh\.\w+$/.test(dir.trim()))
        throw new Error(`unexpected mktemp output ${JSON.stringify(dir)}`);
      return new SshHost(client, dir.trim(), opts);
    } catch (err) {
      client.end();
      throw err;
    }
  }

  run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    checkArgv(argv);
    checkEnv(opts.env);
    const pidFile = `${this.pidDir}/${++this.counter}.pid`;
    const envArgs =
      opts.env && Object.keys(opts.env).length ? ['env', ...Object.entries(opts.env).map(([k, v]) => `${k}=${v}`)] : [];
    const command = ['sh', '-c', WRAPPER, 'rootfs', pidFile, opts.cwd ?? '/', ...envArgs, ...argv]
      .map(shellQuote)
      .join(' ');
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(opts.signal.reason ?? new Error('aborted'));
      this.client.exec(command, (err, stream: ClientChannel) => {
        if (err) return reject(new Error(`${this.description}: cannot start ${argv[0]}: ${err.message}`));
        const kill = () => {
          stream.signal('KILL');
          this.exec(['sh', '-c', KILLER, 'rootfs', pidFile], () => stream.close());
        };
        opts.signal?.addEventListener('abort', kill, { once: true });
        stream.on('data', (c: Buffer) => opts.onStdout?.(c));
        stream.stderr.on('data', (c: Buffer) => opts.onStderr?.(c));
        stream.once('close', (code: number | null, signal?: string) => {
          opts.signal?.removeEventListener('abort', kill);
          // The pid file is only needed while the command runs.
          this.exec(['rm', '-f', '--', pidFile]);
          if (opts.signal?.aborted) reject(opts.signal.reason ?? new Error('aborted'));
          // ssh reports signals without the SIG prefix; say them the way Node does.
          else
            resolve({
              code: signal ? null : (code ?? null),
              signal: signal ? (signal.startsWith('SIG') ? signal : `SIG${signal}`) : null,
            });
        });
        stream.end(opts.stdin ?? undefined);
      });
    });
  }

  /** Fire-and-forget housekeeping command; harmless when the connection is already gone. */
  private exec(argv: string[], then?: () => void): void {
    try {
      this.client.exec(argv.map(shellQuote).join(' '), (err, s) => {
        if (err) return then?.();
        s.resume();
        s.stderr.resume();
        s.once('close', () => then?.());
      });
    } catch {
      then?.();
    }
  }

  private sftp(): Promise<SFTPWrapper> {
    this.sftpChannel ??= new Promise((resolve, reject) =>
      this.client.sftp((err, sftp) => (err ? reject(err) : resolve(sftp))),
    );
    return this.sftpChannel;
  }

  async putFile(localPath: string, remotePath: string, mode?: number): Promise<void> {
    const sftp = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      sftp.fastPut(localPath, remotePath, (err) => (err ? reject(err) : resolve())),
    );
    if (mode !== undefined)
      await new Promise<void>((resolve, reject) =>
        sftp.chmod(remotePath, mode, (err) => (err ? reject(err) : resolve())),
      );
  }

  async getFile(remotePath: string, localPath: string): Promise<void> {
    const sftp = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      sftp.fastGet(remotePath, localPath, (err) => (err ? reject(err) : resolve())),
    );
  }

  async writeFile(remotePath: string, data: Buffer | string, mode?: number): Promise<void> {
    const sftp = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      sftp.writeFile(remotePath, data, (err) => (err ? reject(err) : resolve())),
    );
    if (mode !== undefined)
      await new Promise<void>((resolve, reject) =>
        sftp.chmod(remotePath, mode, (err) => (err ? reject(err) : resolve())),
      );
  }

  async readFile(remotePath: string): Promise<Buffer> {
    const sftp = await this.sftp();
    return new Promise((resolve, reject) =>
      sftp.readFile(remotePath, (err, data) => (err ? reject(err) : resolve(data))),
    );
  }

  async stat(p: string): Promise<FileStat | null> {
    const sftp = await this.sftp();
    return new Promise((resolve, reject) =>
      sftp.lstat(p, (err, st) => {
        if (err) return (err as Error & { code?: number }).code === 2 ? resolve(null) : reject(err);
        const type = st.mode & 0o170000;
        resolve({
          size: st.size,
          mode: st.mode,
          isFile: type === 0o100000,
          isDirectory: type === 0o040000,
          isSymbolicLink: type === 0o120000,
        });
      }),
    );
  }

  async readlink(p: string): Promise<string> {
    const sftp = await this.sftp();
    return new Promise((resolve, reject) => sftp.readlink(p, (err, target) => (err ? reject(err) : resolve(target))));
  }

  async remove(p: string, opts: { recursive?: boolean } = {}): Promise<void> {
    if (!p.startsWith('/')) throw new Error(`refusing to remove a relative path: ${p}`);
    const { code } = await this.run(['rm', '-f', ...(opts.recursive ? ['-r'] : []), '--', p]);
    if (code !== 0) throw new Error(`${this.description}: cannot remove ${p}`);
  }

  async close(): Promise<void> {
    await this.run(['rm', '-rf', '--', this.pidDir]).catch(() => undefined);
    this.client.end();
  }
}

/** Runs a constant command on a fresh connection and returns its stdout (for connection set-up only). */
function execCapture(client: Client, command: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.exec(command, (err, stream) => {
      if (err) return reject(err);
      let out = '';
      stream.on('data', (c: Buffer) => (out += c.toString('utf8')));
      stream.stderr.resume();
      stream.once('close', (code: number) =>
        code === 0 ? resolve(out) : reject(new Error(`${command} exited with ${code}`)),
      );
    }),
  );
}
