import * as crypto from 'node:crypto';
import * as path from 'node:path';
import type { Host } from '../host';
import { BuildError, type StepRunner } from './context';

/**
 * Every write into an image tree goes through here. The tree is written through host paths, and
 * the kernel follows symlinks in them the host's way: jammy's `/var/run -> /run`, or any absolute
 * link, would lead a write to the build host's own `/run` (as root). So a path in the image is
 * resolved the way the image itself would see it — absolute link targets start again at the tree's
 * root, `..` stops there — and only the resolved host path is written. What cannot be made safe
 * (a file used as a folder, a link loop) is refused.
 *
 * The resolution goes through `Host` (lstat, readlink), so it works the same over SSH.
 */

/** Linux gives up after 40 links in one lookup; so does the resolver. */
const MAX_LINKS = 40;

type TreeRunner = Pick<StepRunner, 'host' | 'run'>;

const refuse = (inside: string, why: string) =>
  new BuildError(`cannot write ${inside} into the image tree: ${why}`, 'InvalidInput');

/**
 * The host path of `inside` (an absolute path as the image sees it) in the tree at `tree`. Every
 * existing component but (unless `followLast`) the last is a real directory of the tree after
 * resolution; the part that does not exist yet is returned as is (it contains no links).
 */
export async function resolveInTree(
  host: Host,
  tree: string,
  inside: string,
  opts: { followLast: boolean },
): Promise<string> {
  if (!inside.startsWith('/')) throw refuse(inside, 'not an absolute path');
  if (!tree.startsWith('/') || tree === '/')
    throw new Error(`an image tree must be an absolute path other than /, not ${JSON.stringify(tree)}`);
  const done: string[] = [];
  let todo = inside.split('/');
  let links = 0;
  let missing = false;
  while (todo.length) {
    const name = todo.shift()!;
    if (name === '' || name === '.') continue;
    if (name === '..') {
      // `..` after a name that does not exist: the kernel says ENOENT, and going on would leave
      // the names after it unchecked for links (`/etc/foo -> /nope/../var/run` reaches /run).
      if (missing)
        throw refuse(inside, `a link leads through /${done.join('/')}, which does not exist, and back up with ..`);
      // `done` holds real directories only, so its parent is the lexical one; at the root it stays.
      done.pop();
      continue;
    }
    if (missing) {
      done.push(name);
      continue;
    }
    const last = !todo.some((n) => n !== '' && n !== '.');
    const at = path.posix.join(tree, ...done, name);
    const st = await host.stat(at);
    if (!st) {
      missing = true;
      done.push(name);
    } else if (st.isSymbolicLink && (!last || opts.followLast)) {
      if (++links > MAX_LINKS)
        throw refuse(inside, `too many levels of symbolic links (at /${[...done, name].join('/')})`);
      const target = await host.readlink(at);
      if (target.startsWith('/')) done.length = 0;
      todo = [...target.split('/'), ...todo];
    } else if (!last && !st.isDirectory) {
      throw refuse(inside, `/${[...done, name].join('/')} is not a directory in the image`);
    } else {
      done.push(name);
    }
  }
  return done.length ? path.posix.join(tree, ...done) : tree;
}

/**
 * Where to create or replace the entry `inside`: its folder resolved and created, and whatever is
 * at the entry itself removed: the new entry replaces it, it never writes through it. Returns the
 * host path and the mode of the regular file that was there (kept when the writer gives none).
 */
