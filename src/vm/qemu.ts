import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { LocalHost, OutputTail } from '../host';
import type { Accelerator, RunningVm, Vmm, VmExit, VmRequest } from './types';
import { freeLoopbackPort } from '../util/net';

/**
 * The kernel command line every boot gets. `lpj=` skips the delay-loop calibration, which under
 * TCG has no usable timer and hangs about 4 boots in 10 after "tsc: Marking TSC unstable"; `ip=`
 * configures eth0 for QEMU's user network without DHCP in the image; `panic=-1` with `reboot=t`
 * and QEMU's `-no-reboot` turn a kernel panic into QEMU exiting, so a broken image fails at once.
 */
export const BASE_KERNEL_ARGS = [
  'console=ttyS0',
  'root=/dev/vda',
  'rw',
  'reboot=t',
  'panic=-1',
  'lpj=4000000',
  'ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off',
];

/** The operator's port inside the guest. */
export const GUEST_PORT = 5000;

/** x86's COMMAND_LINE_SIZE. */
const MAX_CMDLINE = 2048;

export interface QemuArgs {
  accelerator: Accelerator;
  kernelPath: string;
  imagePath: string;
  memoryMiB: number;
  vcpus: number;
  kernelArgs: string[];
  /** The build host's port that QEMU forwards to the guest's GUEST_PORT, on 127.0.0.1 only. */
  hostPort: number;
}

const KERNEL_ARG = /^[\x21-\x7e]+$/;

function checkPath(what: string, p: string): void {
  // eslint-disable-next-line no-control-regex
  if (!path.posix.isAbsolute(p) || /[\0-\x1f\x7f]/.test(p))
    throw new Error(`${what} must be an absolute path without control characters: ${JSON.stringify(p)}`);
}

