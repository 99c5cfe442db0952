#!/usr/bin/env node
/**
 * bench/transfer: uploads and downloads the images against one private local MinIO with the
 * project (the very functions `rootfs s3 upload-single` and `rootfs s3 download` run), with s5cmd
 * and with the aws cli, in interleaved rounds whose tool order rotates, and prints the medians,
 * the speed ratios and the bytes each download takes on disk: a table, then one JSON line.
 * A bench, not a test: nothing here asserts a time.
 *
 *   npm run bench:transfer -- [--quick] [--images DIR] [--runs N]
 *
 * --quick: the bash image only, one round. Images: DIR/rootfs-<lang>.ext4 (default the
 * workspace's, /srv/firecracker/images).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { Name } from '../src/config/schema';
import { IMAGE_KEY_PATTERN, imageKey, syncDown, uploadImage, fileDigest, type StoreContext } from '../src/store';
import { requireTool } from '../src/setup/tools';
import { capture } from '../src/util/exec';
import { startMinio, type BenchS3 } from './lib/minio';
import { median, mib, ratio, round, seconds, table } from './lib/table';

const DEFAULT_IMAGES = '/srv/firecracker/images';
/** The seed's create-all order; other languages found follow, by name. */
const ORDER = ['bash', 'python', 'nodejs', 'go', 'rust'];

const UPLOADERS = ['project', 'projectDigestCached', 's5cmd', 'aws'] as const;
const DOWNLOADERS = ['project', 's5cmd', 'aws'] as const;
type Uploader = (typeof UPLOADERS)[number];
type Downloader = (typeof DOWNLOADERS)[number];
const LABEL: Record<Uploader, string> = {
  project: 'project',
  projectDigestCached: 'project, digest cached',
  s5cmd: 's5cmd',
  aws: 'aws',
};

const Options = z.strictObject({
  quick: z.boolean(),
  images: z.string().min(1),
  runs: z.coerce.number().int().min(1).max(50),
});
type Options = z.infer<typeof Options>;

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      images: { type: 'string', default: DEFAULT_IMAGES },
      runs: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  return Options.parse({ ...values, runs: values.runs ?? (values.quick ? 1 : 3) });
}

interface Image {
  language: string;
  key: string;
  file: string;
  sizeBytes: number;
  allocatedBytes: number;
}

function findImages(dir: string, quick: boolean): Image[] {
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory())
    throw new Error(`--images ${dir}: not a directory (expected rootfs-<lang>.ext4 files in it)`);
  const languages = fs
    .readdirSync(dir)
    .map((n) => IMAGE_KEY_PATTERN.exec(n)?.[1])
    .filter((l): l is string => !!l && Name.safeParse(l).success && (!quick || l === 'bash'))
    .sort((a, b) => {
      const [ia, ib] = [ORDER.indexOf(a), ORDER.indexOf(b)].map((i) => (i < 0 ? ORDER.length : i));
      return ia! - ib! || a.localeCompare(b);
    });
  const images = languages.flatMap((language) => {
    const file = path.join(dir, imageKey(language));
    const st = fs.statSync(file);
    return st.isFile()
      ? [{ language, key: imageKey(language), file, sizeBytes: st.size, allocatedBytes: st.blocks * 512 }]
      : [];
  });
  if (!images.length)
    throw new Error(
      `no ${quick ? 'rootfs-bash.ext4' : 'rootfs-<lang>.ext4 image'} in ${dir} (build one, or pass --images DIR)`,
    );
  return images;
}

/**
 * The aws command: AWS_CLI when set, else Debian's /usr/bin/aws (what setup installs), else the
 * first on PATH. Debian's comes first because PATH may start with a pyenv shim that runs
 * another aws (pip's, another version) than the one CI installs.
 */
function awsCommand(): string {
  if (process.env.AWS_CLI) return process.env.AWS_CLI;
  if (fs.existsSync('/usr/bin/aws')) return '/usr/bin/aws';
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir || '.', 'aws');
    if (fs.existsSync(p)) return p;
  }
  throw new Error('no aws command: run `npm run setup` (it installs Debian awscli), or set AWS_CLI');
}

async function versionOf(argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const { stdout, stderr } = await capture(argv[0]!, argv.slice(1), { env });
  return (stdout.trim() || stderr.trim()).split('\n')[0]!.split(' ').slice(0, 2).join(' ');
}

const elapsed = async (fn: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
};

/** The tool order of round `r`: rotated, so that no tool always goes first (or last). */
const rotate = <T>(list: readonly T[], r: number): T[] => [
  ...list.slice(r % list.length),
  ...list.slice(0, r % list.length),
];

