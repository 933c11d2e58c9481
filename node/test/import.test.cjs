// CommonJS and ES module imports give the same package.
const assert = require('node:assert/strict')
const { test } = require('node:test')

test('require and import give the same objects', async () => {
  const cjs = require('kubeleash')
  const esm = await import('kubeleash')
  for (const name of ['Policy', 'Masker', 'MaskerStream', 'Connection', 'classify', 'connect', 'listen', 'verifyRecord']) {
    assert.equal(typeof cjs[name], 'function', name)
    assert.equal(esm[name], cjs[name], name)
  }
  assert.equal(esm.APPROVER_FAILED, cjs.APPROVER_FAILED)
  assert.equal(typeof cjs.APPROVER_FAILED, 'string')
  assert.equal(esm.default, cjs)
  const policy = cjs.Policy.fromYaml('apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n')
  assert.ok(policy instanceof esm.Policy)
})

test('the package entry points are what package.json names', () => {
  const pkg = require('kubeleash/package.json')
  assert.equal(pkg.main, 'index.js')
  assert.equal(pkg.types, 'index.d.ts')
  assert.deepEqual(pkg.exports['.'], { types: './index.d.ts', import: './index.mjs', require: './index.js' })
})
