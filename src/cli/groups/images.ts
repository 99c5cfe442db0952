import * as path from 'node:path';
import { loadConfig } from '../../config';
import { LocalHost } from '../../host';
import { formatImageReport, verifyImage } from '../../pipeline/verify-image';
import { imageKey } from '../../store';
import { bootCommand, formatBootReport } from '../boot';
import { customizeCommand } from '../customize';
import { explainCommand } from '../explain';
import { EXIT, languageArgument, type CommandContext } from './context';

/** verify, boot, customize, explain: one built image. */
export function registerImageCommands(ctx: CommandContext): void {
  const { cli } = ctx;
  cli
    .command('verify')
    .description('check a built image without booting it: version lines and size/used/available/use%')
    .argument('<language>')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs verify python')
    .action(async (lang: string, opts: { json?: boolean }) => {
      const { config } = loadConfig({ file: ctx.configFile() });
      const language = languageArgument(lang, config);
      const report = await verifyImage(
        new LocalHost(),
        path.join(config.workspace, 'images', imageKey(language)),
        config.languages[language]!,
      );
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatImageReport(report));
      ctx.setExit(report.ok ? EXIT.ok : EXIT.failed);
    });

  cli
    .command('boot')
    .description(
      'boot a built or downloaded image in a microVM with the kernel, wait for /health, run its version checks inside',
    )
    .argument('<language>')
    .option('--image <file>', 'the image to boot (default: <workspace>/images/rootfs-<language>.ext4)')
    .option('--kernel <file>', 'the kernel (default: <workspace>/vmlinux)')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs boot python')
    .action(async (lang: string, opts: { image?: string; kernel?: string; json?: boolean }) => {
      const { config } = loadConfig({ file: ctx.configFile() });
      const language = languageArgument(lang, config);
      const report = await bootCommand(config, language, opts);
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatBootReport(report));
      ctx.setExit(report.ok ? EXIT.ok : EXIT.failed);
    });

  cli
    .command('customize')
    .description(
      'one-off change: run a command in the chroot of a built image, keep it as a new artifact, re-make the image',
    )
    .argument('<language>')
    .argument('<command...>', 'the command and its arguments, after --')
    .addOption(ctx.sshOption())
    .addHelpText(
      'after',
      [
        '',
        'A rebuild from config replaces a customized image: for a lasting change use the config',
        '(languages.<lang>.packages and languages.<lang>.files).',
        '',
        'Example:',
        "  rootfs customize python -- sh -c 'pip3 install --no-cache-dir requests'",
      ].join('\n'),
    )
    .action(async (lang: string, argv: string[], opts: { ssh?: string }) => {
      const loaded = loadConfig({ file: ctx.configFile(), sshHost: opts.ssh });
      const language = languageArgument(lang, loaded.config);
      ctx.setExit(await customizeCommand(loaded, language, argv));
    });

  cli
    .command('explain')
    .description("why each step behind a built image ran: what differs from that step's closest earlier artifact")
    .argument('<language>')
    .option('--json', 'print as JSON')
    .addOption(ctx.sshOption())
    .addHelpText('after', '\nExample:\n  rootfs explain python')
    .action(async (lang: string, opts: { json?: boolean; ssh?: string }) => {
      const loaded = loadConfig({ file: ctx.configFile(), sshHost: opts.ssh });
      ctx.setExit(await explainCommand(loaded, languageArgument(lang, loaded.config), { json: !!opts.json }));
    });
}
