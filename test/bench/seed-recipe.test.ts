import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from '../support/process';
import { benchPath, run } from './run';

/**
 * bench/seed-recipe.sh's command line. A full run takes minutes (five debootstraps), so the suite
 * checks what it refuses before it builds anything; bench/build runs the recipe itself in CI.
 */
describe('bench: seed recipe command line', () => {
  const script = benchPath('seed-recipe.sh');
  const LANGUAGES = ['bash', 'python', 'nodejs', 'go', 'rust'];

  it('--help prints the usage with the five languages and exits 0', async () => {
    const r = await run(script, ['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: bench\/seed-recipe\.sh \[options\] \[LANGUAGE\.\.\.\]/);
    assert.ok(r.stdout.includes(`default: ${LANGUAGES.join(' ')}.`), r.stdout);
    for (const opt of ['--work DIR', '--keep', '--keyring FILE', '--operator FILE', 'SEED_MIRROR', 'SEED_S3_BUCKET'])
      assert.ok(r.stdout.includes(opt), `usage mentions ${opt}`);
  });

  it('refuses an unknown language, or a path posing as one, naming the known ones', async () => {
    for (const lang of ['cobol', '../bash', 'Bash', 'bash;true']) {
      const r = await run(script, ['bash', lang]);
      assert.equal(r.code, 2, `${lang}: ${r.stderr}`);
      assert.equal(r.stderr.trim(), `seed-recipe: unknown language '${lang}' (known: ${LANGUAGES.join(' ')})`);
      assert.equal(r.stdout, '');
    }
  });

  it('refuses unknown options and options without their value', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--fast'], /unknown option '--fast'/],
      [['--work'], /--work needs a directory/],
      [['--keyring'], /--keyring needs a file/],
      [['--keyring', '/nonexistent/keyring.gpg', 'bash'], /no archive keyring at \/nonexistent\/keyring\.gpg/],
    ];
    for (const [args, message] of cases) {
      const r = await run(script, args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });

  it('refuses a bad bucket or mirror from the environment, and a work directory that is not empty', async () => {
    const bucket = await run(script, ['bash'], { SEED_S3_BUCKET: 'Not_A_Bucket' });
    assert.equal(bucket.code, 2);
    assert.match(bucket.stderr, /SEED_S3_BUCKET is not a bucket name/);
    const mirror = await run(script, ['bash'], { SEED_MIRROR: 'ftp://example.invalid/ubuntu' });
    assert.equal(mirror.code, 2);
    assert.match(mirror.stderr, /SEED_MIRROR is not an http\(s\) URL/);
    const work = tempDir('seed-recipe');
    fs.writeFileSync(path.join(work, 'mine'), "not the recipe's");
    const busy = await run(script, ['--work', work, 'bash']);
    assert.equal(busy.code, 2, busy.stderr);
    assert.match(busy.stderr, /is not an empty directory/);
    assert.deepEqual(fs.readdirSync(work), ['mine'], 'nothing was written into it, nor removed');
  });
});