async function entry(runner: TreeRunner, tree: string, inside: string): Promise<{ at: string; mode?: number }> {
  const name = path.posix.basename(inside);
  if (!name || name === '.' || name === '..') throw refuse(inside, 'not a path to a file');
  const dir = await resolveInTree(runner.host, tree, path.posix.dirname(inside), { followLast: true });
  const dirStat = await runner.host.stat(dir);
  if (dirStat && !dirStat.isDirectory)
    throw refuse(inside, `${path.posix.dirname(inside)} is not a directory in the image`);
  if (!dirStat) await runner.run(['mkdir', '-p', '--', dir]);
  const at = path.posix.join(dir, name);
  const st = await runner.host.stat(at);
  if (st?.isDirectory) throw refuse(inside, 'it is a directory in the image');
  // A link, a device node or a FIFO (an archive unpacked as root can make them) is replaced, never
  // opened: writing through it would reach a host file or device, or hang. A regular file too: a
  // tree may share it with the tree it was linked from (the operator step's), which must not change.
  if (st) await runner.run(['rm', '-f', '--', at]);
  return { at, ...(st?.isFile ? { mode: st.mode & 0o7777 } : {}) };
}

/** Writes a file at `inside` (a new file, replacing whatever was there); returns its host path. */
export async function writeInTree(
  runner: TreeRunner,
  tree: string,
  inside: string,
  data: Buffer | string,
  mode?: number,
): Promise<string> {
  const { at, mode: was } = await entry(runner, tree, inside);
  await runner.host.writeFile(at, data, mode ?? was);
  return at;
}

/** Copies a local file (on the worker) to `inside`; returns its host path. */
export async function putInTree(
  runner: TreeRunner,
  tree: string,
  inside: string,
  localPath: string,
  mode?: number,
): Promise<string> {
  const { at, mode: was } = await entry(runner, tree, inside);
  await runner.host.putFile(localPath, at, mode ?? was);
  return at;
}

/** Copies a file already on the build host to `inside` with `mode`; returns its host path. */
export async function installInTree(
  runner: TreeRunner,
  tree: string,
  inside: string,
  hostFile: string,
  mode: number,
): Promise<string> {
  const { at } = await entry(runner, tree, inside);
  await runner.run(['install', '-m', mode.toString(8).padStart(4, '0'), '-T', '--', hostFile, at]);
  return at;
}

/** Makes `inside` a symbolic link to `target` (a path as the image sees it, stored unresolved). */
export async function linkInTree(runner: TreeRunner, tree: string, inside: string, target: string): Promise<string> {
  const { at } = await entry(runner, tree, inside);
  await runner.run(['ln', '-sfnT', '--', target, at]);
  return at;
}

/** The host path of the folder `inside`, resolved, and whether it exists yet. Refuses a non-folder. */
export async function dirInTree(host: Host, tree: string, inside: string): Promise<{ at: string; exists: boolean }> {
  const at = await resolveInTree(host, tree, inside, { followLast: true });
  const st = await host.stat(at);
  if (st && !st.isDirectory) throw refuse(inside, 'it is not a directory in the image');
  return { at, exists: st !== null };
}

/**
 * Fills the folder `inside` with what `fill` puts into an empty staging folder (an unpacked
 * archive, a module). The staging folder is new, so an extractor cannot be led out of it by links
 * that were in the tree; it becomes the folder by one rename when the folder is new, and is merged
 * otherwise with `cp --remove-destination`, which replaces links in the folder instead of writing
 * through them (and refuses to put a folder where a link is).
 */
export async function fillDirInTree(
  runner: TreeRunner,
  tree: string,
  inside: string,
  fill: (staging: string) => Promise<void>,
): Promise<string> {
  const dest = await dirInTree(runner.host, tree, inside);
  if (dest.at === tree) throw refuse(inside, 'refusing to unpack over the root of the image');
  const parent = path.posix.dirname(dest.at);
  await runner.run(['mkdir', '-p', '--', parent]);
  const staging = path.posix.join(parent, `.rootfs-staging-${crypto.randomBytes(6).toString('hex')}`);
  await runner.run(['mkdir', '-m', '0755', '--', staging]);
  try {
    await fill(staging);
    if (!dest.exists) {
      await runner.run(['mv', '-T', '--', staging, dest.at]);
    } else {
      await runner.run(['cp', '-a', '--remove-destination', '--', `${staging}/.`, `${dest.at}/`]);
    }
  } finally {
    await runner.run(['rm', '-rf', '--', staging]);
  }
  return dest.at;
}
