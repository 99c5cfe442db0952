/**
 * bench/build: how long the project takes to build the images, beside the seed's own recipe, in
 * one run on this machine. Not a test: it prints a table (and a last JSON line) to put in the docs
 * with the date and the machine.
 *
 *   npm run bench:build -- [--quick] [--work DIR] [--kernel-from WORKSPACE] [--skip-seed] [--keep]
 *
 * In order: the seed recipe (bench/seed-recipe.sh, one language after the other); the project's
 * cold `create-all` (an empty workspace: no artifacts, no download caches; a new bucket); the same
 * again with nothing changed; again with another operator binary (only the operator's steps and
 * those after may run); and, unless the kernel was taken from elsewhere, a cold build of the
 * images alone with the kernel the cold run built (the seed recipe builds no kernel). It samples
 * the disk the workspace takes while the cold build runs. `--quick` does all of it for bash.
 * `--kernel-from` copies the kernel's artifacts from another workspace into the cold one, so that
 * a quick run does not spend minutes on the kernel (the table says so).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { stringify } from 'yaml';
import {
  AbortMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
} from '@aws-sdk/client-s3';
import { stopBackgroundWorkers } from '../src/cli/background-worker';
import { createClient } from '../src/store/client';
import { resolveRuntime, temporalClient } from '../src/cli/runtime';
import { projectRoot } from '../src/util/paths';
import { childWorkflowId, KERNEL, type CreateAllSummary } from '../workflows/types';

const LANGUAGES = ['bash', 'python', 'nodejs', 'go', 'rust'];
const CLI = path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js');

interface Options {
  quick: boolean;
  work: string;
  kernelFrom?: string;
  skipSeed: boolean;
  keep: boolean;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { quick: false, work: '', skipSeed: false, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (!v) throw new Error(`${a} needs a value`);
      return path.resolve(v);
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--work') opts.work = value();
    else if (a === '--kernel-from') opts.kernelFrom = value();
    else if (a === '--skip-seed') opts.skipSeed = true;
    else if (a === '--keep') opts.keep = true;
    else throw new Error(`unknown argument ${a} (see the comment at the top of bench/build.ts)`);
  }
  opts.work ||= fs.mkdtempSync('/var/tmp/rootfs-bench-');
  return opts;
}

/**
 * The environment every phase's command starts with: this process's own as it began, before
 * removeBucket's resolveRuntime put the local S3 server's endpoint and keys into it (with keys in
 * its environment a `rootfs` command takes S3 as external and creates no bucket).
 */
const START_ENV: NodeJS.ProcessEnv = { ...process.env };

