import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { z } from 'zod';
import { Sha256Hex } from '../config/schema';
import type { KernelSpec } from '../pipeline/build-spec';
import { ArtifactStore } from '../pipeline/artifacts';
import { BuildError, type StepRunner } from '../pipeline/context';
import { publishImage } from '../pipeline/publish';
import { sha256OnHost } from '../pipeline/sources';
import { keyRecord } from '../pipeline/step-keys';
import type { StepOutcome } from '../pipeline/pipeline';
import { parseFragment, readConfig, unmetOptions } from './fragment';
import { kernelBuildEnv, kernelBuildKeyInput, kernelConfigKeyInput, kernelSourceKeyInput } from './kernel-keys';

/**
 * The guest kernel, in three content-addressed steps on the build host, like an image's:
 *
 *   kernel-source  Debian's linux-source-X.Y .deb at the pinned version, fetched by the build
 *                  host's apt (which checks it against the signed archive index); keeps the tarball
 *   kernel-config  `make allnoconfig` with the fragment; every option of the fragment must hold
 *   kernel-build   `make vmlinux` with that .config, with fixed build user, host and timestamp
 *
 * The tarball is unpacked in each step's own work directory and removed with it: only the
 * tarball (140 MB), the .config and vmlinux are kept.
 */

export const KernelSourceData = z.object({
  package: z.string(),
  version: z.string(),
  debSha256: Sha256Hex,
  tarball: z.string(),
});
export const KernelConfigData = z.object({ options: z.number(), configSha256: Sha256Hex });
export const KernelBuildData = z.object({
  file: z.literal('vmlinux'),
  sha256: Sha256Hex,
  sizeBytes: z.number(),
  configSha256: Sha256Hex,
  /** `make kernelrelease`: 6.1.192 */
  release: z.string(),
  /** The package and version it was built from, for manifests. */
  source: z.string(),
  buildSeconds: z.number(),
});
export type KernelSourceData = z.infer<typeof KernelSourceData>;
export type KernelConfigData = z.infer<typeof KernelConfigData>;
export type KernelBuildData = z.infer<typeof KernelBuildData>;

/** Programs a kernel build needs on the build host (Debian packages in parentheses in the error). */
const BUILD_TOOLS: Array<[string, string]> = [
  ['make', 'make'],
  ['gcc', 'gcc'],
  ['flex', 'flex'],
  ['bison', 'bison'],
  ['bc', 'bc'],
  ['perl', 'perl'],
  ['xz', 'xz-utils'],
  ['apt-get', 'apt'],
];

/** Where apt keeps the package lists it reads (Debian's default). */
const APT_LISTS = '/var/lib/apt/lists';
const aptCacheAnswers = new Map<string, Promise<string>>();

export class KernelPipeline {
  readonly store: ArtifactStore;

  constructor(
    private readonly runner: StepRunner,
    private readonly workspace: string,
    private readonly kernel: KernelSpec,
    private readonly clientEnv: Record<string, string> = {},
  ) {
    this.store = new ArtifactStore(runner, workspace);
  }

  /** Where the kernel is published for hosts: `<workspace>/vmlinux` (the seed's layout). */
  get kernelPath(): string {
    return path.posix.join(this.workspace, 'vmlinux');
  }

  private async checkTools(): Promise<void> {
    const missing: string[] = [];
    for (const [program, pkg] of BUILD_TOOLS) {
      const found = await this.runner.host.run(['sh', '-c', 'command -v "$1" >/dev/null', 'sh', program]);
      if (found.code !== 0) missing.push(`${program} (${pkg})`);
    }
    // objtool, built for every x86-64 kernel, needs libelf's headers.
    if (!(await this.runner.host.stat('/usr/include/libelf.h'))) missing.push('libelf.h (libelf-dev)');
    if (missing.length) {
      throw new BuildError(
        `the build host ${this.runner.host.description} lacks what a kernel build needs: ${missing.join(', ')}; install them (npm run setup does on this machine)`,
        'InvalidInput',
      );
    }
  }

  /** The sha256 the signed archive index gives for the pinned package version. */
  private async indexedSha256(): Promise<string> {
    const { package: pkg, version } = this.kernel;
    let shown = '';
    let why = '';
    try {
      shown = await this.aptCacheShow(`${pkg}=${version}`);
    } catch (err) {
      // apt-cache says "No packages found" for an unknown version; anything else is kept as the cause.
      why = (err as Error).message.split('\n')[0] ?? '';
    }
    const sum = /^SHA256: ([0-9a-f]{64})$/m.exec(shown)?.[1];
    if (!sum && why && !/No packages found|Can't select|Unable to locate/i.test(why)) {
      throw new Error(`cannot read the archive index for ${pkg} ${version} on the build host: ${why}`);
    }
    if (!sum) {
      // The archive moved on (security updates replace versions), but this version was fetched and
      // checked here before: its artifact keeps the sum the index gave then, and is reused.
      const kept = await this.keptSourceSha256();
      if (kept) return kept;
      const policy = await this.runner.read(['apt-cache', 'policy', pkg]).catch(() => '');
      const known = [...policy.matchAll(/^\s+(?:\*\*\* )?([0-9][^\s]*) \d+$/gm)].map((m) => m[1]).join(', ');
      throw new BuildError(
        `apt on the build host does not know ${pkg} ${version} (${known ? `it knows ${known}` : 'no version at all'}): ` +
          'run apt-get update there, or pin a version it knows in kernel.version',
        'InvalidInput',
      );
    }
    return sum;
  }

