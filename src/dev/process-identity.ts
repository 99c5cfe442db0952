import * as fs from 'node:fs';
import { z } from 'zod';

/**
 * Telling a process we started from one that merely has its pid now (pids are recycled) or that
 * merely listens on the port we use (anyone can): at start we record the pid, its start time
 * (clock ticks since boot, field 22 of /proc/<pid>/stat, fixed for the life of a process) and
 * the command line we gave it; later the same pid must show the same start time and command
 * line, and a listening port must be one of that process's own sockets (the inode in
 * /proc/net/tcp among its /proc/<pid>/fd links). Linux only, as the build host is.
 */

export interface ProcessRecord {
  pid: number;
  /** Empty when the process was gone before it could be read: such a record never matches. */
  startTime: string;
  argv: string[];
}

const Pid = z.int().min(1).max(4_194_304);

/** A pid file: what `recordProcess` wrote, or a bare pid from older code (no start time, no command line). */
const PidFile = z.union([
  z.strictObject({
    pid: Pid,
    startTime: z.string().regex(/^\d*$/).max(24),
    argv: z.array(z.string().max(4096)).min(1).max(256),
  }),
  z.strictObject({ pid: Pid }),
]);

export type RecordedProcess = ProcessRecord | { pid: number; startTime?: undefined; argv?: undefined };

/** Fields 3 on of /proc/<pid>/stat (state, ppid, …), or undefined when the process is gone. */
function statOf(pid: number): string[] | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces and ')'; the rest may not.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

export function startTimeOf(pid: number): string | undefined {
  return statOf(pid)?.[19];
}

/**
 * True when the recorded process has ended (or its pid is another process's now). Unlike
 * `!isRecordedProcess`, false for a process still inside exec: its parent may go on before the
 * kernel has put the new command line in place, and for that moment /proc shows none.
 */
export function hasEnded(rec: RecordedProcess): boolean {
  const stat = statOf(rec.pid);
  return !stat || stat[0] === 'Z' || stat[0] === 'X' || (rec.startTime !== undefined && stat[19] !== rec.startTime);
}

/** The process's command line, or undefined when it is gone (a zombie has none either). */
export function argvOf(pid: number): string[] | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw ? raw.replace(/\0$/, '').split('\0') : undefined;
  } catch {
    return undefined;
  }
}

/** What identifies `pid`, which we have just started with `argv`. */
export function recordProcess(pid: number, argv: string[]): ProcessRecord {
  return { pid, startTime: startTimeOf(pid) ?? '', argv };
}

export function writePidFile(file: string, rec: ProcessRecord): void {
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(rec));
  fs.renameSync(`${file}.tmp`, file);
}

/** The record in `file`; undefined when there is none, 'invalid' when it holds something else. */
export function readPidFile(file: string): RecordedProcess | 'invalid' | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  let value: unknown;
  try {
    value = /^\s*\d+\s*$/.test(text) ? { pid: Number(text) } : JSON.parse(text);
  } catch {
    return 'invalid';
  }
  const parsed = PidFile.safeParse(value);
  return parsed.success ? parsed.data : 'invalid';
}

/**
 * True when the recorded process is alive and still the one recorded: same start time and
 * command line (a record from older code has neither; then only `fits`, the caller's test of
 * the command line, decides). `fits` is applied in every case.
 */
export function isRecordedProcess(rec: RecordedProcess, fits: (argv: string[]) => boolean): boolean {
  const argv = argvOf(rec.pid);
  if (!argv || !fits(argv)) return false;
  if (rec.startTime === undefined) return true;
  return (
    startTimeOf(rec.pid) === rec.startTime && argv.length === rec.argv.length && argv.every((a, i) => a === rec.argv[i])
  );
}

export interface Listener {
  /** The socket's inode, as in a `socket:[inode]` link under /proc/<pid>/fd. */
  inode: string;
  uid: number;
  /** Where it listens, e.g. `0.0.0.0:9000`. */
  address: string;
}

const V4_LOOPBACK = '0100007F';
const V4_ANY = '00000000';
const V6_ANY = '0'.repeat(32);
const V6_MAPPED_LOOPBACK = '0000000000000000FFFF00000100007F';

/** Sockets listening where a TCP connection to 127.0.0.1:`port` would land. */
export function loopbackListeners(port: number): Listener[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const found: Listener[] = [];
  for (const [table, accepted] of [
    ['/proc/net/tcp', [V4_LOOPBACK, V4_ANY]],
    ['/proc/net/tcp6', [V6_ANY, V6_MAPPED_LOOPBACK]],
  ] as const) {
    let text = '';
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const [addr, p] = (f[1] ?? '').split(':');
      // State 0A is LISTEN.
      if (f[3] !== '0A' || p !== hexPort || !addr || !(accepted as readonly string[]).includes(addr)) continue;
      const shown =
        addr === V4_LOOPBACK || addr === V6_MAPPED_LOOPBACK ? '127.0.0.1' : addr === V4_ANY ? '0.0.0.0' : '[::]';
      found.push({ inode: f[9] ?? '', uid: Number(f[7]), address: `${shown}:${port}` });
    }
  }
  return found;
}

