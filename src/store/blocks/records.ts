import * as fs from 'node:fs';
import { z } from 'zod';
import { Sha256Hex } from '../../config/schema';
import { recordOf } from './paths';

/**
 * The record beside a file that says which version (index) it holds, trusted only while the file
 * is as it was when the record was written: same size, mtime to the nanosecond, same inode.
 */

const Record = z.looseObject({
  format: z.literal(1),
  index: Sha256Hex,
  sizeBytes: z.int().nonnegative(),
  mtimeNs: z.string().regex(/^\d+$/),
  ino: z.string().regex(/^\d+$/),
});
export type BlockRecord = z.infer<typeof Record>;

/** The record of `file` when it is valid, else undefined. */
export function readRecord(file: string): BlockRecord | undefined {
  try {
    const st = fs.statSync(file, { bigint: true });
    const rec = Record.parse(JSON.parse(fs.readFileSync(recordOf(file), 'utf8')));
    const same = BigInt(rec.sizeBytes) === st.size && rec.mtimeNs === String(st.mtimeNs) && rec.ino === String(st.ino);
    return same ? rec : undefined;
  } catch {
    return undefined;
  }
}

export function writeRecord(file: string, index: string): void {
  const st = fs.statSync(file, { bigint: true });
  const rec: BlockRecord = {
    format: 1,
    index,
    sizeBytes: Number(st.size),
    mtimeNs: String(st.mtimeNs),
    ino: String(st.ino),
  };
  const target = recordOf(file);
  const tmp = `${target}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(rec) + '\n');
  fs.renameSync(tmp, target);
}

export function forgetRecord(file: string): void {
  fs.rmSync(recordOf(file), { force: true });
}
