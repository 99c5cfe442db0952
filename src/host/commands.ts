import * as path from 'node:path';
import type { Host, RunOptions } from './types';

/** Wrapper options that take the next argument as their value. */
// prettier-ignore
const UNSHARE_VALUED = new Set([
  '--propagation', '--setgroups', '--map-user', '--map-group', '--map-users', '--map-groups',
  '--wd', '-w', '--root', '-R', '--setuid', '-S', '--setgid', '-G',
]);

/**
 * The program a command line runs, past the wrappers the pipeline puts around it (unshare, env,
 * chroot, the chroot script): `mmdebstrap`, not `unshare`, is what a reader needs to see first.
 */
export function commandName(argv: string[]): string {
  let i = 0;
  for (let guard = 0; guard < 8 && i < argv.length; guard++) {
    const prog = path.posix.basename(argv[i]!);
    if (prog === 'unshare') {
      for (i++; i < argv.length && argv[i]!.startsWith('-'); i++) if (UNSHARE_VALUED.has(argv[i]!)) i++;
    } else if (prog === 'env') {
      for (i++; i < argv.length && (argv[i]!.startsWith('-') || /^[A-Za-z_][A-Za-z0-9_]*=/.test(argv[i]!)); i++)
        if (argv[i] === '-u') i++;
    } else if (prog === 'chroot') {
      for (i++; i < argv.length && argv[i]!.startsWith('-'); i++);
      i++; // the new root
    } else if ((prog === 'sh' || prog === 'bash') && argv[i + 1] === '-c' && argv[i + 3] === 'rootfs-chroot') {
      i += 5; // sh -c SCRIPT rootfs-chroot ROOT command...: see chrootArgv
    } else {
      return prog;
    }
  }
  return path.posix.basename(argv[Math.min(i, argv.length - 1)] ?? '?');
}

/** Lines that name a cause, most telling first: a full disk says more than "E: mmdebstrap failed". */
const CAUSES = [
  /no space left|disk quota|read-only file system|permission denied|operation not permitted|cannot allocate memory|out of memory/i,
  /not found|no such file|could not resolve|connection refused|timed out|certificate|NO_PUBKEY|not signed|killed|wrote only/i,
  /\berror\b|^E:|failed|fatal|cannot|can't|unable/i,
];

/** The line of a stderr tail that best says why the command failed (the last one of the best kind). */
export function tellingLine(tail: string): string {
  const lines = tail
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const found =
    CAUSES.map((re) => lines.filter((l) => re.test(l)).pop()).find((l) => l !== undefined) ?? lines.pop() ?? '';
  // Tools name the cause last (`cp: error copying 'LONG PATH' to 'LONG PATH': No space left on
  // device`): a long line keeps its start and its end.
  return found.length > 240 ? `${found.slice(0, 80)}…${found.slice(-159)}` : found;
}

/**
 * A command that failed. The first line says which program failed and why (the most telling
 * stderr line): `status`, the live view and Temporal Web show only that line. The last stderr
 * lines and the whole command follow on the next lines.
 */
export class CommandError extends Error {
  /** The line of stderr that says why, or '' when it printed nothing. */
  readonly reason: string;

  constructor(
    readonly argv: string[],
    readonly code: number | null,
    readonly signal: string | null,
    readonly stderrTail: string,
    /** `root`: the tree the command ran in; `stderr`: more of stderr than the tail, to find the reason in. */
    opts: { root?: string; stderr?: string } = {},
  ) {
    const shown = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
    const how = code === null ? `was killed by ${signal}` : `exited with ${code}`;
    const reason = tellingLine(opts.stderr ?? stderrTail);
    const tail = stderrTail
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l));
    super(
      [
        `${commandName(argv)} ${how}${reason ? `: ${reason}` : ''}`,
        ...tail,
        `command${opts.root ? ` (in ${opts.root})` : ''}: ${shown.length > 2000 ? `${shown.slice(0, 2000)}…` : shown}`,
      ].join('\n'),
    );
    this.name = 'CommandError';
    this.reason = reason;
  }
}

/** Keeps the last `limit` bytes of a stream. */
export class OutputTail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - this.chunks[0]!.length >= this.limit) this.size -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8');
  }
}

const lastLines = (text: string, n: number) => text.trim().split('\n').slice(-n).join('\n');

/** The error for a command that did not exit 0, from what it printed on stderr (its tail, up to some KiB). */
export function commandError(
  argv: string[],
  result: { code: number | null; signal: string | null },
  stderr: string,
  root?: string,
): CommandError {
  return new CommandError(argv, result.code, result.signal, lastLines(stderr, 15), { root, stderr });
}

/** Runs argv, streaming its output to the callbacks; throws CommandError unless it exits 0. */
export async function check(host: Host, argv: string[], opts: RunOptions = {}): Promise<void> {
  const stderr = new OutputTail(8192);
  const result = await host.run(argv, {
    ...opts,
    onStderr: (c) => {
      stderr.push(c);
      opts.onStderr?.(c);
    },
  });
  if (result.code !== 0) throw commandError(argv, result, stderr.text());
}

/** Runs argv and returns its output (at most `maxBytes` of stdout); throws CommandError unless it exits 0. */
export async function output(
  host: Host,
  argv: string[],
  opts: RunOptions & { maxBytes?: number } = {},
): Promise<{ stdout: string; stderr: string }> {
  const max = opts.maxBytes ?? 16 << 20;
  const out: Buffer[] = [];
  let size = 0;
  const stderr = new OutputTail(64 * 1024);
  const result = await host.run(argv, {
    ...opts,
    onStdout: (c) => {
      size += c.length;
      if (size > max) throw new Error(`${argv[0]} printed more than ${max} bytes`);
      out.push(c);
    },
    onStderr: (c) => stderr.push(c),
  });
  if (result.code !== 0) throw commandError(argv, result, stderr.text());
  return { stdout: Buffer.concat(out).toString('utf8'), stderr: stderr.text() };
}
