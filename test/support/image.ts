import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

/** A small ext4 image of `tree` (mkfs.ext4 -d, no mount), readable by all as the pipeline's are. */
export function makeImage(tree: string, image: string, size = '16M', mkfsArgs: string[] = []): string {
  execFileSync('mkfs.ext4', ['-q', ...mkfsArgs, '-d', tree, image, size], { stdio: ['ignore', 'ignore', 'pipe'] });
  fs.chmodSync(image, 0o644);
  return image;
}

/** Reads files out of an ext4 image without mounting it (debugfs, read-only). */
export function debugfs(image: string, request: string): string {
  return execFileSync('debugfs', ['-R', request, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function catInImage(image: string, file: string): string {
  return debugfs(image, `cat ${file}`);
}

/** `stat` of a path inside the image: mode, type and, for a symlink, its target. */
export function statInImage(image: string, file: string): { mode: number; type: string; linkTarget?: string } | null {
  const out = debugfs(image, `stat ${file}`);
  const m = /Type: (\w+)\s+Mode:\s+(\d+)/.exec(out);
  if (!m) return null;
  const link = /Fast link dest: "([^"]*)"/.exec(out)?.[1];
  return { type: m[1]!, mode: parseInt(m[2]!, 8), linkTarget: link };
}

export function lsInImage(image: string, dir: string): string[] {
  return debugfs(image, `ls -p ${dir}`)
    .split('\n')
    .map((l) => l.split('/')[5])
    .filter((n): n is string => !!n && n !== '.' && n !== '..');
}

/** Exit status of `e2fsck -fn` (0: clean). */
export function e2fsckStatus(image: string): number {
  try {
    execFileSync('e2fsck', ['-fn', image], { stdio: 'ignore' });
    return 0;
  } catch (err) {
    return (err as { status?: number }).status ?? -1;
  }
}
