/**
 * bench/distribution: issue 13's goals for the block store, measured in one run against a private
 * MinIO with the project's own upload and sync (the functions `rootfs s3 upload` and `rootfs s3
 * download` run). Not a test: it prints a table and a last JSON line.
 *
 *   npm run bench:distribution -- [--quick | --only LANG] [--artifacts DIR] [--kernel FILE]
 *
 * It takes, per language, the two newest image builds in the artifacts folder (a build workspace's
 * `artifacts/`); with one build only, the second is made from the first by rewriting 1% of its data
 * blocks (said so in the table: "synthetic"). Then, in one bucket with both layouts:
 *   1. publishes the older builds and the kernel (one build) and syncs host A;
 *   2. publishes the newer builds (two consecutive builds) and syncs host A again: what a host
 *      that had the older build fetches, per image, beside that image's compressed size;
 *   3. syncs new host B from the block store alone, as `s3 download` does and as a bootstrap
 *      script does (the static fetcher, fetcher/), and times s5cmd copying the plain objects
 *      (and, apart, the fsync of its files, which the syncs do and s5cmd does not);
 *   4. rolls every image back and syncs host A: what a rollback to a version the host had costs.
 * `--quick` takes bash only (as CI runs it); `--only LANG` another single language.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { loadConfig } from '../src/config';
import { Name } from '../src/config/schema';
import { requireTool } from '../src/setup/tools';
import {
  listBucket,
  rollback,
  syncDown,
  uploadImage,
  uploadKernel,
  type StoreContext,
  type SyncReport,
} from '../src/store';
import { capture } from '../src/util/exec';
import { imageArtifacts, newestPairs, changeBetween, type ImageArtifact } from './lib/blocks';
import { startMinio, type BenchS3 } from './lib/minio';
import { mib, ratio, round, seconds, table } from './lib/table';

const GiB = 2 ** 30;
const SEED_BYTES = 4.5 * GiB;
const GOALS = {
  newHostBytes: 0.25 * SEED_BYTES,
  updateShare: 0.1,
  twoBuilds: 1.3,
  rollbackSeconds: 5,
  newHostVsS5cmd: 0.5,
};

const Options = z.object({
  quick: z.boolean(),
  only: Name.optional(),
  artifacts: z.string().min(1),
  kernel: z.string().min(1),
});
type Options = z.infer<typeof Options>;

function options(argv: string[]): Options {
  const workspace = loadConfig({}).config.workspace;
  const raw: Record<string, unknown> = {
    quick: false,
    artifacts: path.join(workspace, 'artifacts'),
    kernel: path.join(workspace, 'vmlinux'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') raw.quick = true;
    else if (a === '--artifacts' || a === '--kernel' || a === '--only') raw[a.slice(2)] = argv[++i];
    else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  return Options.parse(raw);
}

interface Version {
  language: string;
  file: string;
  /** How the two builds differ, in a few words. */
  change: string;
}

/** A copy of `file` with 1% of its data blocks rewritten: a second build when there is only one. */
function synthesize(file: string, into: string): string {
  fs.copyFileSync(file, into);
  const fd = fs.openSync(into, 'r+');
  try {
    const blocks = Math.floor(fs.fstatSync(fd).size / 4096);
    const buf = Buffer.alloc(4096);
    const zero = Buffer.alloc(4096);
    let data = 0;
    // Deterministic: every 100th data block gets new bytes.
    for (let b = 0; b < blocks; b++) {
      fs.readSync(fd, buf, 0, 4096, b * 4096);
      if (buf.equals(zero)) continue;
      if (data++ % 100 === 0) fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, b * 4096);
    }
  } finally {
    fs.closeSync(fd);
  }
  return into;
}

function pickBuilds(opts: Options, tmp: string): { older: Version[]; newer: Version[] } {
  const only = opts.only ?? (opts.quick ? 'bash' : undefined);
  const all = imageArtifacts(opts.artifacts).filter((a) => !only || a.name === only);
  if (!all.length) throw new Error(`no image artifacts in ${opts.artifacts} (build them with rootfs create-all)`);
  const { pairs, single } = newestPairs(all);
  const older: Version[] = [];
  const newer: Version[] = [];
  for (const p of pairs) {
    const change = changeBetween(p.older, p.newer);
    older.push({ language: p.language, file: p.older.file, change });
    newer.push({ language: p.language, file: p.newer.file, change });
  }
  for (const language of single) {
    const only = all.find((a: ImageArtifact) => a.name === language)!;
    older.push({ language, file: only.file, change: 'synthetic: 1% of data blocks rewritten' });
    newer.push({
      language,
      file: synthesize(only.file, path.join(tmp, `rootfs-${language}.ext4`)),
      change: 'synthetic: 1% of data blocks rewritten',
    });
  }
  return { older, newer };
}

