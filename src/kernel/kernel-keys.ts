import type { KernelSpec } from '../pipeline/build-spec';

/**
 * What each kernel step's key hashes: pure functions of the step's inputs, like the image
 * steps' in src/pipeline/step-keys.ts.
 */

export const KERNEL_RECIPE = { source: 1, config: 1, build: 1 } as const;

/** The package at its version, and the sha256 the signed archive index gives for it. */
export function kernelSourceKeyInput(f: { pkg: string; version: string; debSha256: string }) {
  return { recipe: KERNEL_RECIPE.source, package: f.pkg, version: f.version, debSha256: f.debSha256 };
}

/** `allnoconfig` plus the fragment's text, on the source of the previous key. */
export function kernelConfigKeyInput(f: { fragment: string }) {
  return { recipe: KERNEL_RECIPE.config, base: 'allnoconfig', arch: 'x86_64', fragment: f.fragment };
}

/**
 * The build's environment: what kbuild would otherwise take from the clock, the user and the
 * host name, fixed so that the same source and config give the same vmlinux. The timestamp (it
 * only appears in `uname -v`) names the source instead of a date.
 */
export function kernelBuildEnv(kernel: Pick<KernelSpec, 'package' | 'version'>): Record<string, string> {
  return {
    KBUILD_BUILD_TIMESTAMP: `${kernel.package} ${kernel.version}`,
    KBUILD_BUILD_USER: 'rootfs',
    KBUILD_BUILD_HOST: 'rootfs-pipeline',
    KBUILD_BUILD_VERSION: '1',
  };
}

/** vmlinux from the configured source: the config is the previous key, the source named too. */
export function kernelBuildKeyInput(f: { sourceKey: string; env: Record<string, string> }) {
  return { recipe: KERNEL_RECIPE.build, target: 'vmlinux', sourceKey: f.sourceKey, env: f.env };
}
