import * as fs from 'node:fs';

const BLOCK = 4096;
const ZERO = Buffer.alloc(BLOCK);

/**
 * Writes a stream into a file, leaving runs of zero blocks as holes (seek, not write) and
 * setting the final length with ftruncate: a 2 GiB image holding 300 MB of data takes 300 MB.
 */
export class SparseWriter {
  private position = 0;
  private constructor(private readonly fd: fs.promises.FileHandle) {}

  static async create(file: string): Promise<SparseWriter> {
    return new SparseWriter(await fs.promises.open(file, 'wx', 0o644));
  }

  async write(chunk: Buffer): Promise<void> {
    let start = 0;
    while (start < chunk.length) {
      // Cut at file-block boundaries so that whole blocks can stay holes.
      const end = Math.min(chunk.length, start + BLOCK - ((this.position + start) % BLOCK));
      const piece = chunk.subarray(start, end);
      if (!piece.equals(ZERO.subarray(0, piece.length))) {
        // Coalesce consecutive non-zero pieces into one write.
        let runEnd = end;
        while (runEnd < chunk.length) {
          const nextEnd = Math.min(chunk.length, runEnd + BLOCK);
          const next = chunk.subarray(runEnd, nextEnd);
          if (next.equals(ZERO.subarray(0, next.length))) break;
          runEnd = nextEnd;
        }
        await this.fd.write(chunk, start, runEnd - start, this.position + start);
        start = runEnd;
      } else {
        start = end;
      }
    }
    this.position += chunk.length;
  }

  /** Sets the length (trailing holes included), flushes and closes. */
  async finish(): Promise<number> {
    await this.fd.truncate(this.position);
    await this.fd.sync();
    await this.fd.close();
    return this.position;
  }

  async discard(): Promise<void> {
    await this.fd.close().catch(() => undefined);
  }
}
