import { Name, NAME_PATTERN, loadConfig } from '../../config';
import { createCommand, resumeCommand, statusCommand, workerCommand } from '../build';
import { EXIT, languageArgument, positiveInt, UsageError, type CommandContext } from './context';

/** config, create-all, create, status, resume, abort, worker: building through Temporal. */
export function registerBuildCommands(ctx: CommandContext): void {
  const { cli } = ctx;
  cli
    .command('config')
    .description('validate the configuration and print it resolved (profile and environment applied)')
    .addOption(ctx.sshOption())
    .addHelpText('after', '\nExample:\n  rootfs --config rootfs.yaml config --ssh builder-1')
    .action(
      ctx.run(async (opts: { ssh?: string }) => {
        const { config, file } = loadConfig({ file: ctx.configFile(), sshHost: opts.ssh });
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
      .option('--concurrency <n>', 'images built at once (default: all of them)', positiveInt)
      .option('--no-upload', 'build only, do not upload to S3')
      .addOption(ctx.sshOption())
      .option(
        '--no-worker',
        'do not start the background worker for this build host (one runs elsewhere: rootfs worker)',
      )
      .option('--detach', 'start and return at once (Ctrl-C while watching detaches too)')
      .option('--json', 'print the summary as JSON')
      .addHelpText('after', `\nExample:\n  ${example}`)
      .action(async (...args: unknown[]) => {
        const languages = takesLanguages ? (args[0] as string[]) : undefined;
        const opts = args[takesLanguages ? 1 : 0] as {
          runTag?: string;
          concurrency?: number;
          upload: boolean;
          worker: boolean;
          detach: boolean;
          json: boolean;
          ssh?: string;
        };
        // Names are checked before anything starts: a bad one is a usage error (exit 2), as in verify.
        const { config } = loadConfig({ file: ctx.configFile(), sshHost: opts.ssh });
        for (const l of languages ?? []) languageArgument(l, config);
        if (opts.runTag !== undefined && !Name.safeParse(opts.runTag).success) {
          throw new UsageError(
            `--run-tag ${JSON.stringify(opts.runTag).slice(0, 40)}: expected a name matching ${NAME_PATTERN.source}`,
          );
        }
        const rt = await ctx.runtime(opts.upload, opts.ssh);
        ctx.setExit(await createCommand(rt, { ...opts, languages }));
      });
  };
  build(
    'create-all',
    'build every configured language image (createAllRootfs), then upload and list the bucket',
    'rootfs create-all --concurrency 2',
    false,
  );
  build('create', 'build some language images', 'rootfs create python go --no-upload', true);

  cli
    .command('status')
    .description('show a build per language and step (without an ID: the recent builds)')
    .argument('[workflowId]')
    .option('--follow', 'print each change until the build ends')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs status --follow build-20261123/all')
    .action(async (id: string | undefined, opts: { follow?: boolean; json?: boolean }) =>
      ctx.setExit(await statusCommand(await ctx.runtime(false), id, { follow: !!opts.follow, json: !!opts.json })),
    );

  cli
    .command('resume')
    .description('retry the failed step of every image of a build that waits for it')
    .argument('<workflowId>')
    .option('--step <step>', 'only if this is the step that failed')
    .option(
      '--reload-config',
      "apply the config as it is now (the changes are shown) instead of the build's own settings",
    )
    .option('--no-worker', 'do not start the background worker for this build host')
    .addOption(ctx.sshOption())
    .addHelpText('after', '\nExample:\n  rootfs resume build-20261123/all --reload-config')
    // S3 resolved as for create (the embedded server's endpoint included), or the config resume
    // compares with the build's spec would differ from it in the endpoint alone.
    .action(async (id: string, opts: { step?: string; worker: boolean; ssh?: string; reloadConfig?: boolean }) =>
      ctx.setExit(
        await resumeCommand(await ctx.runtime(true, opts.ssh), id, {
          step: opts.step,
          abort: false,
          worker: opts.worker,
          reloadConfig: !!opts.reloadConfig,
        }),
      ),
    );

  cli
    .command('abort')
    .description('stop the images of a build that wait for a retry')
    .argument('<workflowId>')
    .addHelpText('after', '\nExample:\n  rootfs abort build-20261123/rust')
    .action(async (id: string) => ctx.setExit(await resumeCommand(await ctx.runtime(false), id, { abort: true })));

  cli
    .command('worker')
    .description('run a worker for the configured build host in the foreground until SIGTERM/SIGINT (graceful)')
    .option(
      '--grace <seconds>',
      'on SIGTERM/SIGINT, how long running steps may finish before they are cancelled',
      positiveInt,
      30,
    )
    .addOption(ctx.sshOption())
    .addHelpText(
      'after',
      '\nExamples:\n  rootfs --config /etc/rootfs/builder-1.yaml worker --grace 120\n  rootfs worker --ssh builder-2',
    )
    .action(async (opts: { grace: number; ssh?: string }) =>
      ctx.setExit(await workerCommand(await ctx.runtime(true, opts.ssh), opts.grace * 1000)),
    );
}
