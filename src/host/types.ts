/**
 * The build host: where images are built. Commands are argument vectors, never shell strings;
 * output streams to callbacks and is never buffered whole; an AbortSignal kills the command
 * (and whatever it started) on the host.
 */

export interface RunOptions {
  signal?: AbortSignal;
  /** Extra environment variables (names must be plain identifiers). */
  env?: Record<string, string>;
  cwd?: string;
  stdin?: Buffer | string;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

export interface RunResult {
  /** Exit code, or null when the command was ended by a signal. */
  code: number | null;
  signal: string | null;
}

export interface FileStat {
  size: number;
  mode: number;
  isFile: boolean;
  isDirectory: boolean;
  isSymbolicLink: boolean;
}

export interface Host {
  /** `local`, or `user@host:port`: for messages. */
  readonly description: string;
  run(argv: string[], opts?: RunOptions): Promise<RunResult>;
  /** Copies a local file to the host (then sets `mode` when given). */
  putFile(localPath: string, remotePath: string, mode?: number): Promise<void>;
  /** Copies a file from the host to a local path. */
  getFile(remotePath: string, localPath: string): Promise<void>;
  writeFile(remotePath: string, data: Buffer | string, mode?: number): Promise<void>;
  /** Reads a small file. */
  readFile(remotePath: string): Promise<Buffer>;
  /** lstat: null when the path does not exist. */
  stat(path: string): Promise<FileStat | null>;
  /** The target of a symbolic link, as stored (not resolved). */
  readlink(path: string): Promise<string>;
  /** Removes a file or (with recursive) a tree; no error when absent. */
  remove(path: string, opts?: { recursive?: boolean }): Promise<void>;
  close(): Promise<void>;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function checkEnv(env: Record<string, string> | undefined): void {
  for (const [k, v] of Object.entries(env ?? {})) {
    if (!ENV_NAME.test(k)) throw new Error(`invalid environment variable name: ${JSON.stringify(k)}`);
    if (v.includes('\0')) throw new Error(`environment variable ${k} contains a NUL byte`);
  }
}

export function checkArgv(argv: string[]): void {
  if (!argv.length || !argv[0]) throw new Error('empty command');
  for (const a of argv)
    if (a.includes('\0')) throw new Error(`argument contains a NUL byte: ${JSON.stringify(a.slice(0, 40))}`);
}
