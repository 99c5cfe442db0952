import * as crypto from 'node:crypto';
import { z } from 'zod';
import type { Host } from '../host';
import { BuildError, type Progress } from '../pipeline/context';
import { QemuMicrovm } from './qemu';
import type { Accelerator, RunningVm, Vmm } from './types';

export type AcceleratorChoice = 'auto' | Accelerator;

/** One of the language's version checks: the shape of a `verify` entry in the config. */
export interface BootCheck {
  argv: string[];
  expect: string;
}

export interface BootRequest {
  host: Host;
  kernelPath: string;
  imagePath: string;
  /** What the image is, for messages: `bash`. */
  label?: string;
  /** 'auto' (the default): KVM when it works on the build host, else TCG. */
  accelerator?: AcceleratorChoice;
  memoryMiB?: number;
  vcpus?: number;
  kernelArgs?: string[];
  /** Run in the booted guest, in order, each with `env` as its whole environment. */
  checks: BootCheck[];
  env: string[];
  /** The first lines the verify step recorded in the chroot, one per check: the guest must print the same. */
  expectedLines?: string[];
  /** From QEMU's start to the operator's /health answering (default 120 s, for TCG). */
  bootTimeoutMs?: number;
  checkTimeoutSeconds?: number;
  /** How long a KVM boot may stay silent on the console before 'auto' gives up on KVM (default 5 s). */
  kvmProbeMs?: number;
  signal?: AbortSignal;
  /** Phases and the console's last line, for heartbeats. */
  onProgress?: (p: Progress) => void;
  /** The VMM for an accelerator: QEMU's microvm machine by default. */
  vmm?: (accelerator: Accelerator) => Vmm;
}

export interface BootResult {
  /** From the VMM's start to the operator's first /health answer. */
  bootMs: number;
  /** The first line each check printed in the guest. */
  lines: string[];
  accelerator: Accelerator;
  /** The console's last lines when the checks were done. */
  consoleTail: string;
  /** Why KVM was not used, when 'auto' fell back to TCG. */
  kvmUnusable?: string;
}

/** What the operator's POST /exec answers. */
export const ExecAnswer = z.object({
  code: z.int(),
  stdout: z.string(),
  stderr: z.string(),
  stdoutTruncated: z.boolean().default(false),
  stderrTruncated: z.boolean().default(false),
  timedOut: z.boolean().default(false),
});
export type ExecAnswer = z.infer<typeof ExecAnswer>;

export function parseExecAnswer(text: string): ExecAnswer {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`the operator's /exec answer is not JSON: ${JSON.stringify(text.slice(0, 200))}`);
  }
  const parsed = ExecAnswer.safeParse(json);
  if (!parsed.success)
    throw new Error(`the operator's /exec answer lacks ${parsed.error.issues.map((i) => i.path.join('.')).join(', ')}`);
  return parsed.data;
}

/** The line a check is judged by, as the verify step takes it: stdout's first, or stderr's when stdout is empty. */
export function firstLine(out: { stdout: string; stderr: string }): string {
  return (out.stdout.trim() ? out.stdout : out.stderr).trim().split('\n')[0] ?? '';
}

/** The console as text for people: no colour codes, cursor moves, carriage returns or other control characters. */
export function plainConsole(text: string): string {
  /* eslint-disable no-control-regex -- removing control characters is the point */
  return text
    .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '')
    .replace(/\x1b[()][A-Za-z0-9]/g, '')
    .replace(/\x1b[@-_]/g, '')
    .replace(/\r\n?/g, '\n')
    .replace(/[\0-\x08\x0b-\x1f\x7f]/g, '');
  /* eslint-enable no-control-regex */
}

/** systemd's status line for a slow job, redrawn every half second: `[ ***  ] A start job is running for…`. */
const SPINNER = /^\[[ *]+\] /;

/**
 * The last `n` non-empty lines of the console, each cut at 300 characters. A run of systemd's
 * redrawn status lines counts as its last one, so that it does not push out what came before it.
 */
