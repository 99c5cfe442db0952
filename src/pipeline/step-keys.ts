import { z } from 'zod';
import { Name, type BaseSpec, type LanguageSpec, type S3Config } from '../config/schema';
import { KEY_PATTERN, STEP_NAMES, stepKey, type StepName } from './keys';
import { renderProfile, renderUnit } from './render';

/**
 * What each step's key hashes, as one pure function per step: the pipeline does the I/O first
 * (the mirror, the archive's state, the keyring's digest), then asks these for the key input, so
 * that a key can be computed, tested and explained without a build host. The shapes are those
 * the keys had before they moved here: artifacts already built keep their keys.
 */

/** Bumped when a step's recipe changes in a way its inputs do not show, to invalidate old artifacts. */
export const RECIPE = { base: 1, runtime: 3, operator: 2, verify: 1, image: 2, boot: 1, customize: 2 } as const;

/** Packages every image gets on top of minbase: an init (systemd as PID 1), apt, and apt's keyring. */
export const BASE_PACKAGES = ['systemd-sysv', 'apt', 'ubuntu-keyring'];

/** sha256 of the signed InRelease per dist (`jammy`, `jammy-updates`): which archive a build saw. */
export type ArchiveSnapshot = Record<string, string>;

export type BaseSettings = Pick<BaseSpec, 'suite' | 'variant' | 'components' | 'pockets' | 'packages'>;

/** The dists a base is built from: the suite and its configured pockets. */
export function archiveDists(base: Pick<BaseSpec, 'suite' | 'pockets'>): string[] {
  return [base.suite, ...base.pockets.map((p) => `${base.suite}-${p}`)];
}

/** The base's packages: the ones every image needs and the configured ones, sorted and unique. */
export function basePackages(base: Pick<BaseSpec, 'packages'>): string[] {
  return [...new Set([...BASE_PACKAGES, ...base.packages])].sort();
}

/** The base tree, shared by every language. `mirror` is without trailing slashes. */
export function baseKeyInput(f: {
  base: BaseSettings;
  mirror: string;
  archive: ArchiveSnapshot;
  keyringSha256: string;
}) {
  return {
    recipe: RECIPE.base,
    suite: f.base.suite,
    variant: f.base.variant,
    components: f.base.components,
    dists: archiveDists(f.base),
    mirror: f.mirror,
    archive: f.archive,
    keyring: f.keyringSha256,
    packages: basePackages(f.base),
  };
}

/** Whether the runtime step installs from the archive: only then is the archive's state part of its key. */
export function runtimeUsesArchive(spec: Pick<LanguageSpec, 'packages' | 'runtime'>): boolean {
  return spec.packages.length > 0 || spec.runtime.some((s) => s.kind === 'apt');
}

/** The language's runtime on the base. `archive` is needed (and used) only when the step uses apt. */
export function runtimeKeyInput(f: {
  spec: Pick<LanguageSpec, 'runtime' | 'packages' | 'files'>;
  archive: ArchiveSnapshot | null;
}) {
  const usesArchive = runtimeUsesArchive(f.spec);
  if (usesArchive && !f.archive)
    throw new Error('the runtime installs from the archive: its key needs the archive state');
  const { runtime, packages, files } = f.spec;
  return { recipe: RECIPE.runtime, runtime, packages, files, archive: usesArchive ? f.archive : null };
}

/** The operator binary, its unit and the language's profile: `unit` and `profile` are the files the step writes. */
export function operatorKeyInput(f: {
  language: string;
  spec: Pick<LanguageSpec, 'environment' | 'path'>;
  operatorSha256: string;
}) {
  return {
    recipe: RECIPE.operator,
    operatorSha256: f.operatorSha256,
    unit: renderUnit(f.spec),
    profile: renderProfile(f.language, f.spec),
    language: f.language,
  };
}

/** The version checks and the environment they run in. */
export function verifyKeyInput(f: { spec: Pick<LanguageSpec, 'verify' | 'environment' | 'path'> }) {
  return { recipe: RECIPE.verify, verify: f.spec.verify, environment: f.spec.environment, path: f.spec.path };
}

/** The image of the tree `operatorKey` names (the verified one): its size settings and its name. */
export function imageKeyInput(f: {
  language: string;
  image: { sizeMiB?: number; headroomMiB: number };
  operatorKey: string;
}) {
  const { sizeMiB, headroomMiB } = f.image;
  return {
    recipe: RECIPE.image,
    sizeMiB: sizeMiB ?? null,
    headroomMiB,
    operatorKey: f.operatorKey,
    language: f.language,
  };
}

/**
 * The image (the previous key) booted with the kernel `kernelKey` in a microVM of this size,
 * checked with the language's version checks from inside. How it was accelerated (KVM or TCG)
 * and how long it may take are not part of it: a boot is a boot.
 */
export function bootKeyInput(f: {
  kernelKey: string;
  spec: Pick<LanguageSpec, 'verify' | 'environment' | 'path'>;
  vm: { memoryMiB: number; vcpus: number };
}) {
  return {
    recipe: RECIPE.boot,
    kernelKey: f.kernelKey,
    verify: f.spec.verify,
    environment: f.spec.environment,
    path: f.spec.path,
    memoryMiB: f.vm.memoryMiB,
    vcpus: f.vm.vcpus,
  };
}

/** A one-off command run in a tree (`rootfs customize`). */
export function customizeKeyInput(f: { argv: string[] }) {
  return { recipe: RECIPE.customize, argv: f.argv };
}

/** Where the image goes: the upload makes no artifact, but its key says whether this bucket has this image. */
export function uploadKeyInput(f: { s3: Pick<S3Config, 'bucket' | 'region' | 'endpoint'> }) {
  return { bucket: f.s3.bucket, region: f.s3.region, endpoint: f.s3.endpoint ?? null };
}

const Key = z.string().regex(KEY_PATTERN);

/**
 * An artifact's key and everything it hashes, kept beside the artifact (`key-input.json`) so
 * that `rootfs explain` can say why a step ran: how its input differs from the step before.
 * `language` is not hashed (a runtime is shared by languages with the same runtime); the base,
 * shared by all, has none.
 */
export const KeyRecord = z.object({
  key: Key,
  step: z.enum(STEP_NAMES),
  previous: Key.nullable(),
  language: Name.nullable(),
  input: z.record(z.string(), z.unknown()),
});
export type KeyRecord = z.infer<typeof KeyRecord>;

export function keyRecord(
  step: StepName,
  previous: string | null,
  input: Record<string, unknown>,
  language: string | null,
): KeyRecord {
  return { key: stepKey(step, previous, input), step, previous, language, input };
}
