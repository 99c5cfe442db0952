import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import type { S3Config } from '../config/schema';
import { NAME_PATTERN } from '../config/schema';
import { describeError } from './client';
import { digestFile } from './digest';
import { imageKey, IMAGE_KEY_PATTERN, KERNEL_KEY, Manifest, manifestKey } from './layout';
import type { TransferProgress } from './progress';
import { uploadFile, type UploadOutcome } from './upload';

/**
 * The workspace layout the pipeline writes and Firecracker hosts read:
 *   <workspace>/vmlinux
 *   <workspace>/images/rootfs-<lang>.ext4               (+ .manifest.json beside it, from the build)
 *   <workspace>/images/rootfs.ext4 -> rootfs-python.ext4
 */
export const imagesDir = (workspace: string) => path.join(workspace, 'images');
export const localManifestPath = (imageFile: string) => `${imageFile}.manifest.json`;

export interface StoreContext {
  client: S3Client;
  config: S3Config;
  workspace: string;
  progress?: TransferProgress;
  partSizeBytes?: number;
  concurrency?: number;
  onPartSent?: (key: string, partNumber: number) => void;
}

const stateDir = (workspace: string) => path.join(workspace, '.uploads');

/** Reads the manifest the build left beside an image, when it describes this very file. */
function buildManifest(file: string, sha256: string): Partial<Manifest> {
  try {
    const m = Manifest.partial().parse(JSON.parse(fs.readFileSync(localManifestPath(file), 'utf8')));
    return m.sha256 === sha256 ? m : {};
  } catch {
    return {};
  }
}

async function readRemoteManifest(ctx: StoreContext, key: string): Promise<Manifest | null> {
  try {
    const res = await ctx.client.send(new GetObjectCommand({ Bucket: ctx.config.bucket, Key: manifestKey(key) }));
    return Manifest.parse(JSON.parse(await res.Body!.transformToString()));
  } catch (err) {
    const e = describeError(err, ctx.config, manifestKey(key));
    if (/does not exist$/.test(e.message) && !e.message.startsWith('bucket')) return null;
    if (err instanceof SyntaxError || err instanceof z.ZodError) return null;
    throw e;
  }
}

/** Uploads one image, then (only then) its manifest; an unchanged image keeps its manifest unless it is stale. */
export async function uploadImage(ctx: StoreContext, language: string, file: string, extra: Partial<Manifest> = {}): Promise<UploadOutcome> {
  const key = imageKey(language);
  const digest = await digestFile(file);
  const outcome = await uploadFile({
    client: ctx.client,
    config: ctx.config,
    key,
    file,
    digest,
    stateDir: stateDir(ctx.workspace),
    progress: ctx.progress,
    partSizeBytes: ctx.partSizeBytes,
    concurrency: ctx.concurrency,
    onPartSent: (n) => ctx.onPartSent?.(key, n),
  });
  const manifest: Manifest = Manifest.parse({
    builtAt: new Date(fs.statSync(file).mtimeMs).toISOString(),
    ...buildManifest(file, digest.sha256),
    ...extra,
    language,
    key,
    sizeBytes: digest.size,
    sha256: digest.sha256,
  });
  const current = outcome.status === 'unchanged' ? await readRemoteManifest(ctx, key) : null;
  if (!current || current.sha256 !== manifest.sha256 || JSON.stringify(current.versions) !== JSON.stringify(manifest.versions)) {
    try {
      const body = JSON.stringify(manifest, null, 2) + '\n';
      await ctx.client.send(
        new PutObjectCommand({ Bucket: ctx.config.bucket, Key: manifestKey(key), Body: body, ContentType: 'application/json' }),
      );
    } catch (err) {
      throw describeError(err, ctx.config, manifestKey(key));
    }
  }
  return outcome;
}

/** Checks a language name before anything touches the disk or the network. */
export function checkLanguage(language: string, configured: string[]): string {
  const parsed = z
    .string()
    .regex(NAME_PATTERN, { error: `not a language name: ${JSON.stringify(language).slice(0, 60)}` })
    .refine((l) => configured.includes(l), { error: `${JSON.stringify(language).slice(0, 60)} is not a configured language (${configured.join(', ')})` })
    .safeParse(language);
  if (!parsed.success) throw new Error(parsed.error.issues[0]!.message);
  return parsed.data;
}

/** `upload-single <lang>`: one image from the workspace. */
export async function uploadSingle(ctx: StoreContext, language: string, configured: string[]): Promise<UploadOutcome> {
  const lang = checkLanguage(language, configured);
  const file = path.join(imagesDir(ctx.workspace), imageKey(lang));
  if (!fs.existsSync(file)) throw new Error(`${file} does not exist: build it first (rootfs create ${lang})`);
  return uploadImage(ctx, lang, file);
}

/** `upload`: every rootfs-*.ext4 in the images directory, and vmlinux when present. */
export async function uploadAll(ctx: StoreContext): Promise<UploadOutcome[]> {
  const dir = imagesDir(ctx.workspace);
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => IMAGE_KEY_PATTERN.test(n)).sort() : [];
  const results: UploadOutcome[] = [];
  const kernel = path.join(ctx.workspace, KERNEL_KEY);
  if (fs.existsSync(kernel)) {
    results.push(
      await uploadFile({
        client: ctx.client,
        config: ctx.config,
        key: KERNEL_KEY,
        file: kernel,
        stateDir: stateDir(ctx.workspace),
        progress: ctx.progress,
        partSizeBytes: ctx.partSizeBytes,
        concurrency: ctx.concurrency,
        onPartSent: (n) => ctx.onPartSent?.(KERNEL_KEY, n),
      }),
    );
  }
  for (const name of names) {
    const language = IMAGE_KEY_PATTERN.exec(name)![1]!;
    if (fs.lstatSync(path.join(dir, name)).isSymbolicLink()) continue;
    results.push(await uploadImage(ctx, language, path.join(dir, name)));
  }
  return results;
}