function checkInt(what: string, n: number, min: number, max: number): void {
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${what} must be an integer from ${min} to ${max}: ${n}`);
}

/**
 * QEMU's microvm machine with Firecracker's device model: virtio-mmio block and network devices
 * on the kernel command line (`acpi=off`: QEMU then appends their `virtio_mmio.device=` itself,
 * which is how Firecracker hands them over too, and a kernel needs no ACPI or PCI for them), the
 * legacy PIT, PIC and RTC (without them the kernel hangs calibrating the TSC), the serial console
 * on stdout, no firmware devices, no reboot. The image is opened with `snapshot=on`: the guest's
 * writes go to a temporary overlay and the image itself is only read.
 */
export function qemuArgv(a: QemuArgs): string[] {
  checkPath('kernel', a.kernelPath);
  checkPath('image', a.imagePath);
  checkInt('memoryMiB', a.memoryMiB, 128, 65536);
  checkInt('vcpus', a.vcpus, 1, 64);
  checkInt('hostPort', a.hostPort, 1024, 65535);
  for (const arg of a.kernelArgs)
    if (!KERNEL_ARG.test(arg))
      throw new Error(`kernel argument must be printable, without spaces: ${JSON.stringify(arg)}`);
  const cmdline = [...BASE_KERNEL_ARGS, ...a.kernelArgs].join(' ');
  if (cmdline.length > MAX_CMDLINE - 200)
    // room for the virtio_mmio.device= parameters QEMU appends
    throw new Error(`kernel command line is ${cmdline.length} characters, more than ${MAX_CMDLINE - 200}`);
  // QEMU's option syntax: a comma inside a value is written twice.
  const image = a.imagePath.replace(/,/g, ',,');
  return [
    '-M',
    'microvm,pit=on,pic=on,rtc=on,acpi=off',
    ...(a.accelerator === 'kvm' ? ['-enable-kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max']),
    '-m',
    String(a.memoryMiB),
    '-smp',
    String(a.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-serial',
    'stdio',
    '-kernel',
    a.kernelPath,
    '-append',
    cmdline,
    '-drive',
    `file=${image},format=raw,if=none,id=root,snapshot=on`,
    '-device',
    'virtio-blk-device,drive=root',
    '-netdev',
    `user,id=net0,hostfwd=tcp:127.0.0.1:${a.hostPort}-:${GUEST_PORT}`,
    '-device',
    'virtio-net-device,netdev=net0',
  ];
}

/** QEMU could not listen on the host port it was asked to forward (another program has it). */
export function isForwardingFailure(stderr: string): boolean {
  return /Could not set up host forwarding rule/i.test(stderr);
}

/** A port outside Linux's ephemeral range, where outgoing connections take theirs. */
export function randomHighPort(): number {
  return crypto.randomInt(20000, 32768);
}

export interface QemuOptions {
  /** The QEMU program on the build host. */
  binary?: string;
  /** How a port is chosen; by default a free one when the build host is this machine, else a random high one. */
  pickPort?: (host: VmRequest['host']) => Promise<number> | number;
  /** Tries when QEMU cannot forward the port it was given (default 5). */
  portAttempts?: number;
  /** How long start() waits for QEMU to get past its setup (its first console output or its exit), default 5 s. */
  settleMs?: number;
}

/**
 * QEMU's microvm machine on the build host: `qemu-system-x86_64` started through Host.run, so it
 * runs over SSH as well as here, and an abort (or stop()) kills it with its process group.
 * `timeout -s KILL` bounds its life even if the worker that started it is gone.
 */
export class QemuMicrovm implements Vmm {
  readonly name: string;

  constructor(
    readonly accelerator: Accelerator,
    private readonly opts: QemuOptions = {},
  ) {
    this.name = `qemu-microvm/${accelerator}`;
  }

  async start(request: VmRequest): Promise<RunningVm> {
    const attempts = this.opts.portAttempts ?? 5;
    const pick =
      this.opts.pickPort ??
      ((host: VmRequest['host']) => (host instanceof LocalHost ? freeLoopbackPort() : randomHighPort()));
    for (let attempt = 1; ; attempt++) {
      const vm = this.launch(request, await pick(request.host));
      const settle = new AbortController();
      const settled = await Promise.race([
        vm.firstOutput.then(() => 'output' as const),
        vm.exited.then(() => 'exited' as const),
        new Promise<'running'>((resolve) => {
          const t = setTimeout(() => resolve('running'), this.opts.settleMs ?? 5000);
          settle.signal.addEventListener('abort', () => clearTimeout(t));
        }),
      ]);
      settle.abort();
      if (request.signal?.aborted) {
        await vm.stop();
        throw request.signal.reason ?? new Error('aborted');
      }
      if (settled === 'exited' && attempt < attempts && isForwardingFailure((await vm.exited).stderr)) continue;
      return vm;
    }
  }

  private launch(request: VmRequest, hostPort: number): RunningVm {
    const argv = [
      'timeout',
      '-s',
      'KILL',
      String(request.maxLifetimeSeconds ?? 1800),
      this.opts.binary ?? 'qemu-system-x86_64',
      ...qemuArgv({
        accelerator: this.accelerator,
        kernelPath: request.kernelPath,
        imagePath: request.imagePath,
        memoryMiB: request.memoryMiB,
        vcpus: request.vcpus,
        kernelArgs: request.kernelArgs ?? [],
        hostPort,
      }),
    ];
    const stopper = new AbortController();
    const signal = request.signal ? AbortSignal.any([request.signal, stopper.signal]) : stopper.signal;
    const consoleTail = new OutputTail(64 * 1024);
    const stderrTail = new OutputTail(16 * 1024);
    let outputSeen!: () => void;
    const firstOutput = new Promise<void>((resolve) => (outputSeen = resolve));
    const startedAt = Date.now();
    const exited: Promise<VmExit> = request.host
      .run(argv, {
        signal,
        onStdout: (chunk) => {
          consoleTail.push(chunk);
          outputSeen();
        },
        onStderr: (chunk) => stderrTail.push(chunk),
      })
      .then(
        (r) => ({ code: r.code, signal: r.signal, stopped: signal.aborted, stderr: stderrTail.text() }),
        (err: Error) =>
          signal.aborted
            ? { code: null, signal: 'SIGKILL', stopped: true, stderr: stderrTail.text() }
            : {
                code: null,
                signal: null,
                stopped: false,
                stderr: `${stderrTail.text()}cannot run QEMU: ${err.message}`,
              },
      );
    return {
      accelerator: this.accelerator,
      hostPort,
      startedAt,
      console: () => consoleTail.text(),
      stderr: () => stderrTail.text(),
      firstOutput,
      exited,
      stop: () => {
        stopper.abort(new Error('the VM was stopped'));
        return exited;
      },
    };
  }
}
