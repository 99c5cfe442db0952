import * as path from 'node:path';
import { output } from '../host';
import { BuildError, type StepRunner } from './context';
import { resolveInTree, writeInTree } from './tree-path';

/**
 * Same inputs, same bytes: what makes two builds of one key give one image. The time everything
 * is clamped to (the *epoch*) comes from the inputs — the newest `Date:` of the signed InRelease
 * files the build's archive snapshot names — never from the clock. Two steps use it:
 *
 * - the last step that writes a tree (operator, customize) *settles* it: removes what is
 *   machine- or time-specific (logs, caches, backups, the machine ID) and clamps every mtime to
 *   the epoch, so files from packages keep theirs and files made by the build get the epoch;
 * - the image step makes the ext4 with e2fsprogs' fake time and then sets atime and ctime of every
 *   inode to the epoch (mkfs.ext4 1.47.0 copies them from the tree, where they are the build's
 *   clock; it honours SOURCE_DATE_EPOCH only from 1.47.1). crtime is the fake time already.
 *
 * mkfs.ext4 -d adds a folder's entries in `alphasort` order (scandir), not in the host's readdir
 * order, so inode and block allocation follow the names; with LC_ALL=C that order is bytewise.
 */

/** An InRelease's `Date:` line, as apt writes it (RFC 2822, in UTC; the hour may be space-padded). */
const RELEASE_DATE =
  /^Date: (?:[A-Z][a-z]{2}, )?(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) +(\d{1,2}):(\d{2}):(\d{2}) (?:UTC|GMT|\+0000)$/m;

