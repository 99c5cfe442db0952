import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalHost, SshHost, type Host } from '../../src/host';
import { BuildError } from '../../src/pipeline/context';
import { bootAndCheck, type BootRequest } from '../../src/vm';
import { bashGuestImage, type GuestImage } from '../support/guest-image';
import { testKernel } from '../support/kernel';
import { onCleanup, tempDir } from '../support/process';
import { sha256File } from '../store/helpers';
import { testSshd } from '../support/sshd';
import { rootfs } from '../support/cli';

/** PIDs of the processes whose command line boots `image` (QEMU names it in `-drive file=IMAGE,`). */
function vmsOf(image: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (path.basename(argv[0] ?? '') === 'qemu-system-x86_64' && argv.some((a) => a.startsWith(`file=${image},`)))
        pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Waits until no process boots `image`: a killed QEMU takes a moment to go, longer over SSH. */
async function assertStopped(image: string): Promise<void> {
  for (let i = 0; vmsOf(image).length && i < 50; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(vmsOf(image), [], `the VM of ${image} was stopped`);
}

/** The open flags of every descriptor `pid` holds on `file`. */
function openFlags(pid: number, file: string): number[] {
  const flags: number[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== file) continue;
    const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
    flags.push(parseInt(m![1]!, 8));
  }
  return flags;
}

/** A copy of the image with `paths` removed from it (debugfs -w on the copy; the original is untouched). */
function brokenCopy(image: string, name: string, paths: string[]): string {
  const copy = path.join(tempDir('broken'), name);
  execFileSync('cp', ['--sparse=always', image, copy]);
  for (const p of paths) {
    const out = execFileSync('debugfs', ['-w', '-R', `rm ${p}`, copy], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    assert.doesNotMatch(out, /not found|error/i, `debugfs rm ${p}: ${out}`);
  }
  return copy;
}

describe('microVM boot of an image the pipeline built @real @heavy', function () {
  this.timeout(10 * 60 * 1000);
  let kernel: string;
  let bash: GuestImage;
  const request = (over: Partial<BootRequest> = {}): BootRequest => ({
    host: new LocalHost(),
    kernelPath: kernel,
    imagePath: bash.image,
    label: 'bash',
    checks: bash.checks,
    env: bash.env,
    expectedLines: bash.versions,
    ...over,
  });

  before(async () => {
    kernel = await testKernel();
    bash = await bashGuestImage();
  });

  it("boots to the operator, runs the checks in the guest with the chroot's result, and never writes the image", async () => {
    assert.equal(sha256File(bash.image), bash.sha256);
    const phases: string[] = [];
    const flags: number[] = [];
    const started = Date.now();
    const result = await bootAndCheck(
      request({
        onProgress: (p) => {
          if (phases.at(-1) !== p.phase) phases.push(p.phase);
          // While the guest runs: QEMU holds the image open for reading only.
          if (p.phase.startsWith('running ') && !flags.length)
            for (const pid of vmsOf(bash.image)) flags.push(...openFlags(pid, bash.image));
        },
      }),
    );
    const took = Date.now() - started;
    console.log(
      `      bash booted to /health in ${(result.bootMs / 1000).toFixed(1)} s under ${result.accelerator}` +
        `${result.kvmUnusable ? ` (KVM: ${result.kvmUnusable})` : ''}; ${(took / 1000).toFixed(1)} s in all`,
    );
    assert.deepEqual(result.lines, bash.versions);
    assert.match(result.lines[0]!, /^GNU bash, version 5\.1\./);
    assert.ok(result.bootMs > 500 && result.bootMs < 120_000, String(result.bootMs));
    // 'auto': KVM only when a KVM boot speaks; where it does not (nested KVM here), TCG, at a bounded cost.
    if (result.accelerator === 'tcg') {
      assert.ok(fs.existsSync('/dev/kvm') ? /KVM|kvm/.test(result.kvmUnusable ?? '') : true, result.kvmUnusable);
      assert.ok(took - result.bootMs < 20_000, `${took - result.bootMs} ms besides the TCG boot`);
    } else assert.equal(result.kvmUnusable, undefined);
    assert.match(result.consoleTail, /\S/);
    assert.ok(flags.length > 0, 'QEMU had the image open while the guest ran');
    for (const f of flags) assert.equal(f & 3, 0, `open flags ${f.toString(8)}: not read-only`);
    assert.ok(
      phases.some((p) => p.startsWith('waiting for /health')),
      phases.join(' | '),
    );
    assert.ok(phases.includes('running bash --version in the guest'), phases.join(' | '));
    assert.equal(phases.at(-1), 'stopping the VM');
    await assertStopped(bash.image);
    assert.equal(sha256File(bash.image), bash.sha256, 'the image is unchanged');
  });

  it('boots the same way on a build host reached over SSH', async () => {
    const sshd = await testSshd();
    const host: Host = await SshHost.connect({
      host: sshd.host,
      port: sshd.port,
      user: sshd.user,
      keyPath: sshd.clientKeyPath,
      hostKeySha256: sshd.hostKeySha256,
    });
    onCleanup(() => host.close());
    const result = await bootAndCheck(request({ host, accelerator: 'tcg' }));
    console.log(`      over SSH: /health in ${(result.bootMs / 1000).toFixed(1)} s under tcg`);
    assert.deepEqual(result.lines, bash.versions);
    assert.equal(result.accelerator, 'tcg');
    await assertStopped(bash.image);
  });

  it('fails when a check prints in the guest what the chroot did not', async () => {
    await assert.rejects(
      bootAndCheck(request({ accelerator: 'tcg', expectedLines: ['GNU bash, version 5.1.0'] })),
      (err: unknown) => {
        assert.ok(err instanceof BuildError, String(err));
        assert.equal(err.type, 'VerificationFailed');
        const [first, second] = err.message.split('\n');
        assert.equal(
          first,
          `bash: \`bash --version\` printed "${bash.versions[0]}" in the guest, the chroot said "GNU bash, version 5.1.0"`,
        );
        assert.equal(second, 'console (last 25 lines):');
        return true;
      },
    );
    await assertStopped(bash.image);
  });

  it('fails at once, with the kernel panic on the console, when the image has no init', async () => {
    const image = brokenCopy(bash.image, 'no-init.ext4', ['/usr/sbin/init', '/usr/bin/sh']);
    const started = Date.now();
    await assert.rejects(bootAndCheck(request({ imagePath: image, accelerator: 'tcg' })), (err: unknown) => {
      assert.ok(err instanceof BuildError, String(err));
      const lines = err.message.split('\n');
      assert.match(
        lines[0]!,
        /^bash: QEMU exited \(code 0: the guest panicked, rebooted or powered off\) before the operator answered \/health \(tcg\)$/,
      );
      assert.equal(lines[1], 'console (last 25 lines):');
      assert.ok(lines.length > 10 && lines.length <= 27, `${lines.length} lines`);
      assert.ok(
        lines.some((l) => /Kernel panic - not syncing: No working init found/.test(l)),
        err.message,
      );
      return true;
    });
    assert.ok(Date.now() - started < 60_000, 'it did not wait for the boot timeout');
    await assertStopped(image);
  });

  it('fails at the boot timeout, with the console, when the operator never answers', async () => {
    const image = brokenCopy(bash.image, 'no-operator.ext4', ['/usr/local/bin/infra.operator']);
    await assert.rejects(
      bootAndCheck(request({ imagePath: image, accelerator: 'tcg', bootTimeoutMs: 45_000 })),
      (err: unknown) => {
        assert.ok(err instanceof BuildError, String(err));
        const lines = err.message.split('\n');
        assert.equal(lines[0], 'bash: the guest did not answer /health within 45 s (tcg)');
        assert.equal(lines[1], 'console (last 25 lines):');
        // systemd says on the console that the unit cannot start.
        assert.ok(lines.includes('[FAILED] Failed to start infra.operator guest agent.'), err.message);
        return true;
      },
    );
    await assertStopped(image);
  });

  it('stops the VM when the boot is aborted', async () => {
    const controller = new AbortController();
    const reason = new Error('step cancelled');
    await assert.rejects(
      bootAndCheck(
        request({
          accelerator: 'tcg',
          signal: controller.signal,
          onProgress: (p) => {
            if (p.phase.startsWith('waiting for /health')) controller.abort(reason);
          },
        }),
      ),
      (err: unknown) => err === reason,
    );
    await assertStopped(bash.image);
  });

  it('rootfs boot does the same by hand: boot time, and each line beside the one the build recorded', async () => {
    const dir = tempDir('boot-cli');
    const config = path.join(dir, 'rootfs.yaml');
    fs.writeFileSync(config, `workspace: ${dir}\nboot: {accelerator: tcg}\n`);
    const run = await rootfs(['-c', config, 'boot', 'bash', '--image', bash.image, '--kernel', kernel]);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    const [head, line] = run.stdout.split('\n');
    assert.match(head!, /^bash: booted rootfs-bash\.ext4 with \S+ \(tcg\); \/health answered after \d+\.\d s$/);
    assert.match(line!, /^ {2}bash --version +GNU bash, version 5\.1\.\S+.* {3}\(as built\)$/);
    const missing = await rootfs(['-c', config, 'boot', 'bash']);
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /^bash: did not boot and answer: no image at \S+rootfs-bash\.ext4: build it/);
    assert.equal(sha256File(bash.image), bash.sha256);
  });
});