/** Runs argv, streaming its output with a prefix; resolves with its stdout and the seconds it took. */
function run(
  argv: string[],
  label: string,
  env: NodeJS.ProcessEnv = START_ENV,
): Promise<{ stdout: string; seconds: number }> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderrTail = '';
    const show = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) console.error(`  ${label}| ${line}`);
    };
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
      show(c);
    });
    child.stderr.on('data', (c: Buffer) => {
      stderrTail = (stderrTail + c.toString('utf8')).slice(-4000);
      show(c);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code === 0) resolve({ stdout, seconds });
      else
        reject(new Error(`${argv.join(' ')} exited ${code}: ${stderrTail.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}

/** Bytes used on the filesystem holding `dir`, sampled until stopped: the peak above the start. */
function diskSampler(dir: string): { stop(): number } {
  const used = () => {
    const s = fs.statfsSync(dir);
    return (s.blocks - s.bfree) * s.bsize;
  };
  const start = used();
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, used())), 250);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, used()) - start;
    },
  };
}

/** The summary `rootfs ... --json` prints last. */
function summaryOf(stdout: string): CreateAllSummary {
  const at = stdout.lastIndexOf('\n{\n');
  const text = at >= 0 ? stdout.slice(at + 1) : stdout.slice(stdout.indexOf('{'));
  return JSON.parse(text) as CreateAllSummary;
}

interface Phase {
  name: string;
  seconds: number;
  summary: CreateAllSummary;
  steps: { ran: number; reused: number };
}

const GiB = 1024 ** 3;
const fmtS = (s: number) => `${s.toFixed(1)} s`;
const fmtX = (r: number) => `${r.toFixed(2)}×`;
const fmtGiB = (b: number) => `${(b / GiB).toFixed(2)} GiB`;

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const languages = opts.quick ? ['bash'] : LANGUAGES;
  const id = crypto.randomBytes(3).toString('hex');
  fs.mkdirSync(opts.work, { recursive: true });
  console.error(`bench/build: work in ${opts.work}, languages ${languages.join(' ')}`);

  // The operator binary the builds start with, and a changed one (another version string: other bytes).
  const operator = path.join(projectRoot(), '.tools', 'bin', 'infra.operator');
  if (!fs.existsSync(operator)) throw new Error(`${operator} is missing: run npm run setup first`);
  const changedOperator = path.join(opts.work, 'infra.operator-changed');
  const built = spawnSync(
    'go',
    ['build', '-trimpath', '-ldflags', `-s -w -X main.version=bench-${id}`, '-o', changedOperator, '.'],
    {
      cwd: path.join(projectRoot(), 'guest'),
      env: { ...START_ENV, CGO_ENABLED: '0' },
      encoding: 'utf8',
    },
  );
  if (built.status !== 0) throw new Error(`go build of the changed operator failed: ${built.stderr}`);

  const configFile = path.join(opts.work, 'bench.yaml');
  const writeConfig = (workspace: string, operatorPath: string, bucket: string) =>
    fs.writeFileSync(configFile, stringify({ workspace, operator: { path: operatorPath }, s3: { bucket } }));
  const rootfs = async (name: string, runTag: string): Promise<Phase> => {
    const argv =
      languages.length === LANGUAGES.length
        ? ['create-all', '--run-tag', runTag, '--json']
        : ['create', ...languages, '--run-tag', runTag, '--json'];
    const { stdout, seconds } = await run([process.execPath, CLI, '--config', configFile, ...argv], name);
    const summary = summaryOf(stdout);
    const all = [...summary.images.map((i) => i.steps), ...(summary.kernel ? [summary.kernel.steps] : [])];
    const states = all.flatMap((s) => Object.values(s));
    return {
      name,
      seconds,
      summary,
      steps: { ran: states.filter((s) => s === 'ran').length, reused: states.filter((s) => s === 'reused').length },
    };
  };

  // 1. The seed's recipe.
  let seed:
    | { seconds: number; languages: Record<string, { seconds: number; ok: boolean; error: string | null }> }
    | undefined;
  if (!opts.skipSeed) {
    const { stdout } = await run(
      [
        'bash',
        path.join(projectRoot(), 'bench', 'seed-recipe.sh'),
        '--work',
        path.join(opts.work, 'seed'),
        ...languages,
      ],
      'seed',
    );
    seed = JSON.parse(stdout.trim().split('\n').at(-1)!);
  }

  // 2. Cold: an empty workspace and a new bucket.
  const cold = path.join(opts.work, 'ws-cold');
  fs.mkdirSync(path.join(cold, 'artifacts'), { recursive: true });
  if (opts.kernelFrom) copyKernel(opts.kernelFrom, cold);
  writeConfig(cold, operator, `rootfs-bench-${id}-cold`);
  const disk = diskSampler(opts.work);
  const coldRun = await rootfs('cold', `bench-${id}-cold`);
  const peakBytes = disk.stop();
  const timeline = await activityTimeline(configFile, `bench-${id}-cold`, [
    ...languages,
    ...(coldRun.summary.kernel ? [KERNEL] : []),
  ]);
  const treesBytes = finalTreesBytes(cold, languages);
  const workspaceBytes = imageWorkspaceBytes(cold);

  // 3. Nothing changed.
  const unchanged = await rootfs('no change', `bench-${id}-again`);

  // 4. Another operator binary.
  writeConfig(cold, changedOperator, `rootfs-bench-${id}-cold`);
  const operatorChanged = await rootfs('operator changed', `bench-${id}-operator`);

  // What the next phase does not need goes now: five images take about 12 GiB of workspace and
  // 5.4 GiB of bucket per phase.
  const cleanUp = async (workspace: string | undefined, bucket: string) => {
    if (opts.keep) return;
    await removeBucket(configFile, bucket);
    if (workspace) fs.rmSync(workspace, { recursive: true, force: true });
  };

  // 5. The images alone, cold, with the kernel the cold run built (what the seed recipe builds).
  let imagesOnly: Phase | undefined;
  if (!opts.kernelFrom) {
    const ws = path.join(opts.work, 'ws-images');
    fs.mkdirSync(path.join(ws, 'artifacts'), { recursive: true });
    copyKernel(cold, ws);
    await cleanUp(cold, `rootfs-bench-${id}-cold`);
    writeConfig(ws, operator, `rootfs-bench-${id}-images`);
    imagesOnly = await rootfs('images, kernel kept', `bench-${id}-images`);
    await cleanUp(undefined, `rootfs-bench-${id}-images`);
  } else {
    await cleanUp(undefined, `rootfs-bench-${id}-cold`);
  }

  // The table.
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / GiB).toFixed(0)} GiB, Linux ${os.release()}`;
  const coldImages = imagesOnly ?? coldRun;
  const rows: Array<[string, string, string]> = [];
  if (seed) {
    const failed = Object.entries(seed.languages).filter(([, l]) => !l.ok);
    rows.push([
      `seed recipe (${languages.length} image${languages.length > 1 ? 's' : ''}, one after the other, no kernel, no boot, no upload)`,
      fmtS(seed.seconds),
      failed.length ? `failed: ${failed.map(([l, r]) => `${l} (${r.error})`).join('; ')}` : '',
    ]);
  }
  const vsSeed = (s: number) => (seed ? `${fmtX(s / seed.seconds)} the seed recipe` : '');
  rows.push([
    `project cold create-all: ${opts.kernelFrom ? 'kernel copied from ' + opts.kernelFrom : 'kernel'} + images + boots + uploads, empty store and caches`,
    fmtS(coldRun.seconds),
    vsSeed(coldRun.seconds),
  ]);
  if (imagesOnly)
    rows.push([
      'project cold, images + boots + uploads (kernel kept)',
      fmtS(imagesOnly.seconds),
      vsSeed(imagesOnly.seconds),
    ]);
  rows.push([
    'no change (CLI start included)',
    fmtS(unchanged.seconds),
    `${unchanged.steps.ran} steps ran, ${unchanged.steps.reused} reused`,
  ]);
  rows.push([
    'operator binary changed',
    fmtS(operatorChanged.seconds),
    `${fmtX(operatorChanged.seconds / coldRun.seconds)} cold${imagesOnly ? `, ${fmtX(operatorChanged.seconds / coldImages.seconds)} cold images` : ''}; ${operatorChanged.steps.ran} steps ran, ${operatorChanged.steps.reused} reused`,
  ]);
  rows.push([
    'workspace after the cold build (artifacts, images, caches; not the kernel)',
    fmtGiB(workspaceBytes),
    `${fmtX(workspaceBytes / treesBytes)} the final trees (${fmtGiB(treesBytes)})`,
  ]);
  rows.push([
    'peak of the filesystem during the cold build (anything else writing to it counts too)',
    fmtGiB(peakBytes),
    `${fmtX(peakBytes / treesBytes)} the final trees`,
  ]);

  console.log(`\nbench/build, ${new Date().toISOString().slice(0, 10)}, ${machine}\n`);
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  for (const [a, b, c] of rows) console.log(`${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}`);
  console.log(
    `\ncritical path of the cold build (each build's activities, from Temporal's history):\n${timeline.join('\n')}`,
  );
  console.log(
    JSON.stringify({
      date: new Date().toISOString(),
      machine,
      languages,
      kernelFrom: opts.kernelFrom ?? null,
      seed: seed ?? null,
      coldSeconds: coldRun.seconds,
      coldImagesSeconds: imagesOnly?.seconds ?? null,
      unchangedSeconds: unchanged.seconds,
      operatorChangedSeconds: operatorChanged.seconds,
      operatorChangedSteps: operatorChanged.steps,
      peakDiskBytes: peakBytes,
      workspaceBytes,
      finalTreesBytes: treesBytes,
    }),
  );
  // The background worker the bench's config started: its builds are over.
  await stopBackgroundWorkers(30_000, undefined, undefined, (w) => w.configFile === configFile);
  if (!opts.keep) fs.rmSync(opts.work, { recursive: true, force: true });
}

/** Empties the bench's bucket (every version, every unfinished upload) and removes it. */
async function removeBucket(configFile: string, bucket: string): Promise<void> {
  const rt = await resolveRuntime(configFile, { needS3: true, log: () => {} });
  const client = createClient({ config: { ...rt.loaded.config.s3, bucket } });
  try {
    for (;;) {
      const listed = await client.send(new ListObjectVersionsCommand({ Bucket: bucket }));
      const objects = [...(listed.Versions ?? []), ...(listed.DeleteMarkers ?? [])].map((v) => ({
        Key: v.Key!,
        VersionId: v.VersionId,
      }));
      if (!objects.length) break;
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects } }));
    }
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    for (const u of uploads.Uploads ?? [])
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key!, UploadId: u.UploadId! }));
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
}

