import {
  abortIncompleteUploads,
  bucketSetup,
  createClient,
  formatListing,
  humanSize,
  iamPolicy,
  listBucket,
  syncDown,
  terminalProgress,
  uploadAll,
  uploadSingle,
  type StoreContext,
} from '../store';
import type { CliRuntime } from './runtime';

function context(rt: CliRuntime): StoreContext & { close(): void } {
  const { config } = rt.loaded;
  const client = createClient({ config: config.s3 });
  return { client, config: config.s3, workspace: config.workspace, progress: terminalProgress(), close: () => client.destroy() };
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
      process.stdout.write(json ? JSON.stringify(listing, null, 2) + '\n' : formatListing(listing));
      return 0;
    }),

  upload: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const results = await uploadAll(ctx);
      if (!results.length) console.error(`nothing to upload in ${ctx.workspace} (vmlinux, images/rootfs-*.ext4)`);
      const sent = results.reduce((n, r) => n + r.bytesSent, 0);
      console.error(`${results.filter((r) => r.status === 'uploaded').length} uploaded, ${results.filter((r) => r.status === 'unchanged').length} unchanged, ${humanSize(sent)} sent`);
      return 0;
    }),

  uploadSingle: (rt: CliRuntime, language: string) =>
    withStore(rt, async (ctx) => {
      await uploadSingle(ctx, language, Object.keys(rt.loaded.config.languages));
      return 0;
    }),

  download: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const report = await syncDown(ctx);
      const failed = report.files.filter((f) => f.status === 'failed');
      for (const f of failed) console.error(`error: ${f.error}`);
      console.error(
        `${report.files.filter((f) => f.status === 'downloaded').length} downloaded, ${report.files.filter((f) => f.status === 'unchanged').length} unchanged, ` +
          `${failed.length} failed, ${humanSize(report.bytesTransferred)} transferred${report.link ? `; ${report.link} -> rootfs-python.ext4` : ''}`,
      );
      return failed.length ? 1 : 0;
    }),

  iamPolicy: (rt: CliRuntime, withSetup: boolean) => {
    console.log(JSON.stringify(iamPolicy(rt.loaded.config.s3.bucket, { includeBucketSetup: withSetup }), null, 2));
    return Promise.resolve(0);
  },

  bucketSetup: (rt: CliRuntime, opts: { versioning: boolean; abortIncompleteDays?: number }) =>
    withStore(rt, async (ctx) => {
      const done = await bucketSetup(ctx, opts);
      console.error(done.length ? done.join('\n') : 'nothing asked: pass --versioning and/or --abort-incomplete-days N');
      return 0;
    }),

  abortUploads: (rt: CliRuntime) =>
    withStore(rt, async (ctx) => {
      const n = await abortIncompleteUploads(ctx.client, ctx.config, `${ctx.workspace}/.uploads`);
      console.error(`${n} incomplete upload(s) aborted`);
      return 0;
    }),
};
