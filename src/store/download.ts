import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_RETRY, send, statObject, withRetry, type StoreContext } from './client';
import { fileDigest, rememberDigest } from './digest';
import { brokeMidway, StoreError, where } from './errors';
import {
  DEFAULT_LANGUAGE,
  DEFAULT_LINK,
  IMAGE_KEY_PATTERN,
  imageKey,
  imagesDir,
  localPathOf,
  OLD_LINK,
  type Manifest,
} from './layout';
import { listHeads, planBlocks, shareFrames, shortName, syncMany, type BlockPlan } from './blocks';
import { listBucket, type ListedObject } from './list';
import { track } from './progress';
import { SparseWriter } from './sparse';

export interface SyncedFile {
  key: string;
  path: string;
  /** From the block store (only missing blocks fetched), or the plain object (all of it). */
  via?: 'blocks' | 'object';
  /** Blocks: taken from files this host had; fetched. */
  blocksLocal?: number;
  blocksFetched?: number;
  /** The version installed (block store): its short name. */
  version?: string;
  /** `failed`: not downloaded (no manifest, checksum mismatch, error); the local file is as it was. */
  status: 'unchanged' | 'downloaded' | 'failed';
  sizeBytes: number;
  /** Bytes received for this file. */
  bytes: number;
  seconds: number;
  error?: string;
}

export interface SyncReport {
  bucket: string;
  files: SyncedFile[];
  bytesTransferred: number;
  /** False when any file failed. */
  ok: boolean;
  /** The path of the default link, `<workspace>/rootfs.ext4`, when the default language's image is present. */
  link?: string;
  /** What the link points at, e.g. `images/rootfs-python.ext4`. */
  linkTarget?: string;
  /** Why the default link was left alone, when it was. */
  linkProblem?: string;
  /** The link of earlier versions, `images/rootfs.ext4`, when this sync removed it. */
  oldLinkRemoved?: string;
}

export interface SyncOptions {
  /** The image `<workspace>/rootfs.ext4` points at; default python. */
  defaultLanguage?: string;
  /** Told, before anything is fetched, what the block store's files will take. */
  onPlan?: (plans: BlockPlan[]) => void;
}

const TEMP_SUFFIX = '.partial';
const TEMP_PATTERN = /^\.(vmlinux|rootfs-[a-z0-9-]+\.ext4)\.[0-9a-f]{8}\.partial$/;
/** A temp file untouched this long belongs to a download that died (a download writes every few ms). */
const STALE_TEMP_MS = 10 * 60 * 1000;
const WRITE_BATCH = 1 << 20;

function removeStaleTemps(dir: string): void {
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    if (!TEMP_PATTERN.test(name)) continue;
    const file = path.join(dir, name);
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (st && Date.now() - st.mtimeMs > STALE_TEMP_MS) fs.rmSync(file, { force: true });
  }
}

/**
 * Streams the object into a temp file beside `dest` (sparse), checks length and sha256 against
 * the manifest, and only then renames it over `dest`: a failed or corrupt download never
 * replaces a good local file. `If-Match` pins the object checked, should it change meanwhile.
 */
/**
 * The server broke off the transfer of this object (the connection reset while it was asked for
 * or sent it), although it had just answered for the same object: retried like any broken
 * transfer, but when it breaks every time, the object itself is the likely cause (a server that
 * checks its data at rest, as MinIO does, stops sending where the data is damaged).
 */
class BodyBrokenOff extends StoreError {
  constructor(
    cause: StoreError,
    readonly received: number,
  ) {
    super(cause.kind, cause.userMessage, { bucket: cause.bucket, key: cause.key, transient: cause.transient, cause });
  }
}

