import type { NonRetryableError } from '../../workflows/types';
import type { Host, RunOptions } from '../host';
import { check, commandError, output, OutputTail, runInChroot } from '../host';

/** What a long step reports while it runs: shown as heartbeat details in Temporal Web. */
export interface Progress {
  phase: string;
  /** The last line the running command printed, trimmed. */
  lastLine?: string;
}

/** Non-retryable failures: retrying cannot fix them, so the workflow pauses at once. */
export class BuildError extends Error {
  constructor(
    message: string,
    readonly type: NonRetryableError,
  ) {
    super(message);
    this.name = type;
  }
}

/**
 * What a probing step throws where it would have to build: the probe stops there, and the
 * build runs that step and the ones after it as activities of their own.
 */
export class WouldBuild extends Error {
  constructor(
    readonly step: string,
    readonly key: string,
  ) {
    super(`${step} ${key} is not built yet`);
    this.name = 'WouldBuild';
  }
}

/**
 * The build host as one step sees it: commands inherit the step's cancellation and feed its
 * progress, so every long command both heartbeats and stops when the step is cancelled.
 */
export class StepRunner {
  private progress: Progress = { phase: 'starting' };

  constructor(
    readonly host: Host,
    private readonly report: (p: Progress) => void = () => {},
    readonly signal?: AbortSignal,
    /** Only look finished steps up: where a step would build, throw WouldBuild instead. */
    readonly probeOnly = false,
  ) {}

  /** This runner, probing: the same host, progress and cancellation; steps only look their artifacts up. */
  probing(): StepRunner {
    return new StepRunner(this.host, this.report, this.signal, true);
  }

  phase(phase: string): void {
    this.progress = { phase };
    this.report(this.progress);
  }

  private options(extra: RunOptions = {}): RunOptions {
    let partial = '';
    const onChunk = (chunk: Buffer) => {
      const text = partial + chunk.toString('utf8');
      const lines = text.split(/\r?\n|\r/);
      partial = lines.pop() ?? '';
      const last = lines.reverse().find((l) => l.trim());
      if (last) {
        this.progress = { phase: this.progress.phase, lastLine: last.trim().slice(0, 200) };
        this.report(this.progress);
      }
    };
    return { signal: this.signal, onStdout: onChunk, onStderr: onChunk, ...extra };
  }

  /** Runs argv on the build host; throws with the tail of stderr when it fails. */
  run(argv: string[], extra?: RunOptions): Promise<void> {
    return check(this.host, argv, this.options(extra));
  }

  /** Runs argv and returns its (small) stdout. */
  async read(argv: string[], extra?: RunOptions): Promise<string> {
    const { stdout } = await output(this.host, argv, { signal: this.signal, ...extra });
    return stdout;
  }

  /** Runs argv inside the tree and returns what it printed (bounded), whatever its exit code. */
  async chrootRead(
    root: string,
    argv: string[],
    extra?: RunOptions,
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const keep = (into: Buffer[]) => (chunk: Buffer) => {
      if (into.reduce((n, b) => n + b.length, 0) < 64 * 1024) into.push(chunk);
    };
    const result = await runInChroot(this.host, root, argv, {
      signal: this.signal,
      ...extra,
      onStdout: keep(out),
      onStderr: keep(err),
    });
    return {
      code: result.code,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
    };
  }

  /**
   * Runs argv inside the tree at `root`, with /proc, /sys and /dev mounted in a private namespace;
   * a failure is a CommandError whose first line names the program and the reason.
   */
  async chroot(root: string, argv: string[], extra?: RunOptions): Promise<void> {
    const stderr = new OutputTail(8192);
    const opts = this.options(extra);
    const onStderr = opts.onStderr!;
    const result = await runInChroot(this.host, root, argv, {
      ...opts,
      onStderr: (chunk) => {
        onStderr(chunk);
        stderr.push(chunk);
      },
    });
    if (result.code !== 0) throw commandError(argv, result, stderr.text(), root);
  }
}
