import type { Host, RunOptions } from './types';

/** A command that failed: names it, its exit status and the tail of what it printed on stderr. */
export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly code: number | null,
    readonly signal: string | null,
    readonly stderrTail: string,
  ) {
    const shown = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
    const how = code === null ? `was killed by ${signal}` : `exited with ${code}`;
    super(`${shown.length > 300 ? `${shown.slice(0, 300)}…` : shown} ${how}${stderrTail ? `:\n${stderrTail}` : ''}`);
    this.name = 'CommandError';
  }
}

/** Keeps the last `limit` bytes of a stream. */
class Tail {
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

/** Runs argv, streaming its output to the callbacks; throws CommandError unless it exits 0. */
export async function check(host: Host, argv: string[], opts: RunOptions = {}): Promise<void> {
  const stderr = new Tail(8192);
  const result = await host.run(argv, {
    ...opts,
    onStderr: (c) => {
      stderr.push(c);
      opts.onStderr?.(c);
    },
  });
  if (result.code !== 0) throw new CommandError(argv, result.code, result.signal, lastLines(stderr.text(), 15));
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
  const stderr = new Tail(64 * 1024);
  const result = await host.run(argv, {
    ...opts,
    onStdout: (c) => {
      size += c.length;
      if (size > max) throw new Error(`${argv[0]} printed more than ${max} bytes`);
      out.push(c);
    },
    onStderr: (c) => stderr.push(c),
  });
  if (result.code !== 0) throw new CommandError(argv, result.code, result.signal, lastLines(stderr.text(), 15));
  return { stdout: Buffer.concat(out).toString('utf8'), stderr: stderr.text() };
}
