// `connect` with the real @kubernetes/client-node against `kubeleash sandbox`: every request
// goes through the Rust tower stack in the binding.
import assert from 'node:assert/strict'
import { createServer, request } from 'node:http'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'

import * as k8s from '@kubernetes/client-node'
import { APPROVER_FAILED, Policy, connect, listen, verifyRecord } from 'kubeleash'

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

/** A configmap body named `name`. */
const configMap = (name) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { k: 'v' } })

/** `promise`, or a failure after 10 s. */
async function within(promise, what) {
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not arrive in 10 s`)), 10_000)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Await `promise`, expecting the client's ApiException with this code; returns its Status. */
async function apiError(promise, code) {
  try {
    await promise
  } catch (e) {
    assert.ok(e instanceof k8s.ApiException, `not an ApiException: ${e.stack}`)
    assert.equal(e.code, code, e.message)
    const status = typeof e.body === 'string' ? JSON.parse(e.body) : e.body
    assert.equal(status.kind, 'Status')
    assert.equal(status.code, code)
    return status
  }
  assert.fail(`expected HTTP ${code}`)
}

describe('connect', () => {
  let kc
  let core

  before(async () => {
    kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT })
    core = kc.makeApiClient(k8s.CoreV1Api)
  })

  after(() => kc.close())

  test('returns a KubeConfig pointing at a loopback listener', () => {
    assert.ok(kc instanceof k8s.KubeConfig)
    assert.match(kc.getCurrentCluster().server, /^http:\/\/127\.0\.0\.1:\d+$/)
    assert.equal(kc.getContextObject(kc.getCurrentContext()).namespace, 'dev')
  })

  test("the operator's credential is nowhere in JavaScript", () => {
    assert.ok(!kc.exportConfig().includes(OPERATOR_TOKEN))
    assert.ok(!JSON.stringify(kc).includes(OPERATOR_TOKEN))
    assert.notEqual(kc.getCurrentUser().token, OPERATOR_TOKEN)
  })

  test('secrets come back masked, and still decode', async () => {
    const list = await core.listNamespacedSecret({ namespace: 'dev' })
    assert.ok(list.items.length > 0)
    let values = 0
    for (const s of list.items) {
      for (const v of Object.values(s.data ?? {})) {
        assert.equal(v, MASKED, `secret ${s.metadata.name}`)
        assert.equal(Buffer.from(v, 'base64').toString(), '[masked]')
        values++
      }
    }
    assert.ok(values > 0)
    const one = await core.readNamespacedSecret({ name: 'db-credentials', namespace: 'dev' })
    assert.ok(!JSON.stringify(one).includes('S3cr3t'))
  })

  test('a protected delete is refused: ApiException 403 with the rule in the Status', async () => {
    const status = await apiError(core.deleteNamespace({ name: 'prod' }), 403)
    assert.equal(status.reason, 'Forbidden')
    assert.match(status.message, /protect-prod/)
    assert.match(status.message, /^kubeleash: /)
    // Still there.
    assert.equal((await kc.makeApiClient(k8s.CoreV1Api).listNamespacedSecret({ namespace: 'dev' })).kind, 'SecretList')
  })

  test('a default deny is a 403 too', async () => {
    const status = await apiError(core.listNamespacedSecret({ namespace: 'kube-system' }), 403)
    assert.match(status.message, /no rule allows list on secrets in namespace kube-system/)
  })

  test('without an approver a held request is denied', async () => {
    const status = await apiError(core.createNamespacedConfigMap({ namespace: 'dev', body: configMap('unapproved') }), 403)
    assert.match(status.message, /configmaps-need-a-human/)
    assert.match(status.message, /no approver/)
  })

  test('a watch streams events masked as they happen', async () => {
    const events = []
    let sawNew
    const seen = new Promise((resolve) => (sawNew = resolve))
    const watch = new k8s.Watch(kc)
    const req = await watch.watch(
      '/api/v1/namespaces/dev/secrets',
      {},
      (type, obj) => {
        events.push({ type, obj })
        if (obj?.metadata?.name === 'made-while-watching') sawNew({ type, obj })
      },
      () => {},
    )
    try {
      // The secret is made after the watch started: its event must arrive while it is open.
      await core.createNamespacedSecret({
        namespace: 'dev',
        body: { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'made-while-watching' }, stringData: { password: 'fresh-Pa55word-123' } },
      })
      const ev = await within(seen, 'the watch event')
      assert.equal(ev.type, 'ADDED')
      assert.equal(ev.obj.data.password, MASKED)
      for (const e of events) {
        for (const v of Object.values(e.obj?.data ?? {})) assert.equal(v, MASKED)
      }
      assert.ok(!JSON.stringify(events).includes('fresh-Pa55word'))
    } finally {
      req.abort()
    }
  })

  test('a followed log streams through masked while it stays open', async () => {
    const pods = await core.listNamespacedPod({ namespace: 'dev', labelSelector: 'app=web' })
    assert.ok(pods.items.length > 0)
    const texts = await Promise.all(
      pods.items.map(async (pod) => {
        let text = ''
        let ended = false
        let gotFirst
        const first = new Promise((resolve) => (gotFirst = resolve))
        const sink = new Writable({
          write(chunk, _enc, cb) {
            text += chunk
            if (text.includes('listening on :8080')) gotFirst()
            cb()
          },
          final(cb) {
            ended = true
            cb()
          },
        })
        // client-node's Log pipes the response into the sink and leaves the response stream
        // without an error listener, so aborting it would be an uncaught error: listen here.
        sink.on('pipe', (source) => source.on('error', () => {}))
        const ctl = await new k8s.Log(kc).log('dev', pod.metadata.name, 'web', sink, { follow: true })
        try {
          await within(first, 'the log')
          assert.equal(ended, false, 'the log arrived only when the stream ended')
        } finally {
          ctl.abort()
        }
        return text
      }),
    )
    for (const text of texts) {
      assert.doesNotMatch(text, /Bearer eyJ/)
      assert.doesNotMatch(text, /PRIVATE KEY-----\n[A-Za-z0-9+/]{20}/)
    }
    assert.ok(texts.some((t) => t.includes('[masked:')), 'no pod log had anything masked')
  })
})

describe('approvals', () => {
  let kc
  let asked = []

  before(async () => {
    kc = await connect(POLICY, {
      kubeconfig: kubeconfig.path,
      ...AGENT,
      onError: () => {},
      approver: async (request) => {
        asked.push(request)
        await new Promise((resolve) => setTimeout(resolve, 10))
        if (request.body?.includes('"please-approve"')) return { approve: true, by: 'alice' }
        if (request.body?.includes('"throws"')) throw new Error('approver crashed')
        return { approve: false, by: 'bob', reason: 'not today' }
      },
    })
  })

  after(() => kc.close())

  test('approved: the request goes through', async () => {
    asked = []
    const cm = await kc.makeApiClient(k8s.CoreV1Api).createNamespacedConfigMap({ namespace: 'dev', body: configMap('please-approve') })
    assert.equal(cm.metadata.name, 'please-approve')
    assert.equal(asked.length, 1)
    const r = asked[0]
    assert.equal(r.rule, 'configmaps-need-a-human')
    assert.equal(r.user, 'agent-1')
    assert.deepEqual(r.groups, ['ai-agents'])
    assert.equal(r.method, 'POST')
    assert.equal(r.attributes.verb, 'create')
    assert.equal(r.attributes.resource, 'configmaps')
    assert.match(r.kubectl, /kubectl/)
    // Random per hold (at least 64 bits): only the shape is stable.
    assert.match(r.id, /^[0-9a-f]{16,}$/)
  })

  test('denied: ApiException 403 with who and why', async () => {
    const status = await apiError(
      kc.makeApiClient(k8s.CoreV1Api).createNamespacedConfigMap({ namespace: 'dev', body: configMap('please-deny') }),
      403,
    )
    assert.match(status.message, /bob denied approval [0-9a-f]+: not today/)
  })

  test('an approver that throws denies, with a fixed reason', async () => {
    const status = await apiError(
      kc.makeApiClient(k8s.CoreV1Api).createNamespacedConfigMap({ namespace: 'dev', body: configMap('throws') }),
      403,
    )
    assert.ok(status.message.includes(APPROVER_FAILED), status.message)
    assert.doesNotMatch(status.message, /approver crashed/)
  })

  test('simple answers: true and "deny"', async () => {
    const yes = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, approver: () => true })
    const no = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, approver: () => 'deny' })
    try {
      await yes.makeApiClient(k8s.CoreV1Api).createNamespacedConfigMap({ namespace: 'dev', body: configMap('yes') })
      await apiError(no.makeApiClient(k8s.CoreV1Api).createNamespacedConfigMap({ namespace: 'dev', body: configMap('no') }), 403)
    } finally {
      yes.close()
      no.close()
    }
  })

  test('an approver that never answers times out into a denial', async () => {
    const slow = await connect(POLICY, {
      kubeconfig: kubeconfig.path,
      ...AGENT,
      approver: () => new Promise(() => {}),
      approvalTimeoutSeconds: 0.3,
    })
    try {
      const status = await apiError(slow.makeApiClient(k8s.CoreV1Api).createNamespacedConfigMap({ namespace: 'dev', body: configMap('late') }), 403)
      assert.match(status.message, /nobody answered/)
    } finally {
      slow.close()
    }
  })
})

describe('record', () => {
  test('every request is recorded, the log verifies, and holds no secret', async () => {
    const path = join(kubeconfig.dir, 'record.jsonl')
    const kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, record: path })
    const core = kc.makeApiClient(k8s.CoreV1Api)
    await core.listNamespacedSecret({ namespace: 'dev' })
    await apiError(core.deleteNamespace({ name: 'prod' }), 403)
    kc.close()
    const text = readFileSync(path, 'utf8')
    const v = verifyRecord(text)
    assert.equal(v.ok, true, JSON.stringify(v.problems))
    assert.deepEqual(v.problems, [])
    const requests = v.records.filter((r) => r.kind === 'request')
    const denied = requests.find((r) => r.request.target === '/api/v1/namespaces/prod')
    assert.equal(denied.decision.effect, 'deny')
    assert.equal(denied.decision.rule, 'protect-prod')
    assert.equal(denied.decision.outcome, 'refused')
    assert.equal(denied.identity.user, 'agent-1')
    const listed = requests.find((r) => r.request.target.startsWith('/api/v1/namespaces/dev/secrets'))
    assert.equal(listed.decision.effect, 'allow')
    assert.equal(v.records.at(-1).kind, 'end')
    assert.ok(!text.includes('S3cr3t') && !text.includes(OPERATOR_TOKEN))
    // Any edit breaks the chain.
    const tampered = text.replace('"protect-prod"', '"read-dev"')
    assert.equal(verifyRecord(tampered).ok, false)
  })
})

describe('audit mode', () => {
  test('decides and records but lets the request through', async () => {
    const kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, mode: 'audit' })
    try {
      const list = await kc.makeApiClient(k8s.CoreV1Api).listNamespacedSecret({ namespace: 'kube-system' })
      for (const s of list.items) for (const v of Object.values(s.data ?? {})) assert.equal(v, MASKED)
    } finally {
      kc.close()
    }
  })
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
