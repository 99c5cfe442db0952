import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SparseWriter } from '../../src/store';
import { tempDir } from '../support/process';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Writes `data` through a SparseWriter in pieces of the given sizes (cycled). */
async function writeSparse(file: string, data: Buffer, pieces: number[]): Promise<SparseWriter> {
  const writer = await SparseWriter.create(file);
  for (let off = 0, i = 0; off < data.length; i++) {
    const n = Math.min(pieces[i % pieces.length]!, data.length - off);
    await writer.write(data.subarray(off, off + n));
    off += n;
  }
  await writer.finish();
  return writer;
}

describe('store: sparse writer', () => {
  let dir: string;
  before(() => {
    dir = tempDir('sparse');
  });

  it('leaves zero blocks as holes, whatever the chunk boundaries, and keeps every byte', async () => {
    // Data, a 1 MiB zero run that starts and ends off block boundaries, data, 3 MiB of trailing zeros.
    const data = Buffer.concat([
      crypto.randomBytes(10_000),
      Buffer.alloc(MiB + 1234),
      crypto.randomBytes(5000),
      Buffer.alloc(3 * MiB),
    ]);
    for (const pieces of [[64 * KiB], [1, 4095, 4097, 333], [data.length]]) {
      const file = path.join(dir, `sparse-${pieces.join('-')}`);
      const writer = await writeSparse(file, data, pieces);
      assert.ok(fs.readFileSync(file).equals(data), `content with pieces ${pieces}`);
      const st = fs.statSync(file);
      assert.equal(st.size, data.length);
      // 10 000 + 5 000 bytes of data touch at most 3 + 3 blocks; allow the filesystem some metadata.
      assert.ok(st.blocks * 512 <= 64 * KiB, `${st.blocks * 512} bytes allocated for pieces ${pieces}`);
      assert.ok(writer.writtenBytes < 24 * KiB, `${writer.writtenBytes} bytes written for pieces ${pieces}`);
    }
  });

  it('makes an all-zero stream an empty-on-disk file of the full length', async () => {
    const file = path.join(dir, 'zeros');
    await writeSparse(file, Buffer.alloc(8 * MiB), [MiB]);
    const st = fs.statSync(file);
    assert.equal(st.size, 8 * MiB);
    assert.equal(st.blocks, 0);
  });

  it('writes a zero-length file, and never overwrites an existing one', async () => {
    const file = path.join(dir, 'empty');
    await writeSparse(file, Buffer.alloc(0), [1]);
    assert.equal(fs.statSync(file).size, 0);
    await assert.rejects(SparseWriter.create(file), { code: 'EEXIST' });
  });
});