async function fetchVerified(
  target: StoreContext,
  o: ListedObject,
  m: Manifest,
  dest: string,
  etag: string | undefined,
): Promise<number> {
  const tmp = path.join(
    path.dirname(dest),
    `.${path.basename(dest)}.${crypto.randomBytes(4).toString('hex')}${TEMP_SUFFIX}`,
  );
  const hash = crypto.createHash('sha256');
  const progress = track(target.progress, o.key, 'download', o.sizeBytes);
  const writer = await SparseWriter.create(tmp);
  let received = 0;
  try {
    await send(target, { key: o.key, verb: 'download', action: 's3:GetObject' }, async (c) => {
      const res = await c.send(new GetObjectCommand({ Bucket: target.config.bucket, Key: o.key, IfMatch: etag }), {
        abortSignal: target.signal,
      });
      let batch: Buffer[] = [];
      let batched = 0;
      const flush = async () => {
        if (!batched) return;
        const buf = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
        batch = [];
        batched = 0;
        await writer.write(buf);
      };
      for await (const chunk of res.Body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        received += chunk.length;
        progress.add(chunk.length);
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= WRITE_BATCH) await flush();
      }
      await flush();
    });
    const length = await writer.finish();
    const sha256 = hash.digest('hex');
    if (length !== m.sizeBytes || sha256 !== m.sha256) {
      throw new StoreError(
        'checksum',
        `Cannot download ${where(target.config, o.key)}: its content (sha256 ${sha256.slice(0, 12)}…, ${length} bytes) does not match its manifest (sha256 ${m.sha256.slice(0, 12)}…, ${m.sizeBytes} bytes)${fs.existsSync(dest) ? '; the local copy was kept' : ''}.`,
        { bucket: target.config.bucket, key: o.key },
      );
    }
    fs.renameSync(tmp, dest);
    rememberDigest(dest, { sizeBytes: length, sha256 });
    progress.end();
    return received;
  } catch (err) {
    await writer.close();
    fs.rmSync(tmp, { force: true });
    if (err instanceof StoreError && brokeMidway(err) && !target.signal?.aborted)
      throw new BodyBrokenOff(err, received);
    throw err;
  }
}

/** A failure that ends the whole sync rather than one file's: the bucket, credentials, network, or a stop. */
const FATAL_KINDS = new Set([
  'credentials',
  'bad-credentials',
  'no-bucket',
  'wrong-region',
  'unreachable',
  'interrupted',
]);

/**
 * The block store's part of a sync: every file planned first (what is already here, what must be
 * fetched), told through `onPlan`, then carried out a few at a time.
 */
async function syncFromBlocks(ctx: StoreContext, keys: string[], opts: SyncOptions): Promise<SyncedFile[]> {
  const failed = (key: string, err: unknown, started: number): SyncedFile => {
    if (err instanceof StoreError && FATAL_KINDS.has(err.kind)) throw err;
    return {
      key,
      path: localPathOf(ctx.workspace, key),
      via: 'blocks',
      status: 'failed',
      sizeBytes: 0,
      bytes: 0,
      seconds: (Date.now() - started) / 1000,
      error: err instanceof StoreError ? err.userMessage : `${key}: ${(err as Error).message}`,
    };
  };
  const planned: Array<Awaited<ReturnType<typeof planBlocks>> | SyncedFile> = [];
  for (const key of keys) {
    const started = Date.now();
    try {
      planned.push(await planBlocks(ctx, key));
    } catch (err) {
      planned.push(failed(key, err, started));
    }
  }
  const jobs = planned.filter((p): p is NonNullable<Awaited<ReturnType<typeof planBlocks>>> => !!p && 'plan' in p);
  // Frames that several files need are fetched once: the plan says each file's share.
  shareFrames(jobs);
  opts.onPlan?.(jobs.map((p) => p.plan));
  const results = await syncMany(ctx, jobs, { keepLocalVersions: ctx.config.keepLocalVersions });
  const started = Date.now();
  const byKey = new Map<string, SyncedFile>();
  results.forEach((r, i) => {
    const { plan } = jobs[i]!;
    if (r instanceof Error) {
      byKey.set(plan.key, failed(plan.key, r, started));
      return;
    }
    byKey.set(plan.key, {
      key: r.key,
      path: r.dest,
      via: 'blocks',
      status: r.status,
      sizeBytes: r.sizeBytes,
      bytes: r.bytesFetched,
      seconds: r.seconds,
      blocksLocal: r.blocksLocal + r.blocksInPlace,
      blocksFetched: r.blocksToFetch,
      version: shortName(r.index),
    });
  });
  return planned.map((p, i) =>
    p && 'plan' in p ? byKey.get(p.plan.key)! : (p ?? failed(keys[i]!, new Error('no head'), started)),
  );
}

