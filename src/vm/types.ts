import type { Host } from '../host';

/**
 * A microVM monitor behind a small interface: QEMU's microvm machine is the one implemented and
 * tested here (it runs wherever QEMU does, with or without KVM); a Firecracker implementation can
 * take its place on hosts with working KVM, since both boot the same kernel and image with the
 * same virtio-mmio devices.
 */

export type Accelerator = 'kvm' | 'tcg';

export interface VmRequest {
  /** The build host: the VMM runs there, as an argument vector, and so do the health probes. */
  host: Host;
  /** Uncompressed kernel (vmlinux) on the build host. */
  kernelPath: string;
  /** Root filesystem image on the build host. The VM never writes it. */
  imagePath: string;
  memoryMiB: number;
  vcpus: number;
  /** Appended to the kernel command line, one parameter each (no spaces). */
  kernelArgs?: string[];
  /** The VM is killed after this long whatever happens, even if this process dies (default 1800 s). */
  maxLifetimeSeconds?: number;
  /** Aborting it kills the VM. */
  signal?: AbortSignal;
}

export interface VmExit {
  /** The VMM's exit code, or null when a signal ended it. */
  code: number | null;
  signal: string | null;
  /** True when stop() or the request's signal ended it. */
  stopped: boolean;
  /** The last lines the VMM wrote on its stderr (not the guest's console). */
  stderr: string;
}

export interface RunningVm {
  readonly accelerator: Accelerator;
  /** The port on the build host's 127.0.0.1 that reaches the guest's TCP port 5000 (the operator). */
  readonly hostPort: number;
  /** When the VMM was started (ms since the epoch). */
  readonly startedAt: number;
  /** The serial console so far: its last 64 KiB. */
  console(): string;
  /** The VMM's stderr so far: its last 16 KiB. */
  stderr(): string;
  /** Resolves when the guest first writes to its console. */
  readonly firstOutput: Promise<void>;
  /** Resolves when the VMM has exited, for whatever reason; never rejects. */
  readonly exited: Promise<VmExit>;
  /** Kills the VMM and waits for it to be gone. */
  stop(): Promise<VmExit>;
}

export interface Vmm {
  readonly name: string;
  start(request: VmRequest): Promise<RunningVm>;
}
