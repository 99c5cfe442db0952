import * as fs from 'node:fs';
import * as path from 'node:path';
import { SYSTEM_PATH, type LanguageSpec } from '../config/schema';
import { ArchiveSnapshot as ArchiveSnapshotSchema, imageKey } from '../store/layout';
import { fileSha256, type BuildSettings } from './build-spec';
import { Archive } from './archive';
import { ArtifactStore } from './artifacts';
import { BuildError, type StepRunner } from './context';
import { checkX8664Executable } from './elf';
import {
  baseKeyInput,
  basePackages,
  customizeKeyInput,
  imageKeyInput,
  keyRecord,
  operatorKeyInput,
  runtimeKeyInput,
  runtimeUsesArchive,
  verifyKeyInput,
  type ArchiveSnapshot,
} from './step-keys';
import { ImageArtifactData, TreeOrigin, VerifyData, type ImageData } from './step-data';
import { OPERATOR_PATH, UNIT_PATH, UNIT_WANTS_LINK } from './render';
import { inspectTree } from './inspect';
import { installSource, sha256OnHost, type SourceRecord } from './sources';
import { publishedManifest, publishImage, type PublishedManifest } from './publish';
import { linkInTree, putInTree, writeInTree } from './tree-path';
import { cleanApt, copyTree, linkTree, withChrootSetup } from './tree-setup';
import {
  clampImageTimes,
  clampTreeTimes,
  e2fsEnv,
  imageUuid,
  installedPackages,
  mkfsArgv,
  settleTree,
  treeUsageMiB,
} from './reproducible';

export interface StepOutcome<D extends object = Record<string, unknown>> {
  key: string;
  reused: boolean;
  data: D;
}

/** Everything one build step needs: the build's settings, and the local files it pinned. */
export interface PipelineInput {
  config: BuildSettings;
  /** Local path of the operator binary (checked to be an x86-64 executable). */
  operatorPath: string;
  /** Local path of the keyring that signs the archive. */
  keyringPath: string;
  /** Download-client settings (proxies, registries) passed to curl, npm and go on the build host. */
  clientEnv?: Record<string, string>;
}

export type { ArchiveSnapshot } from './step-keys';

export class Pipeline {
  readonly store: ArtifactStore;
  private readonly workspace: string;
  private readonly archive: Archive;

  constructor(
    private readonly runner: StepRunner,
    private readonly input: PipelineInput,
  ) {
    this.workspace = input.config.workspace;
    this.store = new ArtifactStore(runner, this.workspace);
    this.archive = new Archive(runner, input.config.base, input.keyringPath, this.cacheDir, input.clientEnv);
  }

  private get cacheDir(): string {
    return path.posix.join(this.workspace, 'cache');
  }

  get imagesDir(): string {
    return path.posix.join(this.workspace, 'images');
  }

  private spec(language: string): LanguageSpec {
    const spec = this.input.config.languages[language];
    if (!spec) throw new BuildError(`language ${language} is not configured`, 'InvalidInput');
    return spec;
  }

  /** Checks what a build needs before any work: the operator binary, the keyring, the workspace. */
  async prepare(language: string): Promise<{ operatorSha256: string }> {
    this.spec(language);
    try {
      checkX8664Executable(this.input.operatorPath);
    } catch (err) {
      throw new BuildError((err as Error).message, 'InvalidOperatorBinary');
    }
    if (!fs.existsSync(this.input.keyringPath)) {
      throw new BuildError(
        `archive keyring ${this.input.keyringPath} is missing: run \`npm run setup\``,
        'InvalidInput',
      );
    }
    await this.runner.run(['mkdir', '-p', this.store.root, this.imagesDir, this.cacheDir]);
    return { operatorSha256: fileSha256(this.input.operatorPath) };
  }

