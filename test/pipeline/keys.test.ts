import { strict as assert } from 'node:assert';
import { canonicalJson, KEY_PATTERN, stepKey } from '../../src/pipeline/keys';

describe('step keys', () => {
  const input = { suite: 'jammy', packages: ['a', 'b'], nested: { x: 1, y: [1, 2] } };

  it('are equal for equal inputs, whatever the order of object keys', () => {
    const reordered = { nested: { y: [1, 2], x: 1 }, packages: ['a', 'b'], suite: 'jammy' };
    assert.equal(stepKey('base', null, input), stepKey('base', null, reordered));
    assert.match(stepKey('base', null, input), KEY_PATTERN);
  });

  it('change when any part of the input changes', () => {
    const base = stepKey('base', null, input);
    const variants = [
      { ...input, suite: 'noble' },
      { ...input, packages: ['b', 'a'] }, // order of packages is meaningful
      { ...input, packages: ['a'] },
      { ...input, nested: { x: 2, y: [1, 2] } },
      { ...input, extra: null },
    ];
    const keys = new Set(variants.map((v) => stepKey('base', null, v)));
    assert.equal(keys.size, variants.length);
    assert.ok(!keys.has(base));
  });

  it('change when the previous key or the step changes', () => {
    const prevA = stepKey('base', null, { a: 1 });
    const prevB = stepKey('base', null, { a: 2 });
    const k = (prev: string) => stepKey('runtime', prev, input);
    assert.notEqual(k(prevA), k(prevB));
    assert.notEqual(stepKey('runtime', prevA, input), stepKey('operator', prevA, input));
  });

  it('refuse a previous key that is not a key', () => {
    assert.throws(() => stepKey('runtime', '../../etc', input), /not a step key/);
  });

  it('canonical JSON sorts keys at every depth and keeps arrays in order', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [3, 1], c: undefined } }), '{"a":{"d":[3,1]},"b":1}');
  });
});
