// The API beyond the corpus: errors and their shape, headers, the masker in pieces, the
// Transform stream, masking off the main thread, the policy's own tests.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, test } from 'node:test'

import { Masker, MaskerStream, Policy, classify } from 'kubeleash'

import { randomSplit, readJson, repo, testdata, xorshift } from './helpers.mjs'

const agents = Policy.fromFile(join(repo, 'examples', 'agents.yaml'))

function secretList(n) {
  const items = []
  for (let i = 0; i < n; i++) {
    items.push({
      metadata: { name: `s-${i}`, namespace: 'dev', resourceVersion: String(1000 + i) },
      type: 'Opaque',
      data: { username: Buffer.from(`user-${i}`).toString('base64'), password: Buffer.from(`hunter-${i}-pw`).toString('base64') },
    })
  }
  return Buffer.from(JSON.stringify({ kind: 'SecretList', apiVersion: 'v1', metadata: { resourceVersion: '99' }, items }))
}

describe('Policy.fromYaml and fromFile errors', () => {
  const bad = 'apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: r, effect: permit, verbs: [lsit], resources: [pods]}\n'

  test('every problem, each with code, help and line and column', () => {
    assert.throws(() => Policy.fromYaml(bad), (e) => {
      assert.ok(e instanceof Error)
      assert.equal(e.name, 'PolicyError')
      assert.equal(e.code, 'policy-invalid')
      assert.match(e.message, /^policy has 2 errors; line 5, column \d+: rule `r` has unknown effect `permit`/)
      assert.deepEqual(e.errors.map((x) => [x.code, x.location.line]), [['effect', 5], ['unknown-verb', 5]])
      for (const x of e.errors) {
        assert.deepEqual(Object.keys(x).sort(), ['code', 'help', 'location', 'message'])
        assert.equal(typeof x.message, 'string')
        assert.equal(typeof x.help, 'string')
        assert.ok(x.location.column > 1)
      }
      return true
    })
  })

  test('a YAML syntax error has a location too', () => {
    assert.throws(() => Policy.fromYaml('spec: [\n'), (e) => {
      assert.equal(e.code, 'policy-invalid')
      assert.equal(e.errors[0].code, 'yaml')
      assert.ok(e.errors[0].location.line >= 1)
      return true
    })
  })

  test('a missing file is policy-read, in the same shape', () => {
    assert.throws(() => Policy.fromFile('/nonexistent/policy.yaml'), (e) => {
      assert.equal(e.name, 'PolicyError')
      assert.equal(e.code, 'policy-read')
      assert.equal(e.errors.length, 1)
      assert.deepEqual(e.errors[0], { message: e.message, help: null, code: 'policy-read', location: null })
      return true
    })
  })

  test('properties of a compiled policy', () => {
    assert.equal(agents.name, 'agents')
    assert.ok(agents.ruleCount >= 5)
    assert.ok(agents.testCount >= 10)
  })
})

