import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { LocalHost } from '../../src/host';
import { BuildError } from '../../src/pipeline/context';
import {
  BASE_KERNEL_ARGS,
  bootAndCheck,
  consoleTail,
  execArgv,
  execRequestBody,
  firstLine,
  healthArgv,
  isForwardingFailure,
  parseExecAnswer,
  plainConsole,
  QemuMicrovm,
  qemuArgv,
  randomHighPort,
  type QemuArgs,
} from '../../src/vm';
import { makeImage } from '../support/image';
import { freePort, tempDir } from '../support/process';

const args: QemuArgs = {
  accelerator: 'tcg',
  kernelPath: '/srv/k/vmlinux',
  imagePath: '/ws/artifacts/image-1/rootfs-bash.ext4',
  memoryMiB: 1024,
  vcpus: 2,
  kernelArgs: [],
  hostPort: 23456,
};

describe('microVM: QEMU command line', () => {
  it('boots the kernel and image on the microvm machine with virtio-mmio devices, the image in snapshot mode', () => {
    assert.deepEqual(qemuArgv(args), [
      '-M',
      'microvm,pit=on,pic=on,rtc=on,acpi=off',
      '-accel',
      'tcg',
      '-cpu',
      'max',
      '-m',
      '1024',
      '-smp',
      '2',
      '-nodefaults',
      '-no-user-config',
      '-nographic',
      '-no-reboot',
      '-serial',
      'stdio',
      '-kernel',
      '/srv/k/vmlinux',
      '-append',
      'console=ttyS0 root=/dev/vda rw reboot=t panic=-1 lpj=4000000 ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off',
      '-drive',
      'file=/ws/artifacts/image-1/rootfs-bash.ext4,format=raw,if=none,id=root,snapshot=on',
      '-device',
      'virtio-blk-device,drive=root',
      '-netdev',
      'user,id=net0,hostfwd=tcp:127.0.0.1:23456-:5000',
      '-device',
      'virtio-net-device,netdev=net0',
    ]);
  });

  it('uses KVM with the host CPU when asked, and appends extra kernel arguments', () => {
    const argv = qemuArgv({ ...args, accelerator: 'kvm', kernelArgs: ['systemd.log_level=debug', 'quiet'] });
    assert.deepEqual(argv.slice(2, 5), ['-enable-kvm', '-cpu', 'host']);
    assert.ok(!argv.includes('tcg'));
    assert.equal(argv[argv.indexOf('-append') + 1], `${BASE_KERNEL_ARGS.join(' ')} systemd.log_level=debug quiet`);
  });

  it('doubles a comma in the image path, as QEMU option values need', () => {
    const argv = qemuArgv({ ...args, imagePath: '/ws/a,b/img' });
    assert.equal(argv[argv.indexOf('-drive') + 1], 'file=/ws/a,,b/img,format=raw,if=none,id=root,snapshot=on');
  });

  it('refuses what would change the command line or the machine', () => {
    const bad: Array<[Partial<QemuArgs>, RegExp]> = [
      [{ kernelPath: 'vmlinux' }, /kernel must be an absolute path/],
      [{ imagePath: 'img.ext4' }, /image must be an absolute path/],
      [{ imagePath: '/a\nb' }, /image must be an absolute path without control characters/],
      [{ kernelArgs: ['init=/bin/sh rw'] }, /printable, without spaces: "init=\/bin\/sh rw"/],
      [{ kernelArgs: ['a\tb'] }, /without spaces/],
      [{ kernelArgs: [''] }, /without spaces/],
      [{ kernelArgs: ['x'.repeat(2000)] }, /kernel command line is \d+ characters/],
      [{ memoryMiB: 64 }, /memoryMiB must be an integer from 128 to 65536: 64/],
      [{ memoryMiB: 512.5 }, /memoryMiB/],
      [{ vcpus: 0 }, /vcpus must be an integer from 1 to 64: 0/],
      [{ hostPort: 80 }, /hostPort must be an integer from 1024 to 65535: 80/],
    ];
    for (const [change, why] of bad) assert.throws(() => qemuArgv({ ...args, ...change }), why, JSON.stringify(change));
  });

  it("recognises QEMU's message for a port it could not forward", () => {
    assert.ok(
      isForwardingFailure(
        "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2024-:5000: Could not set up host forwarding rule 'tcp:127.0.0.1:2024-:5000'\n",
      ),
    );
    assert.ok(!isForwardingFailure("qemu: could not open kernel file '/k': No such file or directory"));
  });

  it('picks random ports outside the ephemeral range', () => {
    for (let i = 0; i < 200; i++) {
      const p = randomHighPort();
      assert.ok(Number.isInteger(p) && p >= 20000 && p < 32768, String(p));
    }
  });
});

