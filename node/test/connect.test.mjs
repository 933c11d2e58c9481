// The binding's loopback listener (`listen`) against a stand-in upstream and the sandbox. The
// end-to-end scenarios of `connect` with the real @kubernetes/client-node run on both the sandbox
// and a real kube-apiserver in real_cluster.test.mjs.
import assert from 'node:assert/strict'
import { createServer, request } from 'node:http'
import { after, before, describe, test } from 'node:test'

import * as k8s from '@kubernetes/client-node'
import { Policy, connect, listen } from 'kubeleash'

import { operatorKubeconfig, startSandbox } from './sandbox.mjs'

const POLICY = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: node-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: [""], resources: [secrets, configmaps, pods, pods/log], namespaces: [dev]}
    - {name: write-dev, effect: allow, verbs: [create, delete], apiGroups: [""], resources: [secrets, configmaps], namespaces: [dev]}
    - {name: configmaps-need-a-human, effect: approve, verbs: [create], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: protect-prod, effect: deny, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [prod]}
    - {name: delete-namespaces, effect: allow, verbs: [delete], apiGroups: [""], resources: [namespaces]}
`)

const OPERATOR_TOKEN = 'operator-token-that-javascript-never-sees'
const MASKED = 'W21hc2tlZF0='
const AGENT = { user: 'agent-1', groups: ['ai-agents'] }

let sandbox
let kubeconfig

before(async () => {
  sandbox = await startSandbox()
  kubeconfig = operatorKubeconfig(sandbox.url, OPERATOR_TOKEN)
})

after(async () => {
  await sandbox?.stop()
})

describe('the listener', () => {
  test('refuses requests without the connection secret', async () => {
    const conn = await listen(POLICY, { kubeconfig: kubeconfig.path, ...AGENT })
    try {
      const none = await fetch(`${conn.url}/api/v1/namespaces/dev/secrets`)
      assert.equal(none.status, 401)
      const wrong = await fetch(`${conn.url}/api/v1/namespaces/dev/secrets`, { headers: { authorization: `Bearer ${'0'.repeat(64)}` } })
      assert.equal(wrong.status, 401)
      const right = await fetch(`${conn.url}/api/v1/namespaces/dev/secrets`, { headers: { authorization: `Bearer ${conn.token}` } })
      assert.equal(right.status, 200)
      assert.match(conn.url, /^http:\/\/127\.0\.0\.1:/)
    } finally {
      conn.close()
    }
  })

  test("sends the operator's credential upstream, never the agent's or the connection's", async () => {
    const seen = []
    const upstream = createServer((req, res) => {
      seen.push(req.headers)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ kind: 'SecretList', apiVersion: 'v1', metadata: {}, items: [{ metadata: { name: 'x' }, data: { a: 'c2VjcmV0' } }] }))
    })
    await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve))
    const fake = operatorKubeconfig(`http://127.0.0.1:${upstream.address().port}`, OPERATOR_TOKEN)
    const conn = await listen(POLICY, { kubeconfig: fake.path, ...AGENT })
    try {
      const r = await fetch(`${conn.url}/api/v1/namespaces/dev/secrets`, {
        headers: { authorization: `Bearer ${conn.token}`, 'impersonate-user': 'admin' },
      })
      // Impersonation was not allowed by name: refused before anything left.
      assert.equal(r.status, 403)
      assert.equal(seen.length, 0)
      const ok = await fetch(`${conn.url}/api/v1/namespaces/dev/secrets`, { headers: { authorization: `Bearer ${conn.token}` } })
      assert.equal(ok.status, 200)
      assert.equal((await ok.json()).items[0].data.a, MASKED)
      assert.equal(seen.length, 1)
      assert.equal(seen[0].authorization, `Bearer ${OPERATOR_TOKEN}`)
      assert.ok(!JSON.stringify(seen[0]).includes(conn.token))
    } finally {
      conn.close()
      upstream.close()
    }
  })

  test('an upgrade (exec) is not carried: 501 pointing to the proxy', async () => {
    const conn = await listen(POLICY, { kubeconfig: kubeconfig.path, ...AGENT })
    try {
      // fetch cannot send an upgrade; a plain HTTP request can.
      const { status, body } = await new Promise((resolve, reject) => {
        const req = request(`${conn.url}/api/v1/namespaces/dev/pods/web/exec?command=sh`, {
          headers: { authorization: `Bearer ${conn.token}`, connection: 'Upgrade', upgrade: 'websocket' },
        })
        req.on('response', (res) => {
          let text = ''
          res.on('data', (d) => (text += d))
          res.on('end', () => resolve({ status: res.statusCode, body: text }))
        })
        req.on('error', reject)
        req.end()
      })
      assert.equal(status, 501)
      assert.match(JSON.parse(body).message, /proxy/)
    } finally {
      conn.close()
    }
  })

  test('a bad kubeconfig rejects with a code', async () => {
    await assert.rejects(listen(POLICY, { kubeconfig: '/nonexistent/kubeconfig' }), { code: 'kubeconfig' })
    assert.throws(() => listen(POLICY, { kubeconfig: kubeconfig.path, mode: 'yolo' }), { name: 'TypeError', code: 'invalid-mode' })
    await assert.rejects(connect(POLICY, { kubeconfig: kubeconfig.path, mode: 'yolo' }), { code: 'invalid-mode' })
  })
})
