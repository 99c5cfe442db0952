import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HeadObjectCommand, ListObjectsV2Command, ListPartsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createClient, uploadImage } from '../../src/store';
import { freePort } from '../support/process';
import { sha256File } from '../store/helpers';
import { fingerprintOfPublicKeyFile, testSshd } from '../support/sshd';
import {
  activityAttempts,
  artifactTimes,
  bucketHealth,
  completions,
  leftBehind,
  processesIn,
  redoneSteps,
  type BucketHealth,
} from './measure';
import { FaultStack, MiB, sha256, tarball, type StartedBuild, type WorkerProcess } from './stack';

/**
 * The fault suite (issue 9 §5): each scenario drives the real stack through one fault and says
 * what became of the build; the suite adds the figures measured from outside (finished steps
 * run again, objects in the bucket that are corrupt or partial, what was left on the build host)
 * and whether the row meets the goal: success after resume, or a clear error, with 0 redone
 * steps, 0 corrupt objects and 0 leaks. `faults.test.ts` asserts the goal for every row;
 * `main.ts` (`npm run faults`) prints the table.
 */

export interface CaseOutcome {
  /** What happened, in a sentence: "done after …" or "clear error: …". */
  outcome: string;
  /** Why the outcome misses the goal (the case's own checks); empty when it meets it. */
  problems: string[];
  /** Finished steps that ran again; undefined when the case builds nothing. */
  redone?: string[];
  /** The bucket the case wrote to, checked object by object afterwards. */
  bucket?: string;
  /** Keys whose open multipart uploads are asked for by name. */
  keys?: string[];
  /** Objects the case corrupted on purpose (they are expected in the corrupt count). */
  injected?: number;
  /** Where the case's build host work happened, when not the suite's workspace. */
  hostDir?: string;
}

export interface Row extends CaseOutcome {
  scenario: string;
  health?: BucketHealth;
  leaks: string[];
  seconds: number;
}

export interface Scenario {
  name: string;
  run(suite: FaultSuite): Promise<CaseOutcome>;
}

/** "sent 130 of 258 MiB (the 128 MiB stored before were reused)". */
const resent = (sent: number | undefined, size: number) =>
  sent === undefined
    ? 'its bytes sent are unknown'
    : `sent ${(sent / MiB).toFixed(0)} of ${(size / MiB).toFixed(0)} MiB (the ${((size - sent) / MiB).toFixed(0)} MiB stored before were reused)`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const firstLine = (s: string) => s.trim().split('\n')[0] ?? '';
