import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { stringify } from 'yaml';
import { buildSpecOf } from '../../src/pipeline/build-spec';
import { loadConfig, type S3Config } from '../../src/config';
import { requireTool } from '../../src/setup/tools';
import { devServerSearchAttributeArgs } from '../../src/temporal/search-attributes';
import { hostTaskQueue, ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { createRootfs } from '../../workflows';
import { abortUpdate, progressQuery, retryStepUpdate } from '../../workflows/messages';
import { childWorkflowId, type BuildOptions, type ImageSummary, type LanguageProgress } from '../../workflows/types';
import { seedKernel } from '../support/kernel';
import {
  freePort,
  onCleanup,
  portAccepts,
  startServer,
  sharedTempDir,
  waitUntilReady,
  type ServerProcess,
} from '../support/process';

/**
 * The real stack of the fault suite, all of it its own so that a fault never reaches another
 * suite: a Temporal dev server that can be killed with SIGKILL and started again on the same
 * port and SQLite file, a MinIO whose data directory is known (to corrupt an object at rest),
 * a loopback TCP proxy in front of MinIO that can freeze a transfer at a chosen byte count or
 * go away like a stopped server, an HTTP server whose downloads can be held open (a step that is
 * certainly in the middle of its work), a workspace on a tmpfs that can be shrunk until it is
 * full, and build-host workers in processes of their own, to kill.
 */

export const MiB = 1 << 20;
const REGION = 'us-east-1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A Temporal dev server whose process the suite may SIGKILL and start again with the same db and port. */
export class KillableTemporal {
  private server!: ServerProcess;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly dbFile: string,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(dir: string): Promise<KillableTemporal> {
    const t = new KillableTemporal(dir, await freePort(), path.join(dir, 'temporal.db'));
    await t.launch();
    return t;
  }

  private async launch(): Promise<void> {
    this.server = startServer(
      requireTool('temporal'),
      [
        'server',
        'start-dev',
        '--ip',
        '127.0.0.1',
        '--port',
        String(this.port),
        '--headless',
        '--db-filename',
        this.dbFile,
        '--log-level',
        'error',
        ...devServerSearchAttributeArgs(),
      ],
      { logFile: path.join(this.dir, 'temporal.log'), graceMs: 10_000 },
    );
    await waitUntilReady(this.server, "the fault suite's Temporal dev server", async () => {
      if (!(await portAccepts(this.port))) return false;
      const conn = await Connection.connect({ address: this.address, connectTimeout: 2000 });
      try {
        await conn.workflowService.getSystemInfo({});
        return true;
      } finally {
        await conn.close();
      }
    });
  }

  /** SIGKILL, as a crash or the OOM killer would: no shutdown, whatever is in flight is lost. */
  async kill9(): Promise<void> {
    await killHard(this.server.child);
  }

  /** The same binary, port and SQLite file as before. */
  restart(): Promise<void> {
    return this.launch();
  }
}

/** SIGKILL and wait until the process is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/** A MinIO of the suite's own, stoppable and startable on the same port and data. */
export class FaultS3 {
  private server?: ServerProcess;
  readonly credentials = {
    accessKeyId: `faults${crypto.randomBytes(5).toString('hex')}`,
    secretAccessKey: crypto.randomBytes(24).toString('base64url'),
  };

  private constructor(
    readonly dataDir: string,
    readonly port: number,
    private readonly consolePort: number,
    private readonly logFile: string,
  ) {}

  static async start(dir: string): Promise<FaultS3> {
    const s3 = new FaultS3(path.join(dir, 'data'), await freePort(), await freePort(), path.join(dir, 'minio.log'));
    await s3.start();
    return s3;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** What a process needs in its environment to reach this server through the SDK's chain. */
  get env(): Record<string, string> {
    return {
      AWS_ACCESS_KEY_ID: this.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: this.credentials.secretAccessKey,
      AWS_REGION: REGION,
    };
  }

  running(): boolean {
    return !!this.server && this.server.child.exitCode === null && this.server.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running()) return;
    this.server = startServer(
      requireTool('minio'),
      [
        'server',
        this.dataDir,
        '--address',
        `127.0.0.1:${this.port}`,
        '--console-address',
        `127.0.0.1:${this.consolePort}`,
        '--quiet',
      ],
      {
        env: {
          ...process.env,
          MINIO_ROOT_USER: this.credentials.accessKeyId,
          MINIO_ROOT_PASSWORD: this.credentials.secretAccessKey,
          MINIO_SITE_REGION: REGION,
          MINIO_BROWSER: 'off',
          MINIO_UPDATE: 'off',
        },
        logFile: this.logFile,
      },
    );
    await waitUntilReady(this.server, 'minio', async () => (await fetch(`${this.endpoint}/minio/health/ready`)).ok);
  }

  async stop(): Promise<void> {
    await this.server?.stop();
  }

  /** A client that talks to MinIO directly (not through the proxy), with the root credentials. */
  client(): S3Client {
    return new S3Client({
      endpoint: this.endpoint,
      region: REGION,
      forcePathStyle: true,
      credentials: this.credentials,
      maxAttempts: 2,
    });
  }

  async createBucket(name: string): Promise<void> {
    const c = this.client();
    try {
      await c.send(new CreateBucketCommand({ Bucket: name }));
    } finally {
      c.destroy();
    }
  }

  /** Files MinIO keeps for an object (single-drive layout: `<bucket>/<key>/<data dir>/part.N`). */
  partFiles(bucket: string, key: string): string[] {
    const dir = path.join(this.dataDir, bucket, key);
    if (!fs.existsSync(dir)) return [];
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .flatMap((d) =>
        fs
          .readdirSync(path.join(dir, d.name))
          .filter((n) => /^part\.\d+$/.test(n))
          .map((n) => path.join(dir, d.name, n)),
      );
  }
}

/**
 * A TCP proxy in front of MinIO, the endpoint the builds use. It passes everything through,
 * counting the bytes sent towards the server; `freezeAfter(n)` stops every transfer once n more
 * bytes went up (a transfer caught in its middle, certainly), `thaw()` lets them go on, and
 * `down()`/`up()` close and reopen its port, as a stopped server's port is closed.
 */
export class S3Proxy {
  private server?: net.Server;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private upBytes = 0;
  private freezeAt?: number;
  private frozen = false;
  private onFrozen?: () => void;

  private constructor(
    readonly port: number,
    private readonly upstreamPort: number,
  ) {}

  static async start(upstreamPort: number): Promise<S3Proxy> {
    const proxy = new S3Proxy(await freePort(), upstreamPort);
    await proxy.up();
    onCleanup(() => proxy.down());
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async up(): Promise<void> {
    if (this.server) return;
    const server = net.createServer((client) => this.connect(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /** Closes the port and every connection: clients see their connections reset, then refused. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    this.frozen = false;
    this.freezeAt = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Resolves once `bytes` more bytes went towards the server and every transfer is frozen. */
  freezeAfter(bytes: number): Promise<void> {
    this.freezeAt = this.upBytes + bytes;
    return new Promise((resolve) => (this.onFrozen = resolve));
  }

  thaw(): void {
    this.frozen = false;
    this.freezeAt = undefined;
    for (const { client, upstream } of this.pairs) {
      client.resume();
      upstream.resume();
    }
  }

  private freeze(): void {
    this.frozen = true;
    for (const { client, upstream } of this.pairs) {
      client.pause();
      upstream.pause();
    }
    this.onFrozen?.();
    this.onFrozen = undefined;
  }

  private connect(client: net.Socket): void {
    const upstream = net.connect({ port: this.upstreamPort, host: '127.0.0.1' });
    const pair = { client, upstream };
    this.pairs.add(pair);
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    if (this.frozen) {
      client.pause();
      upstream.pause();
    }
    client.on('data', (chunk: Buffer) => {
      this.upBytes += chunk.length;
      if (!upstream.write(chunk)) client.pause();
      if (!this.frozen && this.freezeAt !== undefined && this.upBytes >= this.freezeAt) this.freeze();
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) upstream.pause();
    });
    upstream.on('drain', () => !this.frozen && client.resume());
    client.on('drain', () => !this.frozen && upstream.resume());
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  }
}

/**
 * A loopback download server for runtime sources. A path can be held: its requests get no answer
 * until `release`, so a step that downloads it is certainly in the middle of its work.
 */
export class DownloadServer {
  private readonly routes = new Map<string, Buffer>();
  private readonly held = new Map<string, http.ServerResponse[]>();
  private readonly holding = new Set<string>();
  private readonly counts = new Map<string, number>();

  url = '';

  private constructor() {}

  static async start(): Promise<DownloadServer> {
    const self = new DownloadServer();
    const server = http.createServer((req, res) => self.answer(new URL(req.url ?? '/', 'http://x').pathname, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    server.unref();
    onCleanup(() => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    });
    self.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    return self;
  }

  serve(p: string, body: Buffer, opts: { hold?: boolean } = {}): string {
    this.routes.set(p, body);
    if (opts.hold) this.holding.add(p);
    return `${this.url}${p}`;
  }

  hits(p: string): number {
    return this.counts.get(p) ?? 0;
  }

  /** Answers the held requests of `p`, and every later one at once. */
  release(p: string): void {
    this.holding.delete(p);
    for (const res of this.held.get(p) ?? []) this.send(p, res);
    this.held.delete(p);
  }

  private answer(p: string, res: http.ServerResponse): void {
    this.counts.set(p, this.hits(p) + 1);
    if (this.holding.has(p)) this.held.set(p, [...(this.held.get(p) ?? []), res]);
    else this.send(p, res);
  }

  private send(p: string, res: http.ServerResponse): void {
    const body = this.routes.get(p);
    if (!body) res.writeHead(404).end('not found\n');
    else res.writeHead(200, { 'content-length': body.length }).end(body);
  }
}

/** A tar.gz of one small file under `<name>/`: a runtime archive source. */
export function tarball(dir: string, name: string): Buffer {
  const src = path.join(dir, `tar-${name}`);
  fs.mkdirSync(path.join(src, name), { recursive: true });
  fs.writeFileSync(path.join(src, name, 'README'), `${name}: a fault-suite runtime source\n`);
  const out = path.join(dir, `${name}.tar.gz`);
  execFileSync('tar', ['-czf', out, '-C', src, name]);
  return fs.readFileSync(out);
}

export const sha256 = (data: Buffer | string) => crypto.createHash('sha256').update(data).digest('hex');

/** A workspace on its own tmpfs: its size is the lever of the "workspace full" fault. */
export class TmpfsWorkspace {
  private constructor(readonly dir: string) {}

  static mount(dir: string, sizeMiB: number): TmpfsWorkspace {
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'rootfs-faults', dir]);
    // Registered after the temp dir that holds it, so it runs first: unmounted before it is removed.
    onCleanup(() => {
      try {
        execFileSync('umount', [dir], { stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['--lazy', dir], { stdio: 'ignore' });
      }
    });
    return new TmpfsWorkspace(dir);
  }

  usedBytes(): number {
    const st = fs.statfsSync(this.dir);
    return (st.blocks - st.bfree) * st.bsize;
  }

  resize(sizeMiB: number): void {
    execFileSync('mount', ['-o', `remount,size=${sizeMiB}m`, this.dir]);
  }
}

/** One build-host worker process (`dist/worker/main.js`), its output in a log file. */
export interface WorkerProcess {
  child: ChildProcess;
  log: string;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartedBuild {
  handle: WorkflowHandle<typeof createRootfs>;
  language: string;
  runTag: string;
  configFile: string;
}

/** The pieces of a config file the cases vary. */
export interface CaseConfig {
  languages: Record<string, unknown>;
  bucket: string;
  base?: Record<string, unknown>;
  buildHost?: Record<string, unknown>;
  workspace?: string;
}

const PROFILE_LANGUAGES = ['bash', 'python', 'nodejs', 'go', 'rust'];

export class FaultStack {
  readonly alias = `faults-${crypto.randomBytes(3).toString('hex')}`;
  readonly workerConfig: string;
  private client?: Client;
  private readonly workers = new Set<WorkerProcess>();

  private constructor(
    readonly dir: string,
    readonly temporal: KillableTemporal,
    readonly s3: FaultS3,
    readonly proxy: S3Proxy,
    readonly downloads: DownloadServer,
    readonly workspace: TmpfsWorkspace,
    readonly log: (line: string) => void,
  ) {
    this.workerConfig = this.writeConfig('worker', { languages: {}, bucket: 'faults-unused' });
  }

  static async start(log: (line: string) => void): Promise<FaultStack> {
    // Run-scoped: its tmpfs workspace is unmounted by a run-level cleanup, after which the directory can go.
    const dir = sharedTempDir('faults');
    const [temporal, s3] = await Promise.all([
      KillableTemporal.start(fs.mkdtempSync(path.join(dir, 'temporal-'))),
      FaultS3.start(fs.mkdtempSync(path.join(dir, 's3-'))),
    ]);
    const proxy = await S3Proxy.start(s3.port);
    const downloads = await DownloadServer.start();
    // Room for the base, three images' trees and their images, with margin; tmpfs takes only what is used.
    const workspace = TmpfsWorkspace.mount(path.join(dir, 'workspace'), 8192);
    // The faults are about images: the kernel steps are reused from this run's one kernel build.
    await seedKernel(workspace.dir);
    const stack = new FaultStack(dir, temporal, s3, proxy, downloads, workspace, log);
    onCleanup(() => stack.stopWorkers());
    return stack;
  }

  /** Small timeouts: a killed worker's step is retried after 6 s, a failing one waits after 2 attempts. */
  options(extra: Partial<BuildOptions> = {}): BuildOptions {
    return {
      hostTaskQueue: hostTaskQueue(this.alias),
      maxAttempts: 2,
      retryInitialIntervalMs: 200,
      heartbeatTimeoutMs: 6000,
      stepTimeoutMs: 20 * 60 * 1000,
      upload: true,
      ...extra,
    };
  }

  async freshBucket(name: string): Promise<string> {
    const bucket = `faults-${name}-${crypto.randomBytes(3).toString('hex')}`;
    await this.s3.createBucket(bucket);
    return bucket;
  }

  s3Config(bucket: string, direct = false): S3Config {
    return { bucket, region: REGION, endpoint: direct ? this.s3.endpoint : this.proxy.endpoint, forcePathStyle: true };
  }

  /** Writes `<dir>/<name>.yaml`: the suite's Temporal, the proxied S3, the tmpfs workspace, and the case's languages. */
  writeConfig(name: string, c: CaseConfig): string {
    const file = path.join(this.dir, `${name}.yaml`);
    const languages: Record<string, unknown> = Object.fromEntries(PROFILE_LANGUAGES.map((l) => [l, null]));
    Object.assign(languages, c.languages);
    const doc = {
      workspace: c.workspace ?? this.workspace.dir,
      operator: { path: requireTool('referenceOperator') },
      buildHost: c.buildHost ?? { kind: 'local', alias: this.alias },
      temporal: { address: this.temporal.address, namespace: 'default' },
      s3: this.s3Config(c.bucket),
      // No headroom: the images are as small as their content allows, and quick to upload.
      image: { headroomMiB: 0 },
      ...(c.base ? { base: c.base } : {}),
      languages,
    };
    fs.writeFileSync(file, stringify(doc));
    return file;
  }

  async temporalClient(): Promise<Client> {
    if (!this.client) {
      const connection = await Connection.connect({ address: this.temporal.address });
      onCleanup(() => connection.close());
      this.client = new Client({ connection, namespace: 'default' });
    }
    return this.client;
  }

  /** A worker process for `configFile` (default: the suite's local build host). */
  spawnWorker(configFile = this.workerConfig, args: string[] = []): WorkerProcess {
    const log = path.join(this.dir, `worker-${Date.now()}-${crypto.randomBytes(2).toString('hex')}.log`);
    const out = fs.openSync(log, 'a');
    const child = spawn(
      process.execPath,
      [path.join(__dirname, '../../worker/main.js'), '--config', configFile, '--grace', '2', ...args],
      {
        stdio: ['ignore', out, out],
        // Its own credentials for the suite's MinIO, whatever the test process has in its environment.
        env: {
          ...process.env,
          ...this.s3.env,
          S3_ENDPOINT: '',
          S3_BUCKET: '',
          TEMPORAL_ADDRESS: '',
          TEMPORAL_NAMESPACE: '',
        },
      },
    );
    fs.closeSync(out);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const worker: WorkerProcess = {
      child,
      log,
      kill9: async () => {
        await killHard(child);
        this.workers.delete(worker);
      },
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(timer);
        }
        this.workers.delete(worker);
      },
    };
    this.workers.add(worker);
    return worker;
  }

  async stopWorkers(): Promise<void> {
    await Promise.all([...this.workers].map((w) => w.stop()));
  }

  /** Starts `createRootfs` for `language` with the spec of `configFile`, as `rootfs create` would. */
  async startBuild(language: string, configFile: string, options = this.options()): Promise<StartedBuild> {
    const client = await this.temporalClient();
    const runTag = `${language}-${crypto.randomBytes(3).toString('hex')}`;
    const spec = buildSpecOf(loadConfig({ file: configFile, env: {} }), [language]);
    const handle = await client.workflow.start(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, language),
      args: [{ language, runTag, options, spec }],
    });
    return { handle, language, runTag, configFile };
  }

  /** The build's progress; undefined while Temporal cannot answer. */
  async progress(build: StartedBuild): Promise<LanguageProgress | undefined> {
    try {
      const [p] = await build.handle.query(progressQuery);
      return p;
    } catch {
      return undefined;
    }
  }

  /** Polls the progress until `pick` returns something (Temporal may be down meanwhile). */
  async waitFor<T>(
    what: string,
    build: StartedBuild,
    pick: (p: LanguageProgress) => T | undefined,
    timeoutMs = 10 * 60 * 1000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const p = await this.progress(build);
      const v = p && pick(p);
      if (v !== undefined) return v;
      await sleep(250);
    }
    throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
  }

  /** Resolves when the build waits for the operator: the step that failed and its error. */
  awaitingRetry(build: StartedBuild, timeoutMs?: number): Promise<{ step: string; error: string; attempts: number }> {
    return this.waitFor(
      `${build.language} to wait for a retry`,
      build,
      (p) => {
        const s = p.state === 'awaiting-retry' ? p.steps.find((x) => x.state === 'awaiting-retry') : undefined;
        return s ? { step: s.name, error: s.error ?? '', attempts: s.attempts } : undefined;
      },
      timeoutMs,
    );
  }

  /** The workflow's result, tolerating a Temporal server that is down for a while. */
  async result(build: StartedBuild, timeoutMs = 10 * 60 * 1000): Promise<ImageSummary> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await build.handle.result();
      } catch (err) {
        const unavailable = /UNAVAILABLE|14 |connect|deadline/i.test(String((err as Error).message));
        if (!unavailable || Date.now() > deadline) throw err;
        await sleep(500);
      }
    }
  }

  async retry(build: StartedBuild): Promise<void> {
    await build.handle.executeUpdate(retryStepUpdate, { args: [{}] });
  }

  /** Stops a build that waits for a retry, so that nothing of the case is left running. */
  async abort(build: StartedBuild): Promise<void> {
    await build.handle.executeUpdate(abortUpdate, { args: [] });
    await build.handle.result().catch(() => undefined);
  }
}
