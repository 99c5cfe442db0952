import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { ArchiveSnapshot as ArchiveSnapshotSchema } from '../store/layout';
import type { BuildSettings } from './build-spec';
import { BuildError, type StepRunner } from './context';
import { debootstrapDefaultMirror } from './mirror';
import { archiveEpoch } from './reproducible';
import { archiveDists, type ArchiveSnapshot } from './step-keys';

/**
 * The apt archive as the build host sees it: its mirror, its state (what an apt step's key
 * includes) and the keyring that signs it, put on the build host once.
 */
export class Archive {
  private mirrorOnce?: Promise<string>;

  constructor(
    private readonly runner: StepRunner,
    private readonly base: BuildSettings['base'],
    private readonly keyringPath: string,
    private readonly cacheDir: string,
    private readonly clientEnv?: Record<string, string>,
  ) {}

  /** The configured mirror, else the build host's debootstrap default (asked once per step). */
  mirror(): Promise<string> {
    const { base } = this;
    // The build host's debootstrap, not this worker's: an SSH build host may have another one.
    this.mirrorOnce ??= (async () =>
      (
        base.mirror ?? (await debootstrapDefaultMirror((argv, env) => this.runner.read(argv, { env }), base.suite))
      ).replace(/\/+$/, ''))();
    return this.mirrorOnce;
  }

  dists(): string[] {
    return archiveDists(this.base);
  }

  /**
   * The archive state an apt step's key includes: the build's snapshot when it has one (taken once
   * by createAllRootfs, so that an archive publish in the middle of a build cannot split the shared
   * base in two), else read now. A snapshot of other dists than configured is not used.
   */
  async stateFor(snapshot?: ArchiveSnapshot): Promise<Record<string, string>> {
    const dists = this.dists();
    if (snapshot && Object.keys(snapshot).sort().join() === [...dists].sort().join()) return snapshot;
    return this.state();
  }

  /**
   * sha256 of each dist's signed InRelease now: the archive's state, for a build to pin at its
   * start. Each InRelease is kept in the build host's cache under its sha256, so that the epoch of
   * a snapshot (`epochOf`) can be read later, whatever the archive has published since.
   */
  async state(): Promise<ArchiveSnapshot> {
    const state: Record<string, string> = {};
    for (const dist of this.dists()) {
      const text = await this.fetchInRelease(dist);
      const sha256 = crypto.createHash('sha256').update(text).digest('hex');
      await this.keepInRelease(sha256, text);
      state[dist] = sha256;
    }
    return state;
  }

  /**
   * The time a snapshot's images are clamped to: the newest `Date:` of its InRelease files (see
   * reproducible.ts), read from the cache `state()` fills, else fetched now. An InRelease that is
   * no longer what the snapshot names (the archive published since, on a host that did not take
   * the snapshot) cannot give it: the build must start again with a new snapshot.
   */
  async epochOf(snapshot: ArchiveSnapshot): Promise<number> {
    const texts: string[] = [];
    // Its names reach a URL and its sums a path: checked, whoever hands the snapshot in.
    const checked = ArchiveSnapshotSchema.safeParse(snapshot);
    if (!checked.success)
      throw new BuildError(`not an archive snapshot: ${z.prettifyError(checked.error)}`, 'InvalidInput');
    for (const [dist, sha256] of Object.entries(checked.data)) {
      const cached = this.inReleasePath(sha256);
      if (await this.runner.host.stat(cached)) {
        const text = (await this.runner.host.readFile(cached)).toString('utf8');
        if (crypto.createHash('sha256').update(text).digest('hex') === sha256) {
          texts.push(text);
          continue;
        }
      }
      const text = await this.fetchInRelease(dist);
      const now = crypto.createHash('sha256').update(text).digest('hex');
      if (now !== sha256) {
        throw new BuildError(
          `the ${dist} InRelease is no longer the one this build's archive snapshot names (sha256 ${sha256}, ` +
            `now ${now}) and no copy of it is cached on the build host: start the build again`,
          'ChecksumMismatch',
        );
      }
      await this.keepInRelease(sha256, text);
      texts.push(text);
    }
    try {
      return archiveEpoch(texts);
    } catch (err) {
      throw new BuildError(
        `cannot take the epoch from the archive snapshot: ${(err as Error).message}`,
        'InvalidInput',
      );
    }
  }

  private async fetchInRelease(dist: string): Promise<string> {
    const url = `${await this.mirror()}/dists/${dist}/InRelease`;
    return this.runner.read(['curl', '--fail', '--silent', '--show-error', '--location', '--retry', '3', '--', url], {
      env: this.clientEnv,
    });
  }

  private inReleasePath(sha256: string): string {
    return path.posix.join(this.cacheDir, 'inrelease', `${sha256}.InRelease`);
  }

  /** Content-addressed: written once, through a temp name (two builds may write it at once). */
  private async keepInRelease(sha256: string, text: string): Promise<void> {
    const file = this.inReleasePath(sha256);
    if (await this.runner.host.stat(file)) return;
    await this.runner.run(['mkdir', '-p', path.posix.dirname(file)]);
    const tmp = `${file}.${crypto.randomBytes(4).toString('hex')}.tmp`;
    await this.runner.host.writeFile(tmp, text);
    await this.runner.run(['mv', '-f', tmp, file]);
  }

  /** Puts the keyring on the build host (content-addressed, so it is copied once). */
  async keyringOnHost(): Promise<{ path: string; sha256: string }> {
    const sha256 = crypto.createHash('sha256').update(fs.readFileSync(this.keyringPath)).digest('hex');
    const remote = path.posix.join(this.cacheDir, 'keyrings', `${sha256}.gpg`);
    if (!(await this.runner.host.stat(remote))) {
      await this.runner.run(['mkdir', '-p', path.posix.dirname(remote)]);
      // Concurrent builds may copy it at once: each through its own temp name.
      const tmp = `${remote}.${crypto.randomBytes(4).toString('hex')}.tmp`;
      await this.runner.host.putFile(this.keyringPath, tmp, 0o644);
      await this.runner.run(['mv', '-f', tmp, remote]);
    }
    return { path: remote, sha256 };
  }
}
