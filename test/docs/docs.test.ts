import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { helpExamples, parseOnly } from '../../src/cli/main';
import { loadConfig } from '../../src/config';
import { projectRoot } from '../../src/util/paths';
import { tempDir } from '../support/process';

/**
 * The docs stay true: every `rootfs` command line in README.md and docs/ (and in the commands'
 * own help) parses with the real CLI, every YAML example is a valid config, and the read-only
 * examples run.
 */

const DOCS = ['README.md', ...fs.readdirSync(path.join(projectRoot(), 'docs')).map((f) => path.join('docs', f))].filter(
  (f) => f.endsWith('.md'),
);

interface Block {
  file: string;
  line: number;
  lang: string;
  text: string;
}

function fencedBlocks(): Block[] {
  const blocks: Block[] = [];
  for (const file of DOCS) {
    const lines = fs.readFileSync(path.join(projectRoot(), file), 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const open = /^```(\w*)\s*$/.exec(lines[i]!);
      if (!open || !open[1]) continue;
      const start = i + 1;
      while (++i < lines.length && !lines[i]!.startsWith('```'));
      blocks.push({ file, line: start + 1, lang: open[1], text: lines.slice(start, i).join('\n') });
    }
  }
  return blocks;
}

/** Shell words of one command line, up to a comment or a redirection (enough for docs examples). */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      assert.ok(end > i, `unclosed ' in ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      let text = '';
      for (; j < line.length && line[j] !== '"'; j++)
        text += line[j] === '\\' && /["\\$`]/.test(line[j + 1] ?? '') ? line[++j] : line[j];
      assert.ok(j < line.length, `unclosed " in ${line}`);
      word = (word ?? '') + text;
      i = j;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if ((c === '#' && word === undefined) || c === '>' || c === '|') {
      break;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** `npx rootfs …` / `rootfs …` lines of the sh blocks, as argument vectors after `rootfs`. */
function documentedCommands(): Array<{ where: string; args: string[] }> {
  return fencedBlocks()
    .filter((b) => b.lang === 'sh')
    .flatMap((b) =>
      b.text.split('\n').flatMap((line, i) => {
        const words = shellWords(line.trim());
        const at = words[0] === 'npx' ? 1 : 0;
        return words[at] === 'rootfs' ? [{ where: `${b.file}:${b.line + i}`, args: words.slice(at + 1) }] : [];
      }),
    );
}

describe('docs', () => {
  it('the shell-word splitter reads quotes, comments and redirections as sh does', () => {
    assert.deepEqual(shellWords(`npx rootfs customize python -- sh -c 'echo "a b" > /x'  # note`), [
      'npx',
      'rootfs',
      'customize',
      'python',
      '--',
      'sh',
      '-c',
      'echo "a b" > /x',
    ]);
    assert.deepEqual(shellWords('rootfs s3 bootstrap-script --fallback-url https://x/y > user-data.sh'), [
      'rootfs',
      's3',
      'bootstrap-script',
      '--fallback-url',
      'https://x/y',
    ]);
    assert.deepEqual(shellWords('a "b \\"c\\"" d#e'), ['a', 'b "c"', 'd#e']);
  });

  it('every rootfs command line in README.md and docs/ parses with the real CLI', async () => {
    const commands = documentedCommands();
    // The README documents these: the test must find them, or it checks nothing.
    for (const expected of [
      ['create-all'],
      ['status', '--follow'],
      ['resume'],
      ['customize'],
      ['worker'],
      ['s3', 'download'],
    ]) {
      assert.ok(
        commands.some((c) => expected.every((w) => c.args.includes(w))),
        `README shows rootfs ${expected.join(' ')}`,
      );
    }
    for (const { where, args } of commands) {
      await parseOnly(args).catch((err: Error) => assert.fail(`${where}: rootfs ${args.join(' ')}: ${err.message}`));
    }
  });

  it('every command’s help has an Example: that parses, and a wrong one would not', async () => {
    const commands = helpExamples();
    assert.ok(commands.length >= 18, `found ${commands.length} commands`);
    assert.deepEqual(
      commands.filter((c) => !c.examples.length).map((c) => c.command),
      [],
      'commands without an example',
    );
    for (const example of commands.flatMap((c) => c.examples)) {
      await parseOnly(shellWords(example).slice(1)).catch((err: Error) =>
        assert.fail(`help example "${example}": ${err.message}`),
      );
    }
    await assert.rejects(parseOnly(['create-all', '--concurrency', 'zero']), /positive whole number/);
    await assert.rejects(parseOnly(['s3', 'upload-single']), /missing required argument/);
  });

  it('every YAML example is a valid config', () => {
    const yamls = fencedBlocks().filter((b) => b.lang === 'yaml');
    assert.ok(yamls.length >= 2, 'README has its config examples');
    const dir = tempDir('docs');
    for (const block of yamls) {
      const file = path.join(dir, 'rootfs.yaml');
      fs.writeFileSync(file, block.text);
      try {
        loadConfig({ file, env: {} });
      } catch (err) {
        assert.fail(`${block.file}:${block.line}: ${(err as Error).message}`);
      }
    }
  });

  it('the read-only examples run: config, iam-policy, bootstrap-script', () => {
    const cli = path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
    const run = (args: string[]) =>
      spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ROOTFS_CONFIG: '' } });
    const config = run(['config']);
    assert.equal(config.status, 0, config.stderr);
    assert.equal((JSON.parse(config.stdout) as { workspace: string }).workspace, '/srv/firecracker');
    const policy = run(['s3', 'iam-policy']);
    assert.equal(policy.status, 0, policy.stderr);
    assert.match(policy.stdout, /"s3:ListMultipartUploadParts"/);
    const script = run(['s3', 'bootstrap-script', '--fallback-url', 'https://images.example.internal/rootfs']);
    assert.equal(script.status, 0, script.stderr);
    assert.match(script.stdout, /^#!\/bin\/bash\n/);
    assert.match(script.stdout, /https:\/\/images\.example\.internal\/rootfs/);
  });
});