  /** The base tree shared by every language: minbase + updates pocket + systemd-sysv, signed sources only. */
  async base(snapshot?: ArchiveSnapshot): Promise<StepOutcome> {
    const base = this.input.config.base;
    const mirror = await this.archive.mirror();
    this.runner.phase('reading the archive state');
    const archive = await this.archive.stateFor(snapshot);
    const keyring = await this.archive.keyringOnHost();
    const packages = basePackages(base);
    const record = keyRecord(
      'base',
      null,
      baseKeyInput({ base, mirror, archive, keyringSha256: keyring.sha256 }),
      null,
    );
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      const tree = path.posix.join(work, 'tree');
      const sources = this.archive.dists().map((d) => `deb ${mirror} ${d} ${base.components.join(' ')}`);
      this.runner.phase('mmdebstrap');
      // A private mount namespace: the kernel drops mmdebstrap's mounts even if it is killed.
      // prettier-ignore
      await this.runner.run([
        'unshare', '--mount', '--propagation', 'private', '--fork', '--kill-child',
        'mmdebstrap', `--variant=${base.variant}`, `--components=${base.components.join(',')}`,
        `--include=${packages.join(',')}`, `--keyring=${keyring.path}`, '--mode=root',
        base.suite, tree, ...sources,
      ], { env: this.input.clientEnv });
      // The build host's name must not leak into every image.
      await writeInTree(this.runner, tree, '/etc/hostname', 'localhost\n');
      return { suite: base.suite, mirror, archive, packages };
    });
    return { key: record.key, reused, data: meta.data };
  }

  async runtime(language: string, baseKey: string, snapshot?: ArchiveSnapshot): Promise<StepOutcome> {
    const spec = this.spec(language);
    const archive = runtimeUsesArchive(spec) ? await this.archive.stateFor(snapshot) : null;
    const record = keyRecord('runtime', baseKey, runtimeKeyInput({ spec, archive }), language);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      const tree = await copyTree(this.runner, this.store, baseKey, work);
      const installed: SourceRecord = {};
      await withChrootSetup(this.runner, tree, async () => {
        const ctx = { runner: this.runner, tree, cacheDir: this.cacheDir, clientEnv: this.input.clientEnv ?? {} };
        for (const source of spec.runtime) Object.assign(installed, await installSource(ctx, source));
        if (spec.packages.length)
          Object.assign(installed, await installSource(ctx, { kind: 'apt', packages: spec.packages, links: [] }));
        for (const file of spec.files) await writeInTree(this.runner, tree, file.path, file.content, file.mode);
        await cleanApt(this.runner, tree);
      });
      // The operator step links this tree: it must find no time of this build's clock to clamp in it.
      await clampTreeTimes(this.runner, tree, await this.archive.epochOf(await this.archiveOf(baseKey)));
      return { installed };
    });
    return { key: record.key, reused, data: meta.data };
  }

  async operator(language: string, runtimeKey: string, operatorSha256: string): Promise<StepOutcome> {
    const spec = this.spec(language);
    if (fileSha256(this.input.operatorPath) !== operatorSha256) {
      throw new BuildError(
        `operator binary ${this.input.operatorPath} changed during the build; start the build again`,
        'InvalidInput',
      );
    }
    const input = operatorKeyInput({ language, spec, operatorSha256 });
    const { unit, profile } = input;
    const record = keyRecord('operator', runtimeKey, input, language);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      const archive = await this.baseArchive(runtimeKey);
      const epoch = await this.archive.epochOf(archive);
      // Linked, not copied: this step only adds files and settles (see linkTree).
      const tree = await linkTree(this.runner, this.store, runtimeKey, work);
      this.runner.phase('installing the operator and its unit');
      const operator = await putInTree(this.runner, tree, OPERATOR_PATH, this.input.operatorPath, 0o755);
      await this.runner.run(['chmod', '0755', operator]);
      await writeInTree(this.runner, tree, UNIT_PATH, unit, 0o644);
      // An absolute target: it resolves inside the booted image, whatever the build host's layout.
      await linkInTree(this.runner, tree, UNIT_WANTS_LINK, UNIT_PATH);
      await writeInTree(this.runner, tree, `/etc/profile.d/${language}.sh`, profile, 0o644);
      // The last step that writes this tree: it leaves nothing of this build's machine or clock.
      await settleTree(this.runner, tree, epoch);
      return { operatorSha256, archive, epoch } satisfies TreeOrigin;
    });
    return { key: record.key, reused, data: meta.data };
  }

  /**
   * The archive snapshot the base under `runtimeKey` was built from, found through the runtime's
   * key record (which names the base) and the base's meta.json.
   */
  private async baseArchive(runtimeKey: string): Promise<ArchiveSnapshot> {
    const record = await this.store.keyRecord(runtimeKey);
    return this.archiveOf(record?.previous ?? null, runtimeKey);
  }

  /** The archive snapshot the base `baseKey` was built from (its meta.json). */
  private async archiveOf(baseKey: string | null, runtimeKey?: string): Promise<ArchiveSnapshot> {
    const base = baseKey ? await this.store.lookup(baseKey) : null;
    const archive = ArchiveSnapshotSchema.safeParse(base?.data.archive);
    if (!archive.success) {
      const what = runtimeKey ? `the runtime artifact ${runtimeKey} does not lead to` : `${baseKey} is not`;
      throw new BuildError(
        `${what} a base with an archive snapshot ` +
          '(built before artifacts kept their key input?): remove it from the artifact store and build again',
        'InvalidInput',
      );
    }
    return archive.data;
  }

  /** Runs the configured version checks inside the finished tree and checks what booting needs. */
  async verify(language: string, operatorKey: string): Promise<StepOutcome<VerifyData>> {
    const spec = this.spec(language);
    const record = keyRecord('verify', operatorKey, verifyKeyInput({ spec }), language);
    const { meta, reused } = await this.store.ensure(record, async () => {
      const tree = this.store.tree(operatorKey);
      this.runner.phase('inspecting the tree');
      const problems = await inspectTree(this.runner, tree, language, spec);
      if (problems.length)
        throw new BuildError(`${language} image is not bootable: ${problems.join('; ')}`, 'VerificationFailed');
      const env = verifyEnvironment(spec);
      const versions: string[] = [];
      for (const check of spec.verify) {
        this.runner.phase(`running ${check.argv.join(' ')}`);
        const { code, stdout, stderr } = await this.runner.chrootRead(tree, ['env', '-i', ...env, ...check.argv]);
        const line = (stdout.trim() ? stdout : stderr).trim().split('\n')[0] ?? '';
        if (code !== 0 || !new RegExp(check.expect).test(line)) {
          throw new BuildError(
            `${language}: \`${check.argv.join(' ')}\` ${code === 0 ? `printed "${line.slice(0, 200)}"` : `failed (${code}): ${line.slice(0, 200)}`}, expected /${check.expect}/`,
            'VerificationFailed',
          );
        }
        versions.push(line);
      }
      return { versions };
    });
    return { key: record.key, reused, data: VerifyData.parse(meta.data) };
  }

  imagePath(language: string): string {
    return path.posix.join(this.imagesDir, imageKey(language));
  }

  /** The archive's state now: for a build to pin at its start. */
  archiveSnapshot(): Promise<ArchiveSnapshot> {
    return this.archive.state();
  }

  /** What the build wrote beside the published image of `language`, if it has been built. */
  publishedManifest(language: string): Promise<PublishedManifest | null> {
    return publishedManifest(this.runner, this.imagePath(language));
  }

  /**
   * Makes the ext4 image from the finished tree with `mkfs.ext4 -d` (no loop mount), sized from
   * the content plus headroom unless a fixed size is configured, and checks it with `e2fsck -fn`.
   * UUID and hash seed derive from the key, every time in it from the archive snapshot (the tree's
   * epoch, see reproducible.ts), and its size from the tree's content: equal trees give equal images.
   */
  async image(
    language: string,
    verifyKey: string,
    operatorKey: string,
    customizations: string[][] = [],
  ): Promise<StepOutcome<ImageData>> {
    const { sizeMiB, headroomMiB } = this.input.config.image;
    const record = keyRecord(
      'image',
      verifyKey,
      imageKeyInput({ language, image: this.input.config.image, operatorKey }),
      language,
    );
    const { key } = record;
    const file = imageKey(language);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      const origin = await this.treeOrigin(language, operatorKey);
      const tree = this.store.tree(operatorKey);
      this.runner.phase('measuring the tree');
      const usedMiB = await treeUsageMiB(this.runner, tree);
      // ext4 metadata (inode tables, journal) takes roughly a tenth plus a fixed part.
      const neededMiB = Math.ceil(usedMiB * 1.1) + 128;
      const size = sizeMiB ?? neededMiB + headroomMiB;
      if (size < neededMiB) {
        throw new BuildError(
          `${language}: image.sizeMiB ${size} is too small for ${usedMiB} MiB of files (needs ${neededMiB})`,
          'InvalidInput',
        );
      }
      const out = path.posix.join(work, file);
      this.runner.phase(`mkfs.ext4 ${size} MiB from ${usedMiB} MiB of files`);
      await this.runner.run(mkfsArgv(tree, out, size, imageUuid(key)), { env: e2fsEnv(origin.epoch) });
      this.runner.phase("setting every inode's atime and ctime to the epoch");
      await clampImageTimes(this.runner, out, origin.epoch, work);
      this.runner.phase('e2fsck -fn');
      await this.runner.run(['e2fsck', '-fn', out]);
      this.runner.phase('sha256');
      const sha256 = await sha256OnHost(this.runner, out);
      const sizeBytes = Number((await this.runner.read(['stat', '-c', '%s', out])).trim());
      this.runner.phase('listing the packages');
      const packages = await installedPackages(this.runner, tree);
      return { file, sizeBytes, sizeMiB: size, usedMiB, sha256, origin: { ...origin, packages } };
    });
    const { origin, ...artifact } = ImageArtifactData.parse(meta.data);
    const verified = await this.store.lookup(verifyKey);
    const versions = verified ? VerifyData.parse(verified.data).versions : [];
    await publishImage(this.runner, path.posix.join(this.store.dir(key), file), this.imagePath(language), key, {
      language,
      sizeBytes: artifact.sizeBytes,
      sha256: artifact.sha256,
      versions,
      builtAt: meta.createdAt,
      artifactKey: key,
      // The tree the image was made from: where `rootfs customize` starts.
      treeKey: operatorKey,
      ...(customizations.length ? { customizations } : {}),
      ...(origin ? { archive: origin.archive, packages: origin.packages, operatorSha256: origin.operatorSha256 } : {}),
    });
    return { key, reused, data: { ...artifact, path: this.imagePath(language), versions } };
  }

  /** What the finished tree `treeKey` was built from; a tree settled before this was recorded must be built again. */
  private async treeOrigin(language: string, treeKey: string): Promise<TreeOrigin> {
    const meta = await this.store.lookup(treeKey);
    const origin = TreeOrigin.safeParse(meta?.data);
    if (!origin.success) {
      throw new BuildError(
        `the tree ${treeKey} was built before trees recorded their archive snapshot and epoch: ` +
          `build ${language} again (rootfs create ${language})`,
        'InvalidInput',
      );
    }
    return origin.data;
  }

  /**
   * A one-off change: runs `argv` in a copy of the tree behind the published image of `language`
   * (as in the runtime step: no services start, DNS works, apt caches are cleaned after) and keeps
   * the result as a new artifact. Verify and image steps then run on it as on any tree.
   */
  async customize(
    language: string,
    argv: string[],
    output?: (chunk: Buffer) => void,
  ): Promise<StepOutcome & { fromKey: string; customizations: string[][] }> {
    this.spec(language);
    const manifest = await this.publishedManifest(language);
    if (!manifest)
      throw new BuildError(`${language} has no image yet: build it first (rootfs create ${language})`, 'InvalidInput');
    const fromKey = manifest.treeKey;
    if (!fromKey || !(await this.store.lookup(fromKey))) {
      throw new BuildError(
        `the tree behind ${this.imagePath(language)} is not in the artifact store: rebuild it (rootfs create ${language})`,
        'InvalidInput',
      );
    }
    const record = keyRecord('customize', fromKey, customizeKeyInput({ argv }), language);
    const { meta, reused } = await this.store.ensure(record, async (work) => {
      const origin = await this.treeOrigin(language, fromKey);
      const tree = await copyTree(this.runner, this.store, fromKey, work);
      await withChrootSetup(this.runner, tree, async () => {
        this.runner.phase(`running ${argv.join(' ')}`);
        await this.runner.chroot(
          tree,
          ['env', '-i', ...verifyEnvironment(this.spec(language)), ...argv],
          output ? { onStdout: output, onStderr: output } : {},
        );
        await cleanApt(this.runner, tree);
      });
      await settleTree(this.runner, tree, origin.epoch);
      return { argv, fromKey, ...origin };
    });
    return {
      key: record.key,
      reused,
      data: meta.data,
      fromKey,
      customizations: [...(manifest.customizations ?? []), argv],
    };
  }
}

/** `env -i` arguments for version checks: the unit's environment with a PATH that finds the runtime. */
export function verifyEnvironment(spec: LanguageSpec): string[] {
  const env: Record<string, string> = { HOME: '/root', LC_ALL: 'C', ...spec.environment };
  env.PATH = spec.environment.PATH ?? [...spec.path, SYSTEM_PATH].join(':');
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}
