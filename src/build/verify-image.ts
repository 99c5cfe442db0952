import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { LanguageSpec } from '../config/schema';
import { output, type Host } from '../host';
import { verifyEnvironment } from './pipeline';

/**
 * Checks a finished image without booting it: runs the language's version checks inside the
 * image mounted read-only (loop, no journal replay) in private mount and PID namespaces, and
 * reads its size and free space from the superblock.
 */

const SCRIPT = [
  'set -e',
  'img=$1; mnt=$2; shift 2',
  'mount -o ro,loop,noload "$img" "$mnt"',
  'mount -t proc proc "$mnt/proc"',
  'mount -t sysfs -o ro sysfs "$mnt/sys"',
  'mount --rbind /dev "$mnt/dev"',
  'mount --make-rslave "$mnt/dev"',
  'exec chroot "$mnt" "$@"',
].join('\n');

export interface VersionLine {
  argv: string[];
  line: string;
  ok: boolean;
}

export interface FilesystemUsage {
  sizeBytes: number;
  usedBytes: number;
  availableBytes: number;
  /** As df computes it: used / (used + available), rounded up. */
  usePercent: number;
}

export interface ImageReport {
  image: string;
  versions: VersionLine[];
  usage: FilesystemUsage;
  ok: boolean;
}

/** Size, used and available space from `dumpe2fs -h`, the way df reports a mounted ext4. */
export async function filesystemUsage(host: Host, image: string): Promise<FilesystemUsage> {
  const { stdout } = await output(host, ['dumpe2fs', '-h', image]);
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(stdout);
    if (!m) throw new Error(`dumpe2fs -h ${image}: no "${name}"`);
    return Number(m[1]);
  };
  const block = field('Block size');
  const total = field('Block count');
  const free = field('Free blocks');
  const reserved = field('Reserved block count');
  const usedBytes = (total - free) * block;
  const availableBytes = Math.max(0, free - reserved) * block;
  return {
    sizeBytes: total * block,
    usedBytes,
    availableBytes,
    usePercent: usedBytes + availableBytes ? Math.ceil((usedBytes / (usedBytes + availableBytes)) * 100) : 0,
  };
}

export async function verifyImage(host: Host, image: string, spec: LanguageSpec): Promise<ImageReport> {
  if (!fs.existsSync(image)) throw new Error(`${image} does not exist: build it first`);
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'rootfs-verify-'));
  try {
    const env = verifyEnvironment(spec);
    const versions: VersionLine[] = [];
    for (const check of spec.verify) {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const { code } = await host.run(
        ['unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', 'sh', '-c', SCRIPT, 'rootfs-verify', image, mnt, 'env', '-i', ...env, ...check.argv],
        { onStdout: (c) => out.push(c), onStderr: (c) => err.push(c) },
      );
      const stdout = Buffer.concat(out).toString('utf8').trim();
      const line = (stdout || Buffer.concat(err).toString('utf8').trim()).split('\n')[0] ?? '';
      versions.push({ argv: check.argv, line, ok: code === 0 && new RegExp(check.expect).test(line) });
    }
    const usage = await filesystemUsage(host, image);
    return { image, versions, usage, ok: versions.every((v) => v.ok) };
  } finally {
    fs.rmdirSync(mnt);
  }
}

const human = (bytes: number) => {
  const units = ['B', 'K', 'M', 'G', 'T'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)}${units[i]}`;
};

/** Version lines, then a df-style line for the image. */
export function formatImageReport(r: ImageReport): string {
  const name = path.basename(r.image);
  const lines = r.versions.map((v) => `${v.ok ? 'ok  ' : 'FAIL'} ${v.line || `(${v.argv.join(' ')} printed nothing)`}`);
  lines.push(
    `${'Filesystem'.padEnd(name.length)}  ${'Size'.padStart(5)} ${'Used'.padStart(5)} ${'Avail'.padStart(5)} Use%`,
    `${name}  ${human(r.usage.sizeBytes).padStart(5)} ${human(r.usage.usedBytes).padStart(5)} ${human(r.usage.availableBytes).padStart(5)} ${`${r.usage.usePercent}%`.padStart(4)}`,
  );
  return lines.join('\n') + '\n';
}