export function consoleTail(text: string, n = 25): string {
  const lines: string[] = [];
  let repeats = 0;
  const note = () => {
    if (repeats) lines[lines.length - 1] += ` (and ${repeats} like it before)`;
    repeats = 0;
  };
  for (const line of plainConsole(text).split('\n')) {
    if (!line.trim()) continue;
    if (SPINNER.test(line) && SPINNER.test(lines[lines.length - 1] ?? '')) {
      repeats++;
      lines[lines.length - 1] = line;
      continue;
    }
    note();
    lines.push(line);
  }
  note();
  return lines
    .slice(-n)
    .map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l))
    .join('\n');
}

/** The JSON that POST /exec takes. */
export function execRequestBody(check: BootCheck, env: string[], timeoutSeconds: number): string {
  return JSON.stringify({ argv: check.argv, env, timeoutSeconds });
}

/** curl on the build host: the operator is reached through QEMU's port forward on its 127.0.0.1. */
export function healthArgv(port: number): string[] {
  return ['curl', '-fsS', '--max-time', '2', `http://127.0.0.1:${port}/health`];
}

export function execArgv(port: number, timeoutSeconds: number, token: string): string[] {
  return [
    'curl',
    '-sS',
    '--fail-with-body',
    '--max-time',
    String(timeoutSeconds + 15),
    '-H',
    'Content-Type: application/json',
    '-H',
    `Authorization: Bearer ${token}`,
    '--data-binary',
    '@-',
    `http://127.0.0.1:${port}/exec`,
  ];
}

