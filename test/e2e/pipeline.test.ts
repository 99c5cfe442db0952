import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PROFILES } from '../../src/config';
import { toolPaths } from '../../src/setup/tools';
import { createClient, readManifest } from '../../src/store';
import { statObject } from '../../src/store/client';
import { fetcherKey, fetcherSha256 } from '../../src/store/blocks/tools';
import { ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { createAllRootfs } from '../../workflows';
import { progressQuery, retryStepUpdate } from '../../workflows/messages';
import {
  childWorkflowId,
  parentWorkflowId,
  type CreateAllSummary,
  type ImageSummary,
  type LanguageProgress,
} from '../../workflows/types';
import { createBuildEnv, type BuildEnv } from '../support/build-env';
import { startFixtureServer, type FixtureServer } from '../support/fixture-server';
import { catInImage, e2fsckStatus, lsInImage, statInImage } from '../support/image';
import { activityResult, activityRuns, waitFor } from '../support/history';
import { recordHistory } from '../support/record';
import { testKernelBuild } from '../support/kernel';
import { testTemporal } from '../support/temporal';

function assertBootable(image: ImageSummary, language: string): void {
  const file = image.path!;
  assert.equal(e2fsckStatus(file), 0, `e2fsck -fn ${file}`);
  assert.equal(fs.statSync(file).size, image.sizeBytes);
  assert.equal(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'), image.sha256);
  const operator = statInImage(file, '/usr/local/bin/infra.operator');
  assert.equal(operator?.type, 'regular');
  assert.equal(operator!.mode & 0o7777, 0o755);
  const unit = catInImage(file, '/etc/systemd/system/infra.operator.service');
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/infra.operator guest --port 5000$/m);
  assert.match(unit, /^Restart=always$/m);
  assert.match(unit, /^RestartSec=1$/m);
  const wants = statInImage(file, '/etc/systemd/system/multi-user.target.wants/infra.operator.service');
  assert.equal(wants?.type, 'symlink');
  assert.equal(wants?.linkTarget, '/etc/systemd/system/infra.operator.service');
  assert.equal(statInImage(file, '/sbin/init')?.linkTarget, '/lib/systemd/systemd');
  assert.equal(statInImage(file, '/lib/systemd/systemd')?.type, 'regular');
  assert.match(catInImage(file, `/etc/profile.d/${language}.sh`), new RegExp(`^# ${language} runtime`));
  assert.deepEqual(
    lsInImage(file, '/var/lib/apt/lists').filter((n) => n !== 'lock' && n !== 'partial'),
    [],
  );
  assert.equal(statInImage(file, '/usr/sbin/policy-rc.d'), null);
}

describe('pipeline @real @heavy', function () {
  this.timeout(45 * 60 * 1000);
  let env: BuildEnv;
  let fixture: FixtureServer;
  let rustExtra: { url: string; sha256: string; tarball: Buffer };

  before(async () => {
    fixture = await startFixtureServer();
    // An extra source for rust, served by a loopback stand-in for a vendor host.
    const src = fs.mkdtempSync('/tmp/rootfs-rust-extra-');
    fs.mkdirSync(path.join(src, 'cargo'));
    fs.writeFileSync(path.join(src, 'cargo/config.toml'), '[net]\nretry = 5\n');
    const tarball = execFileSync('tar', ['-cz', '-C', src, 'cargo']);
    fs.rmSync(src, { recursive: true });
    fixture.serve('/rust-extra.tgz', tarball);
    rustExtra = {
      url: `${fixture.url}/rust-extra.tgz`,
      sha256: crypto.createHash('sha256').update(tarball).digest('hex'),
      tarball,
    };
    // From an empty artifact store: this build makes its own kernel.
    env = await createBuildEnv(
      'e2e',
      {
        languages: {
          rust: {
            // First, so that the failing attempts fail fast.
            runtime: [
              { kind: 'archive', url: rustExtra.url, sha256: rustExtra.sha256, dest: '/opt', stripComponents: 0 },
              ...PROFILES.default.rust!.runtime!,
            ],
          },
        },
      },
      { kernel: 'build' },
    );
    await env.startWorker();
  });

  let first: CreateAllSummary;

  it('builds all five images through Temporal; a failed rust source waits for retryStep and resumes', async () => {
    const { client } = (await testTemporal()).env;
    fixture.fail('/rust-extra.tgz', 503);
    const runTag = `e2e-${crypto.randomBytes(3).toString('hex')}`;
    const handle = await client.workflow.start(createAllRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: parentWorkflowId(runTag),
      args: [{ runTag, options: env.options, concurrency: 2, spec: env.spec() }],
    });
    const rustId = childWorkflowId(runTag, 'rust');
    const waiting = await waitFor(
      'rust to await a retry',
      async () => {
        const all: LanguageProgress[] = await handle.query(progressQuery);
        const rust = all.find((p) => p.language === 'rust');
        return rust?.state === 'awaiting-retry' ? rust : undefined;
      },
      30 * 60 * 1000,
    );
    const failed = waiting.steps.find((s) => s.state === 'awaiting-retry')!;
    assert.equal(failed.name, 'runtime');
    assert.match(failed.error!, /503|rust-extra/);
    // "Every build waiting for me" is one filter in Temporal Web (visibility lags a moment).
    const filter = `RootfsState = 'awaiting-retry' AND RootfsStep = 'runtime' AND RootfsLanguage = 'rust'`;
    await waitFor(
      'the search attributes to show rust waiting',
      async () => {
        for await (const w of client.workflow.list({ query: filter })) if (w.workflowId === rustId) return true;
        return undefined;
      },
      60_000,
    );

    // The operator fixes the cause (the vendor is back), then resumes the build.
    fixture.serve('/rust-extra.tgz', rustExtra.tarball);
    const rustHandle = client.workflow.getHandle(rustId);
    const ack = await rustHandle.executeUpdate(retryStepUpdate, { args: [{}] });
    assert.deepEqual(ack, { language: 'rust', step: 'runtime' });
    first = await handle.result();
    await recordHistory(handle, 'createAllRootfs-five-languages');
    await recordHistory(rustHandle, 'createRootfs-rust-resumed');
    await recordHistory(client.workflow.getHandle(childWorkflowId(runTag, 'kernel')), 'createKernel-built');

    assert.deepEqual(
      first.images.map((i) => i.language),
      ['bash', 'python', 'nodejs', 'go', 'rust'],
    );
    // Uploaded, each with its manifest, and the bucket listed at the end.
    assert.deepEqual(
      first.images.map((i) => i.s3Key),
      first.images.map((i) => `rootfs-${i.language}.ext4`),
    );
    assert.equal(first.bucket?.bucket, env.s3.bucket);
    const s3 = createClient({ config: env.s3 });
    // Five images and the kernel, each with its manifest, and the kernel's .config (13 plain objects);
    // beside them the block store: per file a head, an index and a pack of the blocks it added;
    // and the bootstrap scripts' fetcher (setup builds it), under its sha256.
    assert.equal(first.bucket?.objects, 13 + 6 * 3 + 1);
    const fetcher = fetcherSha256(toolPaths().blockFetcher);
    assert.ok(fetcher, 'setup built the fetcher');
    assert.ok(await statObject({ client: s3, config: env.s3 }, fetcherKey(fetcher)), 'the fetcher is published');
    const kernel = first.kernel!;
    assert.equal(kernel.state, 'done', kernel.error);
    assert.equal(kernel.s3Key, 'vmlinux');
    // Built once, from empty: by the kernel child, or by the first boot step that needed it (the
    // artifact store's lock makes the other wait and reuse it).
    assert.ok(
      Object.values(kernel.steps).every((s) => s === 'ran' || s === 'reused'),
      JSON.stringify(kernel.steps),
    );
    assert.equal(kernel.steps['kernel-upload'], 'ran');
    assert.ok(fs.existsSync(path.join(env.workspace, 'vmlinux')), 'published in the workspace as the seed lays it out');
    // Same source, fragment and recipe in another workspace (test/support/kernel.ts): same bytes.
    assert.equal(kernel.sha256, (await testKernelBuild()).sha256, 'the kernel build is reproducible');
    for (const image of first.images) {
      assert.equal(image.state, 'done');
      assertBootable(image, image.language);
      // …and booted: with this build's kernel, to the operator's /health, the checks answered from inside.
      assert.equal(image.steps.boot, 'ran', image.language);
      assert.ok(image.bootMs! > 0 && image.bootMs! < 180_000, `${image.language} booted in ${image.bootMs} ms`);
      assert.equal(image.kernelSha256, kernel.sha256, image.language);
    }
    console.log(
      `      boot to /health: ${first.images.map((i) => `${i.language} ${(i.bootMs! / 1000).toFixed(1)} s`).join(', ')}`,
    );
    const { manifest } = await readManifest({ client: s3, config: env.s3 }, 'rootfs-python.ext4');
    const kernelManifest = (await readManifest({ client: s3, config: env.s3 }, 'vmlinux')).manifest;
    assert.equal(kernelManifest?.sha256, kernel.sha256);
    assert.match(kernelManifest?.configSha256 ?? '', /^[0-9a-f]{64}$/, 'the kernel manifest names its .config');
    assert.deepEqual(manifest?.boot, {
      seconds: Math.round(first.images.find((i) => i.language === 'python')!.bootMs! / 100) / 10,
      kernelSha256: kernel.sha256,
    });
    s3.destroy();
    const versions = Object.fromEntries(first.images.map((i) => [i.language, i.versions.join(' | ')]));
    assert.match(versions.bash!, /^GNU bash, version 5\.1\./);
    assert.match(versions.python!, /^Python 3\.10\.\d+ \| pip /);
    assert.match(versions.nodejs!, /^v20\.\d+\.\d+ \| \d+\.\d+\.\d+$/);
    assert.match(versions.go!, /^go version go1\.22\.3 linux\/amd64$/);
    assert.match(versions.rust!, /^rustc 1\.\d+\.\d+.* \| cargo 1\.\d+\.\d+/);
    const goImage = first.images.find((i) => i.language === 'go')!.path!;
    assert.match(
      catInImage(goImage, '/etc/systemd/system/infra.operator.service'),
      /^Environment=GOROOT=\/usr\/local\/go$/m,
    );
    assert.equal(
      catInImage(first.images.find((i) => i.language === 'rust')!.path!, '/opt/cargo/config.toml'),
      '[net]\nretry = 5\n',
    );

    // The base is one artifact for all five: built by exactly one child, reused by the others.
    assert.equal(first.images.filter((i) => i.steps.base === 'ran').length, 1);
    // …because the parent read the archive state once and gave it to every child.
    assert.deepEqual(await activityRuns(handle, 'archiveSnapshot'), [1]);
    // Resume ran only the failed step again: the rust child probed once (its probe did allocate's
    // checks), took the base once (from its probe when another child had built it by then, else
    // as an activity) and ran its runtime twice.
    assert.deepEqual(await activityRuns(rustHandle, 'probe'), [1]);
    assert.deepEqual(await activityRuns(rustHandle, 'allocate'), []);
    assert.ok((await activityRuns(rustHandle, 'base')).length <= 1, 'the base at most once');
    // The runtime used its attempts (2), paused, then ran once more when retryStep asked.
    assert.deepEqual(await activityRuns(rustHandle, 'runtime'), [2, 1]);
  });

  it('a second createAllRootfs with nothing changed reuses every step', async () => {
    const { client } = (await testTemporal()).env;
    const runTag = `e2e-again-${crypto.randomBytes(3).toString('hex')}`;
    // "Nothing changed" includes the Ubuntu archive, which publishes several times a day: pin the
    // state the first build saw, or a publish between the two builds would rightly rebuild.
    const archive = await activityResult<Record<string, string>>(
      client.workflow.getHandle(parentWorkflowId(first.runTag)),
      'archiveSnapshot',
    );
    assert.ok(archive && Object.keys(archive).length === 2, 'the first build pinned jammy and jammy-updates');
    const started = Date.now();
    const again = await client.workflow.execute(createAllRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: parentWorkflowId(runTag),
      args: [{ runTag, options: { ...env.options, archive }, concurrency: 5, spec: env.spec() }],
    });
    const seconds = (Date.now() - started) / 1000;
    for (const image of again.images) {
      for (const step of ['base', 'runtime', 'operator', 'verify', 'image', 'boot', 'upload'] as const) {
        assert.equal(image.steps[step], 'reused', `${image.language} ${step}`);
      }
      const before = first.images.find((i) => i.language === image.language)!;
      assert.equal(image.sha256, before.sha256);
      assert.equal(image.imageKey, before.imageKey);
      // One probe found every step finished: no step ran as an activity of its own.
      const child = client.workflow.getHandle(childWorkflowId(runTag, image.language));
      assert.deepEqual(await activityRuns(child, 'probe'), [1], `${image.language} probed once`);
      for (const step of ['allocate', 'base', 'image', 'boot', 'upload'])
        assert.deepEqual(await activityRuns(child, step), [], `${image.language} ${step} ran no activity`);
    }
    assert.deepEqual(Object.values(again.kernel!.steps), ['reused', 'reused', 'reused', 'reused']);
    assert.equal(again.kernel!.sha256, first.kernel!.sha256);
    assert.ok(seconds < 60, `took ${seconds} s`);
  });
});
