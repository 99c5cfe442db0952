import * as fs from 'node:fs';

/**
 * Checks that `file` is an x86-64 ELF executable (static or dynamic) before any build work, so a
 * missing or wrong operator binary stops the build at once with a plain message.
 */
export function checkX8664Executable(file: string): void {
  let header: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      header = Buffer.alloc(64);
      const n = fs.readSync(fd, header, 0, 64, 0);
      header = header.subarray(0, n);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`operator binary ${file} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}`);
  }
  const problem = (what: string) => new Error(`operator binary ${file} is not an x86-64 Linux executable: ${what}`);
  if (header.length < 20 || header.readUInt32BE(0) !== 0x7f454c46) throw problem('no ELF header');
  if (header[4] !== 2) throw problem('not a 64-bit ELF');
  if (header[5] !== 1) throw problem('not little-endian');
  const type = header.readUInt16LE(16);
  if (type !== 2 && type !== 3) throw problem(`ELF type ${type} is not an executable`);
  const machine = header.readUInt16LE(18);
  if (machine !== 0x3e) throw problem(`built for machine ${machine}, not x86-64 (62)`);
}
