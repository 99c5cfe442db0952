import * as crypto from 'node:crypto';
import { z } from 'zod';
import { Sha256Hex } from '../../config/schema';
import { IMAGE_KEY_PATTERN, KERNEL_KEY, Manifest } from '../layout';

/**
 * The block store's objects, as docs/block-store.md defines them: the binary index of one version
 * of a file, the JSON head that names a file's versions, and their keys in the bucket. Pure data:
 * nothing here reads a file or the network.
 */

export const BLOCK_BYTES = 4096;
/** Blocks in a frame at most: 1 MiB of content, a good size for a range read and for zstd. */
export const FRAME_BLOCKS = 256;
export const DIGEST_BYTES = 32;
const MAGIC = Buffer.from('RFSBIDX1', 'ascii');
const FRAME_ENTRY_BYTES = 24;
/** Limits a reader holds an index to: a 64 GiB file, a 1 MiB header. */
const MAX_BLOCKS = 1 << 24;
const MAX_HEADER_BYTES = 1 << 20;

export const BLOCKS_PREFIX = 'blocks/';
export const HEADS_PREFIX = `${BLOCKS_PREFIX}heads/`;
export const INDEXES_PREFIX = `${BLOCKS_PREFIX}indexes/`;
export const PACKS_PREFIX = `${BLOCKS_PREFIX}packs/`;

/** A file the block store holds: the kernel or an image, named by its plain object's key. */
export const StoreKey = z
  .string()
  .refine((k) => k === KERNEL_KEY || IMAGE_KEY_PATTERN.test(k), { error: 'not the kernel or an image key' });

export const headKey = (key: string): string => `${HEADS_PREFIX}${StoreKey.parse(key)}.json`;
export const indexKey = (sha256: string): string => `${INDEXES_PREFIX}${Sha256Hex.parse(sha256)}.index`;
export const packKey = (sha256: string): string => `${PACKS_PREFIX}${Sha256Hex.parse(sha256)}.pack`;
/** A version's name as people type it: the first 12 hex digits of its index digest. */
export const shortName = (indexSha256: string): string => indexSha256.slice(0, 12);

const HEAD_KEY = new RegExp(`^${HEADS_PREFIX}(.+)\\.json$`);
const DIGEST_KEY = (prefix: string, suffix: string) => new RegExp(`^${prefix}([0-9a-f]{64})\\.${suffix}$`);
export const keyOfHead = (objectKey: string): string | undefined => {
  const key = HEAD_KEY.exec(objectKey)?.[1];
  return key !== undefined && StoreKey.safeParse(key).success ? key : undefined;
};
export const digestOfIndexKey = (objectKey: string) => DIGEST_KEY(INDEXES_PREFIX, 'index').exec(objectKey)?.[1];
export const digestOfPackKey = (objectKey: string) => DIGEST_KEY(PACKS_PREFIX, 'pack').exec(objectKey)?.[1];

export const sha256Hex = (buf: Buffer): string => crypto.createHash('sha256').update(buf).digest('hex');

/** The manifest as an index carries it: the plain object's, without the time of an upload. */
export const IndexManifest = Manifest.omit({ uploadedAt: true });
export type IndexManifest = z.infer<typeof IndexManifest>;

export const IndexHeader = z.looseObject({
  format: z.literal(1),
  key: StoreKey,
  sizeBytes: z
    .int()
    .nonnegative()
    .max(MAX_BLOCKS * BLOCK_BYTES),
  sha256: Sha256Hex,
  blockBytes: z.literal(BLOCK_BYTES),
  packs: z.array(Sha256Hex),
  frames: z.int().nonnegative(),
  slots: z.int().nonnegative(),
  blocks: z.int().nonnegative().max(MAX_BLOCKS),
  manifest: IndexManifest,
});
export type IndexHeader = z.infer<typeof IndexHeader>;

/** One frame of a pack: where it is and how many blocks it holds. */
export interface FrameRef {
  pack: string;
  offset: number;
  length: number;
  count: number;
}

/** One version of a file: its header, the frames it draws from, their blocks' digests, and its block map. */
export interface BlockIndex {
  header: IndexHeader;
  frames: FrameRef[];
  /** The first slot of each frame. */
  firstSlot: number[];
  /** 32 bytes per slot, frame after frame. */
  digests: Buffer;
  /** Per block of the file: 0 for a zero block, else 1 + slot. */
  map: Uint32Array;
}

export const slotDigest = (index: BlockIndex, slot: number): Buffer =>
  index.digests.subarray(slot * DIGEST_BYTES, (slot + 1) * DIGEST_BYTES);