  /**
   * `apt-cache show`, answered once per build host, package version and state of its package
   * lists: without apt's binary cache it parses every list (about 0.4 s of CPU), and the boot step
   * of every image asks for the kernel's keys.
   */
  private async aptCacheShow(what: string): Promise<string> {
    const lists = await this.runner
      .read(['find', APT_LISTS, '-maxdepth', '1', '-type', 'f', '-printf', '%f %s %T@\n'])
      .catch(() => '');
    if (!lists) return this.runner.read(['apt-cache', 'show', what]);
    const memoKey = [this.runner.host.description, what, crypto.createHash('sha256').update(lists).digest('hex')].join(
      '\0',
    );
    let answer = aptCacheAnswers.get(memoKey);
    if (!answer) {
      // Shared by concurrent steps, so not tied to one step's cancellation (it takes a moment).
      answer = this.runner.read(['apt-cache', 'show', what], { signal: undefined });
      aptCacheAnswers.set(memoKey, answer);
      answer.catch(() => aptCacheAnswers.delete(memoKey));
    }
    return answer;
  }

  /** The index's sha256 recorded by an earlier kernel-source artifact of the pinned version, if any. */
  private async keptSourceSha256(): Promise<string | undefined> {
    const { package: pkg, version } = this.kernel;
    for (const { key } of await this.store.recorded('kernel-source').catch(() => [])) {
      const record = await this.store.keyRecord(key).catch(() => null);
      const input = record?.input as { package?: unknown; version?: unknown; debSha256?: unknown } | undefined;
      if (input?.package === pkg && input.version === version && typeof input.debSha256 === 'string')
        return input.debSha256;
    }
    return undefined;
  }

