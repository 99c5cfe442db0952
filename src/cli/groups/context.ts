import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Config } from '../../config';
import { checkLanguage } from '../../store';
import { resolveRuntime, type CliRuntime } from '../runtime';

/** Exit codes: 0 ok, 1 the work failed, 2 bad usage or configuration. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** A mistake in the command line itself (exit 2). */
export class UsageError extends Error {}

/** A language name from the command line, checked against the config before any I/O (exit 2 when wrong). */
export function languageArgument(lang: string, config: Config): string {
  try {
    return checkLanguage(lang, Object.keys(config.languages));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export const positiveInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive whole number');
  return n;
};

/** What every command group registers its commands with. */
export interface CommandContext {
  cli: Command;
  /** `--config`, as given. */
  configFile(): string | undefined;
  /** Temporal and S3 as the config says, the embedded ones started when needed. */
  runtime(needS3: boolean, sshHost?: string): Promise<CliRuntime>;
  /** `--ssh NAME`, on every command that runs on a build host. */
  sshOption(): Option;
  setExit(code: number): void;
  /** An action that returns its exit code. */
  run<A extends unknown[]>(fn: (...args: A) => Promise<number>): (...args: A) => Promise<void>;
}

export function commandContext(cli: Command, setExit: (code: number) => void): CommandContext {
  const configFile = () => cli.opts().config as string | undefined;
  return {
    cli,
    configFile,
    runtime: (needS3, sshHost) => resolveRuntime(configFile(), { needS3, sshHost, log: (l) => console.error(l) }),
    sshOption: () =>
      new Option('--ssh <name>', 'build on the SSH host of this name in the config (sshHosts), not on buildHost'),
    setExit,
    run:
      (fn) =>
      async (...args) =>
        setExit(await fn(...args)),
  };
}
