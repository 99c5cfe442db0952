import * as path from 'node:path';
import type { LanguageSpec } from '../config/schema';
import { KernelPipeline } from '../kernel/kernel-pipeline';
import { imageKey as imageFile } from '../store/layout';
import { bootAndCheck } from '../vm';
import type { BuildSpec } from './build-spec';
import { BuildError, type StepRunner } from './context';
import { verifyEnvironment, type StepOutcome } from './pipeline';
import { BootData } from './step-data';
import { bootKeyInput, keyRecord } from './step-keys';
import { ArtifactStore } from './artifacts';

/**
 * The boot step: the image, as the image step made it, boots with the build's kernel in a
 * microVM, its operator answers GET /health, and the language's version checks print inside the
 * running guest what they printed in the chroot. The VM boots the artifact through a throwaway
 * overlay (it never writes it). Its record keeps the console log beside it.
 *
 * The kernel comes from the kernel steps' artifacts, found by their keys: built by the build's
 * kernel child, or by this step when it gets there first (the artifact store's lock makes the
 * other wait, and the kernel is built once).
 */
export async function bootImage(
  runner: StepRunner,
  spec: BuildSpec,
  language: string,
  imageKey: string,
  versions: string[],
): Promise<StepOutcome<BootData>> {
  const lang: LanguageSpec | undefined = spec.languages[language];
  if (!lang) throw new BuildError(`language ${language} is not configured`, 'InvalidInput');
  if (!spec.kernel || !spec.boot)
    throw new BuildError('this build was started without a kernel to boot its images with', 'InvalidInput');
  const vm = spec.boot;
  runner.phase('finding the kernel');
  const kernel = new KernelPipeline(runner, spec.workspace, spec.kernel);
  const source = await kernel.source();
  const config = await kernel.configure(source.key);
  const built = await kernel.build(source.key, config.key);

  const store = new ArtifactStore(runner, spec.workspace);
  const image = await store.lookup(imageKey);
  if (!image) throw new BuildError(`image artifact ${imageKey} is gone from the build host`, 'InvalidInput');
  const record = keyRecord(
    'boot',
    imageKey,
    bootKeyInput({ kernelKey: built.key, spec: lang, vm: { memoryMiB: vm.memoryMiB, vcpus: vm.vcpus } }),
    language,
  );
  const { meta, reused } = await store.ensure(record, async (work) => {
    const result = await bootAndCheck({
      host: runner.host,
      kernelPath: path.posix.join(kernel.store.dir(built.key), 'vmlinux'),
      imagePath: path.posix.join(store.dir(imageKey), imageFile(language)),
      label: language,
      accelerator: vm.accelerator,
      memoryMiB: vm.memoryMiB,
      vcpus: vm.vcpus,
      checks: lang.verify,
      env: verifyEnvironment(lang),
      expectedLines: versions,
      bootTimeoutMs: vm.timeoutSeconds * 1000,
      signal: runner.signal,
      onProgress: (p) => runner.phase(p.lastLine ? `${p.phase}: ${p.lastLine}` : p.phase),
    });
    await runner.host.writeFile(path.posix.join(work, 'console.log'), result.consoleTail);
    return {
      bootMs: result.bootMs,
      lines: result.lines,
      kernelKey: built.key,
      kernelSha256: built.data.sha256,
      accelerator: result.accelerator,
    } satisfies BootData;
  });
  return { key: record.key, reused, data: BootData.parse(meta.data) };
}
