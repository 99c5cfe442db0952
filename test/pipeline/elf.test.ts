import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkX8664Executable } from '../../src/pipeline/elf';

describe('operator binary check', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rootfs-elf-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const nodeHeader = () => {
    const buf = Buffer.alloc(64);
    const fd = fs.openSync(process.execPath, 'r');
    fs.readSync(fd, buf, 0, 64, 0);
    fs.closeSync(fd);
    return buf;
  };

  it('accepts an x86-64 executable', () => {
    checkX8664Executable(process.execPath);
  });

  it('says plainly when the file is missing', () => {
    assert.throws(() => checkX8664Executable(path.join(dir, 'nope')), /operator binary .*nope does not exist/);
  });

  it('refuses a script', () => {
    const f = path.join(dir, 'script');
    fs.writeFileSync(f, '#!/bin/sh\necho hi\n');
    assert.throws(() => checkX8664Executable(f), /not an x86-64 Linux executable: no ELF header/);
  });

  it('refuses an ELF for another machine', () => {
    const f = path.join(dir, 'arm64');
    const header = nodeHeader();
    header.writeUInt16LE(0xb7, 18); // EM_AARCH64
    fs.writeFileSync(f, header);
    assert.throws(() => checkX8664Executable(f), /built for machine 183, not x86-64/);
  });

  it('refuses an object file that is not an executable', () => {
    const f = path.join(dir, 'object.o');
    const header = nodeHeader();
    header.writeUInt16LE(1, 16); // ET_REL
    fs.writeFileSync(f, header);
    assert.throws(() => checkX8664Executable(f), /ELF type 1 is not an executable/);
  });
});