  async source(): Promise<StepOutcome<KernelSourceData>> {
    const { package: pkg, version } = this.kernel;
    this.runner.phase('reading the archive index');
    const debSha256 = await this.indexedSha256();
    const record = keyRecord('kernel-source', null, kernelSourceKeyInput({ pkg, version, debSha256 }), null);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      await this.checkTools();
      this.runner.phase(`apt-get download ${pkg}=${version}`);
      // apt checks the file against the signed index; the sum is checked again here.
      await this.runner.run(['apt-get', 'download', `${pkg}=${version}`], { cwd: work, env: this.clientEnv });
      const debs = (await this.runner.read(['find', work, '-maxdepth', '1', '-name', '*.deb']))
        .split('\n')
        .filter(Boolean);
      if (debs.length !== 1) throw new Error(`apt-get download left ${debs.length} .deb files in ${work}`);
      const deb = debs[0]!;
      const got = await sha256OnHost(this.runner, deb);
      if (got !== debSha256) {
        throw new BuildError(
          `${path.posix.basename(deb)} has sha256 ${got}, the archive index says ${debSha256}`,
          'ChecksumMismatch',
        );
      }
      this.runner.phase('unpacking the package');
      const unpacked = path.posix.join(work, 'deb');
      await this.runner.run(['dpkg-deb', '-x', deb, unpacked]);
      const tarballs = (
        await this.runner.read([
          'find',
          path.posix.join(unpacked, 'usr/src'),
          '-maxdepth',
          '1',
          '-name',
          'linux-source-*.tar.xz',
        ])
      )
        .split('\n')
        .filter(Boolean);
      if (tarballs.length !== 1)
        throw new BuildError(`${pkg} holds ${tarballs.length} source tarballs, expected one`, 'InvalidInput');
      await this.runner.run(['mv', tarballs[0]!, path.posix.join(work, 'linux-source.tar.xz')]);
      await this.runner.run(['rm', '-rf', '--one-file-system', unpacked, deb]);
      return { package: pkg, version, debSha256, tarball: 'linux-source.tar.xz' } satisfies KernelSourceData;
    });
    return { key: record.key, reused, data: KernelSourceData.parse(meta.data) };
  }

  /** Unpacks the source tarball of `sourceKey` into `<work>/src`. */
  private async unpack(sourceKey: string, work: string): Promise<string> {
    const meta = await this.store.lookup(sourceKey);
    if (!meta) throw new BuildError(`kernel source artifact ${sourceKey} is gone from the build host`, 'InvalidInput');
    const { tarball } = KernelSourceData.parse(meta.data);
    const src = path.posix.join(work, 'src');
    this.runner.phase('unpacking the kernel source');
    await this.runner.run(['mkdir', '-p', src]);
    await this.runner.run([
      'tar',
      '-xJf',
      path.posix.join(this.store.dir(sourceKey), tarball),
      '-C',
      src,
      '--strip-components=1',
    ]);
    return src;
  }

  async configure(sourceKey: string): Promise<StepOutcome<KernelConfigData>> {
    const fragment = this.kernel.fragment.content;
    const wanted = parseFragment(fragment);
    const record = keyRecord('kernel-config', sourceKey, kernelConfigKeyInput({ fragment }), null);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      await this.checkTools();
      const src = await this.unpack(sourceKey, work);
      const fragmentFile = path.posix.join(work, 'fragment.config');
      await this.runner.host.writeFile(fragmentFile, fragment);
      this.runner.phase('make allnoconfig with the fragment');
      await this.runner.run(['make', '-C', src, '-s', 'allnoconfig', `KCONFIG_ALLCONFIG=${fragmentFile}`]);
      const config = (await this.runner.host.readFile(path.posix.join(src, '.config'))).toString('utf8');
      const unmet = unmetOptions(wanted, readConfig(config));
      if (unmet.length) {
        throw new BuildError(
          `the kernel config does not honour ${unmet.length} option(s) of ${this.kernel.fragment.name} (a dependency is missing, or the option does not exist in ${this.kernel.package}): ${unmet.join('; ')}`,
          'InvalidInput',
        );
      }
      await this.runner.run(['cp', path.posix.join(src, '.config'), path.posix.join(work, 'config')]);
      await this.runner.run(['rm', '-rf', '--one-file-system', src]);
      return {
        options: wanted.size,
        configSha256: await sha256OnHost(this.runner, path.posix.join(work, 'config')),
      } satisfies KernelConfigData;
    });
    return { key: record.key, reused, data: KernelConfigData.parse(meta.data) };
  }

  async build(sourceKey: string, configKey: string): Promise<StepOutcome<KernelBuildData>> {
    const env = kernelBuildEnv(this.kernel);
    const record = keyRecord('kernel-build', configKey, kernelBuildKeyInput({ sourceKey, env }), null);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      await this.checkTools();
      const started = Date.now();
      const src = await this.unpack(sourceKey, work);
      await this.runner.run([
        'cp',
        path.posix.join(this.store.dir(configKey), 'config'),
        path.posix.join(src, '.config'),
      ]);
      const jobs = (await this.runner.read(['nproc'])).trim();
      this.runner.phase(`make -j${jobs} vmlinux`);
      await this.runner.run(['make', '-C', src, `-j${jobs}`, 'vmlinux'], { env });
      const release = (await this.runner.read(['make', '-C', src, '-s', 'kernelrelease'], { env })).trim();
      const out = path.posix.join(work, 'vmlinux');
      await this.runner.run(['cp', path.posix.join(src, 'vmlinux'), out]);
      await this.runner.run(['cp', path.posix.join(src, '.config'), path.posix.join(work, 'config')]);
      await this.runner.run(['rm', '-rf', '--one-file-system', src]);
      const sizeBytes = Number((await this.runner.read(['stat', '-c', '%s', out])).trim());
      return {
        file: 'vmlinux',
        sha256: await sha256OnHost(this.runner, out),
        sizeBytes,
        configSha256: await sha256OnHost(this.runner, path.posix.join(work, 'config')),
        release,
        source: `${this.kernel.package} ${this.kernel.version}`,
        buildSeconds: Math.round((Date.now() - started) / 1000),
      } satisfies KernelBuildData;
    });
    const data = KernelBuildData.parse(meta.data);
    // Published where hosts and the seed's commands look for it, with its .config beside it.
    const dir = this.store.dir(record.key);
    await publishImage(this.runner, path.posix.join(dir, 'vmlinux'), this.kernelPath, record.key, {
      kind: 'kernel',
      sha256: data.sha256,
      sizeBytes: data.sizeBytes,
      release: data.release,
      source: data.source,
      configSha256: data.configSha256,
      builtAt: meta.createdAt,
      artifactKey: record.key,
    });
    // Boot steps ask for the kernel too, maybe at once: a temp name of its own for each.
    const config = `${this.kernelPath}.config`;
    const tmp = `${config}.${crypto.randomBytes(4).toString('hex')}.tmp`;
    try {
      await this.runner.run(['cp', path.posix.join(dir, 'config'), tmp]);
      await this.runner.run(['mv', '-f', tmp, config]);
    } finally {
      await this.runner.run(['rm', '-f', tmp]);
    }
    return { key: record.key, reused, data };
  }
}