const oneLine = (s: string, max = 260) => {
  const t = s.replace(/\s*\n\s*/g, ' ⏎ ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
};

async function waitUntil<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

const REFUSED = /Failed to connect|Connection refused|Couldn't connect/i;
const NO_SPACE = /No space left on device/;

/** The bash language of the default profile, as it is. */
const BASH = { bash: {} };

/**
 * What `status`, the live view and Temporal Web show of a failed step is its error's first line:
 * a clear error names its cause there.
 */
/** The error's first line and, when the cause is further down, the line that names it. */
function gist(error: string, cause: RegExp): string {
  const lines = error.trim().split('\n');
  const first = oneLine(lines[0] ?? '', 110);
  const at = lines.findIndex((l) => cause.test(l));
  // A cause usually ends its line ("cp: error writing 'x': No space left on device"): its tail is kept.
  const line = lines[at]?.trim() ?? '';
  return at > 0 ? `${first} ⏎ … ${line.length > 110 ? `…${line.slice(-110)}` : line}` : oneLine(error, 220);
}

function causeOnFirstLine(error: string, cause: RegExp, problems: string[]): void {
  if (!cause.test(error)) problems.push(`the error does not name the cause (${cause.source}): ${oneLine(error)}`);
  else if (!cause.test(firstLine(error)))
    problems.push(
      `the cause is not on the error's first line, which is all \`status\` shows: "${oneLine(firstLine(error), 160)}"`,
    );
}

export class FaultSuite {
  /** The build-host worker of the suite's local build host; cases that kill it start the next one. */
  worker: WorkerProcess;
  /** The bash image of the first build: the S3 and download cases use it. */
  bashImage?: { path: string; sizeBytes: number };

  private constructor(readonly stack: FaultStack) {
    this.worker = stack.spawnWorker();
  }

  static async start(log: (line: string) => void): Promise<FaultSuite> {
    return new FaultSuite(await FaultStack.start(log));
  }

  get workspace(): string {
    return this.stack.workspace.dir;
  }

  log(line: string): void {
    this.stack.log(line);
  }

  /** Half-built step outputs left in `artifacts/.tmp` (a dead run's, until the next run of that key removes them). */
  workDirs(): string[] {
    const tmp = path.join(this.workspace, 'artifacts', '.tmp');
    return fs.existsSync(tmp) ? fs.readdirSync(tmp) : [];
  }

  /** Runs one scenario and measures its row. */
  async run(s: Scenario): Promise<Row> {
    const started = Date.now();
    this.log(`▶ ${s.name}`);
    let out: CaseOutcome;
    try {
      out = await s.run(this);
    } catch (err) {
      const msg = oneLine((err as Error).message ?? String(err));
      out = { outcome: `did not run to its end: ${msg}`, problems: [`the case broke off: ${msg}`] };
    }
    await this.heal();
    const seconds = (Date.now() - started) / 1000;
    const leaks = await leftBehind(out.hostDir ?? this.workspace);
    if (!out.hostDir) leaks.push(...this.workDirs().map((d) => `work dir artifacts/.tmp/${d}`));
    let health: BucketHealth | undefined;
    if (out.bucket) {
      const client = this.stack.s3.client();
      try {
        health = await bucketHealth(client, out.bucket, out.keys);
      } finally {
        client.destroy();
      }
    }
    const problems = [...out.problems];
    if (out.redone?.length) problems.push(`finished steps ran again: ${out.redone.join(', ')}`);
    if (health && health.corrupt.length !== (out.injected ?? 0))
      problems.push(`corrupt objects: ${health.corrupt.join(', ') || 'none'} (${out.injected ?? 0} injected)`);
    if (health?.partial.length) problems.push(`partial objects or open uploads: ${health.partial.join(', ')}`);
    if (leaks.length) problems.push(`left behind: ${leaks.join(', ')}`);
    const row: Row = { ...out, scenario: s.name, health, leaks, seconds, problems };
    this.log(`  ${problems.length ? '✗' : '✓'} ${oneLine(out.outcome, 200)} (${seconds.toFixed(0)} s)`);
    return row;
  }

  /** Whatever a case did to the stack is undone: servers up, the workspace full size, a worker running. */
  async heal(): Promise<void> {
    const { stack } = this;
    await stack.s3.start();
    await stack.proxy.up();
    stack.proxy.thaw();
    stack.workspace.resize(8192);
    if (this.worker.child.exitCode !== null || this.worker.child.signalCode !== null) this.worker = stack.spawnWorker();
  }

  /** `rootfs …` as a person runs it; its own state dir, so that nothing of the user's is touched. */
  cli(
    args: string[],
    env: Record<string, string> = {},
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const stateDir = path.join(this.stack.dir, 'cli-state');
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [path.join(__dirname, '../../src/cli/main.js'), ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? os.homedir(),
          ROOTFS_STATE_DIR: stateDir,
          ...env,
        },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.once('exit', (code) => resolve({ code, stdout, stderr }));
    });
  }

  /** The parts S3 holds of the upload of `key` the build host has in progress (its resume state names it). */
  async storedParts(bucket: string, key: string): Promise<number> {
    const state = path.join(this.workspace, '.uploads', `${bucket}__${key}.upload.json`);
    if (!fs.existsSync(state)) return 0;
    const { uploadId } = JSON.parse(fs.readFileSync(state, 'utf8')) as { uploadId: string };
    const client = this.stack.s3.client();
    try {
      const res = await client.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
      return res.Parts?.length ?? 0;
    } catch {
      return 0;
    } finally {
      client.destroy();
    }
  }

  /** What a finished build's upload step sent, from its history. */
  async uploadSent(build: StartedBuild): Promise<{ bytesSent: number; attempts: number } | undefined> {
    const upload = (await completions(build.handle)).find((c) => c.step === 'upload');
    return upload ? { bytesSent: Number(upload.data?.bytesSent ?? NaN), attempts: upload.attempt } : undefined;
  }
}

/** A build that must end done: its summary, or the reason it did not. */
async function expectDone(suite: FaultSuite, build: StartedBuild, problems: string[]): Promise<boolean> {
  try {
    const summary = await suite.stack.result(build);
    if (summary.state !== 'done') problems.push(`the build ended ${summary.state}`);
    return summary.state === 'done';
  } catch (err) {
    problems.push(`the build failed: ${oneLine((err as Error).message)}`);
    return false;
  }
}