describe('microVM: talking to the guest operator', () => {
  it('reaches the operator through curl on the build host, the request on stdin', () => {
    assert.deepEqual(healthArgv(23456), ['curl', '-fsS', '--max-time', '2', 'http://127.0.0.1:23456/health']);
    const argv = execArgv(23456, 60, 'f'.repeat(32));
    assert.deepEqual(argv.slice(-3), ['--data-binary', '@-', 'http://127.0.0.1:23456/exec']);
    assert.equal(argv[argv.indexOf(`Authorization: Bearer ${'f'.repeat(32)}`) - 1], '-H', 'the boot token goes along');
    assert.equal(argv[argv.indexOf('--max-time') + 1], '75');
    assert.ok(argv.includes('--fail-with-body'));
    assert.deepEqual(JSON.parse(execRequestBody({ argv: ['bash', '--version'], expect: '^GNU' }, ['A=1'], 30)), {
      argv: ['bash', '--version'],
      env: ['A=1'],
      timeoutSeconds: 30,
    });
  });

  it("parses /exec's answer and refuses anything else with the reason", () => {
    assert.deepEqual(parseExecAnswer('{"code":0,"stdout":"a\\n","stderr":"","stdoutTruncated":false,"extra":1}'), {
      code: 0,
      stdout: 'a\n',
      stderr: '',
      stdoutTruncated: false,
      stderrTruncated: false,
      timedOut: false,
    });
    assert.throws(() => parseExecAnswer('404 page not found'), /answer is not JSON: "404 page not found"/);
    assert.throws(() => parseExecAnswer('{"code":"0","stdout":""}'), /lacks code, stderr/);
  });

  it("takes a check's line as the verify step does: stdout's first, else stderr's", () => {
    assert.equal(firstLine({ stdout: '\nGNU bash, version 5.1.16\nmore\n', stderr: 'x' }), 'GNU bash, version 5.1.16');
    assert.equal(firstLine({ stdout: '  \n', stderr: 'Python 3.10.12\n' }), 'Python 3.10.12');
    assert.equal(firstLine({ stdout: '', stderr: '' }), '');
  });

  it("shows the console's last lines without colour codes, cursor moves or carriage returns", () => {
    const raw =
      Array.from({ length: 40 }, (_, i) => `line ${i}\r\n`).join('') + '[\x1b[0;32m  OK  \x1b[0m] Started x.\r\n\r\n';
    const tail = consoleTail(raw, 3);
    assert.equal(tail, 'line 38\nline 39\n[  OK  ] Started x.');
    assert.equal(plainConsole('a\x1b(B\x07b\r\nc\x1bM\x1b[?25ld'), 'ab\ncd');
    assert.equal(consoleTail(`${'y'.repeat(400)}\n`), `${'y'.repeat(300)}…`);
  });

  it('counts a status line that systemd redraws as one line, so that it does not push out the cause', () => {
    const spinner = Array.from(
      { length: 60 },
      (_, i) =>
        `\x1bM\r\x1b[K[${['***   ', ' ***  ', '  *** '][i % 3]}] A start job is running for /dev/ttyS0 (${i}s / 1min 30s)\r\n`,
    ).join('');
    const raw = '[FAILED] Failed to start infra.operator.service.\r\n' + spinner + 'last\r\n';
    assert.equal(
      consoleTail(raw, 3),
      [
        '[FAILED] Failed to start infra.operator.service.',
        '[  *** ] A start job is running for /dev/ttyS0 (59s / 1min 30s) (and 59 like it before)',
        'last',
      ].join('\n'),
    );
    assert.equal(consoleTail('[ *] a 1\n[** ] a 2\nb\n', 5), '[** ] a 2 (and 1 like it before)\nb');
  });
});

