// Widened approvals with the real @kubernetes/client-node on the sandbox: the approver sees the
// axes a held request offers (`request.widen`), answers `{ approve: true, widen: {...} }`, and
// what the grant covers goes through without asking it again; everything else is held; the
// policy's floor (`widen.never`, by default Secrets and deletes) approves exactly whatever the
// answer says; a malformed widening is an approver failure.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, test } from 'node:test'

import * as k8s from '@kubernetes/client-node'
import { APPROVER_FAILED, Policy, connect } from 'kubeleash'

import { operatorKubeconfig, startSandbox } from './sandbox.mjs'

const POLICY = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: node-widen-tests}
spec:
  rules:
    - {name: make-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create, get], resources: [configmaps], namespaces: [dev]}
    - {name: configmap-edits-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [patch], resources: [configmaps], namespaces: [dev]}
    - {name: secrets-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [create], resources: [secrets], namespaces: [dev]}
`)

let sandbox
before(async () => {
  sandbox = await startSandbox()
})
after(async () => {
  await sandbox?.stop()
})

/** `connect` as the agent with `approver` (and `onError`); `body(core)`; close. */
async function guarded(approver, body, options = {}) {
  const kubeconfig = operatorKubeconfig(sandbox.url, 'operator-token').path
  const kc = await connect(POLICY, { kubeconfig, user: 'agent-1', groups: ['ai-agents'], approver, ...options })
  try {
    return await body(kc.makeApiClient(k8s.CoreV1Api))
  } finally {
    kc.close()
  }
}

const patch = (core, name) =>
  core.patchNamespacedConfigMap(
    { name, namespace: 'dev', body: { data: { k: 'widened' } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  )

async function failure(promise) {
  try {
    await promise
  } catch (e) {
    return e
  }
  assert.fail('the request went through')
}

test('a names glob with one use lets one more patch through without asking; outside it, or once spent, the approver is asked', async () => {
  const tag = randomBytes(4).toString('hex')
  const inside = ['a', 'b', 'c'].map((x) => `kl-nodew-${tag}-${x}`)
  const outside = `kl-nodeo-${tag}`
  const asked = []
  const approver = async (r) => {
    asked.push(r)
    if (r.attributes.name === inside[0]) return { approve: true, by: 'alice', widen: { names: `kl-nodew-${tag}-*`, uses: 1 } }
    return { approve: false, by: 'alice', reason: 'ask me again later' }
  }
  await guarded(approver, async (core) => {
    for (const name of [...inside, outside]) {
      await core.createNamespacedConfigMap({ namespace: 'dev', body: { metadata: { name }, data: { k: 'v' } } })
    }
    await patch(core, inside[0])
    const w = asked[0].widen
    assert.deepEqual(w, { never: null, names: true, fields: w.fields, usesAndTime: true })
    // Within the glob, the one further use: through, nobody asked.
    await patch(core, inside[1])
    assert.equal(asked.length, 1)
    // Outside the glob: held again, and denied.
    const e = await failure(patch(core, outside))
    assert.equal(e.code, 403)
    assert.match(String(e.body), /ask me again later/)
    // Within the glob, the use spent: held again.
    assert.equal((await failure(patch(core, inside[2]))).code, 403)
    assert.deepEqual(
      asked.map((r) => r.attributes.name),
      [inside[0], outside, inside[2]],
    )
    const got = {}
    for (const name of [...inside, outside]) got[name] = (await core.readNamespacedConfigMap({ name, namespace: 'dev' })).data.k
    assert.deepEqual(got, { [inside[0]]: 'widened', [inside[1]]: 'widened', [inside[2]]: 'v', [outside]: 'v' })
  })
})

test('a Secret is under the floor: widen.never is set and a widened answer approves exactly', async () => {
  const tag = randomBytes(4).toString('hex')
  const asked = []
  const approver = async (r) => {
    asked.push(r)
    return { approve: true, by: 'alice', widen: { uses: 5 } }
  }
  const secret = (name) => ({ metadata: { name }, stringData: { password: 'pw-0123456789' } })
  await guarded(approver, async (core) => {
    await core.createNamespacedSecret({ namespace: 'dev', body: secret(`kl-nodew-${tag}-a`) })
    await core.createNamespacedSecret({ namespace: 'dev', body: secret(`kl-nodew-${tag}-b`) })
  })
  // Both were asked: the widening of the first left no grant.
  assert.equal(asked.length, 2)
  const w = asked[0].widen
  assert.match(w.never ?? '', /ecret/)
  assert.deepEqual(w, { never: w.never, names: false, fields: [], usesAndTime: false })
})

test('a malformed widening is an approver failure: denied, and onError says what was wrong', async () => {
  // The report and the 403 travel apart: await the report rather than assume which comes first.
  let reported
  const report = new Promise((resolve) => (reported = resolve))
  const approver = async () => ({ approve: true, by: 'alice', widen: { names: 'x-*', uses: 0 } })
  const e = await guarded(approver, (core) => failure(patch(core, `kl-nodem-${randomBytes(4).toString('hex')}`)), {
    onError: reported,
  })
  assert.equal(e.code, 403)
  assert.ok(String(e.body).includes(APPROVER_FAILED), e.body)
  const r = await report
  assert.equal(r.kind, 'approver')
  assert.match(r.message, /`widen\.uses` must be a positive whole number, not 0/)
})