/** Interrupts an upload of the bash image mid-way: S3 holds some of its parts, the rest is frozen in the proxy. */
async function uploadCaughtMidway(
  suite: FaultSuite,
  name: string,
): Promise<{ build: StartedBuild; bucket: string; parts: number }> {
  const { stack } = suite;
  if (!suite.bashImage) throw new Error('needs the bash image of the worker-kill case');
  const bucket = await stack.freshBucket(name);
  const config = stack.writeConfig(name, { languages: BASH, bucket });
  // Half the image sent: with 16 MiB parts, 4 at a time, several parts are complete and stored.
  const frozen = stack.proxy.freezeAfter(Math.floor(suite.bashImage.sizeBytes / 2));
  const build = await stack.startBuild('bash', config, stack.options({ maxAttempts: 3 }));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      frozen,
      new Promise(
        (_, reject) => (timer = setTimeout(() => reject(new Error('the upload never got half-way')), 5 * 60 * 1000)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
  const parts = await waitUntil(
    'S3 to hold a part of the upload',
    async () => (await suite.storedParts(bucket, 'rootfs-bash.ext4')) || undefined,
    30_000,
    250,
  );
  return { build, bucket, parts };
}

/**
 * The bash image published to a fresh bucket and synced to a host of its own: the host's good
 * copy, for the cases that then damage what the bucket holds.
 */
/** The keys under `prefix` in the fault stack's bucket. */
async function listKeys(stack: FaultStack, bucket: string, prefix: string): Promise<string[]> {
  const client = stack.s3.client();
  try {
    const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
    return (res.Contents ?? []).map((o) => o.Key!);
  } finally {
    client.destroy();
  }
}

async function publishedAndSynced(suite: FaultSuite, name: string) {
  const { stack } = suite;
  if (!suite.bashImage) throw new Error('needs the bash image of the worker-kill case');
  const bucket = await stack.freshBucket(name);
  const host = path.join(stack.dir, `${name}-host`);
  const publisher = stack.writeConfig(`${name}-publish`, { languages: BASH, bucket });
  const reader = stack.writeConfig(`${name}-host`, { languages: BASH, bucket, workspace: host });
  const env = stack.s3.env;
  const up = await suite.cli(['-c', publisher, 's3', 'upload-single', 'bash'], env);
  if (up.code !== 0) throw new Error(`upload-single failed: ${oneLine(up.stderr)}`);
  const first = await suite.cli(['-c', reader, 's3', 'download'], env);
  if (first.code !== 0) throw new Error(`the first download failed: ${oneLine(first.stderr)}`);
  const local = path.join(host, 'images', 'rootfs-bash.ext4');
  return { bucket, host, publisher, reader, env, local, good: sha256File(local) };
}

export const SCENARIOS: Scenario[] = [
  {
    name: 'hostile names and malformed configs',
    async run(suite) {
      const { stack } = suite;
      const bucket = await stack.freshBucket('hostile');
      const workspace = path.join(stack.dir, 'hostile-workspace');
      const good = stack.writeConfig('hostile-good', { languages: BASH, bucket, workspace });
      const bad = (name: string, text: string) => {
        const file = path.join(stack.dir, `${name}.yaml`);
        fs.writeFileSync(file, fs.readFileSync(good, 'utf8') + text);
        return file;
      };
      const replace = (name: string, from: RegExp, to: string) => {
        const file = path.join(stack.dir, `${name}.yaml`);
        fs.writeFileSync(file, fs.readFileSync(good, 'utf8').replace(from, to));
        return file;
      };
      const levels = ['bomb0: &a0 ["x","x","x","x","x","x","x","x","x"]'];
      for (let i = 1; i < 9; i++)
        levels.push(
          `bomb${i}: &a${i} [${Array(9)
            .fill(`*a${i - 1}`)
            .join(',')}]`,
        );
      const invocations: Array<{ what: string; args: string[]; expect: RegExp }> = [
        {
          what: 'a shell command as language',
          args: ['-c', good, 'create', 'bash;rm -rf /'],
          expect: /"bash;rm -rf \/" is not a language name/,
        },
        {
          what: 'a path as language',
          args: ['-c', good, 'create', '../../etc/passwd'],
          expect: /is not a language name/,
        },
        {
          what: 'an unconfigured language',
          args: ['-c', good, 'create', 'cobol'],
          expect: /"cobol" is not a configured language/,
        },
        {
          what: 'a path as run tag',
          args: ['-c', good, 'create', 'bash', '--run-tag', 'a/../b'],
          expect: /--run-tag "a\/\.\.\/b": expected a name/,
        },
        {
          what: 'a path to upload',
          args: ['-c', good, 's3', 'upload-single', '../x'],
          expect: /is not a language name/,
        },
        {
          what: 'a command substitution to verify',
          args: ['-c', good, 'verify', '$(id)'],
          expect: /is not a language name/,
        },
        {
          what: 'a language key "../evil"',
          args: ['-c', bad('evil-key', '  ../evil:\n    verify: [{argv: [id], expect: x}]\n'), 'create', 'bash'],
          expect: /evil-key\.yaml:\d+: languages\["\.\.\/evil"\]: expected a name/,
        },
        {
          what: 'a file path with ..',
          args: [
            '-c',
            bad(
              'dotdot',
              '  tools:\n    files: [{path: /etc/../../root/x, content: x}]\n    verify: [{argv: [id], expect: x}]\n',
            ),
            'create',
            'bash',
          ],
          expect: /dotdot\.yaml:\d+: languages\.tools\.files\.0\.path: must not contain \. or \.\. segments/,
        },
        {
          what: 'a relative workspace',
          args: ['-c', replace('relative', /^workspace: .*$/m, 'workspace: srv/firecracker'), 'create', 'bash'],
          expect: /relative\.yaml:\d+: workspace: expected an absolute path/,
        },
        {
          what: 'a bucket name with a slash',
          args: ['-c', replace('bucket', /bucket: .*$/m, 'bucket: "a/../b"'), 'create', 'bash'],
          expect: /bucket\.yaml:\d+: s3\.bucket: expected an S3 bucket name/,
        },
        {
          what: 'credentials in a URL',
          args: [
            '-c',
            bad(
              'userinfo',
              '  tools:\n    runtime: [{kind: archive, url: "http://u:pw@127.0.0.1/x.tgz", sha256: "' +
                '0'.repeat(64) +
                '", dest: /opt/x}]\n    verify: [{argv: [id], expect: x}]\n',
            ),
            'create',
            'bash',
          ],
          expect: /userinfo\.yaml:\d+: languages\.tools\.runtime\.0\.url: must not carry credentials/,
        },
        {
          what: 'a misspelt key',
          args: ['-c', bad('typo', 'workspce: /tmp/x\n'), 'create', 'bash'],
          expect: /typo\.yaml(:\d+)?: .*workspce/,
        },
        {
          what: 'a YAML syntax error',
          args: ['-c', bad('syntax', 'image: {headroomMiB: [\n'), 'create', 'bash'],
          expect: /syntax\.yaml:\d+: /,
        },
        {
          what: 'a YAML alias bomb',
          args: ['-c', bad('bomb', `${levels.join('\n')}\n`), 'create', 'bash'],
          expect: /bomb\.yaml: .*alias/i,
        },
      ];
      const client = await stack.temporalClient();
      const workflowsBefore = await countWorkflows(client);
      const problems: string[] = [];
      const results = [];
      // A few at a time: each is a node process.
      for (let i = 0; i < invocations.length; i += 4) {
        results.push(
          ...(await Promise.all(
            invocations.slice(i, i + 4).map(async (inv) => ({ inv, res: await suite.cli(inv.args) })),
          )),
        );
      }
      for (const { inv, res } of results) {
        if (res.code !== 2) problems.push(`${inv.what}: exit ${res.code}, not 2 (${oneLine(res.stderr, 120)})`);
        else if (!inv.expect.test(res.stderr))
          problems.push(`${inv.what}: unclear message: ${oneLine(res.stderr, 160)}`);
      }
      const started = (await countWorkflows(client)) - workflowsBefore;
      if (started) problems.push(`${started} workflow(s) started`);
      if (fs.existsSync(workspace)) problems.push('the workspace was created');
      const workers = path.join(stack.dir, 'cli-state', 'workers');
      if (fs.existsSync(workers) && fs.readdirSync(workers).length)
        problems.push(`background workers started: ${fs.readdirSync(workers).join(', ')}`);
      const ok = results.filter(({ inv, res }) => res.code === 2 && inv.expect.test(res.stderr)).length;
      const sample = results.find((r) => r.inv.what === 'a language key "../evil"')?.res.stderr ?? '';
      return {
        outcome: `clear error: ${ok} of ${invocations.length} invocations exit 2 naming the problem (e.g. "${oneLine(sample.trim().split('\n').pop() ?? '', 90)}"); ${started} workflows started, no worker, no workspace`,
        problems,
        bucket,
        hostDir: workspace,
      };
    },
  },

  {
    name: 'mirror unreachable (base.mirror on a closed loopback port)',
    async run(suite) {
      const { stack } = suite;
      const bucket = await stack.freshBucket('mirror');
      const mirror = `http://127.0.0.1:${await freePort()}/ubuntu`;
      const config = stack.writeConfig('mirror', { languages: BASH, bucket, base: { mirror } });
      const build = await stack.startBuild('bash', config);
      const waiting = await stack.awaitingRetry(build, 3 * 60 * 1000);
      const problems: string[] = [];
      if (waiting.step !== 'base') problems.push(`the ${waiting.step} step failed, not base`);
      if (!waiting.error.includes(mirror))
        problems.push(`the error does not name the mirror: ${oneLine(waiting.error)}`);
      causeOnFirstLine(waiting.error, REFUSED, problems);
      const tries = await activityAttempts(build.handle, waiting.step);
      await stack.abort(build);
      return {
        outcome: `clear error after ${tries} attempt(s) of ${waiting.step}, the build waits for the operator: "${gist(waiting.error, REFUSED)}"`,
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, new Map()),
        bucket,
      };
    },
  },

  {
    name: 'changed SSH host key',
    async run(suite) {
      const { stack } = suite;
      const sshd = await testSshd();
      // The key the host presents now is not the one pinned in the config.
      const pinnedKey = path.join(stack.dir, 'old_host_key');
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'old-host-key', '-f', pinnedKey], {
        stdio: 'ignore',
      });
      const pinned = fingerprintOfPublicKeyFile(`${pinnedKey}.pub`);
      const alias = `faults-ssh-${crypto.randomBytes(2).toString('hex')}`;
      const workspace = path.join(stack.dir, 'ssh-workspace');
      const bucket = await stack.freshBucket('ssh');
      const config = stack.writeConfig('ssh', {
        languages: BASH,
        bucket,
        workspace,
        buildHost: {
          kind: 'ssh',
          alias,
          host: sshd.host,
          port: sshd.port,
          user: sshd.user,
          keyPath: sshd.clientKeyPath,
          hostKeySha256: pinned,
        },
      });
      const worker = stack.spawnWorker(config);
      try {
        const build = await stack.startBuild('bash', config, stack.options({ hostTaskQueue: `rootfs-host-${alias}` }));
        const waiting = await stack.awaitingRetry(build, 2 * 60 * 1000);
        const problems: string[] = [];
        const tries = await activityAttempts(build.handle, waiting.step);
        if (tries !== 1) problems.push(`${tries} attempts: a changed host key is retried`);
        if (!waiting.error.includes(pinned) || !waiting.error.includes(sshd.hostKeySha256))
          problems.push(`the error does not give both fingerprints: ${oneLine(waiting.error)}`);
        if (fs.existsSync(workspace)) problems.push('the workspace was created on the host');
        await stack.abort(build);
        return {
          outcome: `clear error at once (${waiting.step}, ${tries} attempt), nothing done on the host: "${oneLine(waiting.error, 200)}"`,
          problems,
          redone: await redoneSteps(build.handle, workspace, new Map()),
          bucket,
          hostDir: workspace,
        };
      } finally {
        await worker.stop();
      }
    },
  },

  {
    name: 'worker `kill -9` mid-step (mmdebstrap of the base)',
    async run(suite) {
      const { stack } = suite;
      const bucket = await stack.freshBucket('worker-kill');
      const config = stack.writeConfig('worker-kill', { languages: BASH, bucket });
      const build = await stack.startBuild('bash', config, stack.options({ maxAttempts: 3 }));
      await stack.waitFor('the base step to run', build, (p) =>
        p.steps.find((s) => s.name === 'base')?.state === 'running' ? true : undefined,
      );
      await waitUntil(
        'mmdebstrap to run',
        () => processesIn(suite.workspace).some((p) => p.includes('mmdebstrap')) || undefined,
        120_000,
        200,
      );
      await sleep(8000); // well inside its package installs, with its mounts in place
      const before = artifactTimes(suite.workspace);
      const doneBefore = (await completions(build.handle)).map((c) => c.step);
      await suite.worker.kill9();
      const killedAt = Date.now();
      const left = await leftBehind(suite.workspace);
      const problems = left.length ? [`the killed worker left: ${left.join(', ')}`] : [];
      suite.worker = stack.spawnWorker();
      const done = await expectDone(suite, build, problems);
      const base = (await completions(build.handle)).find((c) => c.step === 'base');
      const after = ((Date.now() - killedAt) / 1000).toFixed(0);
      return {
        outcome: done
          ? `done ${after} s after the kill: the next worker retried base (attempt ${base?.attempt}) once the killed one's heartbeat and lock had gone stale; ${doneBefore.join(', ')} finished before the kill and did not run again`
          : 'not finished',
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, before),
        bucket,
        keys: ['rootfs-bash.ext4'],
      };
    },
  },

  {
    name: 'Temporal server `kill -9` mid-step, restarted (same SQLite file and port)',
    async run(suite) {
      const { stack } = suite;
      const bucket = await stack.freshBucket('temporal-kill');
      const archive = tarball(stack.dir, 'tkill');
      const url = stack.downloads.serve('/tkill.tar.gz', archive, { hold: true });
      const config = stack.writeConfig('temporal-kill', {
        languages: {
          tkill: {
            verify: [{ argv: ['bash', '--version'], expect: '^GNU bash' }],
            runtime: [{ kind: 'archive', url, sha256: sha256(archive), dest: '/opt/tkill' }],
          },
        },
        bucket,
      });
      const build = await stack.startBuild('tkill', config, stack.options({ maxAttempts: 3 }));
      // The runtime step is downloading its archive: certainly in the middle of its work.
      await waitUntil(
        'the runtime step to download',
        () => stack.downloads.hits('/tkill.tar.gz') > 0 || undefined,
        5 * 60 * 1000,
        100,
      );
      const before = artifactTimes(suite.workspace);
      await stack.temporal.kill9();
      const downAt = Date.now();
      await sleep(1000);
      stack.downloads.release('/tkill.tar.gz');
      // The step finishes while the server is down: its artifact appears, its completion cannot be reported.
      const published = await waitUntil(
        'the runtime artifact',
        () => [...artifactTimes(suite.workspace).keys()].find((k) => k.startsWith('runtime-') && !before.has(k)),
        30_000,
        200,
      ).catch(() => undefined);
      await sleep(3000);
      await stack.temporal.restart();
      const downFor = (Date.now() - downAt) / 1000;
      const problems: string[] = [];
      const workerSurvived = suite.worker.child.exitCode === null && suite.worker.child.signalCode === null;
      if (!workerSurvived) {
        problems.push('the worker exited while Temporal was down');
        suite.worker = stack.spawnWorker();
      }
      const done = await expectDone(suite, build, problems);
      const runtime = (await completions(build.handle)).find((c) => c.step === 'runtime');
      return {
        outcome: done
          ? `done: server down ${downFor.toFixed(0)} s, worker ${workerSurvived ? 'kept running' : 'exited'}; runtime ${published ? 'finished during the outage, ' : ''}completed on attempt ${runtime?.attempt} (${runtime?.reused ? 'its artifact reused' : 'built once'})`
          : 'not finished',
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, before),
        bucket,
        keys: ['rootfs-tkill.ext4'],
      };
    },
  },

  {
    name: 'runtime checksum mismatch (archive source with a wrong sha256)',
    async run(suite) {
      const { stack } = suite;
      const bucket = await stack.freshBucket('checksum');
      const archive = tarball(stack.dir, 'badsum');
      const url = stack.downloads.serve('/badsum.tar.gz', archive);
      const pinned = sha256('not the archive');
      const config = stack.writeConfig('checksum', {
        languages: {
          badsum: {
            verify: [{ argv: ['bash', '--version'], expect: '^GNU bash' }],
            runtime: [{ kind: 'archive', url, sha256: pinned, dest: '/opt/badsum' }],
          },
        },
        bucket,
      });
      const before = artifactTimes(suite.workspace);
      const build = await stack.startBuild('badsum', config);
      const waiting = await stack.awaitingRetry(build, 5 * 60 * 1000);
      const problems: string[] = [];
      if (waiting.step !== 'runtime') problems.push(`the ${waiting.step} step failed, not runtime`);
      const tries = await activityAttempts(build.handle, waiting.step);
      if (tries !== 1) problems.push(`${tries} attempts: a checksum mismatch is retried`);
      if (!waiting.error.includes(url) || !waiting.error.includes(pinned) || !waiting.error.includes(sha256(archive))) {
        problems.push(`the error does not name the URL and both sums: ${oneLine(waiting.error)}`);
      }
      const downloads = path.join(suite.workspace, 'cache', 'downloads');
      const kept = fs.existsSync(downloads)
        ? fs.readdirSync(downloads).filter((n) => n.startsWith(pinned) || n.endsWith('.part'))
        : [];
      if (kept.length) problems.push(`the bad download was kept: ${kept.join(', ')}`);
      await stack.abort(build);
      return {
        outcome: `clear error at once (${waiting.step}, ${tries} attempt), nothing kept: "${oneLine(waiting.error, 200)}"`,
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, before),
        bucket,
      };
    },
  },

  {
    name: 'S3 server stopped mid-upload, then started',
    async run(suite) {
      const { stack } = suite;
      const before = artifactTimes(suite.workspace);
      const { build, bucket, parts } = await uploadCaughtMidway(suite, 's3-stop');
      await stack.s3.stop();
      await stack.proxy.down();
      const waiting = await stack.awaitingRetry(build, 5 * 60 * 1000);
      const problems: string[] = [];
      if (waiting.step !== 'upload') problems.push(`the ${waiting.step} step failed, not upload`);
      causeOnFirstLine(waiting.error, /is unreachable|broke/, problems);
      await stack.s3.start();
      await stack.proxy.up();
      await stack.retry(build);
      const done = await expectDone(suite, build, problems);
      const sent = await suite.uploadSent(build);
      const size = suite.bashImage!.sizeBytes;
      if (done && !(sent && sent.bytesSent < size))
        problems.push(`the upload started over (${sent?.bytesSent} of ${size} bytes sent)`);
      return {
        outcome: done
          ? `done after resume: S3 held ${parts} part(s) when it stopped; the build waited with "${oneLine(waiting.error, 150)}"; after \`retryStep\` ${resent(sent?.bytesSent, size)}`
          : `not finished; waited with "${oneLine(waiting.error, 150)}"`,
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, before),
        bucket,
        keys: ['rootfs-bash.ext4'],
      };
    },
  },

  {
    name: 'uploading process `kill -9` mid-upload',
    async run(suite) {
      const { stack } = suite;
      const before = artifactTimes(suite.workspace);
      const { build, bucket, parts } = await uploadCaughtMidway(suite, 'upload-kill');
      await suite.worker.kill9();
      stack.proxy.thaw();
      suite.worker = stack.spawnWorker();
      const problems: string[] = [];
      const done = await expectDone(suite, build, problems);
      const sent = await suite.uploadSent(build);
      const size = suite.bashImage!.sizeBytes;
      if (done && !(sent && sent.bytesSent < size))
        problems.push(`the upload started over (${sent?.bytesSent} of ${size} bytes sent)`);
      return {
        outcome: done
          ? `done: S3 held ${parts} part(s) at the kill; the next worker retried upload (attempt ${sent?.attempts}) and ${resent(sent?.bytesSent, size)}`
          : 'not finished',
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, before),
        bucket,
        keys: ['rootfs-bash.ext4'],
      };
    },
  },

  {
    name: "object corrupted at rest in the bucket (bytes flipped in MinIO's data)",
    async run(suite) {
      const { stack } = suite;
      const { bucket, host, reader, env, local, good } = await publishedAndSynced(suite, 'corrupt');
      // v2 published, then rotted on the server's disk.
      const v2 = path.join(stack.dir, 'v2', 'images', 'rootfs-bash.ext4');
      fs.mkdirSync(path.dirname(v2), { recursive: true });
      fs.writeFileSync(v2, crypto.randomBytes(40 * MiB));
      const client = createClient({ config: stack.s3Config(bucket, true), credentials: stack.s3.credentials });
      try {
        await uploadImage(
          { client, config: stack.s3Config(bucket, true), workspace: path.dirname(path.dirname(v2)) },
          'bash',
          v2,
        );
      } finally {
        client.destroy();
      }
      // The block store is what hosts sync from: its packs rot (the plain object too, for good measure).
      const rotted = [...(await listKeys(stack, bucket, 'blocks/packs/')), 'rootfs-bash.ext4'].filter(
        (k) => stack.s3.partFiles(bucket, k).length,
      );
      const parts = rotted.flatMap((k) => stack.s3.partFiles(bucket, k));
      if (rotted.length < 2) throw new Error("cannot find the packs in MinIO's data directory");
      for (const part of parts) {
        const fd = fs.openSync(part, 'r+');
        fs.writeSync(fd, crypto.randomBytes(64), 0, 64, Math.floor(fs.fstatSync(fd).size / 2));
        fs.closeSync(fd);
      }

      const res = await suite.cli(['-c', reader, 's3', 'download'], env);
      const problems: string[] = [];
      if (res.code === 0) problems.push('the download succeeded');
      const said = res.stderr.split('\n').find((l) => l.includes('Cannot download')) ?? firstLine(res.stderr);
      if (!said.includes('rootfs-bash.ext4'))
        problems.push(`the error does not name the object: ${oneLine(res.stderr)}`);
      // MinIO checks its bitrot hashes while it streams, and breaks the transfer off where they fail.
      else if (!/does not match|corrupt|damaged|checksum|bitrot/i.test(said.slice(said.indexOf('rootfs-bash.ext4')))) {
        problems.push(
          'the error blames the connection, not the object, and does not say the local copy was kept (MinIO breaks the transfer off at its bitrot check)',
        );
      }
      if (sha256File(local) !== good) problems.push('the good local copy was replaced');
      // A block store download keeps its partial file (checked blocks only) for the next run to resume.
      const temps = fs.readdirSync(path.dirname(local)).filter((n) => n.endsWith('.partial'));
      if (temps.length) problems.push(`temp files left: ${temps.join(', ')}`);
      return {
        outcome: `${res.code === 0 ? 'NOT detected' : `detected (exit ${res.code})`}, local copy ${sha256File(local) === good ? 'kept' : 'lost'}: "${oneLine(said, 200)}"`,
        problems,
        bucket,
        injected: rotted.length,
        hostDir: host,
      };
    },
  },

  {
    name: 'pack replaced behind its index (another writer, same size)',
    async run(suite) {
      const { stack } = suite;
      const { bucket, host, reader, env, local, good } = await publishedAndSynced(suite, 'replaced');
      // Another writer (a hand-run copy, an old tool) puts other bytes under a pack's key; the index stays.
      const client = stack.s3.client();
      let replaced: string[] = [];
      try {
        replaced = await listKeys(stack, bucket, 'blocks/packs/');
        for (const key of replaced) {
          const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
          await client.send(
            new PutObjectCommand({ Bucket: bucket, Key: key, Body: crypto.randomBytes(head.ContentLength ?? 0) }),
          );
        }
      } finally {
        client.destroy();
      }
      // The host that has the image needs nothing; a new host needs the pack and must refuse it.
      const problems: string[] = [];
      const same = await suite.cli(['-c', reader, 's3', 'download'], env);
      if (same.code !== 0 || sha256File(local) !== good)
        problems.push(`the host with a good copy did not keep it: ${oneLine(same.stderr)}`);
      const fresh = stack.writeConfig('replaced-fresh', { languages: BASH, bucket, workspace: `${host}-fresh` });
      const res = await suite.cli(['-c', fresh, 's3', 'download'], env);
      if (res.code === 0) problems.push('the download succeeded');
      if (!/rootfs-bash\.ext4: .*(does not match|damaged)/.test(res.stderr))
        problems.push(`the error does not say the pack is not what the index says: ${oneLine(res.stderr)}`);
      if (fs.existsSync(path.join(`${host}-fresh`, 'images', 'rootfs-bash.ext4')))
        problems.push('the new host installed it');
      const said = res.stderr.split('\n').find((l) => l.includes('Cannot download')) ?? firstLine(res.stderr);
      return {
        outcome: `${res.code === 0 ? 'NOT detected' : `detected (exit ${res.code})`} by a new host, the host with a good copy ${sha256File(local) === good ? 'kept it' : 'lost it'}: "${oneLine(said, 200)}"`,
        problems,
        bucket,
        injected: replaced.length,
        hostDir: host,
      };
    },
  },

  {
    name: 'workspace full (tmpfs shrunk to 16 MiB free), then space freed',
    async run(suite) {
      const { stack } = suite;
      const bucket = await stack.freshBucket('full');
      const config = stack.writeConfig('full', {
        languages: {
          full: {
            verify: [{ argv: ['bash', '--version'], expect: '^GNU bash' }],
            files: [{ path: '/etc/rootfs-faults', content: 'full\n' }],
          },
        },
        bucket,
      });
      stack.workspace.resize(Math.ceil(stack.workspace.usedBytes() / MiB) + 16);
      const build = await stack.startBuild('full', config);
      const waiting = await stack.awaitingRetry(build, 5 * 60 * 1000);
      const problems: string[] = [];
      causeOnFirstLine(waiting.error, NO_SPACE, problems);
      const work = suite.workDirs();
      if (work.length) problems.push(`the work dir was not cleaned: ${work.join(', ')}`);
      const tries = await activityAttempts(build.handle, waiting.step);
      const before = artifactTimes(suite.workspace);
      stack.workspace.resize(8192);
      await stack.retry(build);
      const done = await expectDone(suite, build, problems);
      return {
        outcome: `${done ? 'done after resume' : 'not finished'}: ${waiting.step} waited after ${tries} attempts with "${gist(waiting.error, NO_SPACE)}"; work dir ${work.length ? 'left' : 'cleaned'}; tmpfs grown, \`retryStep\``,
        problems,
        redone: await redoneSteps(build.handle, suite.workspace, before),
        bucket,
        keys: ['rootfs-full.ext4'],
      };
    },
  },
];

