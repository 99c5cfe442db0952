import * as path from 'node:path';
import type { LanguageSpec } from '../config/schema';
import { runInImage, type Host } from '../host';
import { verifyEnvironment } from './pipeline';

/**
 * Checks a finished image without booting it: runs the language's version checks inside the
 * image and reads its size and free space from the superblock. The image may come from the
 * bucket, so it is never mounted and its programs never run as root: runInImage extracts it
 * unprivileged and runs each check in a sandbox without host devices, network or files.
 */

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

/** Size, used and available space from `dumpe2fs -h` output, the way df reports a mounted ext4. */
export function filesystemUsage(dumpe2fs: string, image: string): FilesystemUsage {
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(dumpe2fs);
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
  const env = Object.fromEntries(
    verifyEnvironment(spec).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const run = await runInImage(
    host,
    image,
    spec.verify.map((check) => ({ argv: check.argv, env })),
  );
  const versions = spec.verify.map((check, i): VersionLine => {
    const { code, stdout, stderr } = run.results[i]!;
    const line = (stdout.trim() || stderr.trim()).split('\n')[0] ?? '';
    return { argv: check.argv, line, ok: code === 0 && new RegExp(check.expect).test(line) };
  });
  return { image, versions, usage: filesystemUsage(run.dumpe2fs, image), ok: versions.every((v) => v.ok) };
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