/** Runs argv on the host and keeps its output (bounded), whatever its exit code. */
async function collect(
  host: Host,
  argv: string[],
  opts: { stdin?: string; signal?: AbortSignal; maxBytes?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const max = opts.maxBytes ?? 1 << 20;
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outSize = 0;
  let errSize = 0;
  const result = await host.run(argv, {
    stdin: opts.stdin,
    signal: opts.signal,
    onStdout: (c) => {
      if (outSize < max) out.push(c);
      outSize += c.length;
    },
    onStderr: (c) => {
      if (errSize < 16384) err.push(c);
      errSize += c.length;
    },
  });
  return {
    code: result.code,
    stdout: Buffer.concat(out).subarray(0, max).toString('utf8'),
    stderr: Buffer.concat(err).toString('utf8'),
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Build hosts where KVM was tried and did not work, with why: asked once per worker process. */
const kvmUnusable = new Map<string, string>();

/** Whether the build host lets this user open /dev/kvm for reading and writing. */
async function kvmOpens(host: Host, signal?: AbortSignal): Promise<boolean> {
  const r = await collect(host, ['sh', '-c', ': 3<>/dev/kvm', 'rootfs-kvm-check'], { signal });
  return r.code === 0;
}

const lastLine = (text: string) => plainConsole(text).trim().split('\n').pop()?.trim().slice(0, 200);

/**
 * Starts the VM for the requested accelerator. 'auto' tries KVM when /dev/kvm opens, and keeps
 * that boot only if the guest writes to its console within kvmProbeMs: on a host where nested KVM
 * is broken the kernel prints nothing (here: about 15 s of silence, then "KVM internal error.
 * Suberror: 1 / emulation failure" on a `lock cmpxchg16b` in SLUB, and QEMU stays paused for ever),
 * while a working KVM prints the kernel's first lines well within a second. Otherwise TCG, and
 * the build host is remembered for the life of this process.
 */
async function startVm(
  req: BootRequest,
  vmm: (a: Accelerator) => Vmm,
  report: (phase: string) => void,
  token: string,
): Promise<{ vm: RunningVm; kvmUnusable?: string }> {
  const vmRequest = {
    host: req.host,
    kernelPath: req.kernelPath,
    imagePath: req.imagePath,
    memoryMiB: req.memoryMiB ?? 1024,
    vcpus: req.vcpus ?? 2,
    kernelArgs: [...(req.kernelArgs ?? []), `rootfs.exec_token=${token}`],
    signal: req.signal,
    // Boot, checks and the way down, with room to spare: past this the VM is killed whatever happens.
    maxLifetimeSeconds:
      Math.ceil((req.bootTimeoutMs ?? 120_000) / 1000) +
      req.checks.length * ((req.checkTimeoutSeconds ?? 60) + 20) +
      120,
  };
  const choice = req.accelerator ?? 'auto';
  if (choice !== 'auto') {
    report(`starting the VM (${choice})`);
    return { vm: await vmm(choice).start(vmRequest) };
  }
  const where = req.host.description;
  let why = kvmUnusable.get(where);
  if (!why && !(await kvmOpens(req.host, req.signal))) why = 'cannot open /dev/kvm for reading and writing';
  if (!why) {
    const probeMs = req.kvmProbeMs ?? 5000;
    report('starting the VM (trying KVM)');
    const vm = await vmm('kvm').start(vmRequest);
    const outcome = await Promise.race([
      vm.firstOutput.then(() => 'output' as const),
      vm.exited.then(() => 'exited' as const),
      sleep(Math.max(0, vm.startedAt + probeMs - Date.now()), req.signal).then(() => 'silent' as const),
    ]);
    if (outcome === 'output') return { vm };
    const exit = await vm.stop();
    if (req.signal?.aborted) throw req.signal.reason ?? new Error('aborted');
    const said = exit.stderr
      .split('\n')
      .find((l) => l.trim())
      ?.trim();
    why =
      outcome === 'exited'
        ? `QEMU with KVM exited (${exit.code ?? exit.signal})${said ? `: ${said}` : ''}`
        : `a KVM boot printed nothing on the console within ${probeMs / 1000} s${said ? ` (${said})` : ''}`;
    kvmUnusable.set(where, why);
  }
  report('starting the VM (tcg)');
  return { vm: await vmm('tcg').start(vmRequest), kvmUnusable: why };
}

/**
 * Boots an image in a microVM on the build host, waits for the operator's GET /health through the
 * forwarded port, runs the language's checks in the guest through the operator's POST /exec, and
 * compares their first lines with the verify step's. The VM is always stopped. Every failure is a
 * BuildError whose first line says why and whose last lines are the console's.
 */
export async function bootAndCheck(req: BootRequest): Promise<BootResult> {
  if (req.expectedLines && req.expectedLines.length !== req.checks.length)
    throw new BuildError(
      `${req.checks.length} checks but ${req.expectedLines.length} recorded lines to compare them with`,
      'InvalidInput',
    );
  const vmm = req.vmm ?? ((a: Accelerator) => new QemuMicrovm(a));
  const who = req.label ? `${req.label}: ` : '';
  let vm: RunningVm | undefined;
  // The reference operator serves POST /exec only to a guest booted with this token, and only to
  // requests that carry it: a published image's operator, booted without one, has no /exec. It
  // is this boot's alone, and kept out of what is reported (the kernel prints its command line).
  const token = crypto.randomBytes(16).toString('hex');
  const guestConsole = () => (vm ? vm.console().split(token).join('<exec token>') : '');
  const report = (phase: string) => req.onProgress?.({ phase, lastLine: vm ? lastLine(guestConsole()) : undefined });
  const fail = (why: string): never => {
    const tail = vm ? consoleTail(guestConsole()) : '';
    throw new BuildError(
      `${who}${why}\nconsole (last 25 lines):\n${tail || '(the guest printed nothing)'}`,
      'VerificationFailed',
    );
  };
  const aborted = () => {
    if (req.signal?.aborted) throw req.signal.reason ?? new Error('aborted');
  };
  let exit: Awaited<RunningVm['exited']> | undefined;
  // With -no-reboot and panic=-1, QEMU exiting 0 means the guest panicked, rebooted or powered off.
  const exitHow = () =>
    `QEMU exited (${exit?.code === 0 ? 'code 0: the guest panicked, rebooted or powered off' : exit?.code !== null ? `code ${exit?.code}` : exit.signal})`;
  const exitSaid = () => {
    const said = exit?.stderr
      .split('\n')
      .find((l) => l.trim())
      ?.trim();
    return said ? `: ${said.slice(0, 300)}` : '';
  };
  try {
    const started = await startVm(req, vmm, report, token);
    vm = started.vm;
    const running = vm;
    void running.exited.then((e) => (exit = e));
    const accel = `${running.accelerator}${started.kvmUnusable ? `; KVM: ${started.kvmUnusable}` : ''}`;

    const bootTimeoutMs = req.bootTimeoutMs ?? 120_000;
    let bootMs: number | undefined;
    while (bootMs === undefined) {
      aborted();
      if (exit) fail(`${exitHow()} before the operator answered /health (${accel})${exitSaid()}`);
      const waited = Date.now() - running.startedAt;
      if (waited > bootTimeoutMs) {
        // QEMU itself may have said why (a paused VM: "KVM internal error").
        const said = running
          .stderr()
          .split('\n')
          .find((l) => l.trim())
          ?.trim();
        fail(
          `the guest did not answer /health within ${Math.round(bootTimeoutMs / 1000)} s (${accel})` +
            (said ? `; QEMU said: ${said.slice(0, 300)}` : ''),
        );
      }
      report(`waiting for /health (${Math.round(waited / 1000)} s)`);
      const probe = await collect(req.host, healthArgv(running.hostPort), { signal: req.signal, maxBytes: 4096 });
      if (probe.code === 0) bootMs = Date.now() - running.startedAt;
      else await sleep(500, req.signal);
    }

    const timeoutSeconds = req.checkTimeoutSeconds ?? 60;
    const lines: string[] = [];
    for (const [i, check] of req.checks.entries()) {
      aborted();
      const shown = check.argv.join(' ');
      report(`running ${shown} in the guest`);
      const r = await collect(req.host, execArgv(running.hostPort, timeoutSeconds, token), {
        stdin: execRequestBody(check, req.env, timeoutSeconds),
        signal: req.signal,
      });
      aborted();
      if (r.code !== 0) {
        const why = r.stdout.trim().split('\n')[0] || r.stderr.trim().split('\n').pop() || `curl exited with ${r.code}`;
        fail(
          `\`${shown}\` could not be run in the guest: ${why.slice(0, 300)}${exit ? `; ${exitHow()}${exitSaid()}` : ''}`,
        );
      }
      let answer: ExecAnswer;
      try {
        answer = parseExecAnswer(r.stdout);
      } catch (err) {
        return fail(`\`${shown}\`: ${(err as Error).message}`);
      }
      const line = firstLine(answer);
      if (answer.timedOut) fail(`\`${shown}\` did not finish within ${timeoutSeconds} s in the guest`);
      if (answer.code !== 0) fail(`\`${shown}\` failed in the guest (code ${answer.code}): ${line.slice(0, 300)}`);
      const expected = req.expectedLines?.[i];
      if (expected !== undefined && line !== expected)
        fail(`\`${shown}\` printed "${line.slice(0, 200)}" in the guest, the chroot said "${expected.slice(0, 200)}"`);
      if (!new RegExp(check.expect).test(line))
        fail(`\`${shown}\` printed "${line.slice(0, 200)}" in the guest, expected /${check.expect}/`);
      lines.push(line);
    }
    return {
      bootMs,
      lines,
      accelerator: running.accelerator,
      consoleTail: consoleTail(guestConsole()),
      ...(started.kvmUnusable ? { kvmUnusable: started.kvmUnusable } : {}),
    };
  } finally {
    if (vm) {
      report('stopping the VM');
      await vm.stop();
    }
  }
}