describe('evaluate', () => {
  test('returns effect, rule, reason, request, allowed', () => {
    const d = agents.evaluate({ method: 'DELETE', target: '/api/v1/namespaces/kube-system', user: 'agent-1', groups: ['ai-agents'] })
    assert.deepEqual(Object.keys(d).sort(), ['allowed', 'effect', 'reason', 'request', 'rule'])
    assert.equal(d.effect, 'deny')
    assert.equal(d.rule, 'protect-system-namespaces')
    assert.equal(d.allowed, false)
    assert.equal(d.request.verb, 'delete')
    assert.equal(d.request.name, 'kube-system')
  })

  test('a non-canonical target is denied with request null', () => {
    const d = agents.evaluate({ method: 'GET', target: '/api/v1/namespaces/dev//pods', user: 'agent-1', groups: ['ai-agents'] })
    assert.equal(d.effect, 'deny')
    assert.equal(d.rule, null)
    assert.equal(d.request, null)
    assert.match(d.reason, /empty segment/)
  })

  test('headers as an object, with repeated values, or as pairs, decide alike', () => {
    const input = { method: 'GET', target: '/api/v1/namespaces/dev/pods', user: 'agent-1', groups: ['ai-agents'] }
    const pairs = agents.evaluate({ ...input, headers: [['Impersonate-User', 'admin'], ['Impersonate-Group', 'a'], ['Impersonate-Group', 'b']] })
    const object = agents.evaluate({ ...input, headers: { 'Impersonate-User': 'admin', 'Impersonate-Group': ['a', 'b'] } })
    assert.deepEqual(pairs, object)
    assert.equal(pairs.effect, 'deny')
  })

  test('a body as string or Buffer decides alike', () => {
    const policy = Policy.fromFile(join(testdata, 'policies', 'semantics.yaml'))
    const c = readJson(testdata, 'decide.json').find((x) => x.body)
    const input = { method: c.method, target: c.target, user: c.user, groups: c.groups, headers: c.headers }
    assert.deepEqual(policy.evaluate({ ...input, body: c.body }), policy.evaluate({ ...input, body: Buffer.from(c.body) }))
  })

  test('bad headers are a TypeError with a code, naming the header and not its value', () => {
    assert.throws(() => agents.evaluate({ method: 'GET', target: '/api', headers: { 'Bad Name': 'x' } }), (e) => {
      assert.ok(e instanceof TypeError)
      assert.equal(e.code, 'invalid-headers')
      assert.match(e.message, /`Bad Name`/)
      return true
    })
    assert.throws(() => agents.evaluate({ method: 'GET', target: '/api', headers: { Authorization: 'Bearer s3cr3t\n' } }), (e) => {
      assert.equal(e.code, 'invalid-headers')
      assert.doesNotMatch(e.message, /s3cr3t/)
      return true
    })
  })

  test('classify refuses with the refusal code', () => {
    assert.throws(() => classify('GET', '/api/v1/namespaces/dev//pods'), { name: 'RequestError', code: 'empty-segment' })
    assert.equal(classify('GET', '/api/v1/namespaces/dev/pods?watch=1').verb, 'watch')
  })
})

describe('mask and the masker', () => {
  const target = '/api/v1/namespaces/dev/secrets'
  const body = secretList(200)
  const whole = agents.mask('GET', target, body)

  test('mask returns a Buffer with every secret value replaced', () => {
    assert.ok(Buffer.isBuffer(whole))
    const list = JSON.parse(whole)
    assert.equal(list.items.length, 200)
    for (const s of list.items) assert.deepEqual(s.data, { username: 'W21hc2tlZF0=', password: 'W21hc2tlZF0=' })
    assert.ok(!whole.includes('aHVudGVy'))
  })

  test('a string body masks like a Buffer', () => {
    assert.ok(agents.mask('GET', target, body.toString()).equals(whole))
  })

  test('the output does not depend on how the input is split', () => {
    const below = xorshift(42)
    for (const max of [1, 2, 16, 300, 5000]) {
      const m = agents.masker('GET', target)
      const out = [...randomSplit(body, below, max).map((p) => m.feed(p)), m.finish()]
      assert.ok(Buffer.concat(out).equals(whole), `pieces of up to ${max} bytes`)
      assert.equal(m.maskedAnything, true)
    }
  })

  test('a malformed body throws a MaskError carrying only the safe bytes', () => {
    const m = agents.masker('GET', target)
    // Right after an item: a `:` there is not JSON.
    const good = m.feed(body.subarray(0, body.indexOf('},{') + 1))
    assert.throws(() => m.feed(Buffer.from(':')), (e) => {
      assert.equal(e.name, 'MaskError')
      assert.equal(e.code, 'malformed')
      assert.ok(Buffer.isBuffer(e.safe))
      assert.ok(whole.subarray(0, good.length + e.safe.length).equals(Buffer.concat([good, e.safe])))
      return true
    })
    // After an error the masker emits nothing more.
    assert.throws(() => m.feed(Buffer.from('{}')), { code: 'malformed' })
    assert.throws(() => m.finish(), { code: 'malformed' })
  })

  test('an unmaskable content type or encoding is refused up front', () => {
    assert.throws(() => agents.masker('GET', target, null, { contentType: 'application/yaml' }), { name: 'MaskError', code: 'content-type' })
    assert.throws(() => agents.mask('GET', target, body, null, { contentEncoding: 'br' }), { name: 'MaskError', code: 'content-encoding' })
    assert.throws(() => agents.mask('GET', target, '{"kind":'), { name: 'MaskError', code: 'incomplete' })
  })

  test('a pod log is masked as text by default', () => {
    const log = 'starting\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n'
    const out = agents.mask('GET', '/api/v1/namespaces/dev/pods/web/log', log).toString()
    assert.match(out, /^starting\n/)
    assert.doesNotMatch(out, /wJalrXUtnFEMI/)
  })

  test('maskAsync masks off the main thread to the same bytes', async () => {
    const big = secretList(10_000)
    let ticks = 0
    const timer = setInterval(() => ticks++, 1)
    const promise = agents.maskAsync('GET', target, big)
    assert.ok(promise instanceof Promise)
    const out = await promise
    clearInterval(timer)
    assert.ok(out.equals(agents.mask('GET', target, big)))
    await assert.rejects(agents.maskAsync('GET', target, Buffer.from('{"kind":')), { name: 'MaskError', code: 'incomplete' })
  })

  test('feedAsync and feed interleave on one masker', async () => {
    const m = agents.masker('GET', target)
    const a = await m.feedAsync(body.subarray(0, 5000))
    const b = m.feed(body.subarray(5000))
    assert.ok(Buffer.concat([a, b, m.finish()]).equals(whole))
  })
})

