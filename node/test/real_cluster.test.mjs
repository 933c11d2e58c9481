// `connect` with the real @kubernetes/client-node against a real kube-apiserver over HTTPS
// (tests/cluster/start.sh): the operator's client-certificate, token and exec-plugin kubeconfigs
// are read in Rust by kubeleash-connect. What really happened on the server is checked with a
// second, unguarded client as the cluster's admin. A cluster that does not start fails these
// tests; they never skip.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'

import * as k8s from '@kubernetes/client-node'
import { Policy, connect, verifyRecord } from 'kubeleash'

import { repo } from './helpers.mjs'

const run = promisify(execFile)
const CLUSTER = join(repo, 'tests', 'cluster')

const POLICY = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: node-real-cluster}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: [pods, secrets, configmaps], namespaces: [dev]}
    - {name: make-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create], resources: [configmaps], namespaces: [dev]}
    - {name: delete-scratch-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [delete], resources: [configmaps], namespaces: [dev], names: ["kl-node-*"]}
    - {name: hands-off-prod, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [prod]}
`)
const AGENT = { user: 'agent-1', groups: ['ai-agents'] }
const MASKED = 'W21hc2tlZF0=' // base64('[masked]')
const DB_PASSWORD = 'S3cr3t-Db-P4ssw0rd!' // tests/cluster/seed.yaml, dev/db-credentials

/** start.sh's variables (DIR/env, `KEY=value` lines quoted for the shell), read by the shell. */
async function readEnv(file) {
  const keys = readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => /^([A-Z_][A-Z0-9_]*)=/.exec(l)?.[1])
    .filter(Boolean)
  const { stdout } = await run('bash', ['-c', 'set -a; . "$1"; env -0', 'read-env', file])
  const all = new Map(stdout.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
  return Object.fromEntries(keys.map((k) => [k, all.get(k)]))
}

let dir
let env
let admin
/** Why the cluster is not there: every test fails with it (none is skipped). */
let failure = new Error('the cluster was not started')

before(
  async () => {
    dir = mkdtempSync(join(tmpdir(), 'kubeleash-node-cluster-'))
    const started = performance.now()
    try {
      await run(join(CLUSTER, 'start.sh'), [dir], {
        env: { ...process.env, KUBELEASH_CLUSTER_OWNER_PID: String(process.pid) },
        maxBuffer: 16 * 1024 * 1024,
        timeout: 900_000,
      })
    } catch (e) {
      failure = new Error(`tests/cluster/start.sh failed (${e.code ?? e.signal}); a real API server is required:\n${String(e.stderr ?? e.message).slice(-4000)}`)
      return
    }
    env = await readEnv(join(dir, 'env'))
    for (const k of ['KUBELEASH_CLUSTER_SERVER', 'KUBELEASH_CLUSTER_CA', 'KUBECONFIG_ADMIN', 'KUBECONFIG_OPERATOR_CERT', 'KUBECONFIG_OPERATOR_TOKEN', 'KUBECONFIG_OPERATOR_EXEC']) {
      if (!env[k]) {
        failure = new Error(`tests/cluster/start.sh wrote no ${k} in ${dir}/env`)
        return
      }
    }
    const kc = new k8s.KubeConfig()
    kc.loadFromFile(env.KUBECONFIG_ADMIN)
    admin = kc.makeApiClient(k8s.CoreV1Api)
    failure = undefined
    console.log(`# cluster started in ${((performance.now() - started) / 1000).toFixed(1)} s at ${env.KUBELEASH_CLUSTER_SERVER}`)
  },
  { timeout: 900_000 },
)