/** The `Date:` of a signed InRelease, in seconds since 1970. */
export function releaseDate(inRelease: string): number {
  const m = RELEASE_DATE.exec(inRelease);
  const month = m ? MONTHS.indexOf(m[2]!) : -1;
  if (!m || month < 0) throw new Error('the InRelease file has no Date: field in UTC');
  const [day, year, h, min, s] = [m[1], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  return Date.UTC(year, month, day, h, min, s) / 1000;
}
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * The epoch of an archive state: the newest release date among its dists. It is the time the
 * archive the image was built from was published, so every file a package shipped is older, and
 * it is the same for every build of one snapshot, on any host, any day.
 */
export function archiveEpoch(inReleases: string[]): number {
  if (!inReleases.length) throw new Error('no InRelease file to take the epoch from');
  return Math.max(...inReleases.map(releaseDate));
}

/** Files that differ from build to build and that a booted system does not need (paths in the image). */
export const SETTLE_REMOVE = [
  // ldconfig's cache of file stats (times, inodes); ld.so.cache itself depends on the libraries only.
  '/var/cache/ldconfig/aux-cache',
  // The previous versions shadow's tools keep; /etc/shadow- also holds the day of the change.
  '/etc/passwd-',
  '/etc/group-',
  '/etc/shadow-',
  '/etc/gshadow-',
  '/etc/subuid-',
  '/etc/subgid-',
  // Written at boot; a build must not leave one that every VM would share.
  '/var/lib/systemd/random-seed',
];

/** Folders whose `*-old` files (debconf's and dpkg's previous databases) are removed. */
export const SETTLE_OLD_FILES_IN = ['/var/cache/debconf', '/var/lib/dpkg'];

/** Log names removed under /var/log: dpkg.log, alternatives.log, apt/history.log, apt/eipp.log.xz, … */
export const SETTLE_LOG_NAMES = ['*.log', '*.log.*'];

/**
 * /etc/shadow with every last-change day after `day` set to `day`: useradd writes the build's
 * date there. Earlier days (and an empty or 0 field, which mean something) stay as they are.
 */
export function clampShadow(text: string, day: number): string {
  return text
    .split('\n')
    .map((line) => {
      const fields = line.split(':');
      if (fields.length < 3 || !/^\d+$/.test(fields[2]!) || Number(fields[2]) <= day) return line;
      fields[2] = String(day);
      return fields.join(':');
    })
    .join('\n');
}

/**
 * Settles the tree before it is imaged (see above). Every path is resolved inside the tree, so a
 * link in it cannot lead a removal onto the build host.
 */
export async function settleTree(runner: StepRunner, tree: string, epoch: number): Promise<void> {
  runner.phase('settling the tree: logs, caches, machine ID, times');
  const at = (p: string, followLast = true) => resolveInTree(runner.host, tree, p, { followLast });
  const removals = await Promise.all(SETTLE_REMOVE.map((p) => at(p, false)));
  await runner.run(['rm', '-f', '--', ...removals]);
  const logs = await at('/var/log');
  if (await isDirectory(runner, logs)) {
    const names = SETTLE_LOG_NAMES.flatMap((n, i) => (i ? ['-o', '-name', n] : ['-name', n]));
    await runner.run(['find', logs, '-xdev', '-type', 'f', '(', ...names, ')', '-delete']);
  }
  for (const dir of SETTLE_OLD_FILES_IN) {
    const host = await at(dir);
    if (await isDirectory(runner, host))
      await runner.run(['find', host, '-maxdepth', '1', '-type', 'f', '-name', '*-old', '-delete']);
  }
  // Empty, not absent and not "uninitialized": systemd (249 in jammy) then makes a new ID at every
  // VM's first boot without entering first-boot mode, whose `preset-all` would enable networkd,
  // resolved and more.
  await writeInTree(runner, tree, '/etc/machine-id', '');
  const dbusId = await at('/var/lib/dbus/machine-id', false);
  if ((await runner.host.stat(dbusId))?.isFile) await runner.run(['rm', '-f', '--', dbusId]);
  const shadow = await at('/etc/shadow');
  const shadowStat = await runner.host.stat(shadow);
  if (shadowStat?.isFile) {
    const text = (await runner.host.readFile(shadow)).toString('utf8');
    const clamped = clampShadow(text, Math.floor(epoch / 86400));
    if (clamped !== text) {
      // A new file with the old one's owner (root:shadow) and mode, renamed over it: never written
      // in place, since the tree may share the old one with the tree it was linked from.
      const next = `${shadow}.rootfs-settle`;
      await runner.host.writeFile(next, clamped);
      await runner.run(['chown', `--reference=${shadow}`, '--', next]);
      await runner.run(['chmod', `--reference=${shadow}`, '--', next]);
      await runner.run(['mv', '-f', '--', next, shadow]);
    }
  }
  // Last, so that the removals above (which change their folders' mtimes) are clamped too.
  await clampTreeTimes(runner, tree, epoch);
}

/**
 * Sets every mtime in the tree later than `epoch` to it. The runtime step does it too, so that the
 * operator step, which links that tree rather than copying it, has only its own files to clamp.
 */
export async function clampTreeTimes(runner: StepRunner, tree: string, epoch: number): Promise<void> {
  // prettier-ignore
  await runner.run([
    'find', tree, '-xdev', '-newermt', `@${epoch}`, '-exec', 'touch', '--no-dereference', `--date=@${epoch}`, '--', '{}', '+',
  ]);
}

async function isDirectory(runner: StepRunner, hostPath: string): Promise<boolean> {
  return (await runner.host.stat(hostPath))?.isDirectory ?? false;
}

const BLOCK = 4096;

/**
 * What the files of a tree take in an ext4 with 4 KiB blocks, from `find -printf '%y %s %n %i %f\0'`:
 * data blocks (hard links once), a block per folder and per long symlink, and the folder entries.
 * Unlike `du`, it depends on the tree's content only, not on how the build host's filesystem
 * allocated it (a folder that once held many files keeps its blocks there).
 */
export function treeUsageBytes(listing: string): number {
  let total = 0;
  const seen = new Set<string>();
  for (const record of listing.split('\0')) {
    const m = /^(\S) (\d+) (\d+) (\d+) ([^]*)$/.exec(record);
    if (!m) continue;
    const [, type, size, links, inode, name] = m as unknown as [string, string, string, string, string, string];
    total += 8 + Math.ceil(Buffer.byteLength(name) / 4) * 4;
    if (type === 'd') total += BLOCK;
    else if (type === 'l' && Number(size) >= 60) total += BLOCK;
    else if (type === 'f') {
      if (Number(links) > 1) {
        if (seen.has(inode)) continue;
        seen.add(inode);
      }
      total += Math.ceil(Number(size) / BLOCK) * BLOCK;
    }
  }
  return total;
}

/** The tree's size in MiB, rounded up (see treeUsageBytes). */
export async function treeUsageMiB(runner: StepRunner, tree: string): Promise<number> {
  const listing = await runner.read(['find', tree, '-xdev', '-printf', '%y %s %n %i %f\\0']);
  return Math.ceil(treeUsageBytes(listing) / (1 << 20));
}

/**
 * The inodes in use, from `dumpe2fs` (its per-group "Free inodes:" ranges): the root and every one
 * from the first non-reserved inode on. The other reserved ones (journal, resize) carry the fake
 * time already.
 */
export function usedInodes(dumpe2fs: string): number[] {
  const count = Number(/^Inode count:\s+(\d+)$/m.exec(dumpe2fs)?.[1]);
  const first = Number(/^First inode:\s+(\d+)$/m.exec(dumpe2fs)?.[1]);
  if (!count || !first) throw new Error('dumpe2fs printed no inode count or first inode');
  const free = new Uint8Array(count + 1);
  let groups = 0;
  for (const m of dumpe2fs.matchAll(/^ +Free inodes: (.*)$/gm)) {
    groups++;
    for (const part of m[1]!.split(',')) {
      const r = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
      if (!r) {
        if (part.trim()) throw new Error(`dumpe2fs printed a free-inode range it cannot read: ${part.trim()}`);
        continue;
      }
      const [from, to] = [Number(r[1]), Number(r[2] ?? r[1])];
      for (let i = from; i <= Math.min(to, count); i++) free[i] = 1;
    }
  }
  if (!groups) throw new Error('dumpe2fs printed no group with its free inodes');
  const used = [2];
  for (let i = first; i <= count; i++) if (!free[i]) used.push(i);
  return used;
}

/** debugfs commands that set atime and ctime of `inodes` to `epoch` (by number: no path to quote). */
export function clampCommands(inodes: number[], epoch: number): string {
  return inodes.map((n) => `sif <${n}> atime @${epoch}\nsif <${n}> ctime @${epoch}\n`).join('');
}

/** The image's UUID (and directory hash seed), from its key: a version-4-shaped UUID. */
export function imageUuid(key: string): string {
  const d = key.slice(-32);
  return `${d.slice(0, 8)}-${d.slice(8, 12)}-4${d.slice(13, 16)}-8${d.slice(17, 20)}-${d.slice(20, 32)}`;
}

/** `mkfs.ext4` filling `out` from `tree` (no mount); run it with `e2fsEnv`. */
export function mkfsArgv(tree: string, out: string, sizeMiB: number, uuid: string): string[] {
  // prettier-ignore
  return [
    'mkfs.ext4', '-q', '-F', '-t', 'ext4', '-L', 'rootfs', '-U', uuid,
    '-E', `hash_seed=${uuid},root_owner=0:0`, '-d', tree, out, `${sizeMiB}M`,
  ];
}

/** The environment of every e2fsprogs command that writes the image: its clock is the epoch. */
export function e2fsEnv(epoch: number): Record<string, string> {
  return { E2FSPROGS_FAKE_TIME: String(epoch), SOURCE_DATE_EPOCH: String(epoch), LC_ALL: 'C' };
}

/**
 * Sets atime and ctime of every inode in use in `image` to `epoch`, in one debugfs run. debugfs
 * exits 0 even when a command fails, so anything it says on stderr but its banner is an error.
 */
export async function clampImageTimes(runner: StepRunner, image: string, epoch: number, work: string): Promise<number> {
  const inodes = usedInodes(await runner.read(['dumpe2fs', image]));
  const commands = path.posix.join(work, 'clamp-times.debugfs');
  await runner.host.writeFile(commands, clampCommands(inodes, epoch));
  try {
    // debugfs echoes every command on stdout: dropped, its errors go to stderr.
    const { stderr } = await output(
      runner.host,
      ['sh', '-c', 'exec debugfs -w -f "$1" "$2" >/dev/null', 'clamp-times', commands, image],
      { signal: runner.signal, env: e2fsEnv(epoch) },
    );
    const errors = stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d+\.\d+/.test(l));
    if (errors.length)
      throw new Error(`debugfs could not set the inode times in ${image}: ${errors.slice(0, 5).join('; ')}`);
  } finally {
    await runner.run(['rm', '-f', '--', commands]);
  }
  return inodes.length;
}

/**
 * The packages installed in the tree, `name version` sorted, read by the build host's dpkg-query
 * from the tree's own database (nothing of the tree runs).
 */
export async function installedPackages(runner: StepRunner, tree: string): Promise<string[]> {
  const admindir = await resolveInTree(runner.host, tree, '/var/lib/dpkg', { followLast: true });
  const out = await runner
    .read(['dpkg-query', `--admindir=${admindir}`, '-W', '-f', '${db:Status-Status} ${Package} ${Version}\\n'], {
      env: { LC_ALL: 'C' },
    })
    .catch((err: Error) => {
      throw new BuildError(`cannot list the packages in ${tree}: ${err.message}`, 'VerificationFailed');
    });
  return packageLines(out);
}

/** `installed name version` lines to sorted `name version`: packages removed but not purged are left out. */
export function packageLines(out: string): string[] {
  return out
    .split('\n')
    .filter((l) => l.startsWith('installed '))
    .map((l) => l.slice('installed '.length))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
