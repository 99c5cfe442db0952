#!/usr/bin/env node
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { ConfigError, loadConfig, Name, NAME_PATTERN, type Config } from '../config';
import { checkLanguage, imageKey, StoreError } from '../store';
import { formatImageReport, verifyImage } from '../pipeline/verify-image';
import { LocalHost } from '../host';
import { createCommand, resumeCommand, statusCommand, workerCommand } from './build';
import { customizeCommand } from './customize';
import { explainCommand } from './explain';
import { listBackgroundWorkers, stopBackgroundWorkers } from './background-worker';
import { devStack, resolveRuntime, type CliRuntime } from './runtime';
import { s3Commands } from './s3';
import { projectRoot } from '../util/paths';

/** Exit codes: 0 ok, 1 the work failed, 2 bad usage or configuration. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** A mistake in the command line itself (exit 2). */
class UsageError extends Error {}

/** A language name from the command line, checked against the config before any I/O (exit 2 when wrong). */
function languageArgument(lang: string, config: Config): string {
  try {
    return checkLanguage(lang, Object.keys(config.languages));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

const positiveInt = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive whole number');
  return n;
};

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

  const runtime = (needS3: boolean, sshHost?: string): Promise<CliRuntime> => resolveRuntime(cli.opts().config, { needS3, sshHost, log: (l) => console.error(l) });
  const sshOption = (): Option => new Option('--ssh <name>', 'build on the SSH host of this name in the config (sshHosts), not on buildHost');
  const run = <A extends unknown[]>(fn: (...args: A) => Promise<number>) => async (...args: A) => setExit(await fn(...args));

  cli
    .command('config')
    .description('validate the configuration and print it resolved (profile and environment applied)')
    .addOption(sshOption())
    .addHelpText('after', '\nExample:\n  rootfs --config rootfs.yaml config --ssh builder-1')
    .action(
      run(async (opts: { ssh?: string }) => {
        const { config, file } = loadConfig({ file: cli.opts().config, sshHost: opts.ssh });
        console.error(file ? `config: ${file}` : 'config: built-in defaults (no config file)');
        console.log(JSON.stringify(config, null, 2));
        return EXIT.ok;
      }),
    );

  const build = (name: string, description: string, example: string, takesLanguages: boolean) => {
    const cmd = cli.command(name).description(description);
    if (takesLanguages) cmd.argument('<languages...>', 'languages to build');
    cmd
      .option('--run-tag <tag>', 'names the run; starting the same tag again attaches to it (default: build-YYYYMMDD)')
      .option('--concurrency <n>', 'images built at once', positiveInt, 2)
      .option('--no-upload', 'build only, do not upload to S3')
      .addOption(sshOption())
      .option('--no-worker', 'do not start the background worker for this build host (one runs elsewhere: rootfs worker)')
      .option('--detach', 'start and return at once (Ctrl-C while watching detaches too)')
      .option('--json', 'print the summary as JSON')
      .addHelpText('after', `\nExample:\n  ${example}`)
      .action(async (...args: unknown[]) => {
        const languages = takesLanguages ? (args[0] as string[]) : undefined;
        const opts = args[takesLanguages ? 1 : 0] as { runTag?: string; concurrency: number; upload: boolean; worker: boolean; detach: boolean; json: boolean; ssh?: string };
        // Names are checked before anything starts: a bad one is a usage error (exit 2), as in verify.
        const { config } = loadConfig({ file: cli.opts().config, sshHost: opts.ssh });
        for (const l of languages ?? []) languageArgument(l, config);
        if (opts.runTag !== undefined && !Name.safeParse(opts.runTag).success) {
          throw new UsageError(`--run-tag ${JSON.stringify(opts.runTag).slice(0, 40)}: expected a name matching ${NAME_PATTERN.source}`);
        }
        const rt = await runtime(opts.upload, opts.ssh);
        setExit(await createCommand(rt, { ...opts, languages }));
      });
  };
  build('create-all', 'build every configured language image (createAllRootfs), then upload and list the bucket', 'rootfs create-all --concurrency 2', false);
  build('create', 'build some language images', 'rootfs create python go --no-upload', true);

  cli
    .command('status')
    .description('show a build per language and step (without an ID: the recent builds)')
    .argument('[workflowId]')
    .option('--follow', 'print each change until the build ends')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs status --follow build-20261123/all')
    .action(async (id: string | undefined, opts: { follow?: boolean; json?: boolean }) =>
      setExit(await statusCommand(await runtime(false), id, { follow: !!opts.follow, json: !!opts.json })),
    );

  cli
    .command('resume')
    .description('retry the failed step of every image of a build that waits for it')
    .argument('<workflowId>')
    .option('--step <step>', 'only if this is the step that failed')
    .option('--reload-config', "apply the config as it is now (the changes are shown) instead of the build's own settings")
    .option('--no-worker', 'do not start the background worker for this build host')
    .addOption(sshOption())
    .addHelpText('after', '\nExample:\n  rootfs resume build-20261123/all --reload-config')
    .action(async (id: string, opts: { step?: string; worker: boolean; ssh?: string; reloadConfig?: boolean }) =>
      setExit(await resumeCommand(await runtime(opts.worker, opts.ssh), id, { step: opts.step, abort: false, worker: opts.worker, reloadConfig: !!opts.reloadConfig })));

  cli
    .command('abort')
    .description('stop the images of a build that wait for a retry')
    .argument('<workflowId>')
    .addHelpText('after', '\nExample:\n  rootfs abort build-20261123/rust')
    .action(async (id: string) => setExit(await resumeCommand(await runtime(false), id, { abort: true })));

  cli
    .command('verify')
    .description('check a built image without booting it: version lines and size/used/available/use%')
    .argument('<language>')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs verify python')
    .action(async (lang: string, opts: { json?: boolean }) => {
      const { config } = loadConfig({ file: cli.opts().config });
      const language = languageArgument(lang, config);
      const report = await verifyImage(new LocalHost(), path.join(config.workspace, 'images', imageKey(language)), config.languages[language]!);
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatImageReport(report));
      setExit(report.ok ? EXIT.ok : EXIT.failed);
    });

  cli
    .command('customize')
    .description('one-off change: run a command in the chroot of a built image, keep it as a new artifact, re-make the image')
    .argument('<language>')
    .argument('<command...>', 'the command and its arguments, after --')
    .addOption(sshOption())
    .addHelpText('after', [
      '',
      'A rebuild from config replaces a customized image: for a lasting change use the config',
      '(languages.<lang>.packages and languages.<lang>.files).',
      '',
      'Example:',
      "  rootfs customize python -- sh -c 'pip3 install --no-cache-dir requests'",
    ].join('\n'))
    .action(async (lang: string, argv: string[], opts: { ssh?: string }) => {
      const loaded = loadConfig({ file: cli.opts().config, sshHost: opts.ssh });
      const language = languageArgument(lang, loaded.config);
      setExit(await customizeCommand(loaded, language, argv));
    });

  cli
    .command('explain')
    .description("why each step behind a built image ran: what differs from that step's closest earlier artifact")
    .argument('<language>')
    .option('--json', 'print as JSON')
    .addOption(sshOption())
    .addHelpText('after', '\nExample:\n  rootfs explain python')
    .action(async (lang: string, opts: { json?: boolean; ssh?: string }) => {
      const loaded = loadConfig({ file: cli.opts().config, sshHost: opts.ssh });
      setExit(await explainCommand(loaded, languageArgument(lang, loaded.config), { json: !!opts.json }));
    });

  cli
    .command('worker')
    .description('run a worker for the configured build host in the foreground until SIGTERM/SIGINT (graceful)')
    .option('--grace <seconds>', 'on SIGTERM/SIGINT, how long running steps may finish before they are cancelled', positiveInt, 30)
    .addOption(sshOption())
    .addHelpText('after', '\nExamples:\n  rootfs --config /etc/rootfs/builder-1.yaml worker --grace 120\n  rootfs worker --ssh builder-2')
    .action(async (opts: { grace: number; ssh?: string }) => setExit(await workerCommand(await runtime(true, opts.ssh), opts.grace * 1000)));

  const s3 = cli.command('s3').description('the image bucket');
  s3.command('list').description('every object with date and size, totals, and image versions').option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs s3 list')
    .action(async (opts: { json?: boolean }) => setExit(await s3Commands.list(await runtime(true), !!opts.json)));
  s3.command('upload').description('upload vmlinux and every images/rootfs-*.ext4 that changed')
    .addHelpText('after', '\nExample:\n  rootfs s3 upload')
    .action(async () => setExit(await s3Commands.upload(await runtime(true))));
  s3.command('upload-single').description('upload one language image').argument('<language>')
    .addHelpText('after', '\nExample:\n  rootfs s3 upload-single python')
    .action(async (lang: string) => {
      // Refused before any I/O: no server is started, no request sent.
      languageArgument(lang, loadConfig({ file: cli.opts().config }).config);
      setExit(await s3Commands.uploadSingle(await runtime(true), lang));
    });
  s3.command('download').description('sync the bucket into the workspace (only what differs), link rootfs.ext4 to python')
    .addHelpText('after', '\nExample:\n  rootfs s3 download')
    .action(async () => setExit(await s3Commands.download(await runtime(true))));
  s3.command('bootstrap-script').description('print the script a new build host runs at first boot to sync kernel and images')
    .option('--fallback-url <url>', 'https URL to fetch from when the bucket has no images (serves SHA256SUMS too)')
    .option('--pin', "write the sha256 of every object, read from the bucket's manifests, into the script: it installs only those")
    .addHelpText('after', '\nExample:\n  rootfs s3 bootstrap-script --pin --fallback-url https://images.example.internal/rootfs > user-data.sh')
    .action(async (opts: { fallbackUrl?: string; pin?: boolean }) =>
      setExit(await s3Commands.bootstrapScript({ loaded: loadConfig({ file: cli.opts().config }) } as CliRuntime, opts)));
  s3.command('iam-policy').description('print the least-privilege IAM policy for the bucket').option('--with-bucket-setup', 'include what bucket-setup needs')
    .addHelpText('after', '\nExample:\n  rootfs s3 iam-policy > policy.json')
    .action(async (opts: { withBucketSetup?: boolean }) => setExit(await s3Commands.iamPolicy({ loaded: loadConfig({ file: cli.opts().config }) } as CliRuntime, !!opts.withBucketSetup)));
  s3.command('bucket-setup').description('turn on versioning and/or abort incomplete multipart uploads after N days')
    .option('--versioning', 'enable versioning').addOption(new Option('--abort-incomplete-days <n>', 'lifecycle rule').argParser(positiveInt))
    .addHelpText('after', '\nExample:\n  rootfs s3 bucket-setup --versioning --abort-incomplete-days 3')
    .action(async (opts: { versioning?: boolean; abortIncompleteDays?: number }) =>
      setExit(await s3Commands.bucketSetup(await runtime(true), { versioning: !!opts.versioning, abortIncompleteDays: opts.abortIncompleteDays })));
  s3.command('abort-uploads').description('abort every incomplete multipart upload in the bucket')
    .addHelpText('after', '\nExample:\n  rootfs s3 abort-uploads')
    .action(async () => setExit(await s3Commands.abortUploads(await runtime(true))));

  const dev = cli.command('dev').description('the embedded local stack (Temporal dev server, S3 server) and the background workers, under .rootfs/');
  dev.command('up').description('start it (or find it running)').addHelpText('after', '\nExample:\n  rootfs dev up').action(
    run(async () => {
      const stack = devStack();
      const { config } = loadConfig({ file: cli.opts().config });
      const t = await stack.temporal();
      const s = await stack.s3(config.s3.bucket);
      console.log(`Temporal ${t.address} (Web UI ${t.uiUrl})${t.started ? ' started' : ''}\nS3 ${s.endpoint}${s.started ? ' started' : ''}`);
      return EXIT.ok;
    }),
  );
  dev.command('down').description('stop the background workers (gracefully), then the stack').addHelpText('after', '\nExample:\n  rootfs dev down').action(
    run(async () => {
      const note = (line: string) => console.error(line);
      const workers = (await stopBackgroundWorkers(undefined, undefined, note)).map((w) => `worker ${w.alias} (pid ${w.pid})`);
      console.log(`stopped: ${[...workers, ...(await devStack().down(note))].join(', ') || 'nothing'}`);
      return EXIT.ok;
    }),
  );
  dev.command('status').description('is it running, and which background workers run').addHelpText('after', '\nExample:\n  rootfs dev status').action(
    run(async () => {
      const s = devStack().status();
      console.log(`temporal: ${s.temporal}\ns3: ${s.s3}`);
      for (const w of listBackgroundWorkers()) console.log(`worker ${w.alias}: ${w.running ? `up (pid ${w.pid})` : 'down'}  ${w.address} ${w.namespace}  log ${w.log}`);
      return EXIT.ok;
    }),
  );
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
  walk(program(() => {}), []);
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
    console.error(`rootfs: ${err instanceof StoreError || !debug ? (err as Error).message : ((err as Error).stack ?? err)}`);
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
  Runtime.install({ logger: new DefaultLogger('WARN', (entry) => void (byDesign.test(entry.message) || plain.log(entry.level, entry.message, entry.meta))) });
  void main(argv).then((code) => process.exit(code));
}

if (require.main === module) runCli(process.argv);