after(async () => {
  if (!dir) return
  try {
    await run(join(CLUSTER, 'stop.sh'), [dir], { timeout: 120_000 })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

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

/** `connect` as the agent with one of the operator's kubeconfigs; `body(core, kc)`; close. */
async function guarded(kubeconfig, body, options = {}) {
  const kc = await connect(POLICY, { kubeconfig, ...AGENT, ...options })
  try {
    return await body(kc.makeApiClient(k8s.CoreV1Api), kc)
  } finally {
    kc.close()
  }
}

const configMap = (name) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { k: 'v' } })
const scratchName = () => `kl-node-${Math.random().toString(16).slice(2, 10)}`

/** Fails the test if the cluster did not start. */
function cluster() {
  if (failure) throw failure
}


describe('connect to a real kube-apiserver over HTTPS', () => {
  test("pods are listed with the operator's client certificate", async () => {
    cluster()
    assert.match(env.KUBELEASH_CLUSTER_SERVER, /^https:\/\/127\.0\.0\.1:\d+$/)
    await guarded(env.KUBECONFIG_OPERATOR_CERT, async (core, kc) => {
      // The client talks to the loopback listener, never to the cluster.
      assert.match(kc.getCurrentCluster().server, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.ok(!kc.exportConfig().includes(env.KUBELEASH_CLUSTER_SERVER))
      assert.equal(kc.connection.namespace, 'default')
      const pods = await core.listNamespacedPod({ namespace: 'dev' })
      const names = pods.items.map((p) => p.metadata.name)
      assert.ok(names.includes('web-7d4b9c8f6-x2k9p') && names.includes('web-7d4b9c8f6-q8m4z'), names.join(' '))
      // Real objects: uids and resourceVersions the server made.
      for (const p of pods.items) assert.ok(p.metadata.uid && p.metadata.resourceVersion, p.metadata.name)
    })
  })

  for (const which of ['KUBECONFIG_OPERATOR_TOKEN', 'KUBECONFIG_OPERATOR_EXEC']) {
    test(`the ${which === 'KUBECONFIG_OPERATOR_TOKEN' ? 'token' : 'exec plugin'} kubeconfig works too`, async () => {
      cluster()
      await guarded(env[which], async (core) => {
        const pods = await core.listNamespacedPod({ namespace: 'dev' })
        assert.ok(pods.items.some((p) => p.metadata.name.startsWith('web-')), pods.items.map((p) => p.metadata.name).join(' '))
      })
    })
  }

  test('a secret is read masked: nothing of what the admin sees comes through', async () => {
    cluster()
    const real = await admin.readNamespacedSecret({ name: 'db-credentials', namespace: 'dev' })
    // The server does hold the password: the masking is kubeleash's.
    assert.equal(Buffer.from(real.data.password, 'base64').toString(), DB_PASSWORD)
    const secrets = Object.values(real.data).flatMap((v) => [v, Buffer.from(v, 'base64').toString()]).filter((v) => v.length >= 8)
    assert.ok(secrets.length >= 4, secrets.length)
    await guarded(env.KUBECONFIG_OPERATOR_CERT, async (core) => {
      const one = await core.readNamespacedSecret({ name: 'db-credentials', namespace: 'dev' })
      assert.deepEqual(Object.keys(one.data).sort(), Object.keys(real.data).sort())
      for (const [k, v] of Object.entries(one.data)) assert.equal(v, MASKED, k)
      const text = JSON.stringify(one)
      for (const s of secrets) assert.ok(!text.includes(s), `the guarded read holds a real value (${s.length} chars)`)
      const listed = await core.listNamespacedSecret({ namespace: 'dev' })
      assert.ok(listed.items.length > 1)
      let values = 0
      for (const s of listed.items) {
        for (const v of Object.values(s.data ?? {})) {
          assert.equal(v, MASKED, s.metadata.name)
          values++
        }
      }
      assert.ok(values > 0)
      assert.ok(!JSON.stringify(listed).includes(DB_PASSWORD))
    })
  })

  test('a configmap is created and deleted', async () => {
    cluster()
    const name = scratchName()
    await guarded(env.KUBECONFIG_OPERATOR_CERT, async (core) => {
      const made = await core.createNamespacedConfigMap({ namespace: 'dev', body: configMap(name) })
      assert.equal(made.metadata.name, name)
      assert.ok(made.metadata.uid)
      assert.deepEqual((await admin.readNamespacedConfigMap({ name, namespace: 'dev' })).data, { k: 'v' })
      await core.deleteNamespacedConfigMap({ name, namespace: 'dev' })
    })
    await apiError(admin.readNamespacedConfigMap({ name, namespace: 'dev' }), 404)
  })

  test('a write the policy denies is refused with 403 and never reaches the server', async () => {
    cluster()
    const name = scratchName()
    const pod = (await admin.listNamespacedPod({ namespace: 'dev' })).items.find((p) => p.metadata.name.startsWith('web-'))
    assert.ok(pod, 'the seed has no web pod in dev')
    const recordDir = mkdtempSync(join(tmpdir(), 'kubeleash-node-record-'))
    const record = join(recordDir, 'record.jsonl')
    try {
      await guarded(
        env.KUBECONFIG_OPERATOR_CERT,
        async (core) => {
          // The operator's RBAC allows writes in prod: the refusal is the policy's.
          const status = await apiError(core.createNamespacedConfigMap({ namespace: 'prod', body: configMap(name) }), 403)
          assert.equal(status.reason, 'Forbidden')
          assert.match(status.message, /^kubeleash: /)
          assert.match(status.message, /hands-off-prod/)
          // No rule allows deleting pods.
          await apiError(core.deleteNamespacedPod({ name: pod.metadata.name, namespace: 'dev' }), 403)
        },
        { record },
      )
      await apiError(admin.readNamespacedConfigMap({ name, namespace: 'prod' }), 404)
      const still = await admin.readNamespacedPod({ name: pod.metadata.name, namespace: 'dev' })
      assert.equal(still.metadata.uid, pod.metadata.uid)
      assert.equal(still.metadata.deletionTimestamp, undefined)
      const check = verifyRecord(readFileSync(record, 'utf8'))
      assert.ok(check.ok, JSON.stringify(check.problems))
      const outcomes = check.records.filter((r) => r.kind === 'request').map((r) => [r.request.method, r.decision.outcome])
      assert.deepEqual(outcomes, [
        ['POST', 'refused'],
        ['DELETE', 'refused'],
      ])
    } finally {
      rmSync(recordDir, { recursive: true, force: true })
    }
  })

  test('a server the kubeconfig does not trust: the agent gets an id, onError the details', async () => {
    cluster()
    const text = readFileSync(env.KUBECONFIG_OPERATOR_TOKEN, 'utf8')
    // The server's own serving certificate is not the CA that signed it.
    const wrong = readFileSync(join(dirname(env.KUBELEASH_CLUSTER_CA), 'apiserver.crt')).toString('base64')
    assert.match(text, /certificate-authority-data:/)
    const kcDir = mkdtempSync(join(tmpdir(), 'kubeleash-node-wrong-ca-'))
    const path = join(kcDir, 'wrong-ca.kubeconfig')
    writeFileSync(path, text.replace(/certificate-authority-data: .*/, `certificate-authority-data: ${wrong}`))
    const reports = []
    try {
      await guarded(
        path,
        async (core) => {
          const status = await apiError(core.listNamespacedPod({ namespace: 'dev' }), 502)
          const body = JSON.stringify(status)
          assert.ok(!body.includes(env.KUBELEASH_CLUSTER_SERVER) && !body.includes(env.KUBELEASH_CLUSTER_OPERATOR_TOKEN), body)
          const id = /correlation id ([0-9a-f]+)/.exec(status.message)?.[1]
          assert.ok(id, status.message)
          for (let i = 0; i < 100 && reports.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
          assert.equal(reports.length, 1, JSON.stringify(reports))
          assert.equal(reports[0].kind, 'upstream')
          assert.equal(reports[0].id, id)
          assert.match(reports[0].message, /does not trust/)
          assert.ok(reports[0].message.includes(env.KUBELEASH_CLUSTER_SERVER), reports[0].message)
          assert.ok(!reports[0].message.includes(env.KUBELEASH_CLUSTER_OPERATOR_TOKEN), reports[0].message)
        },
        { onError: (r) => reports.push(r) },
      )
    } finally {
      rmSync(kcDir, { recursive: true, force: true })
    }
  })
})
