import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { Name } from '../config/schema';
import { send, statObject, type StoreContext } from './client';
import { currentManifest, publishBlocks, type PublishBlocksResult } from './blocks';
import { publishFetcher } from './blocks/tools';
import { crc32Of, fileDigest } from './digest';
import { StoreError, where } from './errors';
import { readManifest } from './list';
import {
  IMAGE_KEY_PATTERN,
  imageKey,
  imagesDir,
  KERNEL_CONFIG_KEY,
  KERNEL_KEY,
  kernelPath,
  Manifest,
  manifestKey,
  MAX_MANIFEST_BYTES,
  uploadStateDir,
  type ImageFacts,
} from './layout';
import { putFile } from './multipart';
import { track } from './progress';

export interface UploadResult {
  key: string;
  file: string;
  kind: 'kernel' | 'image';
  language?: string;
  /**
   * `unchanged`: the object already holds this content (same size, CRC32 and sha256); nothing was sent.
   * `absent`: asked to upload only if stored (`onlyIfStored`), and the object does not hold it: nothing was sent.
   */
  status: 'uploaded' | 'unchanged' | 'absent';
  sizeBytes: number;
  sha256: string;
  bytesSent: number;
  partsSent: number;
  partsReused: number;
  seconds: number;
  /** Whether the manifest was (re)written; an unchanged image keeps a manifest that is current. */
  manifestWritten: boolean;
  /** What the block store did with the file. */
  blocks?: PublishBlocksResult;
}

export interface UploadOptions {
  /** Facts for an image's manifest: versions verified at build, build time, artifact key, what it was built from. */
  facts?: (language: string) => ImageFacts | undefined | Promise<ImageFacts | undefined>;
}

interface PublishInput {
  file: string;
  key: string;
  kind: 'kernel' | 'image';
  language?: string;
  facts?: ImageFacts;
  /** Send nothing unless the object already holds the file's content (then keep its manifest current). */
  onlyIfStored?: boolean;
}

/** What a manifest says apart from when it was written: equal means it need not be rewritten. */
const substance = (m: Manifest) => JSON.stringify({ ...m, uploadedAt: undefined });

/** The manifest of `input`'s file: facts given now win, else those of a manifest that describes this same content. */
function manifestOf(
  input: PublishInput,
  digest: { sizeBytes: number; sha256: string; crc32: string },
  current: Pick<Manifest, 'sha256' | keyof ImageFacts> | undefined,
  uploadedAt: string,
): Manifest {
  const kept = current?.sha256 === digest.sha256 ? current : undefined;
  const facts: ImageFacts = {
    versions: input.facts?.versions ?? kept?.versions,
    builtAt: input.facts?.builtAt ?? kept?.builtAt,
    artifactKey: input.facts?.artifactKey ?? kept?.artifactKey,
    archive: input.facts?.archive ?? kept?.archive,
    packages: input.facts?.packages ?? kept?.packages,
    operatorSha256: input.facts?.operatorSha256 ?? kept?.operatorSha256,
    boot: input.facts?.boot ?? kept?.boot,
    configSha256: input.facts?.configSha256 ?? kept?.configSha256,
  };
  return Manifest.parse({
    format: 1,
    key: input.key,
    kind: input.kind,
    ...(input.language ? { language: input.language } : {}),
    sizeBytes: digest.sizeBytes,
    sha256: digest.sha256,
    crc32: digest.crc32,
    versions: facts.versions ?? [],
    builtAt: facts.builtAt ?? new Date(fs.statSync(input.file).mtimeMs).toISOString(),
    ...(facts.artifactKey ? { artifactKey: facts.artifactKey } : {}),
    uploadedAt,
    ...(facts.archive ? { archive: facts.archive } : {}),
    ...(facts.packages ? { packages: facts.packages } : {}),
    ...(facts.operatorSha256 ? { operatorSha256: facts.operatorSha256 } : {}),
    ...(facts.boot ? { boot: facts.boot } : {}),
    ...(facts.configSha256 ? { configSha256: facts.configSha256 } : {}),
  } satisfies z.input<typeof Manifest>);
}

/** Buckets this process has put the fetcher in (or found it there). */
const fetcherIn = new Set<string>();

/** The bootstrap scripts' fetcher, beside the block store: once per bucket and process, when it is built here. */
async function ensureFetcher(ctx: StoreContext, file: string): Promise<void> {
  if (!fs.existsSync(file)) return;
  const id = `${ctx.config.endpoint ?? ctx.config.region} ${ctx.config.bucket} ${fs.statSync(file).mtimeMs}`;
  if (fetcherIn.has(id)) return;
  await publishFetcher(ctx, file);
  fetcherIn.add(id);
}

const withoutManifest = <T extends object>(r: T & { manifest?: Manifest }): Omit<T, 'manifest'> => {
  const { manifest: _, ...rest } = r;
  return rest;
};

/**
 * Publishes one file: as a plain object (unless `s3.plainObjects` is false) and into the block
 * store. Each side sends nothing it already holds.
 */
