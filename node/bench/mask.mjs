// Masking a 10,000-item SecretList: `policy.mask` against what a JavaScript agent would do
// without kubeleash (JSON.parse, replace every `data` value, JSON.stringify), on the same bytes
// in the same run, so a noisy machine still gives a true ratio. Goal: at least 5x.
//
//   node bench/mask.mjs            (after `npm run build`, which builds the release addon)
import assert from 'node:assert/strict'
import { performance } from 'node:perf_hooks'

import { Policy } from 'kubeleash'

const ITEMS = 10_000
const ROUNDS = 15

const policy = Policy.fromYaml('apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {name: bench}\nspec:\n  rules: []\n')

function secretList(n) {
  const items = []
  for (let i = 0; i < n; i++) {
    items.push({
      metadata: {
        name: `app-secret-${i}`, namespace: 'prod', uid: `6f1c2e0a-0000-4000-8000-${String(i).padStart(12, '0')}`,
        resourceVersion: String(100000 + i), creationTimestamp: '2026-11-01T10:00:00Z',
        labels: { app: `app-${i % 50}`, tier: 'backend' },
      },
      type: 'Opaque',
      data: {
        username: Buffer.from(`user-${i}`).toString('base64'),
        password: Buffer.from(`pw-${i}-${'x'.repeat(24)}`).toString('base64'),
        'config.json': Buffer.from(JSON.stringify({ endpoint: `https://db-${i}.internal:5432`, pool: 10 })).toString('base64'),
      },
    })
  }
  return Buffer.from(JSON.stringify({ kind: 'SecretList', apiVersion: 'v1', metadata: { resourceVersion: '123' }, items }))
}

/** The JavaScript baseline: what the built-in secret-data mask does, by hand. */
function jsMask(buf) {
  const list = JSON.parse(buf)
  for (const s of list.items) {
    for (const k of Object.keys(s.data ?? {})) s.data[k] = 'W21hc2tlZF0='
    for (const k of Object.keys(s.stringData ?? {})) s.stringData[k] = '[masked]'
  }
  return Buffer.from(JSON.stringify(list))
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

function time(fn) {
  const t0 = performance.now()
  fn()
  return performance.now() - t0
}

const body = secretList(ITEMS)
const ours = policy.mask('GET', '/api/v1/secrets', body)
assert.deepEqual(JSON.parse(ours), JSON.parse(jsMask(body)), 'both mask the same values')

const rust = []
const js = []
for (let r = 0; r < ROUNDS; r++) {
  // Alternate, so drift in the machine's speed hits both.
  rust.push(time(() => policy.mask('GET', '/api/v1/secrets', body)))
  js.push(time(() => jsMask(body)))
}
const [a, b] = [median(rust), median(js)]
const mib = body.length / (1024 * 1024)
console.log(`SecretList of ${ITEMS} items, ${mib.toFixed(1)} MiB, median of ${ROUNDS} rounds`)
console.log(`  policy.mask                          ${a.toFixed(1)} ms  (${(mib / (a / 1000)).toFixed(0)} MiB/s)`)
console.log(`  JSON.parse + JS mask + JSON.stringify ${b.toFixed(1)} ms  (${(mib / (b / 1000)).toFixed(0)} MiB/s)`)
console.log(`  ratio ${(b / a).toFixed(2)}x (goal: at least 5x)`)