describe('Transform stream', () => {
  const target = '/api/v1/namespaces/dev/secrets'
  const body = secretList(2000)
  const whole = agents.mask('GET', target, body)

  // A source that lets the consumer run between chunks, as a socket would.
  async function* slowly(pieces) {
    for (const p of pieces) {
      yield p
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  async function collect(stream, pieces) {
    const out = []
    await pipeline(Readable.from(pieces), stream, async function* (source) {
      for await (const chunk of source) out.push(chunk)
    })
    return Buffer.concat(out)
  }

  test('masker.stream() is a Transform giving the same bytes', async () => {
    const below = xorshift(7)
    const stream = agents.masker('GET', target).stream()
    assert.ok(stream instanceof MaskerStream)
    assert.ok((await collect(stream, randomSplit(body, below, 3000))).equals(whole))
  })

  test('large chunks go through feedAsync', async () => {
    assert.ok(body.length > 256 * 1024)
    assert.ok((await collect(new MaskerStream(agents.masker('GET', target)), [body])).equals(whole))
  })

  test('string chunks work', async () => {
    assert.ok((await collect(agents.masker('GET', target).stream(), [body.toString()])).equals(whole))
  })

  test('a malformed body errors the stream after the safe bytes', async () => {
    const out = []
    const broken = Buffer.concat([body.subarray(0, body.indexOf('},{', 4000) + 1), Buffer.from(':')])
    await assert.rejects(
      pipeline(slowly(randomSplit(broken, xorshift(3), 500)), agents.masker('GET', target).stream(), async function* (source) {
        for await (const chunk of source) out.push(chunk)
      }),
      { name: 'MaskError', code: 'malformed' },
    )
    const got = Buffer.concat(out)
    assert.ok(got.length > 0)
    assert.ok(whole.subarray(0, got.length).equals(got))
  })

  test('a truncated body errors at the end', async () => {
    await assert.rejects(collect(agents.masker('GET', target).stream(), [body.subarray(0, 100)]), { code: 'incomplete' })
  })

  test('Masker is the class masker() returns', () => {
    assert.ok(agents.masker('GET', target) instanceof Masker)
  })
})

describe("the policy's own tests", () => {
  test('test() runs them', () => {
    const report = agents.test()
    assert.equal(report.passed, true)
    assert.equal(report.outcomes.length, agents.testCount)
    for (const o of report.outcomes) {
      assert.equal(o.passed, true, o.name)
      assert.ok(['allow', 'deny', 'approve'].includes(o.expect))
      assert.equal(typeof o.decision.reason, 'string')
    }
  })

  test('a failing test is reported with what was decided', () => {
    const text = readFileSync(join(repo, 'examples', 'agents.yaml'), 'utf8').replace(
      /expect: deny/, 'expect: allow',
    )
    const report = Policy.fromYaml(text).test()
    assert.equal(report.passed, false)
    const failed = report.outcomes.filter((o) => !o.passed)
    assert.equal(failed.length, 1)
    assert.equal(failed[0].expect, 'allow')
    assert.equal(failed[0].decision.effect, 'deny')
  })
})