/** The worker-kill case builds the shared base and the bash image the S3 cases upload. */
export async function rememberBashImage(suite: FaultSuite): Promise<void> {
  const file = path.join(suite.workspace, 'images', 'rootfs-bash.ext4');
  if (!fs.existsSync(file)) return;
  suite.bashImage = { path: file, sizeBytes: fs.statSync(file).size };
}

async function countWorkflows(client: Awaited<ReturnType<FaultStack['temporalClient']>>): Promise<number> {
  let n = 0;
  for await (const _ of client.workflow.list()) n++;
  return n;
}

/** The table, in markdown. */
export function formatTable(rows: Row[]): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const lines = [
    '| scenario | outcome | finished steps redone | objects corrupt or partial in the bucket | mounts, loop devices and processes left behind | took | goal |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const redone =
      r.redone === undefined ? '— (no build)' : r.redone.length ? `${r.redone.length}: ${r.redone.join(', ')}` : '0';
    let bucket = '—';
    if (r.health) {
      const bad = r.health.corrupt.length + r.health.partial.length;
      bucket = `${bad} (of ${r.health.objects} objects)`;
      if (r.health.corrupt.length)
        bucket += `; corrupt: ${r.health.corrupt.join(', ')}${r.injected ? ` — injected by the case` : ''}`;
      if (r.health.partial.length) bucket += `; partial: ${r.health.partial.join(', ')}`;
    }
    const leaks = r.leaks.length ? `${r.leaks.length}: ${r.leaks.join(', ')}` : '0';
    const goal = r.problems.length ? `**not met**: ${r.problems.join('; ')}` : 'met';
    lines.push(
      `| ${[r.scenario, r.outcome, redone, bucket, leaks, `${r.seconds.toFixed(0)} s`, goal].map(cell).join(' | ')} |`,
    );
  }
  return lines.join('\n') + '\n';
}

/** Runs every scenario in order, remembering what later ones need from earlier ones. */
export async function runScenarios(suite: FaultSuite, onRow: (row: Row) => void = () => {}): Promise<Row[]> {
  const rows: Row[] = [];
  for (const s of SCENARIOS) {
    const row = await suite.run(s);
    if (!suite.bashImage) await rememberBashImage(suite);
    rows.push(row);
    onRow(row);
  }
  return rows;
}
