import { Option } from 'commander';
import { loadConfig } from '../../config';
import type { CliRuntime } from '../runtime';
import { s3Commands } from '../s3';
import { languageArgument, positiveInt, type CommandContext } from './context';

/** s3 …: the image bucket. */
export function registerS3Commands(ctx: CommandContext): void {
  const { cli } = ctx;
  const s3 = cli.command('s3').description('the image bucket');
  s3.command('list')
    .description('every object with date and size, totals, and image versions')
    .option('--json', 'print as JSON')
    .addHelpText('after', '\nExample:\n  rootfs s3 list')
    .action(async (opts: { json?: boolean }) =>
      ctx.setExit(await s3Commands.list(await ctx.runtime(true), !!opts.json)),
    );
  s3.command('upload')
    .description('upload vmlinux and every images/rootfs-*.ext4 that changed')
    .addHelpText('after', '\nExample:\n  rootfs s3 upload')
    .action(async () => ctx.setExit(await s3Commands.upload(await ctx.runtime(true))));
  s3.command('upload-single')
    .description('upload one language image')
    .argument('<language>')
    .addHelpText('after', '\nExample:\n  rootfs s3 upload-single python')
    .action(async (lang: string) => {
      // Refused before any I/O: no server is started, no request sent.
      languageArgument(lang, loadConfig({ file: ctx.configFile() }).config);
      ctx.setExit(await s3Commands.uploadSingle(await ctx.runtime(true), lang));
    });
  s3.command('download')
    .description('sync the bucket into the workspace (only what differs), link rootfs.ext4 to python')
    .addHelpText('after', '\nExample:\n  rootfs s3 download')
    .action(async () => ctx.setExit(await s3Commands.download(await ctx.runtime(true))));
  s3.command('rollback')
    .description("make an earlier version of an image (or 'kernel') current in the block store")
    .argument('<language>', "a configured language, or 'kernel'")
    .argument(
      '[version]',
      'the first hex digits of a version, as `s3 list` shows them (default: the one before the current)',
    )
    .addHelpText('after', '\nExamples:\n  rootfs s3 rollback python\n  rootfs s3 rollback python 1a2b3c4d5e6f')
    .action(async (lang: string, version: string | undefined) => {
      if (lang !== 'kernel') languageArgument(lang, loadConfig({ file: ctx.configFile() }).config);
      ctx.setExit(await s3Commands.rollback(await ctx.runtime(true), lang, version));
    });
  s3.command('prune')
    .description('delete block store indexes and packs that no kept version needs (older than an hour)')
    .addHelpText('after', '\nExample:\n  rootfs s3 prune')
    .action(async () => ctx.setExit(await s3Commands.prune(await ctx.runtime(true))));
  s3.command('bootstrap-script')
    .description('print the script a new build host runs at first boot to sync kernel and images')
    .option('--fallback-url <url>', 'https URL to fetch from when the bucket has no images (serves SHA256SUMS too)')
    .option(
      '--pin',
      "write the sha256 of every object, read from the bucket's manifests, into the script: it installs only those",
    )
    .addHelpText(
      'after',
      '\nExample:\n  rootfs s3 bootstrap-script --pin --fallback-url https://images.example.internal/rootfs > user-data.sh',
    )
    .action(async (opts: { fallbackUrl?: string; pin?: boolean }) =>
      ctx.setExit(
        await s3Commands.bootstrapScript({ loaded: loadConfig({ file: ctx.configFile() }) } as CliRuntime, opts),
      ),
    );
  s3.command('iam-policy')
    .description('print the least-privilege IAM policy for the bucket')
    .option('--with-bucket-setup', 'include what bucket-setup needs')
    .addHelpText('after', '\nExample:\n  rootfs s3 iam-policy > policy.json')
    .action(async (opts: { withBucketSetup?: boolean }) =>
      ctx.setExit(
        await s3Commands.iamPolicy(
          { loaded: loadConfig({ file: ctx.configFile() }) } as CliRuntime,
          !!opts.withBucketSetup,
        ),
      ),
    );
  s3.command('bucket-setup')
    .description('turn on versioning and/or abort incomplete multipart uploads after N days')
    .option('--versioning', 'enable versioning')
    .addOption(new Option('--abort-incomplete-days <n>', 'lifecycle rule').argParser(positiveInt))
    .addHelpText('after', '\nExample:\n  rootfs s3 bucket-setup --versioning --abort-incomplete-days 3')
    .action(async (opts: { versioning?: boolean; abortIncompleteDays?: number }) =>
      ctx.setExit(
        await s3Commands.bucketSetup(await ctx.runtime(true), {
          versioning: !!opts.versioning,
          abortIncompleteDays: opts.abortIncompleteDays,
        }),
      ),
    );
  s3.command('abort-uploads')
    .description('abort every incomplete multipart upload in the bucket')
    .addHelpText('after', '\nExample:\n  rootfs s3 abort-uploads')
    .action(async () => ctx.setExit(await s3Commands.abortUploads(await ctx.runtime(true))));
}
