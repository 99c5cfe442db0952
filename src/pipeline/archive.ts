import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BuildSettings } from './build-spec';
import type { StepRunner } from './context';
import { debootstrapDefaultMirror } from './mirror';
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

  /** sha256 of each dist's signed InRelease now: the archive's state, for a build to pin at its start. */
  async state(): Promise<ArchiveSnapshot> {
    const mirror = await this.mirror();
    const state: Record<string, string> = {};
    for (const dist of this.dists()) {
      const url = `${mirror}/dists/${dist}/InRelease`;
      const text = await this.runner.read(
        ['curl', '--fail', '--silent', '--show-error', '--location', '--retry', '3', '--', url],
        {
          env: this.clientEnv,
        },
      );
      state[dist] = crypto.createHash('sha256').update(text).digest('hex');
    }
    return state;
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
