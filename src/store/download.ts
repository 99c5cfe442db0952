import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { describeError } from './client';
import { imagesDir, type StoreContext } from './images';
import { imageKey, IMAGE_KEY_PATTERN, KERNEL_KEY } from './layout';
import { listBucket, type ListedObject } from './list';
import { SparseWriter } from './sparse';

export const DEFAULT_LINK_LANGUAGE = 'python';

export interface SyncedFile {
  key: string;
  path: string;
  status: 'unchanged' | 'downloaded' | 'failed';
  bytes: number;
  error?: string;
}

export interface SyncReport {
  files: SyncedFile[];
  bytesTransferred: number;
  /** The rootfs.ext4 link, when the default image exists. */
  link?: string;
}

interface CacheEntry {
  size: number;
  mtimeMs: number;
  ino: number;
  sha256: string;
}

/** sha256 of local files, remembered by size, mtime and inode so unchanged files are not re-read. */
class DigestCache {
  private entries: Record<string, CacheEntry> = {};
  constructor(private readonly file: string) {
    try {
      this.entries = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, CacheEntry>;
    } catch {
      this.entries = {};
    }
  }

  async sha256(p: string): Promise<string | undefined> {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return undefined;
    }
    const hit = this.entries[p];
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino) return hit.sha256;
    const hash = crypto.createHash('sha256');
    for await (const chunk of fs.createReadStream(p, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) hash.update(chunk);
    const sha256 = hash.digest('hex');
    this.remember(p, sha256);
    return sha256;
  }

  remember(p: string, sha256: string): void {
    const st = fs.statSync(p);
    this.entries[p] = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256 };
  }

  save(): void {
    fs.writeFileSync(`${this.file}.tmp`, JSON.stringify(this.entries));
    fs.renameSync(`${this.file}.tmp`, this.file);
  }
}

/**
 * The sha256 the bucket vouches for: the image's manifest, else the object's own metadata. An
 * image whose object no longer matches its manifest (overwritten behind its back) is refused.
 */
async function expectedSha256(ctx: StoreContext, o: ListedObject): Promise<string | undefined> {
  let head;
  try {
    head = await ctx.client.send(new HeadObjectCommand({ Bucket: ctx.config.bucket, Key: o.key }));
  } catch (err) {
    throw describeError(err, ctx.config, o.key);
  }
  const stored = head.Metadata?.sha256;
  if (!o.manifest) return stored;
  if (stored !== o.manifest.sha256 || head.ContentLength !== o.manifest.sizeBytes) {
    throw new Error(
      `s3://${ctx.config.bucket}/${o.key}: checksum mismatch: the manifest says sha256 ${o.manifest.sha256} (${o.manifest.sizeBytes} bytes), ` +
        `the object says ${stored ?? 'nothing'} (${head.ContentLength} bytes); kept the local copy`,
    );
  }
  return o.manifest.sha256;
}

async function fetchVerified(ctx: StoreContext, o: ListedObject, dest: string, sha256: string): Promise<number> {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${crypto.randomBytes(4).toString('hex')}.part`);
  const writer = await SparseWriter.create(tmp);
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  try {
    const res = await ctx.client.send(new GetObjectCommand({ Bucket: ctx.config.bucket, Key: o.key }));
    ctx.progress?.start(o.key, res.ContentLength ?? o.sizeBytes);
    for await (const chunk of res.Body as AsyncIterable<Buffer>) {
      hash.update(chunk);
      await writer.write(chunk);
      bytes += chunk.length;
      ctx.progress?.advance(o.key, chunk.length);
    }
    await writer.finish();
  } catch (err) {
    await writer.discard();
    fs.rmSync(tmp, { force: true });
    throw describeError(err, ctx.config, o.key);
  }
  const actual = hash.digest('hex');
  if (actual !== sha256) {
    fs.rmSync(tmp, { force: true });
    throw new Error(`s3://${ctx.config.bucket}/${o.key}: checksum mismatch: the bucket says sha256 ${sha256}, the content is ${actual}; kept the local copy`);
  }
  fs.renameSync(tmp, dest);
  return bytes;
}

/**
 * `download`: a sync of the bucket into the workspace. Only files whose content differs (by
 * sha256) move; each is written sparse to a temp file, verified, then renamed into place, so a
 * failed or corrupt download never replaces a good local file. Then `images/rootfs.ext4`
 * points at the python image when there is one.
 */
export async function syncDown(ctx: StoreContext): Promise<SyncReport> {
  const listing = await listBucket(ctx);
  const wanted = listing.objects.filter((o) => o.key === KERNEL_KEY || IMAGE_KEY_PATTERN.test(o.key));
  fs.mkdirSync(imagesDir(ctx.workspace), { recursive: true });
  const cache = new DigestCache(path.join(ctx.workspace, '.sync-digests.json'));
  const files: SyncedFile[] = [];
  for (const o of wanted) {
    const dest = o.key === KERNEL_KEY ? path.join(ctx.workspace, KERNEL_KEY) : path.join(imagesDir(ctx.workspace), o.key);
    try {
      const expected = await expectedSha256(ctx, o);
      if (!expected) throw new Error(`s3://${ctx.config.bucket}/${o.key} has no manifest or sha256 to verify it against; not downloaded`);
      if ((await cache.sha256(dest)) === expected) {
        files.push({ key: o.key, path: dest, status: 'unchanged', bytes: 0 });
        ctx.progress?.finish(o.key, 'unchanged');
        continue;
      }
      const bytes = await fetchVerified(ctx, o, dest, expected);
      cache.remember(dest, expected);
      files.push({ key: o.key, path: dest, status: 'downloaded', bytes });
      ctx.progress?.finish(o.key, 'downloaded');
    } catch (err) {
      files.push({ key: o.key, path: dest, status: 'failed', bytes: 0, error: (err as Error).message });
      ctx.progress?.finish(o.key, `FAILED: ${(err as Error).message}`);
    }
  }
  cache.save();
  const report: SyncReport = { files, bytesTransferred: files.reduce((n, f) => n + f.bytes, 0) };
  const target = imageKey(DEFAULT_LINK_LANGUAGE);
  if (fs.existsSync(path.join(imagesDir(ctx.workspace), target))) {
    const link = path.join(imagesDir(ctx.workspace), 'rootfs.ext4');
    const tmp = `${link}.${process.pid}.tmp`;
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(target, tmp);
    fs.renameSync(tmp, link);
    report.link = link;
  }
  return report;
}