const blockBytes = async (s3: BenchS3, bucket: string) => {
  const c = s3.client(bucket);
  try {
    const l = await listBucket({ client: c, config: s3.config(bucket) });
    return (l.blockStore?.packs.bytes ?? 0) + (l.blockStore?.indexes.bytes ?? 0);
  } finally {
    c.destroy();
  }
};

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = process.hrtime.bigint();
  const value = await fn();
  return { value, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

function checkSync(report: SyncReport, what: string): SyncReport {
  const failed = report.files.filter((f) => f.status === 'failed');
  if (failed.length) throw new Error(`${what}: ${failed.map((f) => f.error).join('; ')}`);
  return report;
}

async function main(argv: string[]): Promise<number> {
  let opts: Options;
  try {
    opts = options(argv);
  } catch (err) {
    const msg = err instanceof z.ZodError ? z.prettifyError(err) : (err as Error).message;
    console.error(
      `bench/distribution: ${msg}\nusage: npm run bench:distribution -- [--quick | --only LANG] [--artifacts DIR] [--kernel FILE]`,
    );
    return 2;
  }
  const s5cmd = requireTool('s5cmd');
  const fetcher = requireTool('blockFetcher');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rootfs-bench-distribution-'));
  let s3: BenchS3 | undefined;
  try {
    const { older, newer } = pickBuilds(opts, tmp);
    console.error(
      `bench/distribution: ${newer.map((v) => `${v.language} (${v.change})`).join(', ')}; kernel ${opts.kernel}`,
    );
    s3 = await startMinio(path.join(tmp, 's3'));
    const bucket = `rootfs-bench-dist-${crypto.randomBytes(3).toString('hex')}`;
    await s3.createBucket(bucket);
    const client = s3.client(bucket);
    const ctx = (workspace: string): StoreContext => ({ client, config: s3!.config(bucket), workspace });
    const publisher = path.join(tmp, 'publisher');
    fs.mkdirSync(publisher);
    const hostA = path.join(tmp, 'host-a');
    const hostB = path.join(tmp, 'host-b');

    // 1. One build, and host A in step with it.
    const first = await timed(async () => {
      await uploadKernel(ctx(publisher), opts.kernel);
      for (const v of older) await uploadImage(ctx(publisher), v.language, v.file);
    });
    const oneBuild = await blockBytes(s3, bucket);
    checkSync(await syncDown(ctx(hostA)), 'host A, first build');

    // 2. The next build; host A updates.
    const second = await timed(async () => {
      for (const v of newer) await uploadImage(ctx(publisher), v.language, v.file);
    });
    const twoBuilds = await blockBytes(s3, bucket);
    const update = checkSync(await syncDown(ctx(hostA)), 'host A, second build');
    const heads = (await listBucket({ client, config: s3.config(bucket) })).blockStore!.heads;
    const updates = newer.map((v) => {
      const key = `rootfs-${v.language}.ext4`;
      const f = update.files.find((x) => x.key === key)!;
      const head = heads.find((h) => h.key === key)!;
      const zstdSize = head.versions.find((x) => x.index === head.current)!.fetchBytes;
      return { language: v.language, change: v.change, fetched: f.bytes, zstdSize, share: f.bytes / zstdSize };
    });

    // 3. A new host: the block store against s5cmd copying the plain objects.
    const plainDir = path.join(tmp, 'plain');
    fs.mkdirSync(plainDir);
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmp, ...s3.clientEnv() };
    // One s5cmd process for the images and the kernel, as it would copy them (in parallel).
    const commands = path.join(tmp, 's5cmd-commands');
    fs.writeFileSync(
      commands,
      [`cp s3://${bucket}/rootfs-*.ext4 ${plainDir}/`, `cp s3://${bucket}/vmlinux ${plainDir}/`].join('\n') + '\n',
    );
    // Each new host starts with nothing waiting to be written back: none pays for the one before.
    const settle = () => capture('sync', []);
    await settle();
    const s5 = await timed(() => capture(s5cmd, ['--endpoint-url', s3!.endpoint, 'run', commands], { env }));
    const plainFiles = fs.readdirSync(plainDir).map((f) => path.join(plainDir, f));
    const plainBytes = plainFiles.reduce((n, f) => n + fs.statSync(f).size, 0);
    // s5cmd leaves its bytes in the page cache; the syncs fsync before they install. What writing
    // them to disk adds, for a like-for-like figure beside the goal's.
    const flushed = await timed(() => capture('sync', plainFiles));
    fs.rmSync(plainDir, { recursive: true, force: true });
    await settle();
    const fresh = await timed(async () => checkSync(await syncDown(ctx(hostB)), 'host B'));
    const newHostBytes = fresh.value.bytesTransferred;
    fs.rmSync(hostB, { recursive: true, force: true });
    // The same new host through a bootstrap script's fetcher.
    const hostC = path.join(tmp, 'host-c');
    const fetcherArgs = ['sync', '--bucket-url', `${s3.endpoint}/${bucket}`, '--region', s3.config(bucket).region];
    await settle();
    const viaFetcher = await timed(() => capture(fetcher, [...fetcherArgs, '--workspace', hostC], { env }));
    const fetcherBytes = Number(/, (\d+) bytes fetched, 0 failed/.exec(viaFetcher.value.stderr)?.[1] ?? NaN);
    fs.rmSync(hostC, { recursive: true, force: true });

    // 4. Roll every image back; host A had those versions.
    for (const v of newer) await rollback(ctx(publisher), `rootfs-${v.language}.ext4`);
    const back = await timed(async () => checkSync(await syncDown(ctx(hostA)), 'host A, rollback'));

    const rows: string[][] = [
      [
        `bytes a new host fetches: ${newer.length} image(s) + kernel`,
        `${mib(newHostBytes)} (plain objects: ${mib(plainBytes)})`,
        `≤ ${mib(GOALS.newHostBytes)}`,
        newHostBytes <= GOALS.newHostBytes ? 'met' : 'not met',
      ],
      ...updates.map((u) => [
        `bytes to update ${u.language} (${u.change})`,
        `${mib(u.fetched)} = ${(u.share * 100).toFixed(1)}% of its ${mib(u.zstdSize)} compressed`,
        `≤ ${GOALS.updateShare * 100}%`,
        u.share <= GOALS.updateShare ? 'met' : 'not met',
      ]),
      [
        'bytes stored for two consecutive builds',
        `${mib(twoBuilds)} = ${ratio(twoBuilds / oneBuild)} one build's ${mib(oneBuild)}`,
        `≤ ${GOALS.twoBuilds}×`,
        twoBuilds / oneBuild <= GOALS.twoBuilds ? 'met' : 'not met',
      ],
      [
        'rollback of every image on a host that had the versions',
        `${mib(back.value.bytesTransferred)}, ${seconds(back.seconds)}`,
        `0 bytes, ≤ ${GOALS.rollbackSeconds} s`,
        back.value.bytesTransferred === 0 && back.seconds <= GOALS.rollbackSeconds ? 'met' : 'not met',
      ],
      [
        'new-host sync time (s3 download) / s5cmd copying the plain objects',
        `${seconds(fresh.seconds)} / ${seconds(s5.seconds)} = ${ratio(fresh.seconds / s5.seconds)}`,
        `≤ ${GOALS.newHostVsS5cmd}×`,
        fresh.seconds / s5.seconds <= GOALS.newHostVsS5cmd ? 'met' : 'not met',
      ],
      [
        `the same through the bootstrap script's fetcher (${mib(fetcherBytes)})`,
        `${seconds(viaFetcher.seconds)} / ${seconds(s5.seconds)} = ${ratio(viaFetcher.seconds / s5.seconds)}`,
        `≤ ${GOALS.newHostVsS5cmd}×`,
        viaFetcher.seconds / s5.seconds <= GOALS.newHostVsS5cmd ? 'met' : 'not met',
      ],
      [
        'the fetcher / s5cmd with its files then synced to disk (as the syncs fsync)',
        `${seconds(viaFetcher.seconds)} / ${seconds(s5.seconds + flushed.seconds)} = ${ratio(viaFetcher.seconds / (s5.seconds + flushed.seconds))}`,
        '',
        '',
      ],
    ];
    console.log(table(['measure', 'now', 'goal', ''], rows, new Set()));
    console.log(
      `publishing: first build ${seconds(first.seconds)} (kernel + ${older.length} image(s), both layouts), second ${seconds(second.seconds)}`,
    );
    console.log(
      JSON.stringify({
        bench: 'distribution',
        date: new Date().toISOString(),
        machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / GiB) },
        quick: opts.quick,
        newHostBytes,
        plainBytes,
        newHostSeconds: round(fresh.seconds),
        fetcherSeconds: round(viaFetcher.seconds),
        fetcherBytes,
        s5cmdSeconds: round(s5.seconds),
        s5cmdFlushSeconds: round(flushed.seconds),
        oneBuildBytes: oneBuild,
        twoBuildsBytes: twoBuilds,
        updates,
        rollbackBytes: back.value.bytesTransferred,
        rollbackSeconds: round(back.seconds),
        publishSeconds: { first: round(first.seconds), second: round(second.seconds) },
      }),
    );
    client.destroy();
    return 0;
  } catch (err) {
    console.error(`bench/distribution: ${(err as Error).message}`);
    return 1;
  } finally {
    await s3?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

void main(process.argv.slice(2)).then((code) => process.exit(code));
