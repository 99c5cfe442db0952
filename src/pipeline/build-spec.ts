import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import {
  AbsolutePath,
  Base,
  Boot,
  DEFAULT_OPERATOR_PATH,
  Image,
  Kernel,
  Language,
  Name,
  resolveConfigPath,
  S3,
  Sha256Hex,
  type LoadedConfig,
} from '../config';
import { toolPaths } from '../setup/tools';
import { userCacheDir } from '../util/paths';
import { KERNEL } from '../../workflows/types';
import { canonicalJson } from './keys';
import { parseFragment } from '../kernel/fragment';
import { projectRoot } from '../util/paths';

/**
 * What a build builds, fixed when it starts. The CLI resolves the config into a BuildSpec and puts
 * it in the workflow input; every step gets it as its input, so any worker that runs a step builds
 * exactly this — whatever config that worker was started with. Local files (the operator binary,
 * the archive keyring) are pinned by sha256; a worker that cannot find a file with that digest
 * refuses the step. Credentials are never part of it: they stay in each worker's environment.
 */

/** The build host a build was started for: a worker driving another host refuses its steps. */
export const BuildHostIdentity = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('local'), alias: Name }),
  z.strictObject({
    kind: z.literal('ssh'),
    alias: Name,
    host: z.string().max(255),
    port: z.int().min(1).max(65535),
    user: z.string().max(32),
    hostKeySha256: z.string().max(60),
  }),
]);
export type BuildHostIdentity = z.infer<typeof BuildHostIdentity>;

/** The guest kernel a build makes and boots its images with; the fragment travels as its text. */
export const KernelSpec = z.strictObject({
  package: Kernel.shape.package,
  version: Kernel.shape.version,
  fragment: z.strictObject({
    /** Where it was read from, for people reading the history. */
    name: z.string().max(300),
    content: z.string().superRefine((text, ctx) => {
      try {
        parseFragment(text);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }),
  }),
});
export type KernelSpec = z.infer<typeof KernelSpec>;

export const BuildSpec = z.strictObject({
  /** The config file it came from, for people reading the history (the file itself may change later). */
  source: z.string().max(300),
  base: Base.omit({ keyring: true }),
  keyringSha256: Sha256Hex,
  operatorSha256: Sha256Hex,
  /** The languages of this build (a child's spec holds its own language only); `kernel` names the kernel's child. */
  languages: z.record(
    Name.refine((n) => n !== KERNEL, { error: 'kernel is the name of the guest kernel in a build' }),
    Language,
  ),
  image: Image,
  workspace: AbsolutePath,
  s3: S3,
  buildHost: BuildHostIdentity,
  /** Absent only in builds started before the pipeline built its kernel. */
  kernel: KernelSpec.optional(),
  /** The microVM the boot step boots each image in; absent in builds from before the boot step. */
  boot: Boot.optional(),
});
export type BuildSpec = z.infer<typeof BuildSpec>;

/** What the pipeline builds from: the spec's part that shapes the image. */
export type BuildSettings = Pick<BuildSpec, 'base' | 'languages' | 'image' | 'workspace'>;

export const fileSha256 = (file: string): string =>
  crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/**
 * The operator binary to install: the configured one; when the config leaves the default
 * (`./infra.operator-linux`) and no such file exists, the reference operator setup built.
 */
export function operatorPath(loaded: LoadedConfig): string {
  const configured = resolveConfigPath(loaded, loaded.config.operator.path);
  if (loaded.config.operator.path === DEFAULT_OPERATOR_PATH && !fs.existsSync(configured))
    return toolPaths().referenceOperator;
  return configured;
}

/** The keyring that signs the archive: the configured one, else the one setup installed. */
export function keyringPath(loaded: LoadedConfig): string {
  return loaded.config.base.keyring ? resolveConfigPath(loaded, loaded.config.base.keyring) : toolPaths().ubuntuKeyring;
}

/**
 * Files pinned by a build, by sha256, on this machine: a worker started with another config finds
 * the binary the build was started with here (`rootfs create` puts it there).
 */
export const pinnedFilesDir = (): string => path.join(userCacheDir(), 'pinned');

function pinFile(file: string, sha256: string): void {
  const dest = path.join(pinnedFilesDir(), sha256);
  if (fs.existsSync(dest)) return;
  fs.mkdirSync(pinnedFilesDir(), { recursive: true });
  const tmp = `${dest}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.copyFileSync(file, tmp);
  fs.renameSync(tmp, dest);
}

function readableSha256(file: string, what: string): string {
  try {
    return fileSha256(file);
  } catch (err) {
    throw new Error(
      `${what} ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}): run \`npm run setup\`, or fix the config`,
    );
  }
}

