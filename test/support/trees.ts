import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from './process';

/** A tiny tree with a static busybox: enough to chroot into without debootstrap. */
export function busyboxTree(): string {
  const tree = tempDir('chroot');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'usr/bin'])
    fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  for (const applet of ['sh', 'cat', 'env', 'sleep', 'ls', 'mkdir', 'touch', 'echo'])
    fs.symlinkSync('busybox', path.join(tree, 'bin', applet));
  return tree;
}

/** A .tar.gz of the given files (name → content), made with tar as a vendor would. */
export function tarball(files: Record<string, string>): Buffer {
  const dir = tempDir('tarball');
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), content);
  }
  return execFileSync('tar', ['-cz', '-C', dir, '.']);
}
