import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { KEY_PATTERN, stepKey } from './keys';
import { KeyRecord } from './step-keys';
import { check } from '../host';
import { WouldBuild, type StepRunner } from './context';

/**
 * Content-addressed step outputs on the build host, under `<workspace>/artifacts`:
 *
 *   artifacts/<key>/meta.json   what the step produced (small JSON)
 *   artifacts/<key>/key-input.json  what the key hashes (a KeyRecord): why this step ran, for `rootfs explain`
 *   artifacts/<key>/tree/       a root filesystem tree (base, runtime, operator steps)
 *   artifacts/<key>/<file>      a file (the ext4 image)
 *   artifacts/.tmp/<key>.<rand> a step at work; published by one rename, so a key that exists is complete
 *   artifacts/.locks/<key>      held while a step builds that key (two builds may share the base)
 */

export interface ArtifactMeta {
  key: string;
  step: string;
  createdAt: string;
  /** Step-specific results (versions, sizes, checksums): small values only. */
  data: Record<string, unknown>;
}

/** A lock whose holder stopped touching it this long ago belongs to a dead run. */
const STALE_LOCK_SECONDS = 30;
const LOCK_TOUCH_MS = 5_000;

export class ArtifactStore {
  readonly root: string;

  constructor(
    private readonly runner: StepRunner,
    workspace: string,
  ) {
    this.root = path.posix.join(workspace, 'artifacts');
  }

  private check(key: string): string {
    if (!KEY_PATTERN.test(key)) throw new Error(`not a step key: ${key}`);
    return key;
  }

  dir(key: string): string {
    return path.posix.join(this.root, this.check(key));
  }

  tree(key: string): string {
    return path.posix.join(this.dir(key), 'tree');
  }

  /** The published artifact's metadata, or null when the key was never built. */
  async lookup(key: string): Promise<ArtifactMeta | null> {
    const metaFile = path.posix.join(this.dir(key), 'meta.json');
    if (!(await this.runner.host.stat(metaFile))) return null;
    return JSON.parse((await this.runner.host.readFile(metaFile)).toString('utf8')) as ArtifactMeta;
  }

  /**
   * What the artifact's key hashes; null when the key was never built, or was built before
   * artifacts kept it. A record that does not hash to its key is refused.
   */
  async keyRecord(key: string): Promise<KeyRecord | null> {
    const file = path.posix.join(this.dir(key), 'key-input.json');
    if (!(await this.runner.host.stat(file))) return null;
    let record: KeyRecord;
    try {
      record = KeyRecord.parse(JSON.parse((await this.runner.host.readFile(file)).toString('utf8')));
    } catch (err) {
      throw new Error(`${file} is not a key record: ${(err as Error).message}`, { cause: err });
    }
    if (record.key !== key || stepKey(record.step, record.previous, record.input) !== key) {
      throw new Error(`${file} does not hash to ${key}: it was changed`);
    }
    return record;
  }

  /**
   * The artifacts of `step` that kept their key record, newest first, with the time each was
   * published (seconds). One `find` on the build host, whatever the number of artifacts.
   */
  async recorded(step: string): Promise<Array<{ key: string; time: number }>> {
    const prefix = `${step}-`;
    // prettier-ignore
    const out = await this.runner
      .read([
        'find', this.root, '-mindepth', '2', '-maxdepth', '2',
        '-name', 'key-input.json', '-path', `${this.root}/${prefix}*`, '-printf', '%T@ %h\n',
      ])
      .catch((err: Error) => {
        throw new Error(`cannot list the ${step} artifacts under ${this.root}: ${err.message}`, { cause: err });
      });
    return out
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [time, dir] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
        return { key: path.posix.basename(dir), time: Number(time) };
      })
      .filter((a) => KEY_PATTERN.test(a.key) && a.key.startsWith(prefix) && Number.isFinite(a.time))
      .sort((a, b) => b.time - a.time || (a.key < b.key ? -1 : 1));
  }

  /**
   * Builds `record.key` with `build(workDir)` unless it exists. The work happens in a temp dir that
   * only a completed build renames into place, with its meta.json and key record; a lock keeps two
   * builds of one key from racing, and whatever a dead run left of this key is removed first.
   */
  async ensure(
    record: KeyRecord,
    build: (workDir: string) => Promise<Record<string, unknown>>,
  ): Promise<{ meta: ArtifactMeta; reused: boolean }> {
    const { key, step } = record;
    if (stepKey(record.step, record.previous, record.input) !== key)
      throw new Error(`the key record of ${key} does not hash to it`);
    const existing = await this.lookup(key);
    if (existing) return { meta: existing, reused: true };
    if (this.runner.probeOnly) throw new WouldBuild(step, key);
    const release = await this.lock(key);
    try {
      const raced = await this.lookup(key);
      if (raced) return { meta: raced, reused: true };
      await this.removeLeftovers(key);
      const work = path.posix.join(this.root, '.tmp', `${key}.${crypto.randomBytes(4).toString('hex')}`);
      await this.runner.run(['mkdir', '-p', work]);
      try {
        const data = await build(work);
        const meta: ArtifactMeta = { key, step, createdAt: new Date().toISOString(), data };
        await this.runner.host.writeFile(path.posix.join(work, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
        await this.runner.host.writeFile(
          path.posix.join(work, 'key-input.json'),
          JSON.stringify(record, null, 2) + '\n',
        );
        await this.runner.run(['sync', '-f', work]);
        await this.runner.run(['mv', '-T', work, this.dir(key)]);
        return { meta, reused: false };
      } catch (err) {
        await this.removeTree(work).catch(() => {});
        throw err;
      }
    } finally {
      await release();
    }
  }

  /**
   * rm that never crosses into a mount a crashed chroot left behind. It runs without the
   * step's abort signal: cleaning up after a cancelled step must still happen.
   */
  async removeTree(dir: string): Promise<void> {
    if (!dir.startsWith(`${this.root}/`)) throw new Error(`refusing to remove ${dir}: outside ${this.root}`);
    await check(this.runner.host, ['rm', '-rf', '--one-file-system', dir]);
  }

  private async removeLeftovers(key: string): Promise<void> {
    const tmp = path.posix.join(this.root, '.tmp');
    const found = await this.runner
      .read(['find', tmp, '-mindepth', '1', '-maxdepth', '1', '-name', `${key}.*`])
      .catch(() => '');
    for (const dir of found.split('\n').filter(Boolean)) await this.removeTree(dir);
  }

  private async lock(key: string): Promise<() => Promise<void>> {
    const locks = path.posix.join(this.root, '.locks');
    const lock = path.posix.join(locks, key);
    await this.runner.run(['mkdir', '-p', locks, path.posix.join(this.root, '.tmp')]);
    for (;;) {
      this.runner.signal?.throwIfAborted();
      const { code } = await this.runner.host.run(['mkdir', lock], { signal: this.runner.signal });
      if (code === 0) break;
      // Held: by a live build (it touches the lock) or a dead one (the lock goes stale).
      const stale = await this.runner
        .read(['find', lock, '-maxdepth', '0', '-not', '-newermt', `-${STALE_LOCK_SECONDS} seconds`])
        .catch(() => '');
      if (stale.trim()) {
        await this.runner.run(['rmdir', lock]).catch(() => {});
        continue;
      }
      this.runner.phase(`waiting for another build of ${key}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    const timer = setInterval(() => void this.runner.host.run(['touch', lock]).catch(() => {}), LOCK_TOUCH_MS);
    return async () => {
      clearInterval(timer);
      await this.runner.host.run(['rmdir', lock]).catch(() => {});
    };
  }
}