describe('microVM: QEMU on the build host @real', function () {
  this.timeout(60_000);
  let image: string;

  before(() => {
    const dir = tempDir('vm');
    fs.mkdirSync(path.join(dir, 'tree'));
    fs.writeFileSync(path.join(dir, 'tree', 'hello'), 'hello\n');
    image = makeImage(path.join(dir, 'tree'), path.join(dir, 'tiny.ext4'));
  });

  it('starts QEMU again on another port when the first is taken', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const taken = (busy.address() as net.AddressInfo).port;
      const picks = [taken, await freePort()];
      const free = picks[1];
      const vmm = new QemuMicrovm('tcg', { pickPort: () => picks.shift()! });
      // No kernel: QEMU gets past the port forward, then stops at the kernel, so the second try is the last.
      const vm = await vmm.start({
        host: new LocalHost(),
        kernelPath: '/nonexistent/vmlinux',
        imagePath: image,
        memoryMiB: 128,
        vcpus: 1,
      });
      assert.equal(vm.hostPort, free);
      assert.deepEqual(picks, []);
      const exit = await vm.exited;
      assert.equal(exit.stopped, false);
      assert.equal(exit.code, 1);
      assert.match(exit.stderr, /could not open kernel file '\/nonexistent\/vmlinux'/);
      assert.ok(!isForwardingFailure(exit.stderr));
    } finally {
      busy.close();
    }
  });

  it('gives up after its tries when every port is taken, with the reason', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const taken = (busy.address() as net.AddressInfo).port;
      let picked = 0;
      await assert.rejects(
        bootAndCheck({
          host: new LocalHost(),
          kernelPath: '/nonexistent/vmlinux',
          imagePath: image,
          accelerator: 'tcg',
          checks: [],
          env: [],
          label: 'tiny',
          vmm: (a) => new QemuMicrovm(a, { portAttempts: 2, pickPort: () => (picked++, taken) }),
        }),
        (err: unknown) =>
          err instanceof BuildError &&
          err.type === 'VerificationFailed' &&
          err.message.startsWith(
            `tiny: QEMU exited (code 1) before the operator answered /health (tcg): qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:${taken}-:5000: Could not set up host forwarding rule`,
          ),
      );
      assert.equal(picked, 2);
    } finally {
      busy.close();
    }
  });

  it("fails at once, with QEMU's reason and the (empty) console, when QEMU cannot start the VM", async () => {
    const started = Date.now();
    await assert.rejects(
      bootAndCheck({
        host: new LocalHost(),
        kernelPath: '/nonexistent/vmlinux',
        imagePath: image,
        accelerator: 'tcg',
        checks: [{ argv: ['bash', '--version'], expect: '^GNU bash' }],
        env: [],
      }),
      (err: unknown) => {
        assert.ok(err instanceof BuildError, String(err));
        assert.equal(
          err.message,
          "QEMU exited (code 1) before the operator answered /health (tcg): qemu: could not open kernel file '/nonexistent/vmlinux': No such file or directory\n" +
            'console (last 25 lines):\n(the guest printed nothing)',
        );
        return true;
      },
    );
    assert.ok(Date.now() - started < 10_000, 'it did not wait for the boot timeout');
  });

  it('refuses checks and recorded lines that do not pair up', async () => {
    await assert.rejects(
      bootAndCheck({
        host: new LocalHost(),
        kernelPath: '/k',
        imagePath: image,
        checks: [{ argv: ['true'], expect: '' }],
        env: [],
        expectedLines: [],
      }),
      (err: unknown) =>
        err instanceof BuildError && err.type === 'InvalidInput' && /1 checks but 0 recorded lines/.test(err.message),
    );
  });
});