interface Context {
  s3: BenchS3;
  tmp: string;
  s5cmd: string;
  aws: string;
  /** The children's environment: the server's credentials, a home of their own (no user config). */
  childEnv: NodeJS.ProcessEnv;
  /** Per image: a link beside which the project's digest is already cached. */
  cachedLink: Map<string, string>;
  seq: number;
}

/** A fresh directory under the bench's temp dir. */
function freshDir(ctx: Context, what: string): string {
  const dir = path.join(ctx.tmp, `${what}-${++ctx.seq}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** A link to the image in a new directory: the project finds no digest cached beside it. */
function freshLink(ctx: Context, image: Image): string {
  const link = path.join(freshDir(ctx, 'link'), image.key);
  fs.symlinkSync(image.file, link);
  return link;
}

const storeContext = (ctx: Context, bucket: string, workspace: string): StoreContext => ({
  client: ctx.s3.client(bucket),
  config: ctx.s3.config(bucket),
  workspace,
});

/** Flushes what the last transfer left dirty, outside the timing, so it does not slow the next one. */
const settle = (ctx: Context) => capture('sync', ['-f', ctx.tmp]);

async function timedUpload(ctx: Context, tool: Uploader, image: Image, bucket: string): Promise<number> {
  const url = `s3://${bucket}/${image.key}`;
  switch (tool) {
    case 'project':
    case 'projectDigestCached': {
      const file = tool === 'project' ? freshLink(ctx, image) : ctx.cachedLink.get(image.language)!;
      const store = storeContext(ctx, bucket, freshDir(ctx, 'workspace'));
      try {
        let status = '';
        const s = await elapsed(async () => {
          status = (await uploadImage(store, image.language, file)).status;
        });
        if (status !== 'uploaded') throw new Error(`the project's upload of ${image.key} said ${status}, not uploaded`);
        return s;
      } finally {
        store.client.destroy();
      }
    }
    case 's5cmd':
      return elapsed(() =>
        capture(ctx.s5cmd, ['--endpoint-url', ctx.s3.endpoint, 'cp', image.file, url], { env: ctx.childEnv }),
      );
    case 'aws':
      return elapsed(() =>
        capture(ctx.aws, ['s3', 'cp', image.file, url, '--endpoint-url', ctx.s3.endpoint, '--only-show-errors'], {
          env: ctx.childEnv,
        }),
      );
  }
}

async function upload(ctx: Context, tool: Uploader, image: Image): Promise<number> {
  const bucket = `up-${++ctx.seq}-${tool.toLowerCase()}`;
  await ctx.s3.createBucket(bucket);
  try {
    const s = await timedUpload(ctx, tool, image, bucket);
    const c = ctx.s3.client(bucket);
    try {
      const head = await c.send(new HeadObjectCommand({ Bucket: bucket, Key: image.key }));
      if (head.ContentLength !== image.sizeBytes)
        throw new Error(`${tool} stored ${head.ContentLength} bytes of ${image.key}, not ${image.sizeBytes}`);
    } finally {
      c.destroy();
    }
    await settle(ctx);
    return s;
  } catch (err) {
    throw new Error(`upload of ${image.key} with ${tool} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    await ctx.s3.removeBucket(bucket);
  }
}

/** Downloads into an empty directory (a fresh host); returns the time and the bytes allocated. */
async function download(
  ctx: Context,
  tool: Downloader,
  image: Image,
  bucket: string,
): Promise<{ seconds: number; allocatedBytes: number }> {
  const dest = freshDir(ctx, 'host');
  const url = `s3://${bucket}/${image.key}`;
  let file = path.join(dest, image.key);
  try {
    let s: number;
    if (tool === 'project') {
      const store = storeContext(ctx, bucket, dest);
      try {
        let report: Awaited<ReturnType<typeof syncDown>> | undefined;
        s = await elapsed(async () => {
          report = await syncDown(store);
        });
        const got = report!.files.find((f) => f.key === image.key);
        if (!report!.ok || got?.status !== 'downloaded')
          throw new Error(got?.error ?? `the project's download of ${image.key} said ${got?.status ?? 'nothing'}`);
        file = got.path;
      } finally {
        store.client.destroy();
      }
    } else if (tool === 's5cmd') {
      s = await elapsed(() =>
        capture(ctx.s5cmd, ['--endpoint-url', ctx.s3.endpoint, 'cp', url, file], { env: ctx.childEnv }),
      );
    } else {
      s = await elapsed(() =>
        capture(ctx.aws, ['s3', 'cp', url, file, '--endpoint-url', ctx.s3.endpoint, '--only-show-errors'], {
          env: ctx.childEnv,
        }),
      );
    }
    await settle(ctx);
    const st = fs.statSync(file);
    if (st.size !== image.sizeBytes) throw new Error(`${tool} wrote ${st.size} bytes, not ${image.sizeBytes}`);
    return { seconds: s, allocatedBytes: st.blocks * 512 };
  } catch (err) {
    throw new Error(`download of ${image.key} with ${tool} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    fs.rmSync(dest, { recursive: true, force: true });
  }
}

/** Reads the file once, so that no tool pays for the first read from disk. */
async function warm(file: string): Promise<void> {
  for await (const _ of fs.createReadStream(file, { highWaterMark: 4 << 20 }));
}

interface Figures {
  upload: Record<Uploader, number>;
  download: Record<Downloader, number>;
  downloadAllocatedBytes: Record<Downloader, number>;
}

/** Speed ratios, project over the other: the other's time divided by the project's. */
const ratios = (f: Figures) => ({
  upload: {
    s5cmd: f.upload.s5cmd / f.upload.project,
    aws: f.upload.aws / f.upload.project,
    s5cmdDigestCached: f.upload.s5cmd / f.upload.projectDigestCached,
  },
  download: { s5cmd: f.download.s5cmd / f.download.project, aws: f.download.aws / f.download.project },
});

function report(images: Image[], figures: Map<string, Figures>, opts: Options, tools: Record<string, string>): string {
  const sum = <K extends string>(pick: (f: Figures) => Record<K, number>, keys: readonly K[]) =>
    Object.fromEntries(keys.map((k) => [k, [...figures.values()].reduce((n, f) => n + pick(f)[k], 0)])) as Record<
      K,
      number
    >;
  const total: Figures = {
    upload: sum((f) => f.upload, UPLOADERS),
    download: sum((f) => f.download, DOWNLOADERS),
    downloadAllocatedBytes: sum((f) => f.downloadAllocatedBytes, DOWNLOADERS),
  };
  const rows = [
    ...images.map((i) => ({
      name: i.language,
      size: i.sizeBytes,
      alloc: i.allocatedBytes,
      f: figures.get(i.language)!,
    })),
    ...(images.length > 1
      ? [
          {
            name: 'total',
            size: images.reduce((n, i) => n + i.sizeBytes, 0),
            alloc: images.reduce((n, i) => n + i.allocatedBytes, 0),
            f: total,
          },
        ]
      : []),
  ];
  const up = table(
    ['image', 'size', 'allocated', ...UPLOADERS.map((u) => LABEL[u]), 'project/s5cmd', 'cached/s5cmd', 'project/aws'],
    rows.map(({ name, size, alloc, f }) => {
      const r = ratios(f);
      return [
        name,
        mib(size),
        mib(alloc),
        ...UPLOADERS.map((u) => seconds(f.upload[u])),
        ratio(r.upload.s5cmd),
        ratio(r.upload.s5cmdDigestCached),
        ratio(r.upload.aws),
      ];
    }),
    new Set([1, 2, 3, 4, 5, 6, 7, 8, 9]),
  );
  const down = table(
    ['image', ...DOWNLOADERS, 'project/s5cmd', 'project/aws', ...DOWNLOADERS.map((d) => `on disk: ${d}`)],
    rows.map(({ name, f }) => {
      const r = ratios(f);
      return [
        name,
        ...DOWNLOADERS.map((d) => seconds(f.download[d])),
        ratio(r.download.s5cmd),
        ratio(r.download.aws),
        ...DOWNLOADERS.map((d) => mib(f.downloadAllocatedBytes[d])),
      ];
    }),
    new Set([1, 2, 3, 4, 5, 6, 7, 8]),
  );
  const json = (f: Figures) => {
    const r = ratios(f);
    const rounded = <K extends string>(o: Record<K, number>) =>
      Object.fromEntries(Object.entries(o).map(([k, v]) => [k, round(v as number)]));
    return {
      upload: rounded(f.upload),
      download: rounded(f.download),
      downloadAllocatedBytes: f.downloadAllocatedBytes,
      uploadRatio: rounded(r.upload),
      downloadRatio: rounded(r.download),
    };
  };
  const line = {
    bench: 'transfer',
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30) },
    runs: opts.runs,
    quick: opts.quick,
    tools,
    images: Object.fromEntries(
      images.map((i) => [
        i.language,
        { sizeBytes: i.sizeBytes, allocatedBytes: i.allocatedBytes, ...json(figures.get(i.language)!) },
      ]),
    ),
    total: json(total),
  };
  return [
    `Upload: median seconds of ${opts.runs} round(s), each into an empty bucket`,
    up,
    '',
    `Download: median seconds of ${opts.runs} round(s), each into an empty directory; "on disk" is what the file allocates`,
    down,
    '',
    "Ratios are speed ratios, project over the other tool (its time / the project's): above 1.00× the project is faster.",
    'The project hashes an image (sha256 and CRC32, one read) before it sends it, and keeps that digest in a dotfile beside',
    'the file while its size, mtime and inode stay the same; an object the bucket already holds with that sha256 is not sent',
    'again, hence the empty bucket per round. "project" reaches the image through a new link, so the digest is computed in',
    'the timed run (as on the first upload of a build); "digest cached" finds the dotfile (a second upload, or after a download).',
    "The project's download lists the bucket, reads the manifest, checks the object's CRC32, writes holes for zero blocks,",
    'checks the sha256 and fsyncs before it renames the file into place; s5cmd and aws write every byte and check no content.',
    'The project runs in this process (a `rootfs` CLI start adds about 0.5 s); s5cmd and aws are timed from their process start.',
    JSON.stringify(line),
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  let opts: Options;
  try {
    opts = options(argv);
  } catch (err) {
    const msg = err instanceof z.ZodError ? z.prettifyError(err) : (err as Error).message;
    console.error(`bench/transfer: ${msg}\nusage: npm run bench:transfer -- [--quick] [--images DIR] [--runs N]`);
    return 2;
  }
  const images = findImages(opts.images, opts.quick);
  const s5cmd = requireTool('s5cmd');
  const aws = awsCommand();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rootfs-bench-transfer-'));
  let s3: BenchS3 | undefined;
  const cleanup = async () => {
    await s3?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    s3 = await startMinio(path.join(tmp, 's3'));
    const home = path.join(tmp, 'home');
    fs.mkdirSync(home);
    const childEnv = { PATH: process.env.PATH, HOME: home, AWS_EC2_METADATA_DISABLED: 'true', ...s3.clientEnv() };
    const ctx: Context = { s3, tmp, s5cmd, aws, childEnv, cachedLink: new Map(), seq: 0 };
    const tools = {
      project: 'in-process uploadImage / syncDown',
      s5cmd: await versionOf([s5cmd, 'version'], childEnv),
      aws: `${await versionOf([aws, '--version'], childEnv)} (${aws})`,
      server: 'MinIO on 127.0.0.1, data on this machine',
    };
    console.error(
      `bench/transfer: ${images.map((i) => i.language).join(', ')}; ${opts.runs} round(s); s5cmd ${tools.s5cmd}, ${tools.aws}`,
    );

    // Untimed: each image read once; the sources of the downloads, uploaded with their manifests by
    // the project; and for "digest cached", a link beside which the digest is remembered.
    const sources = new Map<string, string>();
    for (const image of images) {
      await warm(image.file);
      const bucket = `src-${image.language}`;
      await s3.createBucket(bucket);
      const link = freshLink(ctx, image);
      await fileDigest(link, { crc32: true });
      ctx.cachedLink.set(image.language, link);
      const store = storeContext(ctx, bucket, freshDir(ctx, 'workspace'));
      try {
        await uploadImage(store, image.language, link);
      } finally {
        store.client.destroy();
      }
      sources.set(image.language, bucket);
    }
    await settle(ctx);

    const ups = new Map(images.map((i) => [i.language, new Map(UPLOADERS.map((u) => [u, [] as number[]]))]));
    const downs = new Map(images.map((i) => [i.language, new Map(DOWNLOADERS.map((d) => [d, [] as number[]]))]));
    const allocated = new Map(images.map((i) => [i.language, new Map<Downloader, number>()]));
    for (let r = 0; r < opts.runs; r++) {
      for (const image of images) {
        const line: string[] = [];
        for (const tool of rotate(UPLOADERS, r)) {
          const s = await upload(ctx, tool, image);
          ups.get(image.language)!.get(tool)!.push(s);
          line.push(`${tool} ${s.toFixed(2)}`);
        }
        for (const tool of rotate(DOWNLOADERS, r)) {
          const got = await download(ctx, tool, image, sources.get(image.language)!);
          downs.get(image.language)!.get(tool)!.push(got.seconds);
          allocated.get(image.language)!.set(tool, got.allocatedBytes);
          line.push(`${tool}↓ ${got.seconds.toFixed(2)}`);
        }
        console.error(`  round ${r + 1}/${opts.runs} ${image.language}: ${line.join(', ')} s`);
      }
    }

    const figures = new Map<string, Figures>(
      images.map((i) => [
        i.language,
        {
          upload: Object.fromEntries(UPLOADERS.map((u) => [u, median(ups.get(i.language)!.get(u)!)])) as Record<
            Uploader,
            number
          >,
          download: Object.fromEntries(DOWNLOADERS.map((d) => [d, median(downs.get(i.language)!.get(d)!)])) as Record<
            Downloader,
            number
          >,
          downloadAllocatedBytes: Object.fromEntries(
            DOWNLOADERS.map((d) => [d, allocated.get(i.language)!.get(d)!]),
          ) as Record<Downloader, number>,
        },
      ]),
    );
    console.log(report(images, figures, opts, tools));
    return 0;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await cleanup();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`bench/transfer: ${err.message}`);
    process.exit(1);
  },
);
