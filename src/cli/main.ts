#!/usr/bin/env node
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError } from 'commander';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { ConfigError } from '../config';
import { StoreError } from '../store';
import { projectRoot } from '../util/paths';
import { registerBuildCommands } from './groups/build';
import { commandContext, EXIT, UsageError } from './groups/context';
import { registerDevCommands } from './groups/dev';
import { registerImageCommands } from './groups/images';
import { registerS3Commands } from './groups/s3';

export { EXIT } from './groups/context';

function packageVersion(): string {
  return (JSON.parse(fs.readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

function program(setExit: (code: number) => void): Command {
  const cli = new Command('rootfs')
    .description('Build, verify and distribute the root filesystems Firecracker microVMs boot.')
    .option('-c, --config <file>', 'config file (default: $ROOTFS_CONFIG, else ./rootfs.yaml when present)')
    .version(packageVersion())
    .option('--debug', 'print stack traces')
    .exitOverride()
    .showHelpAfterError();

  const ctx = commandContext(cli, setExit);
  registerBuildCommands(ctx);
  registerImageCommands(ctx);
  registerS3Commands(ctx);
  registerDevCommands(ctx);
  return cli;
}

/**
 * Parses a command line as `rootfs` would, checking commands, arguments and options, without
 * running anything (the docs test checks every documented command line with it).
 */
export async function parseOnly(args: string[]): Promise<void> {
  const cli = program(() => {});
  const quiet = (c: Command) => {
    c.configureOutput({ writeOut: () => {}, writeErr: () => {} });
    if (c.commands.length) c.commands.forEach(quiet);
    else if (c !== cli) c.action(() => {});
  };
  quiet(cli);
  await cli.parseAsync(args, { from: 'user' });
}

/** Every command's `Example:` lines from its help, per command (`s3 list`, …). */
export function helpExamples(): Array<{ command: string; examples: string[] }> {
  const found: Array<{ command: string; examples: string[] }> = [];
  const walk = (c: Command, prefix: string[]) => {
    if (!c.commands.length) {
      let help = '';
      c.configureOutput({ writeOut: (s) => (help += s) });
      c.outputHelp();
      found.push({ command: prefix.join(' '), examples: [...help.matchAll(/^ {2}(rootfs .*)$/gm)].map((m) => m[1]!) });
    }
    for (const sub of c.commands) walk(sub, [...prefix, sub.name()]);
  };
  walk(
    program(() => {}),
    [],
  );
  return found;
}

export async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  const cli = program((c) => (code = c));
  try {
    await cli.parseAsync(argv);
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    if (err instanceof ConfigError || err instanceof UsageError) {
      console.error(err instanceof UsageError ? `rootfs: ${err.message}` : err.message);
      return EXIT.usage;
    }
    const debug = cli.opts().debug as boolean | undefined;
    console.error(
      `rootfs: ${err instanceof StoreError || !debug ? (err as Error).message : ((err as Error).stack ?? err)}`,
    );
    return EXIT.failed;
  }
}

/** The AWS SDK warns once per process that its 2027 releases will need Node 22; that says nothing to a user here. */
function quietSdkNodeWarning(): void {
  const printers = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (w) => {
    if (!String(w.message).startsWith('NodeVersionSupportWarning')) for (const p of printers) p(w);
  });
}

/** Runs the CLI as a program: exits with its code. */
export function runCli(argv: string[]): void {
  quietSdkNodeWarning();
  // `rootfs … | head`: a reader that went away is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? 0 : 1));
  }
  // The worker's own state changes are not news to a person at a terminal; neither is that the
  // orchestrator worker has no activities and the build-host worker no workflows (by design).
  const byDesign = /^No (activities|workflows) registered, not polling/;
  const plain = new DefaultLogger('WARN');
  Runtime.install({
    logger: new DefaultLogger(
      'WARN',
      (entry) => void (byDesign.test(entry.message) || plain.log(entry.level, entry.message, entry.meta)),
    ),
  });
  void main(argv).then((code) => process.exit(code));
}

if (require.main === module) runCli(process.argv);
