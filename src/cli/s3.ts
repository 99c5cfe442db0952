import {
  abortIncompleteUploads,
  bucketSetup,
  checkLanguage,
  createClient,
  bootstrapScript,
  bucketPins,
  fallbackBase,
  formatListing,
  formatPlan,
  humanSize,
  imageKey,
  KERNEL_KEY,
  pruneStore,
  rollback,
  shortName,
  formatSync,
  formatUploads,
  iamPolicy,
  listBucket,
  syncDown,
  terminalJson,
  terminalProgress,
  uploadAll,
  uploadSingle,
  type StoreContext,
} from '../store';
import { toolPaths } from '../setup/tools';
import { fetcherSha256 as fetcherSha256Of } from '../store/blocks/tools';
import type { CliRuntime } from './runtime';

function context(rt: CliRuntime): StoreContext & { close(): void } {
  const { config } = rt.loaded;
  const client = createClient({ config: config.s3 });
  return {
    client,
    config: config.s3,
    workspace: config.workspace,
    progress: terminalProgress(),
    fetcher: toolPaths().blockFetcher,
    close: () => client.destroy(),
  };
}

async function withStore<T>(rt: CliRuntime, fn: (ctx: StoreContext) => Promise<T>): Promise<T> {
  const ctx = context(rt);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}

export const s3Commands = {
  list: (rt: CliRuntime, json: boolean) =>
    withStore(rt, async (ctx) => {
      const listing = await listBucket(ctx);
      process.stdout.write(json ? terminalJson(listing) + '\n' : formatListing(listing));
      return 0;
    }),

  upload: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const results = await uploadAll(ctx);
      if (!results.length) console.error(`nothing to upload in ${ctx.workspace} (vmlinux, images/rootfs-*.ext4)`);
      else process.stderr.write(formatUploads(results));
      return 0;
    }),

  uploadSingle: (rt: CliRuntime, language: string) =>
    withStore(rt, async (ctx) => {
      process.stderr.write(formatUploads([await uploadSingle(ctx, language, Object.keys(rt.loaded.config.languages))]));
      return 0;
    }),

  download: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const report = await syncDown(ctx, { onPlan: (plans) => process.stderr.write(formatPlan(plans)) });
      process.stderr.write(formatSync(report));
      return report.ok ? 0 : 1;
    }),

  /** Moves the block store's head of one image (or the kernel) back to an earlier version it keeps. */
  rollback: (rt: CliRuntime, target: string, version?: string) =>
    withStore(rt, async (ctx) => {
      const key =
        target === 'kernel' ? KERNEL_KEY : imageKey(checkLanguage(target, Object.keys(rt.loaded.config.languages)));
      const r = await rollback(ctx, key, version);
      console.error(
        `${key}: ${shortName(r.from.index)} -> ${shortName(r.to.index)} (published ${r.to.publishedAt}${r.to.versions.length ? `, ${r.to.versions.join('; ')}` : ''})`,
      );
      if (ctx.config.plainObjects !== false)
        console.error(
          `the plain object ${key} still holds ${shortName(r.from.index)}: hosts that sync from the block store get ${shortName(r.to.index)}`,
        );
      return 0;
    }),

  prune: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const r = await pruneStore(ctx);
      console.error(
        `${r.indexesDeleted} index(es) and ${r.packsDeleted} pack(s) deleted, ${humanSize(r.bytesFreed)} freed`,
      );
      return 0;
    }),

  /** With `pin`, the bucket's manifests are read (credentials needed) and their sums written into the script. */
  bootstrapScript: async (rt: CliRuntime, opts: { fallbackUrl?: string; pin?: boolean }) => {
    const { config } = rt.loaded;
    const { fallbackUrl } = opts;
    // A bad --fallback-url is a usage error (exit 2), told before anything is asked of the bucket.
    try {
      if (fallbackUrl !== undefined) fallbackBase(fallbackUrl);
    } catch (err) {
      console.error(`rootfs: --fallback-url: ${(err as Error).message}`);
      return 2;
    }
    let pins: Record<string, string> | undefined;
    if (opts.pin) {
      const found = await withStore(rt, (ctx) => bucketPins(ctx));
      // A pinned script that silently left an image out would be worse than none.
      for (const problem of found.problems) console.error(`rootfs: cannot pin ${problem}`);
      if (!Object.keys(found.pins).length)
        console.error(`rootfs: --pin: s3://${config.s3.bucket} has no kernel or image to pin`);
      if (found.problems.length || !Object.keys(found.pins).length) return 1;
      pins = found.pins;
    }
    const { s3, workspace, languages } = config;
    // The fetcher built here is the one uploads publish beside the block store; without it the script syncs plain objects.
    const fetcherSha256 = config.s3.blockStore === false ? undefined : fetcherSha256Of(toolPaths().blockFetcher);
    process.stdout.write(bootstrapScript({ s3, workspace, languages }, { fallbackUrl, pins, fetcherSha256 }));
    return 0;
  },

  iamPolicy: (rt: CliRuntime, withSetup: boolean) => {
    console.log(JSON.stringify(iamPolicy(rt.loaded.config.s3.bucket, { includeBucketSetup: withSetup }), null, 2));
    return Promise.resolve(0);
  },

  bucketSetup: (rt: CliRuntime, opts: { versioning: boolean; abortIncompleteDays?: number }) =>
    withStore(rt, async (ctx) => {
      const done = await bucketSetup(ctx, opts);
      console.error(
        done.length ? done.join('\n') : 'nothing asked: pass --versioning and/or --abort-incomplete-days N',
      );
      return 0;
    }),

  abortUploads: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const n = await abortIncompleteUploads(ctx.client, ctx.config, `${ctx.workspace}/.uploads`);
      console.error(`${n} incomplete upload(s) aborted`);
      return 0;
    }),
};
