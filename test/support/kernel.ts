import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalHost } from '../../src/host';
import { KernelPipeline } from '../../src/kernel/kernel-pipeline';
import { defaultKernelFragment, type KernelSpec } from '../../src/pipeline/build-spec';
import { StepRunner } from '../../src/pipeline/context';
import { DEFAULT_KERNEL } from '../../src/config';
import { sharedTempDir } from './process';

/**
 * One guest kernel per test run, built by the pipeline's own kernel steps from the default
 * config (Debian's linux-source at the pinned version, the repository's fragment) into a
 * workspace of its own: the boot tests need a kernel, and building one takes minutes.
 */
let built: Promise<BuiltKernel> | undefined;

export interface BuiltKernel {
  workspace: string;
  /** The published vmlinux: `<workspace>/vmlinux`. */
  vmlinux: string;
  sha256: string;
  keys: { source: string; config: string; build: string };
  /** Seconds the build step took (0 when it was reused). */
  buildSeconds: number;
}

export function testKernelBuild(): Promise<BuiltKernel> {
  built ??= (async () => {
    const workspace = path.join(sharedTempDir('kernel'), 'workspace');
    const kernel: KernelSpec = {
      ...DEFAULT_KERNEL,
      fragment: { name: 'default', content: fs.readFileSync(defaultKernelFragment(), 'utf8') },
    };
    const runner = new StepRunner(new LocalHost());
    const pipeline = new KernelPipeline(runner, workspace, kernel);
    const source = await pipeline.source();
    const config = await pipeline.configure(source.key);
    const build = await pipeline.build(source.key, config.key);
    return {
      workspace,
      vmlinux: pipeline.kernelPath,
      sha256: build.data.sha256,
      keys: { source: source.key, config: config.key, build: build.key },
      buildSeconds: build.data.buildSeconds,
    };
  })();
  return built;
}

/** The vmlinux of `testKernelBuild()`. */
export const testKernel = async (): Promise<string> => (await testKernelBuild()).vmlinux;

/**
 * Puts the artifacts of this run's kernel build into `workspace` (hard links where they share a
 * filesystem, else copies; artifacts are immutable either way): a build there then reuses the
 * kernel steps, as a workspace that built this kernel before would.
 */
export async function seedKernel(workspace: string): Promise<void> {
  const built = await testKernelBuild();
  const from = path.join(built.workspace, 'artifacts');
  const to = path.join(workspace, 'artifacts');
  fs.mkdirSync(to, { recursive: true });
  for (const key of Object.values(built.keys)) {
    try {
      execFileSync('cp', ['-al', path.join(from, key), path.join(to, key)], { stdio: 'pipe' });
    } catch {
      fs.rmSync(path.join(to, key), { recursive: true, force: true });
      execFileSync('cp', ['-a', path.join(from, key), path.join(to, key)], { stdio: 'pipe' });
    }
  }
}