async function publish(ctx: StoreContext, input: PublishInput): Promise<UploadResult> {
  const started = Date.now();
  const size = fs.statSync(input.file).size;
  const checksum = track(ctx.progress, input.key, 'checksum', size);
  const digest = await fileDigest(input.file, { crc32: true, onBytes: (n) => checksum.add(n), signal: ctx.signal });
  checksum.end();
  const full = { ...digest, crc32: digest.crc32! };
  const plain = ctx.config.plainObjects !== false ? await publishPlain(ctx, input, full) : undefined;
  if (plain?.status === 'absent') return withoutManifest(plain);
  if (plain && ctx.config.blockStore === false) return withoutManifest(plain);
  const current = plain ? plain.manifest : await currentManifest(ctx, input.key);
  const { uploadedAt: _, ...manifest } = plain?.manifest ?? manifestOf(input, full, current, '');
  const blocks = await publishBlocks(ctx, {
    file: input.file,
    key: input.key,
    digest: full,
    manifest,
    keepVersions: ctx.config.keepVersions,
    onlyIfStored: input.onlyIfStored,
  });
  if (ctx.fetcher && blocks.status !== 'absent') await ensureFetcher(ctx, ctx.fetcher);
  const base = plain ?? {
    key: input.key,
    file: input.file,
    kind: input.kind,
    ...(input.language ? { language: input.language } : {}),
    sizeBytes: digest.sizeBytes,
    sha256: digest.sha256,
    bytesSent: 0,
    partsSent: 0,
    partsReused: 0,
    manifestWritten: false,
  };
  const status: UploadResult['status'] =
    blocks.status === 'absent'
      ? 'absent'
      : blocks.status === 'published' || plain?.status === 'uploaded'
        ? 'uploaded'
        : 'unchanged';
  return {
    ...withoutManifest(base),
    status,
    bytesSent: base.bytesSent + blocks.packBytes,
    seconds: (Date.now() - started) / 1000,
    blocks,
  };
}

/**
 * The plain object: uploaded unless it already holds the file's content, its checksum confirmed
 * as S3 stored it, and only then its manifest written (so a reader never trusts a half-written object).
 */
async function publishPlain(
  ctx: StoreContext,
  input: PublishInput,
  digest: { sizeBytes: number; sha256: string; crc32: string },
): Promise<UploadResult & { manifest: Manifest }> {
  const { file, key } = input;
  const { signal } = ctx;
  const started = Date.now();
  const crc32 = digest.crc32;

  const remote = await statObject(ctx, key);
  const unchanged =
    !!remote && remote.sizeBytes === digest.sizeBytes && remote.crc32 === crc32 && remote.sha256 === digest.sha256;
  let sent = { bytesSent: 0, partsSent: 0, partsReused: 0 };
  const current = remote ? (await readManifest(ctx, key)).manifest : undefined;
  const manifest = manifestOf(input, digest, current, new Date().toISOString());
  if (!unchanged && input.onlyIfStored) {
    const { sizeBytes, sha256 } = digest;
    const kind = input.kind;
    return {
      key,
      file,
      kind,
      status: 'absent',
      sizeBytes,
      sha256,
      ...sent,
      seconds: 0,
      manifestWritten: false,
      manifest,
    };
  }
  if (!unchanged) {
    sent = await putFile(ctx, {
      key,
      file,
      digest,
      metadata: { sha256: digest.sha256 },
      stateDir: uploadStateDir(ctx.workspace),
    });
    const stored = await statObject(ctx, key);
    if (!stored || stored.sizeBytes !== digest.sizeBytes || stored.crc32 !== crc32) {
      throw new StoreError(
        'checksum',
        `Cannot upload ${where(ctx.config, key)}: after the upload the object's CRC32 is ${stored?.crc32 ?? 'missing'}, not ${crc32}.`,
        {
          bucket: ctx.config.bucket,
          key,
        },
      );
    }
  }

  const stale = !current || substance(current) !== substance(manifest);
  if (stale) {
    const body = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
    const mkey = manifestKey(key);
    if (body.length > MAX_MANIFEST_BYTES) {
      // Readers would refuse it; the facts (versions) are what grew.
      const why = `the manifest would have ${body.length} bytes, over the ${MAX_MANIFEST_BYTES / 1024} KiB readers accept`;
      throw new StoreError('invalid-input', `Cannot upload ${where(ctx.config, mkey)}: ${why}.`, {
        bucket: ctx.config.bucket,
        key: mkey,
      });
    }
    await send(ctx, { key: mkey, verb: 'upload', action: 's3:PutObject' }, (c) =>
      c.send(
        new PutObjectCommand({
          Bucket: ctx.config.bucket,
          Key: mkey,
          Body: body,
          ContentType: 'application/json',
          ChecksumCRC32: crc32Of(body),
        }),
        { abortSignal: signal },
      ),
    );
  }
  return {
    key,
    file,
    kind: input.kind,
    ...(input.language ? { language: input.language } : {}),
    status: unchanged ? 'unchanged' : 'uploaded',
    sizeBytes: digest.sizeBytes,
    sha256: digest.sha256,
    ...sent,
    seconds: (Date.now() - started) / 1000,
    manifestWritten: stale,
    manifest: stale ? manifest : current!,
  };
}