/** Copies the kernel steps' artifacts (source, config, build) from one workspace into another. */
function copyKernel(fromWorkspace: string, toWorkspace: string): void {
  const from = path.join(fromWorkspace, 'artifacts');
  const names = fs.readdirSync(from).filter((n) => /^kernel-(source|config|build)-/.test(n));
  if (!names.length) throw new Error(`${from} holds no kernel artifacts`);
  for (const name of names) {
    const r = spawnSync('cp', [
      '-a',
      '--reflink=auto',
      path.join(from, name),
      path.join(toWorkspace, 'artifacts', name),
    ]);
    if (r.status !== 0) throw new Error(`cp ${name}: ${r.stderr.toString()}`);
  }
}

/**
 * Bytes the workspace takes for the images: every artifact but the kernel's, the published images
 * and the download caches, in one `du` (so a file linked from two trees counts once).
 */
function imageWorkspaceBytes(workspace: string): number {
  const artifacts = path.join(workspace, 'artifacts');
  const parts = [
    ...fs
      .readdirSync(artifacts)
      .filter((n) => !n.startsWith('kernel-'))
      .map((n) => path.join(artifacts, n)),
    path.join(workspace, 'images'),
    path.join(workspace, 'cache'),
  ].filter((p) => fs.existsSync(p));
  const du = spawnSync('du', ['-s', '-c', '-B1', '-x', ...parts], { encoding: 'utf8' });
  return Number(du.stdout.trim().split('\n').at(-1)!.split(/\s/)[0]);
}