/** Resolves a loaded config into the spec of a build of `languages` (default: all configured). */
export function buildSpecOf(loaded: LoadedConfig, languages?: string[]): BuildSpec {
  const { config } = loaded;
  const names = languages?.length ? languages : Object.keys(config.languages);
  for (const name of names) {
    if (!config.languages[name])
      throw new Error(`${name} is not a configured language (${Object.keys(config.languages).join(', ')})`);
  }
  const operator = operatorPath(loaded);
  const keyring = keyringPath(loaded);
  const operatorSha256 = readableSha256(operator, 'the operator binary');
  const keyringSha256 = readableSha256(keyring, 'the archive keyring');
  pinFile(operator, operatorSha256);
  pinFile(keyring, keyringSha256);
  const { keyring: _local, ...base } = config.base;
  return BuildSpec.parse({
    source: loaded.file ?? '(built-in defaults)',
    base,
    keyringSha256,
    operatorSha256,
    languages: Object.fromEntries(names.map((n) => [n, config.languages[n]])),
    image: config.image,
    workspace: config.workspace,
    s3: config.s3,
    buildHost: hostIdentity(loaded),
    kernel: kernelSpecOf(loaded),
    boot: config.boot,
  });
}

/** The repository's microVM kernel fragment: the default. */
export const defaultKernelFragment = (): string => path.join(projectRoot(), 'guest', 'kernel', 'microvm-x86_64.config');

function kernelSpecOf(loaded: LoadedConfig): KernelSpec {
  const { package: pkg, version, fragment } = loaded.config.kernel;
  const file = fragment ? resolveConfigPath(loaded, fragment) : defaultKernelFragment();
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(
      `the kernel config fragment ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}): fix kernel.fragment in the config`,
    );
  }
  try {
    parseFragment(content);
  } catch (err) {
    throw new Error(`the kernel config fragment ${file}: ${(err as Error).message}`);
  }
  return { package: pkg, version, fragment: { name: fragment ?? 'guest/kernel/microvm-x86_64.config', content } };
}

/** The spec of one language's child build; the kernel's child has no language. */
export function languageSpec(spec: BuildSpec, language: string): BuildSpec {
  if (language === KERNEL) return { ...spec, languages: {} };
  const lang = spec.languages[language];
  if (!lang) throw new Error(`${language} is not part of this build`);
  return { ...spec, languages: { [language]: lang } };
}

/** A short digest of a spec, shown in Temporal Web and status. */
export const specDigest = (spec: BuildSpec): string =>
  crypto.createHash('sha256').update(canonicalJson(spec)).digest('hex').slice(0, 12);

/** Where one pinned file is on this machine, or why not. */
function findPinned(sha256: string, candidates: string[], what: string): string {
  for (const file of [...candidates, path.join(pinnedFilesDir(), sha256)]) {
    try {
      if (fs.existsSync(file) && fileSha256(file) === sha256) return file;
    } catch {
      // unreadable: try the next
    }
  }
  throw new PinnedFileMissing(
    `this build was started with ${what} sha256 ${sha256}, and this worker has no file with that digest ` +
      `(looked at ${[...candidates, pinnedFilesDir()].join(', ')}): start the build again from this worker's config, or copy the file there`,
  );
}

export class PinnedFileMissing extends Error {
  override readonly name = 'PinnedFileMissing';
}

export class WrongBuildHost extends Error {
  override readonly name = 'WrongBuildHost';
}

/** The local files a spec pins, found on this worker's machine. */
export function localInputs(spec: BuildSpec, worker: LoadedConfig): { operatorPath: string; keyringPath: string } {
  return {
    operatorPath: findPinned(
      spec.operatorSha256,
      [operatorPath(worker), toolPaths().referenceOperator],
      'the operator binary',
    ),
    keyringPath: findPinned(
      spec.keyringSha256,
      [keyringPath(worker), toolPaths().ubuntuKeyring],
      'the archive keyring',
    ),
  };
}

/** Refuses a step of a build that was started for another build host than this worker drives. */
export function checkBuildHost(spec: BuildSpec, worker: LoadedConfig): void {
  const mine = hostIdentity(worker);
  if (canonicalJson(mine) !== canonicalJson(spec.buildHost)) {
    throw new WrongBuildHost(
      `this build was started for build host ${describeHost(spec.buildHost)}, and this worker drives ${describeHost(mine)}: ` +
        `run a worker for that host (rootfs worker with its config)`,
    );
  }
}

function hostIdentity(loaded: LoadedConfig): BuildHostIdentity {
  const host = loaded.config.buildHost;
  return host.kind === 'local'
    ? { kind: 'local', alias: host.alias }
    : {
        kind: 'ssh',
        alias: host.alias,
        host: host.host,
        port: host.port,
        user: host.user,
        hostKeySha256: host.hostKeySha256,
      };
}

const describeHost = (h: BuildHostIdentity) =>
  h.kind === 'local' ? `${h.alias} (this machine)` : `${h.alias} (${h.user}@${h.host}:${h.port}, ${h.hostKeySha256})`;

/**
 * What changed between two specs, one line per changed leaf (`languages.python.packages: [] →
 * ["python3-venv"]`), for `resume --reload-config` to show before it applies a new config.
 */
export function specChanges(before: unknown, after: unknown, at = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((k) => specChanges(before[k], after[k], at ? `${at}.${k}` : k));
  }
  if (canonicalJson(before) === canonicalJson(after)) return [];
  const show = (v: unknown) => {
    const text = v === undefined ? '(none)' : JSON.stringify(v);
    return text.length > 120 ? `${text.slice(0, 117)}…` : text;
  };
  return [`${at || '(spec)'}: ${show(before)} → ${show(after)}`];
}
