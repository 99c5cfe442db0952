import * as fs from 'node:fs';
import { statObject, type S3Access } from '../client';
import { BLOCKS_PREFIX, sha256Hex } from './format';
import { putImmutable } from './objects';

/**
 * The static fetcher (fetcher/) that bootstrap scripts run on new hosts, kept in the bucket beside
 * the block store under its sha256: a script carries the sum and refuses any other binary.
 */

export const FETCHER_PREFIX = `${BLOCKS_PREFIX}tools/rootfs-fetch.`;
export const fetcherKey = (sha256: string): string => `${FETCHER_PREFIX}${sha256}`;

export function fetcherSha256(file: string): string | undefined {
  return fs.existsSync(file) ? sha256Hex(fs.readFileSync(file)) : undefined;
}

/** Puts the fetcher at `blocks/tools/rootfs-fetch.<sha256>` unless it is there; returns its sha256. */
export async function publishFetcher(target: S3Access, file: string): Promise<{ sha256: string; written: boolean }> {
  const body = fs.readFileSync(file);
  const sha256 = sha256Hex(body);
  const key = fetcherKey(sha256);
  if ((await statObject(target, key))?.sizeBytes === body.length) return { sha256, written: false };
  return { sha256, written: await putImmutable(target, key, body, 'application/octet-stream') };
}
