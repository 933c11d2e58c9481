// The shared corpus in tests/testdata: every case answers in Node exactly as in Rust
// (core/tests/classify_corpus.rs, decide_corpus.rs, mask_corpus.rs).
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'

import { Policy, classify } from 'kubeleash'

import { readJson, testdata } from './helpers.mjs'

const ATTRIBUTE_FIELDS = [
  'resourceRequest', 'verb', 'apiGroup', 'apiVersion', 'namespace', 'resource', 'subresource', 'name', 'path',
]

describe('classify.json', () => {
  const cases = readJson(testdata, 'classify.json')
  test('has the worked examples', () => assert.ok(cases.length >= 60, `only ${cases.length} cases`))
  for (const c of cases) {
    test(`${c.id}: ${c.method} ${c.target}`, () => {
      let got
      try {
        const a = classify(c.method, c.target, c.headers ?? [])
        got = Object.fromEntries(ATTRIBUTE_FIELDS.map((f) => [f, a[f]]))
      } catch (e) {
        assert.equal(e.name, 'RequestError', e.stack)
        got = { refused: e.code }
      }
      assert.deepEqual(got, c.expect)
    })
  }
})

describe('decide.json', () => {
  const cases = readJson(testdata, 'decide.json')
  const policies = new Map()
  const policy = (name) => {
    if (!policies.has(name)) policies.set(name, Policy.fromFile(join(testdata, 'policies', name)))
    return policies.get(name)
  }
  test('has its cases', () => assert.ok(cases.length >= 50, `only ${cases.length} cases`))
  for (const c of cases) {
    test(`${c.id}: ${c.method} ${c.target}`, () => {
      const d = policy(c.policy).evaluate({
        method: c.method,
        target: c.target,
        user: c.user ?? '',
        groups: c.groups ?? [],
        headers: c.headers ?? [],
        body: c.bodyFile ? readFileSync(join(testdata, c.bodyFile)) : (c.body ?? undefined),
      })
      assert.equal(d.effect, c.expect.effect, d.reason)
      assert.equal(d.rule, c.expect.rule ?? null, d.reason)
      assert.equal(d.allowed, d.effect === 'allow')
      if (c.expect.reasonContains) assert.ok(d.reason.includes(c.expect.reasonContains), d.reason)
    })
  }
})

describe('mask/cases.json', () => {
  const dir = join(testdata, 'mask')
  const cases = readJson(dir, 'cases.json')
  const policies = new Map()
  const policy = (name) => {
    if (!policies.has(name)) policies.set(name, Policy.fromFile(join(dir, 'policies', name)))
    return policies.get(name)
  }
  test('has its cases', () => assert.ok(cases.length >= 60, `only ${cases.length} cases`))
  for (const c of cases) {
    const plain = readFileSync(join(dir, c.input))
    const body = c.contentEncoding === 'gzip' ? gzipSync(plain) : plain
    const expected = readFileSync(join(dir, c.expected))
    const options = { contentType: c.contentType, contentEncoding: c.contentEncoding }
    /** Everything emitted before an error, and the error's code. */
    const run = (pieces) => {
      let m
      try {
        m = policy(c.policy).masker(c.method, c.target, c.headers ?? [], options)
      } catch (e) {
        assert.equal(e.name, 'MaskError', e.stack)
        return { out: Buffer.alloc(0), code: e.code }
      }
      const out = []
      try {
        for (const p of pieces) out.push(m.feed(p))
        out.push(m.finish())
      } catch (e) {
        assert.equal(e.name, 'MaskError', e.stack)
        out.push(e.safe)
        return { out: Buffer.concat(out), code: e.code }
      }
      return { out: Buffer.concat(out), code: undefined }
    }
    test(`${c.id}: ${c.method} ${c.target}`, (t) => {
      if (c.knownBug) {
        // Rust marks it too: its expected output is the right one, which the masker does not
        // produce yet. The case still must not crash here.
        run([body])
        t.skip(`known masker bug: ${c.knownBug}`)
        return
      }
      const whole = run([body])
      assert.equal(whole.code, c.expectedError, `error code`)
      assert.ok(whole.out.equals(expected), `output differs from ${c.expected}`)
      if (c.expectedError === undefined) {
        const once = policy(c.policy).mask(c.method, c.target, body, c.headers ?? [], options)
        assert.ok(once.equals(expected), 'policy.mask differs from the masker')
      }
      // Chunking does not change the output.
      for (const size of [1, 3, 7, 4096]) {
        const pieces = []
        for (let i = 0; i < body.length; i += size) pieces.push(body.subarray(i, i + size))
        const got = run(pieces)
        assert.equal(got.code, whole.code, `${size}-byte chunks: error code`)
        assert.ok(got.out.equals(whole.out), `${size}-byte chunks: output differs`)
      }
    })
  }
})
