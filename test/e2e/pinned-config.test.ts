import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, stringify } from 'yaml';
import { buildSpecOf, type BuildSpec } from '../../src/pipeline/build-spec';
import { loadConfig, type S3Config } from '../../src/config';
import { createClient, statObject } from '../../src/store';
import { ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { createAllRootfs } from '../../workflows';
import { progressQuery, specQuery } from '../../workflows/messages';
import { childWorkflowId, parentWorkflowId, type CreateAllSummary, type LanguageProgress } from '../../workflows/types';
import { createBuildEnv, type BuildEnv } from '../support/build-env';
import { waitFor } from '../support/history';
import { catInImage } from '../support/image';
import { recordHistory } from '../support/record';
import { testS3 } from '../support/s3';
import { testTemporal } from '../support/temporal';
import { rootfs } from '../support/cli';

/** Whether dpkg in the image built under `imageKey` lists `pkg` as installed. */
function installedIn(env: BuildEnv, imageKey: string, pkg: string): boolean {
  const status = catInImage(
    path.join(env.workspace, 'artifacts', imageKey, 'rootfs-python.ext4'),
    '/var/lib/dpkg/status',
  );
  return new RegExp(`^Package: ${pkg}\\nStatus: install ok installed$`, 'm').test(status);
}

async function objectSha256(s3: S3Config, key: string): Promise<string | undefined> {
  const client = createClient({ config: s3 });
  try {
    return (await statObject({ client, config: s3 }, key))?.sha256;
  } finally {
    client.destroy();
  }
}

/** Issue 9's reproduction: a second config on the same machine, the same build host, the same workspace. */
describe('a build keeps the configuration it was started with @real @heavy', function () {
  this.timeout(40 * 60 * 1000);
  let env: BuildEnv;
  let venvBucket: S3Config;
  let venvConfig: string;
  let venvSpec: BuildSpec;
  let venvImageKey: string;

  const start = async (runTag: string, spec: BuildSpec, options = env.options) => {
    const { client } = (await testTemporal()).env;
    return client.workflow.start(createAllRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: parentWorkflowId(runTag),
      args: [{ runTag, options, spec, concurrency: 1 }],
    });
  };
  const tag = (name: string) => `${name}-${crypto.randomBytes(3).toString('hex')}`;
  /** A copy of the test config with other python packages (and, optionally, another bucket). */
  const writeVariant = (file: string, packages: string[], s3?: S3Config) => {
    const doc = parse(fs.readFileSync(env.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    fs.writeFileSync(
      file,
      stringify({ ...doc, ...(s3 ? { s3 } : {}), languages: { ...doc.languages, python: { packages } } }),
    );
  };

  before(async () => {
    env = await createBuildEnv('pinned', { languages: { bash: null, nodejs: null, go: null, rust: null } });
    venvBucket = await (await testS3()).freshBucket();
    venvConfig = path.join(env.dir, 'venv.yaml');
    writeVariant(venvConfig, ['python3-venv'], venvBucket);
    venvSpec = buildSpecOf(loadConfig({ file: venvConfig }));
  });

  it("a worker started with another config builds the build's own settings and uploads to its bucket", async () => {
    // Only the worker of the default config runs: it must build what venv.yaml says.
    const worker = await env.startWorker();
    try {
      const handle = await start(tag('venv'), venvSpec);
      const summary: CreateAllSummary = await handle.result();
      const [python] = summary.images;
      assert.equal(python?.state, 'done');
      venvImageKey = python!.imageKey!;
      assert.ok(installedIn(env, venvImageKey, 'python3-venv'), 'python3-venv is in the image');
      assert.equal(
        await objectSha256(venvBucket, 'rootfs-python.ext4'),
        python!.sha256,
        "the image went to venv.yaml's bucket",
      );
      assert.equal(
        await objectSha256(env.s3, 'rootfs-python.ext4'),
        undefined,
        "nothing went to the worker's own bucket",
      );
      assert.equal(summary.bucket?.bucket, venvBucket.bucket, "the closing listing is of the build's bucket");
      // The spec is in the build's history (its input) and answers queries.
      assert.deepEqual(await handle.query(specQuery), venvSpec);
    } finally {
      await worker.stop();
    }
  });

  it('two configs at once on one machine: each build gets its own settings, whichever worker runs its steps', async () => {
    const workers = [await env.startWorker(), await env.startWorker({ configOptions: { file: venvConfig } })];
    try {
      const [plain, venv] = await Promise.all([start(tag('plain'), env.spec()), start(tag('venv2'), venvSpec)]);
      // Both run at once; their results are read one after the other.
      const plainSummary: CreateAllSummary = await plain.result();
      const venvSummary: CreateAllSummary = await venv.result();
      const plainImage = plainSummary.images[0]!;
      const venvImage = venvSummary.images[0]!;
      assert.equal(plainImage.state, 'done');
      assert.equal(venvImage.state, 'done');
      assert.equal(venvImage.imageKey, venvImageKey, 'the venv build is the one built before: same spec, same keys');
      assert.notEqual(plainImage.imageKey, venvImageKey);
      assert.equal(plainImage.steps.runtime, 'ran', 'the plain runtime is its own step, not the venv one');
      assert.equal(installedIn(env, plainImage.imageKey!, 'python3-venv'), false);
      assert.ok(installedIn(env, venvImage.imageKey!, 'python3-venv'));
      assert.equal(await objectSha256(env.s3, 'rootfs-python.ext4'), plainImage.sha256);
      assert.equal(await objectSha256(venvBucket, 'rootfs-python.ext4'), venvImage.sha256);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  });

  it('resume retries with the settings the build started with; resume --reload-config shows the changes and applies them', async () => {
    const worker = await env.startWorker();
    try {
      const fixable = path.join(env.dir, 'fixable.yaml');
      writeVariant(fixable, ['rootfs-no-such-package']);
      const runTag = tag('reload');
      const handle = await start(runTag, buildSpecOf(loadConfig({ file: fixable })));
      const awaiting = (attempts: number) =>
        waitFor(
          `runtime to wait for a retry after ${attempts} attempt(s)`,
          async () => {
            const all: LanguageProgress[] = await handle.query(progressQuery);
            const p = all.find((x) => x.language === 'python');
            const runtime = p?.steps.find((s) => s.name === 'runtime');
            return p?.state === 'awaiting-retry' && runtime?.attempts === attempts ? runtime : undefined;
          },
          10 * 60 * 1000,
        );
      assert.match((await awaiting(1)).error ?? '', /rootfs-no-such-package/);

      // A refused retry says why (the update's own reason), and exits 1.
      const wrongStep = await rootfs([
        '--config',
        fixable,
        'resume',
        parentWorkflowId(runTag),
        '--step',
        'base',
        '--no-worker',
      ]);
      assert.equal(wrongStep.code, 1, wrongStep.stderr);
      assert.match(wrongStep.stderr, /^python: not resumed: python is waiting on step runtime, not base$/m);

      // The config is fixed, but a plain resume keeps the build's own settings, and says so.
      writeVariant(fixable, ['python3-venv']);
      const plain = await rootfs(['--config', fixable, 'resume', parentWorkflowId(runTag), '--no-worker']);
      assert.equal(plain.code, 0, plain.stderr);
      assert.match(
        plain.stderr,
        /note: the config differs from the settings .* started with \(1 change\); this retry uses the build's own/,
      );
      assert.match(plain.stderr, /languages\.python\.packages: \["rootfs-no-such-package"\] → \["python3-venv"\]/);
      assert.match((await awaiting(2)).error ?? '', /rootfs-no-such-package/, 'the retry used the pinned package list');

      const reload = await rootfs([
        '--config',
        fixable,
        'resume',
        parentWorkflowId(runTag),
        '--reload-config',
        '--no-worker',
      ]);
      assert.equal(reload.code, 0, reload.stderr);
      assert.match(reload.stderr, /reloading the config .*fixable\.yaml/);
      assert.match(reload.stderr, /languages\.python\.packages: \["rootfs-no-such-package"\] → \["python3-venv"\]/);
      assert.match(reload.stdout, /python: starting over with the new config/);
      const summary: CreateAllSummary = await handle.result();
      const [python] = summary.images;
      assert.equal(python?.state, 'done');
      assert.equal(python?.steps.base, 'reused', 'the base did not change and was not built again');
      assert.ok(installedIn(env, python!.imageKey!, 'python3-venv'));
      assert.deepEqual((await handle.query(specQuery))?.languages.python?.packages, ['python3-venv']);
      // Histories for the replay test: a reload through the parent and its child.
      await recordHistory(handle, 'createAllRootfs-reload-config');
      const { client } = (await testTemporal()).env;
      await recordHistory(
        client.workflow.getHandle(childWorkflowId(runTag, 'python')),
        'createRootfs-python-reload-config',
      );
    } finally {
      await worker.stop();
    }
  });
});
