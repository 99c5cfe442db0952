import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { freeLoopbackPort } from '../../src/util/net';

/**
 * Processes and files the test bed creates. Everything registered here is undone by
 * `runCleanups()` (mocha's global teardown) and, as a last resort, killed on process exit.
 * What a test file makes for itself goes sooner, once its top-level suite has run
 * (`runSuiteCleanups`, from the root afterEach hook): a full run would otherwise keep every
 * file's images and buckets on disk until its end, tens of GB on a small CI disk.
 */
type Cleanup = () => Promise<void> | void;
const cleanups: Cleanup[] = [];
const suiteCleanups: Cleanup[] = [];
const children = new Set<ChildProcess>();
/** Set once mocha runs tests (files are loaded before): what is made earlier lasts the run. */
let running = false;

export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

/** Undone when the top-level suite that is running ends (or with the run, if made before any ran). */
export function onSuiteCleanup(fn: Cleanup): void {
  (running ? suiteCleanups : cleanups).push(fn);
}

export function markRunning(): void {
  running = true;
}

async function drain(list: Cleanup[]): Promise<void> {
  while (list.length) {
    const fn = list.pop()!;
    try {
      await fn();
    } catch (err) {
      console.error('test bed cleanup failed:', err);
    }
  }
}

export async function runSuiteCleanups(): Promise<void> {
  await drain(suiteCleanups);
}

export async function runCleanups(): Promise<void> {
  await drain(suiteCleanups);
  await drain(cleanups);
}

// Interrupted (Ctrl-C, CI's timeout): stop the servers properly before going.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void runCleanups().finally(() => process.exit(130));
  });
}

process.on('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A fresh directory under the system temp dir, removed when the top-level suite that made it ends. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `rootfs-test-${prefix}-`));
  onSuiteCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The same for what the whole run shares (a server's data, a kernel built once): removed at its end. */
export function sharedTempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `rootfs-test-${prefix}-`));
  onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A loopback TCP port that was free a moment ago. */
export const freePort = freeLoopbackPort;

export function portAccepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

export interface ServerProcess {
  child: ChildProcess;
  /** Output so far, for error messages. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts a long-running server process with its output captured to `logFile`, and
 * registers it for cleanup. `stop()` sends SIGTERM, then SIGKILL after `graceMs`.
 */
export function startServer(
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; logFile: string; graceMs?: number },
): ServerProcess {
  const out = fs.openSync(opts.logFile, 'a');
  const child = spawn(command, args, { env: opts.env ?? process.env, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  children.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => children.delete(child));
  let stopped = false;
  const stop = async () => {
    if (stopped) return exited;
    stopped = true;
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.graceMs ?? 5000);
    await exited;
    clearTimeout(timer);
  };
  onCleanup(stop);
  return {
    child,
    log: () => (fs.existsSync(opts.logFile) ? fs.readFileSync(opts.logFile, 'utf8') : ''),
    stop,
  };
}

/** Polls `ready` until it returns true; fails early with the server's log when the process dies. */
export async function waitUntilReady(
  server: ServerProcess,
  what: string,
  ready: () => Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(`${what} exited before it was ready:\n${server.log().slice(-4000)}`);
    }
    if (await ready().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  await server.stop();
  throw new Error(`${what} was not ready after ${timeoutMs} ms:\n${server.log().slice(-4000)}`);
}

/** Processes whose command line or chroot root lies in `dir`: what a build left running. */
export function processesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const root = fs.readlinkSync(`/proc/${pid}/root`);
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (root.startsWith(dir) || cmdline.includes(dir)) found.push(`${pid} ${cmdline}`);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/**
 * What a build left running under `dir` once `timeoutMs` passed (or at once, when nothing is):
 * a killed process tree may take a moment to go, one in uninterruptible I/O in particular.
 */
export async function processesLeftUnder(dir: string, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let left = processesUnder(dir);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesUnder(dir);
  }
  return left;
}