/**
 * Removes `images/rootfs.ext4` when it is the link earlier versions made (to a `rootfs-<lang>.ext4`
 * beside it): two default links would drift apart, and the old one is not where hosts look. A
 * file, or a link someone pointed elsewhere, is left alone.
 */
function removeOldLink(workspace: string): Pick<SyncReport, 'oldLinkRemoved'> {
  const old = path.join(workspace, OLD_LINK);
  if (!fs.lstatSync(old, { throwIfNoEntry: false })?.isSymbolicLink() || !IMAGE_KEY_PATTERN.test(fs.readlinkSync(old)))
    return {};
  fs.rmSync(old);
  return { oldLinkRemoved: old };
}

/**
 * Points `<workspace>/rootfs.ext4` at `images/rootfs-<lang>.ext4`, as the hosts' configs expect,
 * replacing only a symlink; one that already leads to that image (an absolute one made by hand) stays.
 */
function linkDefault(
  workspace: string,
  language: string,
): Pick<SyncReport, 'link' | 'linkTarget' | 'linkProblem' | 'oldLinkRemoved'> {
  const image = path.join(imagesDir(workspace), imageKey(language));
  if (!fs.existsSync(image)) return {};
  const target = path.relative(workspace, image);
  const link = path.join(workspace, DEFAULT_LINK);
  const existing = fs.lstatSync(link, { throwIfNoEntry: false });
  if (existing && !existing.isSymbolicLink()) {
    return { linkProblem: `${link} is a file, not a link: left as it is`, ...removeOldLink(workspace) };
  }
  if (!existing || path.resolve(workspace, fs.readlinkSync(link)) !== image) {
    const tmp = `${link}.${process.pid}.tmp`;
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(target, tmp);
    fs.renameSync(tmp, link);
  }
  return { link, linkTarget: target, ...removeOldLink(workspace) };
}

/**
 * `download`: a sync of the bucket into the workspace, `vmlinux` to the workspace and every
 * image to `images/`. What moves is decided by checksum: a file whose local sha256 equals its
 * manifest's stays; others are downloaded and verified. An object without a valid manifest is
 * not trusted, so not downloaded. Local files the bucket lacks are left alone. Then
 * `<workspace>/rootfs.ext4` points at the python image when it is there.
 */
/** Objects a sync downloads at once. */
const DOWNLOAD_CONCURRENCY = 3;

