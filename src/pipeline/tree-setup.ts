import * as path from 'node:path';
import type { ArtifactStore } from './artifacts';
import type { StepRunner } from './context';
import { linkInTree, resolveInTree, writeInTree } from './tree-path';

/** What the steps that change a tree do around their work: copy it, prepare it for installs, clean up. */

/** Copies the tree of `fromKey` into `work/tree` (a reflink where the filesystem can) and returns it. */
export async function copyTree(
  runner: StepRunner,
  store: ArtifactStore,
  fromKey: string,
  work: string,
): Promise<string> {
  const tree = path.posix.join(work, 'tree');
  runner.phase(`copying ${fromKey}`);
  await runner.run(['cp', '-a', '--reflink=auto', store.tree(fromKey), tree]);
  return tree;
}

/**
 * The tree of `fromKey` as `work/tree`, its files hard links to the artifact's own (a new folder
 * hierarchy, no data copied): for the operator step, which only adds files and settles. That
 * never changes the artifact: the writers of tree-path.ts and settleTree replace a file rather
 * than write into it, and the runtime step leaves no mtime after the epoch for the settle to touch.
 */
export async function linkTree(
  runner: StepRunner,
  store: ArtifactStore,
  fromKey: string,
  work: string,
): Promise<string> {
  const tree = path.posix.join(work, 'tree');
  runner.phase(`linking ${fromKey}`);
  await runner.run(['cp', '-a', '--link', store.tree(fromKey), tree]);
  return tree;
}

/**
 * Runs `fn` with the tree set up for package installs: no services start, DNS works. The image's
 * own `/etc/resolv.conf` (a link in jammy) is replaced for the install, never written through,
 * and put back after.
 */
export async function withChrootSetup<T>(runner: StepRunner, tree: string, fn: () => Promise<T>): Promise<T> {
  const resolvPath = await resolveInTree(runner.host, tree, '/etc/resolv.conf', { followLast: false });
  const resolvStat = await runner.host.stat(resolvPath);
  const resolvLink = resolvStat?.isSymbolicLink ? await runner.host.readlink(resolvPath) : '';
  const resolvFile = resolvStat?.isFile ? await runner.host.readFile(resolvPath) : null;
  const noServices = '#!/bin/sh\n# rootfs-pipeline: no services start during the build.\nexit 101\n';
  const policy = await writeInTree(runner, tree, '/usr/sbin/policy-rc.d', noServices, 0o755);
  const resolv = await writeInTree(runner, tree, '/etc/resolv.conf', await runner.host.readFile('/etc/resolv.conf'));
  try {
    return await fn();
  } finally {
    await runner.run(['rm', '-f', '--', policy, resolv]);
    if (resolvLink) await linkInTree(runner, tree, '/etc/resolv.conf', resolvLink);
    if (resolvFile) await writeInTree(runner, tree, '/etc/resolv.conf', resolvFile, resolvStat!.mode & 0o7777);
  }
}

/** Leaves no package lists or caches in the image. */
export async function cleanApt(runner: StepRunner, tree: string): Promise<void> {
  // Resolved in the tree: with a link on the way, `find -delete` would empty the build host's own.
  const at = (p: string) => resolveInTree(runner.host, tree, p, { followLast: true });
  // prettier-ignore
  await runner.run([
    'find', await at('/var/lib/apt/lists'), await at('/var/cache/apt'),
    '-mindepth', '1', '-not', '-name', 'lock', '-not', '-name', 'partial', '-not', '-name', 'archives', '-delete',
  ]);
  await runner.run(['find', await at('/var/cache/apt/archives'), '-type', 'f', '-name', '*.deb', '-delete']);
}
