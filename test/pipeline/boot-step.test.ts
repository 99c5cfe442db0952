import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config';
import { LocalHost } from '../../src/host';
import { bootImage } from '../../src/pipeline/boot';
import { buildSpecOf } from '../../src/pipeline/build-spec';
import { StepRunner } from '../../src/pipeline/context';
import { Pipeline } from '../../src/pipeline/pipeline';
import { requireTool } from '../../src/setup/tools';
import { buildImage, checkoutOperator } from '../support/guest-image';
import { seedKernel } from '../support/kernel';
import { tempDir } from '../support/process';

/**
 * The boot step as the workflow runs it (bootImage): the kernel found by its keys, the image
 * artifact booted, the record kept. The failure modes of the VM itself are in test/vm.
 */
describe('boot step @real @heavy', function () {
  this.timeout(30 * 60 * 1000);

  it('an image whose operator never starts fails the boot step with the console tail, and a good one is recorded', async () => {
    const dir = tempDir('boot-step');
    const workspace = path.join(dir, 'workspace');
    await seedKernel(workspace);
    const file = path.join(dir, 'rootfs.yaml');
    const bashVerify = [{ argv: ['bash', '--version'], expect: '^GNU bash, version 5\\.1\\.' }];
    fs.writeFileSync(
      file,
      stringify({
        workspace,
        operator: { path: await checkoutOperator() },
        boot: { timeoutSeconds: 40 },
        languages: {
          bash: { verify: bashVerify },
          // The unit starts /bin/false instead of the operator: the image looks right, and never answers.
          broken: {
            verify: bashVerify,
            files: [
              {
                path: '/etc/systemd/system/infra.operator.service.d/broken.conf',
                content: '[Service]\nExecStart=\nExecStart=/bin/false\n',
              },
            ],
          },
        },
      }),
    );
    const loaded = loadConfig({ file, env: {} });
    const spec = buildSpecOf(loaded);
    const runner = new StepRunner(new LocalHost());
    const pipeline = new Pipeline(runner, {
      config: spec,
      operatorPath: loaded.config.operator.path,
      keyringPath: requireTool('ubuntuKeyring'),
    });
    const build = async (language: string) => {
      const { image, verify } = await buildImage(pipeline, language);
      return { image, versions: verify.data.versions };
    };

    const broken = await build('broken');
    const artifact = path.join(workspace, 'artifacts', broken.image.key, 'rootfs-broken.ext4');
    await assert.rejects(bootImage(runner, spec, 'broken', broken.image.key, broken.versions), (err: Error) => {
      assert.equal(err.name, 'VerificationFailed');
      const lines = err.message.split('\n');
      assert.match(lines[0]!, /^broken: .*health/, 'the first line says the operator never answered');
      assert.ok(lines.includes('console (last 25 lines):'), err.message);
      assert.match(err.message, /infra\.operator/, 'the console tail shows the unit');
      return true;
    });
    assert.equal(
      crypto.createHash('sha256').update(fs.readFileSync(artifact)).digest('hex'),
      broken.image.data.sha256,
      'the VM booted the artifact and did not write it',
    );

    const good = await build('bash');
    const booted = await bootImage(runner, spec, 'bash', good.image.key, good.versions);
    assert.equal(booted.reused, false);
    assert.deepEqual(booted.data.lines, good.versions, 'the guest prints what the chroot printed');
    assert.ok(booted.data.bootMs > 0 && booted.data.bootMs < 40_000, `${booted.data.bootMs} ms`);
    assert.match(
      fs.readFileSync(path.join(workspace, 'artifacts', booted.key, 'console.log'), 'utf8'),
      /infra\.operator/,
      'the console log is kept with the record',
    );
    // The same image and kernel again: the record is found, nothing boots.
    const again = await bootImage(runner, spec, 'bash', good.image.key, good.versions);
    assert.deepEqual([again.reused, again.key], [true, booted.key]);
    console.log(
      `      bash booted to /health in ${(booted.data.bootMs / 1000).toFixed(1)} s (${booted.data.accelerator})`,
    );
  });
});