export async function syncDown(ctx: StoreContext, opts: SyncOptions = {}): Promise<SyncReport> {
  const listing = await listBucket(ctx);
  // Files the block store holds come from it; the plain objects serve the others (older buckets).
  const blockKeys = ctx.config.blockStore === false ? [] : await listHeads(ctx);
  const wanted = listing.objects.filter(
    (o) => (o.kind === 'kernel' || o.kind === 'image') && !blockKeys.includes(o.key),
  );
  fs.mkdirSync(imagesDir(ctx.workspace), { recursive: true });
  removeStaleTemps(ctx.workspace);
  removeStaleTemps(imagesDir(ctx.workspace));

  /** One object: its outcome, or a throw for what ends the whole sync (credentials, bucket, network). */
  const syncOne = async (o: ListedObject): Promise<SyncedFile> => {
    const dest = localPathOf(ctx.workspace, o.key);
    const started = Date.now();
    const entry = (status: SyncedFile['status'], bytes: number, error?: string): SyncedFile => ({
      key: o.key,
      path: dest,
      via: 'object',
      status,
      sizeBytes: o.sizeBytes,
      bytes,
      seconds: (Date.now() - started) / 1000,
      ...(error ? { error } : {}),
    });
    const m = o.manifest;
    if (!m) {
      const why = o.manifestProblem ? `its manifest is unusable (${o.manifestProblem})` : 'it has no manifest';
      return entry('failed', 0, `Cannot download ${where(ctx.config, o.key)}: ${why}, so it cannot be verified.`);
    }
    const keptLocal = fs.existsSync(dest) ? '; the local copy was kept' : '';
    if (m.sizeBytes !== o.sizeBytes) {
      return entry(
        'failed',
        0,
        `Cannot download ${where(ctx.config, o.key)}: the object has ${o.sizeBytes} bytes but its manifest says ${m.sizeBytes}${keptLocal}.`,
      );
    }
    try {
      // The checksum S3 verified when the object was stored must be the manifest's: an object
      // replaced behind its manifest is reported even when the local copy needs nothing.
      const stat = await statObject(ctx, o.key);
      if (!stat || stat.crc32 !== m.crc32) {
        const found = stat ? `its CRC32 is ${stat.crc32 ?? 'missing'}` : 'it is gone';
        return entry(
          'failed',
          0,
          `Cannot download ${where(ctx.config, o.key)}: the object does not match its manifest (${found}, the manifest says ${m.crc32})${keptLocal}.`,
        );
      }
      if (fs.existsSync(dest)) {
        const size = fs.statSync(dest).size;
        const checksum = track(ctx.progress, o.key, 'checksum', size);
        const local = await fileDigest(dest, { crc32: false, onBytes: (n) => checksum.add(n), signal: ctx.signal });
        checksum.end();
        if (local.sha256 === m.sha256) return entry('unchanged', 0);
      }
      const bytes = await withRetry(
        () => fetchVerified(ctx, o, m, dest, stat.etag),
        ctx.retry ?? DEFAULT_RETRY,
        ctx.signal,
      );
      return entry('downloaded', bytes);
    } catch (err) {
      if (err instanceof BodyBrokenOff) {
        const kept = fs.existsSync(dest) ? '; the local copy was kept' : '';
        return entry(
          'failed',
          0,
          `Cannot download ${where(ctx.config, o.key)}: the S3 server broke the transfer off every time it was tried ` +
            `(last after ${err.received} of ${o.sizeBytes} bytes): the object is likely damaged in the bucket — upload it again${kept}.`,
        );
      }
      if (err instanceof StoreError && FATAL_KINDS.has(err.kind)) throw err;
      return entry('failed', 0, err instanceof StoreError ? err.userMessage : `${o.key}: ${(err as Error).message}`);
    }
  };

  // A few objects at once: one stream is held back by its own hashing and writing, and the
  // server and the disk have room for more. The report keeps the bucket's order.
  const files: SyncedFile[] = new Array<SyncedFile>(wanted.length);
  let next = 0;
  let fatal: { err: unknown } | undefined;
  const worker = async () => {
    while (!fatal && next < wanted.length) {
      const i = next++;
      try {
        files[i] = await syncOne(wanted[i]!);
      } catch (err) {
        fatal ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(DOWNLOAD_CONCURRENCY, wanted.length) }, worker));
  if (fatal) throw fatal.err;
  files.push(...(await syncFromBlocks(ctx, blockKeys, opts)));
  return {
    bucket: ctx.config.bucket,
    files,
    bytesTransferred: files.reduce((n, f) => n + f.bytes, 0),
    ok: files.every((f) => f.status !== 'failed'),
    ...linkDefault(ctx.workspace, opts.defaultLanguage ?? DEFAULT_LANGUAGE),
  };
}