/** Uploads one image file as `rootfs-<language>.ext4`, then its manifest with `facts`. */
export async function uploadImage(
  ctx: StoreContext,
  language: string,
  file: string,
  facts?: ImageFacts,
  opts: { onlyIfStored?: boolean } = {},
): Promise<UploadResult> {
  return publish(ctx, { file, key: imageKey(language), kind: 'image', language, facts, ...opts });
}

/** Uploads the kernel as `vmlinux`, then its manifest. */
export async function uploadKernel(ctx: StoreContext, file: string, facts?: ImageFacts): Promise<UploadResult> {
  return publish(ctx, { file, key: KERNEL_KEY, kind: 'kernel', facts });
}

/**
 * Puts the kernel's .config as `vmlinux.config` (a few KiB: one request, with its CRC32 checked by
 * S3 and its sha256 in the metadata), unless the object already holds it. Written before the
 * kernel, so a manifest never names a kernel whose config is not there yet.
 */
export async function uploadKernelConfig(ctx: StoreContext, file: string): Promise<{ key: string; written: boolean }> {
  const body = fs.readFileSync(file);
  const sha256 = crypto.createHash('sha256').update(body).digest('hex');
  const remote = await statObject(ctx, KERNEL_CONFIG_KEY);
  if (remote?.sha256 === sha256 && remote.sizeBytes === body.length) return { key: KERNEL_CONFIG_KEY, written: false };
  await send(ctx, { key: KERNEL_CONFIG_KEY, verb: 'upload', action: 's3:PutObject' }, (c) =>
    c.send(
      new PutObjectCommand({
        Bucket: ctx.config.bucket,
        Key: KERNEL_CONFIG_KEY,
        Body: body,
        ContentType: 'text/plain',
        ChecksumCRC32: crc32Of(body),
        Metadata: { sha256 },
      }),
      { abortSignal: ctx.signal },
    ),
  );
  return { key: KERNEL_CONFIG_KEY, written: true };
}

/**
 * `upload`: `<workspace>/vmlinux` when present and every `rootfs-<lang>.ext4` in
 * `<workspace>/images`, one after the other (the parts of each in parallel). Stops at the
 * first failure, which names its key.
 */
export async function uploadAll(ctx: StoreContext, opts: UploadOptions = {}): Promise<UploadResult[]> {
  const results: UploadResult[] = [];
  const kernel = kernelPath(ctx.workspace);
  if (fs.existsSync(`${kernel}.config`)) await uploadKernelConfig(ctx, `${kernel}.config`);
  if (fs.existsSync(kernel)) results.push(await uploadKernel(ctx, kernel));
  const dir = imagesDir(ctx.workspace);
  const names = fs.existsSync(dir)
    ? fs
        .readdirSync(dir)
        .filter((n) => IMAGE_KEY_PATTERN.test(n))
        .sort()
    : [];
  for (const name of names) {
    const file = path.join(dir, name);
    if (!fs.lstatSync(file).isFile()) continue;
    const language = IMAGE_KEY_PATTERN.exec(name)![1]!;
    results.push(await uploadImage(ctx, language, file, await opts.facts?.(language)));
  }
  return results;
}

/**
 * Checks a language name against NAME_PATTERN and the configured languages, before any file
 * or request is touched: `python;rm -rf /` or `../x` never reach a path or a key.
 */
export function checkLanguage(input: unknown, configured: readonly string[]): string {
  const shown = JSON.stringify(input)?.slice(0, 60) ?? String(input);
  const parsed = Name.safeParse(input);
  if (!parsed.success)
    throw new StoreError(
      'invalid-input',
      `${shown} is not a language name (expected lower-case letters, digits and dashes).`,
    );
  if (!configured.length || !z.enum(configured as [string, ...string[]]).safeParse(parsed.data).success) {
    throw new StoreError(
      'invalid-input',
      `${shown} is not a configured language (configured: ${configured.join(', ') || 'none'}).`,
    );
  }
  return parsed.data;
}

/** `upload-single <lang>`: the image of one configured language from `<workspace>/images`. */
export async function uploadSingle(
  ctx: StoreContext,
  language: string,
  configured: readonly string[],
  opts: UploadOptions = {},
): Promise<UploadResult> {
  const lang = checkLanguage(language, configured);
  const file = path.join(imagesDir(ctx.workspace), imageKey(lang));
  if (!fs.existsSync(file))
    throw new StoreError(
      'invalid-input',
      `Cannot upload ${where(ctx.config, imageKey(lang))}: ${file} does not exist.`,
    );
  return uploadImage(ctx, lang, file, await opts.facts?.(lang));
}
