import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalHost } from '../../src/host';
import { parseFragment, readConfig, unmetOptions } from '../../src/kernel/fragment';
import { KernelPipeline } from '../../src/kernel/kernel-pipeline';
import { defaultKernelFragment } from '../../src/pipeline/build-spec';
import { StepRunner } from '../../src/pipeline/context';
import { DEFAULT_KERNEL } from '../../src/config';
import { testKernelBuild } from '../support/kernel';
import { tempDir } from '../support/process';
import { keyRecord } from '../../src/pipeline/step-keys';
import { kernelSourceKeyInput } from '../../src/kernel/kernel-keys';

describe('kernel config fragments', () => {
  it('reads assignments and "is not set" lines, and refuses modules and anything else', () => {
    const options = parseFragment(
      '# a comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C=64\nCONFIG_LOCALVERSION="-x y"\n',
    );
    assert.deepEqual(
      [...options],
      [
        ['CONFIG_A', 'y'],
        ['CONFIG_B', 'n'],
        ['CONFIG_C', '64'],
        ['CONFIG_LOCALVERSION', '"-x y"'],
      ],
    );
    assert.throws(() => parseFragment('CONFIG_A=m\n'), /line 1: CONFIG_A=m: the guest kernel has no modules/);
    assert.throws(() => parseFragment('CONFIG_A=y\n$(rm -rf /)\n'), /line 2: expected CONFIG_NAME=value/);
    assert.throws(() => parseFragment('# only a comment\n'), /sets no option/);
    assert.throws(
      () => parseFragment('CONFIG_A=y\nCONFIG_INITRAMFS_SOURCE="/root/.ssh"\n'),
      /line 2: CONFIG_INITRAMFS_SOURCE takes a string; only CONFIG_CMDLINE, .* may/,
    );
  });

  it('names every option the final config does not honour', () => {
    const wanted = parseFragment('CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n');
    const got = readConfig('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n');
    assert.deepEqual(unmetOptions(wanted, got), [
      'CONFIG_B: wanted y, got n',
      'CONFIG_C: wanted n, got y',
      'CONFIG_D: wanted y, got n',
    ]);
  });

  it("the repository's fragment is one the pipeline accepts, without modules", () => {
    const options = parseFragment(fs.readFileSync(defaultKernelFragment(), 'utf8'));
    for (const name of [
      'CONFIG_VIRTIO_BLK',
      'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES',
      'CONFIG_KVM_GUEST',
      'CONFIG_EXT4_FS',
    ])
      assert.equal(options.get(name), 'y', name);
    assert.equal(options.get('CONFIG_MODULES'), 'n');
  });
});

describe('kernel source', () => {
  it('a version the archive index no longer knows is reused from its artifact, else refused naming the known ones', async () => {
    const workspace = tempDir('kernel-source');
    const kernel = {
      package: 'linux-source-6.1',
      version: '0.0.0-gone',
      fragment: { name: 'default', content: 'CONFIG_64BIT=y\n' },
    };
    const pipeline = new KernelPipeline(new StepRunner(new LocalHost()), workspace, kernel);
    await assert.rejects(pipeline.source(), (err: Error) => {
      assert.equal(err.name, 'InvalidInput');
      assert.match(err.message, /^apt on the build host does not know linux-source-6\.1 0\.0\.0-gone \(it knows \S+/);
      return true;
    });
    // As if this version had been fetched (and checked against the index) before it was replaced.
    const debSha256 = 'd'.repeat(64);
    const record = keyRecord(
      'kernel-source',
      null,
      kernelSourceKeyInput({ pkg: kernel.package, version: kernel.version, debSha256 }),
      null,
    );
    await pipeline.store.ensure(record, async () => ({
      package: kernel.package,
      version: kernel.version,
      debSha256,
      tarball: 'linux-source.tar.xz',
    }));
    const source = await pipeline.source();
    assert.deepEqual([source.key, source.reused, source.data.debSha256], [record.key, true, debSha256]);
  });
});

describe('kernel build @real @heavy', function () {
  this.timeout(40 * 60 * 1000);

  it("builds vmlinux from Debian's source package with the fragment, and a second run reuses every step", async () => {
    const built = await testKernelBuild();
    const vmlinux = fs.readFileSync(built.vmlinux);
    assert.match(
      execFileSync('file', ['-b', built.vmlinux], { encoding: 'utf8' }),
      /^ELF 64-bit LSB executable, x86-64/,
      'an uncompressed x86-64 kernel, as Firecracker boots',
    );
    assert.ok(vmlinux.length < 40 * 1024 * 1024, `vmlinux is ${vmlinux.length} bytes: the config is meant to be small`);
    assert.ok(
      vmlinux.includes(Buffer.from(`${DEFAULT_KERNEL.package} ${DEFAULT_KERNEL.version}`)),
      'uname -v names the source',
    );
    const config = readConfig(fs.readFileSync(`${built.vmlinux}.config`, 'utf8'));
    assert.deepEqual(unmetOptions(parseFragment(fs.readFileSync(defaultKernelFragment(), 'utf8')), config), []);
    console.log(`      vmlinux ${(vmlinux.length / 1e6).toFixed(1)} MB built in ${built.buildSeconds} s`);

    // The same inputs again: every step is found by its key, nothing is built.
    const kernel = {
      ...DEFAULT_KERNEL,
      fragment: { name: 'default', content: fs.readFileSync(defaultKernelFragment(), 'utf8') },
    };
    const again = new KernelPipeline(new StepRunner(new LocalHost()), built.workspace, kernel);
    const source = await again.source();
    const configured = await again.configure(source.key);
    const build = await again.build(source.key, configured.key);
    assert.deepEqual([source.reused, configured.reused, build.reused], [true, true, true]);
    assert.deepEqual({ source: source.key, config: configured.key, build: build.key }, built.keys);
  });

  it('a fragment option the kernel cannot honour fails the config step and names it', async () => {
    const built = await testKernelBuild();
    const kernel = {
      ...DEFAULT_KERNEL,
      fragment: { name: 'broken.config', content: 'CONFIG_64BIT=y\nCONFIG_NO_SUCH_OPTION=y\nCONFIG_VIRTIO_BLK=y\n' },
    };
    const pipeline = new KernelPipeline(new StepRunner(new LocalHost()), built.workspace, kernel);
    const source = await pipeline.source();
    assert.equal(source.reused, true);
    await assert.rejects(pipeline.configure(source.key), (err: Error) => {
      assert.equal(err.name, 'InvalidInput');
      assert.match(err.message, /does not honour 2 option\(s\) of broken\.config/);
      assert.match(err.message, /CONFIG_NO_SUCH_OPTION: wanted y, got n/);
      // VIRTIO_BLK depends on VIRTIO, which this fragment leaves out.
      assert.match(err.message, /CONFIG_VIRTIO_BLK: wanted y, got n/);
      return true;
    });
    assert.equal(
      fs.readdirSync(path.join(built.workspace, 'artifacts', '.tmp')).length,
      0,
      'the failed step left no work directory',
    );
  });
});