/** The frame a slot belongs to, by binary search over `firstSlot`. */
export function frameOfSlot(index: BlockIndex, slot: number): number {
  let lo = 0;
  let hi = index.frames.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (index.firstSlot[mid]! <= slot) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export const blocksOf = (sizeBytes: number): number => Math.ceil(sizeBytes / BLOCK_BYTES);

/** The index's uncompressed bytes. `header.frames/slots/blocks/packs` are derived from the tables. */
export function encodeIndex(
  header: { key: string; sizeBytes: number; sha256: string; manifest: IndexManifest },
  frames: FrameRef[],
  digests: Buffer,
  map: Uint32Array,
): Buffer {
  const packs = [...new Set(frames.map((f) => f.pack))];
  const packPos = new Map(packs.map((p, i) => [p, i]));
  const slots = frames.reduce((n, f) => n + f.count, 0);
  if (digests.length !== slots * DIGEST_BYTES)
    throw new Error(`index: ${slots} slots but ${digests.length / DIGEST_BYTES} digests`);
  if (map.length !== blocksOf(header.sizeBytes))
    throw new Error(`index: ${map.length} blocks mapped for ${header.sizeBytes} bytes`);
  const full = IndexHeader.parse({
    format: 1,
    ...header,
    blockBytes: BLOCK_BYTES,
    packs,
    frames: frames.length,
    slots,
    blocks: map.length,
  });
  const json = Buffer.from(JSON.stringify(full), 'utf8');
  const table = Buffer.alloc(frames.length * FRAME_ENTRY_BYTES);
  frames.forEach((f, i) => {
    const at = i * FRAME_ENTRY_BYTES;
    table.writeUInt32LE(packPos.get(f.pack)!, at);
    table.writeUInt32LE(f.count, at + 4);
    table.writeBigUInt64LE(BigInt(f.offset), at + 8);
    table.writeBigUInt64LE(BigInt(f.length), at + 16);
  });
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  const mapBytes = Buffer.from(map.buffer, map.byteOffset, map.byteLength);
  return Buffer.concat([MAGIC, len, json, table, digests, littleEndian(mapBytes)]);
}

/** Typed arrays use the machine's byte order; the format's is little-endian (a no-op on x86 and arm64). */
const BIG_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 0;
function littleEndian(bytes: Buffer): Buffer {
  if (!BIG_ENDIAN_HOST) return bytes;
  const copy = Buffer.from(bytes);
  copy.swap32();
  return copy;
}

/** Parses and checks an index's uncompressed bytes; throws saying what is wrong. */
export function decodeIndex(bytes: Buffer): BlockIndex {
  const bad = (why: string) => new Error(`not a valid block index: ${why}`);
  if (bytes.length < 12 || !bytes.subarray(0, 8).equals(MAGIC)) throw bad('no RFSBIDX1 magic');
  const h = bytes.readUInt32LE(8);
  if (h > MAX_HEADER_BYTES || 12 + h > bytes.length) throw bad(`header length ${h} out of range`);
  let header: IndexHeader;
  try {
    header = IndexHeader.parse(JSON.parse(bytes.subarray(12, 12 + h).toString('utf8')));
  } catch (err) {
    throw bad(`header: ${(err as Error).message.slice(0, 300)}`);
  }
  if (header.blocks !== blocksOf(header.sizeBytes)) throw bad(`${header.blocks} blocks for ${header.sizeBytes} bytes`);
  if (header.slots > header.blocks || header.frames > header.slots) throw bad('more slots or frames than blocks');
  const tableAt = 12 + h;
  const digestsAt = tableAt + header.frames * FRAME_ENTRY_BYTES;
  const mapAt = digestsAt + header.slots * DIGEST_BYTES;
  if (bytes.length !== mapAt + header.blocks * 4)
    throw bad(`${bytes.length} bytes, the header implies ${mapAt + header.blocks * 4}`);
  const frames: FrameRef[] = [];
  const firstSlot: number[] = [];
  let slots = 0;
  for (let i = 0; i < header.frames; i++) {
    const at = tableAt + i * FRAME_ENTRY_BYTES;
    const pack = header.packs[bytes.readUInt32LE(at)];
    const count = bytes.readUInt32LE(at + 4);
    const offset = Number(bytes.readBigUInt64LE(at + 8));
    const length = Number(bytes.readBigUInt64LE(at + 16));
    if (pack === undefined) throw bad(`frame ${i} names pack ${bytes.readUInt32LE(at)} of ${header.packs.length}`);
    if (count < 1 || count > FRAME_BLOCKS) throw bad(`frame ${i} holds ${count} blocks`);
    if (!Number.isSafeInteger(offset) || length < 1 || length > 1 << 30)
      throw bad(`frame ${i} at ${offset} (+${length})`);
    frames.push({ pack, offset, length, count });
    firstSlot.push(slots);
    slots += count;
  }
  if (slots !== header.slots) throw bad(`the frames hold ${slots} slots, the header says ${header.slots}`);
  const digests = Buffer.from(bytes.subarray(digestsAt, mapAt));
  const mapBytes = littleEndian(Buffer.from(bytes.subarray(mapAt)));
  const map = new Uint32Array(mapBytes.buffer, mapBytes.byteOffset, header.blocks);
  for (let i = 0; i < map.length; i++) {
    if (map[i]! > slots) throw bad(`block ${i} names slot ${map[i]! - 1} of ${slots}`);
  }
  return { header, frames, firstSlot, digests, map };
}

/** What a host with nothing fetches for this index: every frame it lists. */
export const fetchBytesOf = (index: BlockIndex): number => index.frames.reduce((n, f) => n + f.length, 0);

export const HeadVersion = z.looseObject({
  index: Sha256Hex,
  sha256: Sha256Hex,
  sizeBytes: z.int().nonnegative(),
  fetchBytes: z.int().nonnegative(),
  publishedAt: z.string(),
  builtAt: z.string().optional(),
  versions: z.array(z.string()).default([]),
});
export type HeadVersion = z.infer<typeof HeadVersion>;

export const Head = z
  .looseObject({
    format: z.literal(1),
    key: StoreKey,
    current: Sha256Hex,
    versions: z.array(HeadVersion).min(1).max(1000),
  })
  .refine((h) => h.versions.some((v) => v.index === h.current), { error: 'current is not one of the versions' });
export type Head = z.infer<typeof Head>;