function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  let fds: string[] = [];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** True when `listeners` (by default those on 127.0.0.1:`port` now) are there and every one is `pid`'s own socket. */
export function listensOn(pid: number, port: number, listeners = loopbackListeners(port)): boolean {
  if (!listeners.length) return false;
  const own = socketInodes(pid);
  return listeners.every((l) => own.has(l.inode));
}

/** A command line fit for one line of a message: control characters shown as `?`, shortened. */
export function showArgv(argv: string[]): string {
  // eslint-disable-next-line no-control-regex
  const line = argv.join(' ').replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

export function describeProcess(pid: number): string {
  const argv = argvOf(pid);
  return argv ? `pid ${pid} (${showArgv(argv)})` : `pid ${pid} (gone)`;
}

/** For a note on a stale record: what became of the recorded pid. */
export function whatBecameOf(pid: number): string {
  const argv = argvOf(pid);
  return argv ? `pid ${pid} is now another process (${showArgv(argv)})` : `pid ${pid} is gone`;
}

/** Who listens on 127.0.0.1:`port`, as far as this user can see, for an error message. */
export function describeListeners(port: number): string {
  const listeners = loopbackListeners(port);
  if (!listeners.length) return 'nothing';
  const owners = new Map<string, number[]>();
  for (const pid of fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)) {
    for (const inode of socketInodes(pid))
      if (listeners.some((l) => l.inode === inode)) owners.set(inode, [...(owners.get(inode) ?? []), pid]);
  }
  return listeners
    .map((l) => {
      const pids = owners.get(l.inode);
      if (pids?.length) return `${pids.map(describeProcess).join(', ')} on ${l.address}`;
      return `a process of uid ${l.uid} on ${l.address} that this user cannot inspect (socket inode ${l.inode})`;
    })
    .join('; ');
}

/**
 * SIGTERM, then SIGKILL when it is still there after `graceMs`: each signal only while the pid
 * is still the recorded process, so a pid recycled meanwhile is never signalled.
 */
export async function stopRecordedProcess(
  rec: RecordedProcess,
  fits: (argv: string[]) => boolean,
  graceMs: number,
): Promise<void> {
  const ours = () => isRecordedProcess(rec, fits);
  const signal = (sig: NodeJS.Signals) => {
    try {
      if (ours()) process.kill(rec.pid, sig);
    } catch {
      // gone meanwhile
    }
  };
  const waitGone = async (ms: number) => {
    const deadline = Date.now() + ms;
    while (ours() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 150));
  };
  signal('SIGTERM');
  await waitGone(graceMs);
  signal('SIGKILL');
  await waitGone(5000);
}

/**
 * Runs `fn` holding `lockFile`, which holds this process's record: two commands starting the
 * same server at once would otherwise both start it, and the loser's pid file would win. A lock
 * whose process is gone is broken (an unreadable one only when it is older than a few seconds:
 * its holder may be writing it).
 */
export async function withLockFile<T>(lockFile: string, fn: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
  const me = recordProcess(process.pid, argvOf(process.pid) ?? [process.execPath]);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.writeFileSync(lockFile, JSON.stringify(me), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = readPidFile(lockFile);
    const stale =
      holder === 'invalid'
        ? Date.now() - (fs.statSync(lockFile, { throwIfNoEntry: false })?.mtimeMs ?? 0) > 5000
        : holder !== undefined && !isRecordedProcess(holder, () => true);
    if (stale) fs.rmSync(lockFile, { force: true });
    else if (Date.now() > deadline) {
      throw new Error(
        `${lockFile} is still held${holder && holder !== 'invalid' ? ` by ${describeProcess(holder.pid)}` : ''} after ${timeoutMs / 1000} s`,
      );
    } else await new Promise((r) => setTimeout(r, 200));
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockFile, { force: true });
  }
}

/** The process record within `value` (a pid file's or a larger record's fields), checked; undefined when there is none. */
export function recordedProcessOf(value: unknown): RecordedProcess | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { pid, startTime, argv } = value as Record<string, unknown>;
  const parsed = PidFile.safeParse(startTime === undefined && argv === undefined ? { pid } : { pid, startTime, argv });
  return parsed.success ? parsed.data : undefined;
}