/** Bytes of the finished trees behind the published images (their operator step's tree). */
function finalTreesBytes(workspace: string, languages: string[]): number {
  let total = 0;
  for (const language of languages) {
    const manifest = JSON.parse(
      fs.readFileSync(path.join(workspace, 'images', `rootfs-${language}.ext4.manifest.json`), 'utf8'),
    ) as {
      treeKey: string;
    };
    const du = spawnSync('du', ['-s', '-B1', '-x', path.join(workspace, 'artifacts', manifest.treeKey, 'tree')], {
      encoding: 'utf8',
    });
    total += Number(du.stdout.split(/\s/)[0]);
  }
  return total;
}

/**
 * Each child's activities with their start and duration, from its history (the child that finished
 * last first): where the cold build's time went, and which child held it up.
 */
async function activityTimeline(configFile: string, runTag: string, names: string[]): Promise<string[]> {
  const rt = await resolveRuntime(configFile, { needS3: false, log: () => {} });
  const { client, close } = await temporalClient(rt);
  try {
    const seconds = (t?: { seconds?: unknown; nanos?: number | null } | null) =>
      Number(t?.seconds ?? 0) + (t?.nanos ?? 0) / 1e9;
    const children = [];
    for (const name of names) {
      const history = await client.workflow.getHandle(childWorkflowId(runTag, name)).fetchHistory();
      const events = history.events ?? [];
      const scheduled = new Map<string, { type: string; at: number }>();
      const spans: Array<{ type: string; start: number; end: number }> = [];
      for (const e of events) {
        const at = seconds(e.eventTime);
        const s = e.activityTaskScheduledEventAttributes;
        if (s) scheduled.set(String(e.eventId), { type: s.activityType?.name ?? '?', at });
        const done = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes;
        const from = done && scheduled.get(String(done.scheduledEventId));
        if (from) spans.push({ type: from.type, start: from.at, end: at });
      }
      const start = seconds(events[0]?.eventTime);
      const end = seconds(events.at(-1)?.eventTime);
      children.push({ name, start, end, spans });
    }
    const t0 = Math.min(...children.map((c) => c.start));
    return children
      .sort((a, b) => b.end - a.end)
      .map(
        (c) =>
          `  ${c.name.padEnd(8)} ${fmtS(c.start - t0)} → ${fmtS(c.end - t0)}: ` +
          c.spans.map((sp) => `${sp.type} ${fmtS(sp.end - sp.start)}`).join(' · '),
      );
  } finally {
    await close();
  }
}

main().catch((err: Error) => {
  console.error(`bench/build: ${err.message}`);
  process.exit(1);
});
