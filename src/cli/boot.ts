import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config';
import { LocalHost } from '../host';
import { verifyEnvironment } from '../pipeline/pipeline';
import { imageKey, kernelPath } from '../store/layout';
import { bootAndCheck, type BootResult } from '../vm';

export interface BootReport {
  language: string;
  image: string;
  kernel: string;
  ok: boolean;
  bootMs?: number;
  accelerator?: string;
  /** Per check: the line the guest printed, and the one the build recorded (when it has a manifest). */
  checks: Array<{ argv: string[]; guest: string; built?: string }>;
  error?: string;
}

/** The versions the build recorded beside a published image, when it wrote a manifest. */
function recordedVersions(image: string): string[] | undefined {
  try {
    const manifest = JSON.parse(fs.readFileSync(`${image}.manifest.json`, 'utf8')) as { versions?: unknown };
    return Array.isArray(manifest.versions) && manifest.versions.every((v) => typeof v === 'string')
      ? manifest.versions
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `rootfs boot LANG`: what the boot step does, by hand, on this machine: the published (or given)
 * image boots with `<workspace>/vmlinux` (or the given kernel) in a microVM, and the language's
 * checks run inside it; their lines are compared with the versions in the image's manifest.
 */
export async function bootCommand(
  config: Config,
  language: string,
  opts: { image?: string; kernel?: string },
): Promise<BootReport> {
  const spec = config.languages[language]!;
  const image = path.resolve(opts.image ?? path.join(config.workspace, 'images', imageKey(language)));
  const kernel = path.resolve(opts.kernel ?? kernelPath(config.workspace));
  const report: BootReport = { language, image, kernel, ok: false, checks: [] };
  for (const [what, file] of [
    ['image', image],
    ['kernel', kernel],
  ] as const) {
    if (!fs.existsSync(file)) {
      report.error = `no ${what} at ${file}: build it (rootfs create ${language}) or download it (rootfs s3 download)`;
      return report;
    }
  }
  const built = recordedVersions(image);
  const expected = built?.length === spec.verify.length ? built : undefined;
  let result: BootResult;
  try {
    result = await bootAndCheck({
      host: new LocalHost(),
      kernelPath: kernel,
      imagePath: image,
      label: language,
      accelerator: config.boot.accelerator,
      memoryMiB: config.boot.memoryMiB,
      vcpus: config.boot.vcpus,
      checks: spec.verify,
      env: verifyEnvironment(spec),
      expectedLines: expected,
      bootTimeoutMs: config.boot.timeoutSeconds * 1000,
      onProgress: (p) => process.stderr.isTTY && process.stderr.write(`\r\x1b[K${p.phase}`),
    });
  } catch (err) {
    report.error = (err as Error).message;
    return report;
  } finally {
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  }
  report.ok = true;
  report.bootMs = result.bootMs;
  report.accelerator = result.accelerator;
  report.checks = spec.verify.map((c, i) => ({ argv: c.argv, guest: result.lines[i] ?? '', built: expected?.[i] }));
  return report;
}

export function formatBootReport(r: BootReport): string {
  if (!r.ok) return `${r.language}: did not boot and answer: ${r.error}\n`;
  const lines = [
    `${r.language}: booted ${path.basename(r.image)} with ${r.kernel} (${r.accelerator}); /health answered after ${(r.bootMs! / 1000).toFixed(1)} s`,
    ...r.checks.map(
      (c) =>
        `  ${c.argv.join(' ').padEnd(24)} ${c.guest}${c.built === undefined ? '' : c.built === c.guest ? '   (as built)' : `   (built: ${c.built})`}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}
