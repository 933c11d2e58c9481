// `connect` with the real @kubernetes/client-node, end to end, on both API servers: every
// scenario in `scenarios(kind)` runs once on `kubeleash sandbox` and once on a real
// kube-apiserver over HTTPS (tests/cluster/start.sh, seeded like the sandbox; one per test
// process, started at the beginning, while the sandbox half runs). On the real server the
// operator's kubeconfig (client certificate; token and exec plugin too) is read in Rust by
// kubeleash-connect, and the operator is a restricted RBAC user (reads everything, writes in dev
// and prod only). What really happened on a server is checked with an unguarded client with full
// rights, the judge: the sandbox itself, or the cluster's admin. Both servers are shared by the
// tests of this file: whatever a test creates has a name of its own. A server that does not
// start fails the tests that need it; none is skipped.
//
// A few scenarios run on one server only, each saying why: logs need a kubelet (sandbox only);
// credentials and TLS need a server that checks them (real only). Where the two servers answer
// differently, the test asserts each one's own answer and says DIFFERENCE (the real one is right).
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import * as k8s from '@kubernetes/client-node'
import { APPROVER_FAILED, Policy, connect, verifyRecord } from 'kubeleash'

import { operatorKubeconfig, sandboxKubeConfig, startCluster, startSandbox } from './sandbox.mjs'

// A full garbage collection on demand, without `--expose-gc` on the command line.
setFlagsFromString('--expose-gc')
const collectGarbage = runInNewContext('gc')

const POLICY = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: node-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: [pods, pods/log, secrets, configmaps], namespaces: [dev]}
    - {name: make-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create], resources: [configmaps], namespaces: [dev]}
    - {name: delete-scratch-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [delete], resources: [configmaps], namespaces: [dev], names: ["kl-node-*"]}
    - {name: secrets-need-a-human, effect: approve, verbs: [create], apiGroups: [""], resources: [secrets], namespaces: [dev]}
    - {name: configmap-edits-need-a-human, effect: approve, verbs: [patch], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: protect-prod, effect: deny, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [prod]}
    - {name: hands-off-prod, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [prod]}
`)
const AGENT = { user: 'agent-1', groups: ['ai-agents'] }
const MASKED = 'W21hc2tlZF0=' // base64('[masked]')
const DB_PASSWORD = 'S3cr3t-Db-P4ssw0rd!' // dev/db-credentials in both seeds
/** The sandbox authenticates nobody; kubeleash still sends this, and JavaScript never sees it. */
const SANDBOX_TOKEN = 'operator-token-that-javascript-never-sees'

// --- the servers ----------------------------------------------------------------------------

const started = {}
/** Started once each (the real one at the beginning, so it starts while the sandbox half runs). */
function start(kind) {
  started[kind] ??= kind === 'sandbox' ? startSandbox() : startCluster()
  // Failures are reported by each test that needs the server, not as an unhandled rejection.
  started[kind].catch(() => {})
  return started[kind]
}

before(() => {
  start('sandbox')
  start('real')
})

after(async () => {
  await Promise.allSettled(Object.values(started).map((p) => p.then((s) => s.stop())))
})

/** An unguarded CoreV1Api: the judge of what really is on a server. */
function judgeOf(kubeconfigPath) {
  const kc = new k8s.KubeConfig()
  kc.loadFromFile(kubeconfigPath)
  return kc.makeApiClient(k8s.CoreV1Api)
}

/** The judge for the sandbox (unguarded, no credential). */
async function sandboxJudge(url) {
  const kc = await sandboxKubeConfig(url)
  return kc.makeApiClient(k8s.CoreV1Api)
}

const servers = {}
/**
 * One API server as the scenarios see it: `kubeconfig` (the operator's, read by kubeleash),
 * `namespace` (its default), `url` (the server's own), `judge`, `secrets` (strings of the
 * operator's credential, which must never reach JavaScript), `env` (start.sh's, real only).
 */
function server(kind) {
  servers[kind] ??= start(kind).then(async (s) => {
    if (kind === 'sandbox') {
      const kc = operatorKubeconfig(s.url, SANDBOX_TOKEN)
      return { kind, url: s.url, kubeconfig: kc.path, namespace: 'dev', judge: await sandboxJudge(s.url), secrets: [SANDBOX_TOKEN] }
    }
    const text = readFileSync(s.env.KUBECONFIG_OPERATOR_CERT, 'utf8')
    const key = /client-key-data: *(\S+)/.exec(text)?.[1]
    assert.ok(key, 'the operator kubeconfig holds no client key')
    return {
      kind,
      url: s.env.KUBELEASH_CLUSTER_SERVER,
      kubeconfig: s.env.KUBECONFIG_OPERATOR_CERT,
      namespace: 'default',
      judge: judgeOf(s.env.KUBECONFIG_ADMIN),
      secrets: [key, Buffer.from(key, 'base64').toString().split('\n')[1], s.env.KUBELEASH_CLUSTER_OPERATOR_TOKEN],
      env: s.env,
    }
  })
  return servers[kind]
}

// --- helpers ----------------------------------------------------------------------------------

/** A configmap body named `name`. */
const configMap = (name) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { k: 'v' } })
const secret = (name, password) => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name }, stringData: { password } })
const unique = (prefix) => `${prefix}-${Math.random().toString(16).slice(2, 10)}`

/** `promise`, or a failure after 60 s (a failure bound under load, never a measurement). */
async function within(promise, what) {
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not arrive in 60 s`)), 60_000)
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

/** `connect` as the agent with `kubeconfig`; `body(core, kc)`; close. */
async function guarded(kubeconfig, body, options = {}) {
  const kc = await connect(POLICY, { kubeconfig, ...AGENT, ...options })
  try {
    return await body(kc.makeApiClient(k8s.CoreV1Api), kc)
  } finally {
    kc.close()
  }
}

/** A temporary directory for `body(dir)`, removed after. */
async function inTempDir(body) {
  const dir = mkdtempSync(join(tmpdir(), 'kubeleash-node-e2e-'))
  try {
    return await body(dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

// --- both servers -----------------------------------------------------------------------------

for (const kind of ['sandbox', 'real']) {
  describe(`on the ${kind === 'real' ? 'real kube-apiserver' : 'sandbox'}`, () => {
    test("connect gives a KubeConfig for a loopback listener, and the operator's credential stays in Rust", async () => {
      const s = await server(kind)
      await guarded(s.kubeconfig, async (core, kc) => {
        assert.ok(kc instanceof k8s.KubeConfig)
        assert.match(kc.getCurrentCluster().server, /^http:\/\/127\.0\.0\.1:\d+$/)
        assert.equal(kc.getContextObject(kc.getCurrentContext()).namespace, s.namespace)
        assert.match(s.url, kind === 'real' ? /^https:\/\/127\.0\.0\.1:\d+$/ : /^http:\/\/127\.0\.0\.1:\d+$/)
        const visible = kc.exportConfig() + JSON.stringify(kc)
        assert.ok(!visible.includes(`"${s.url}"`), 'the client knows the server')
        for (const secret of s.secrets) assert.ok(!visible.includes(secret), `the client holds the operator's credential (${secret.length} chars)`)
        assert.equal((await core.listNamespacedConfigMap({ namespace: 'dev' })).kind, 'ConfigMapList')
      })
    })

    test('the agent asks kubeleash what it may do: access reviews answered from the policy', async () => {
      const s = await server(kind)
      await guarded(s.kubeconfig, async (core, kc) => {
        const authz = kc.makeApiClient(k8s.AuthorizationV1Api)
        const ask = async (resourceAttributes) =>
          (await authz.createSelfSubjectAccessReview({ body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes } } })).status
        const yes = await ask({ verb: 'list', resource: 'secrets', namespace: 'dev' })
        assert.equal(yes.allowed, true, JSON.stringify(yes))
        assert.match(yes.reason, /rule "read-dev" allows/)
        const no = await ask({ verb: 'get', resource: 'secrets', namespace: 'prod' })
        assert.equal(no.allowed, false)
        assert.equal(no.denied, true)
        assert.match(no.reason, /rule "hands-off-prod" denies/)
        const held = await ask({ verb: 'create', resource: 'secrets', namespace: 'dev' })
        assert.equal(held.allowed, false)
        assert.ok(!held.denied, JSON.stringify(held))
        assert.match(held.reason, /a person's approval: rule "secrets-need-a-human"/)
        const rules = (await authz.createSelfSubjectRulesReview({ body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectRulesReview', spec: { namespace: 'dev' } } })).status
        assert.ok(rules.resourceRules.some((r) => r.verbs.join() === 'create' && r.resources.join() === 'configmaps'), JSON.stringify(rules))
        assert.equal(rules.incomplete, true)
        assert.match(rules.evaluationError, /secrets-need-a-human/)
        // What it said is what happens.
        const refused = await apiError(core.readNamespacedSecret({ name: 'db-credentials', namespace: 'prod' }), 403)
        assert.match(refused.message, /hands-off-prod/)
        // The refusal as fields a program can act on.
        const causes = Object.fromEntries(refused.details.causes.map((c) => [c.field, c.message]))
        assert.equal(causes['kubeleash.rule'], 'hands-off-prod')
        assert.match(causes['kubeleash.approval'], /^none for this request/)
        assert.equal(causes['kubeleash.nearest.namespace'], 'dev')
        assert.equal(causes['kubeleash.nearest.verb'], 'get')
        assert.match(refused.message, /the nearest request the policy allows: get on secrets\/db-credentials in namespace dev/)
      })
    })

    test('pods are listed as the server has them', async () => {
      const s = await server(kind)
      await guarded(s.kubeconfig, async (core) => {
        const pods = await core.listNamespacedPod({ namespace: 'dev' })
        const names = pods.items.map((p) => p.metadata.name)
        // The sandbox names its pods anew at each start: look them up by prefix.
        assert.ok(names.filter((n) => n.startsWith('web-')).length >= 2, names.join(' '))
        for (const p of pods.items) assert.ok(p.metadata.uid && p.metadata.resourceVersion, p.metadata.name)
        const real = await s.judge.listNamespacedPod({ namespace: 'dev' })
        assert.deepEqual(names.sort(), real.items.map((p) => p.metadata.name).sort())
      })
    })

    test('secrets come back masked and still decode: nothing of what the judge sees comes through', async () => {
      const s = await server(kind)
      const real = await s.judge.readNamespacedSecret({ name: 'db-credentials', namespace: 'dev' })
      // The server does hold the password: the masking is kubeleash's.
      assert.equal(Buffer.from(real.data.password, 'base64').toString(), DB_PASSWORD)
      const values = Object.values(real.data).flatMap((v) => [v, Buffer.from(v, 'base64').toString()]).filter((v) => v.length >= 8)
      assert.ok(values.length >= 4, values.length)
      await guarded(s.kubeconfig, async (core) => {
        const one = await core.readNamespacedSecret({ name: 'db-credentials', namespace: 'dev' })
        assert.deepEqual(Object.keys(one.data).sort(), Object.keys(real.data).sort())
        for (const [k, v] of Object.entries(one.data)) assert.equal(v, MASKED, k)
        const text = JSON.stringify(one)
        for (const v of values) assert.ok(!text.includes(v), `the guarded read holds a real value (${v.length} chars)`)
        const listed = await core.listNamespacedSecret({ namespace: 'dev' })
        assert.ok(listed.items.length > 1)
        let count = 0
        for (const item of listed.items) {
          for (const v of Object.values(item.data ?? {})) {
            assert.equal(v, MASKED, item.metadata.name)
            assert.equal(Buffer.from(v, 'base64').toString(), '[masked]')
            count++
          }
        }
        assert.ok(count >= 5, count)
        assert.ok(!JSON.stringify(listed).includes(DB_PASSWORD))
      })
    })

    test('a configmap is created and deleted', async () => {
      const s = await server(kind)
      const name = unique('kl-node')
      await guarded(s.kubeconfig, async (core) => {
        const made = await core.createNamespacedConfigMap({ namespace: 'dev', body: configMap(name) })
        assert.equal(made.metadata.name, name)
        assert.ok(made.metadata.uid)
        assert.deepEqual((await s.judge.readNamespacedConfigMap({ name, namespace: 'dev' })).data, { k: 'v' })
        await core.deleteNamespacedConfigMap({ name, namespace: 'dev' })
      })
      await apiError(s.judge.readNamespacedConfigMap({ name, namespace: 'dev' }), 404)
    })

    test('a protected delete is refused: ApiException 403 with the rule in the Status', async () => {
      const s = await server(kind)
      await guarded(s.kubeconfig, async (core) => {
        const status = await apiError(core.deleteNamespace({ name: 'prod' }), 403)
        assert.equal(status.reason, 'Forbidden')
        assert.match(status.message, /^kubeleash: /)
        assert.match(status.message, /protect-prod/)
      })
      assert.equal((await s.judge.readNamespace({ name: 'prod' })).status.phase, 'Active')
    })

    test('a default deny is a 403 too', async () => {
      const s = await server(kind)
      await guarded(s.kubeconfig, async (core) => {
        const status = await apiError(core.listNamespacedSecret({ namespace: 'kube-system' }), 403)
        assert.match(status.message, /no rule allows list on secrets in namespace kube-system/)
      })
    })

    test('a write the policy denies is refused with 403 and never reaches the server', async () => {
      const s = await server(kind)
      const name = unique('kl-node')
      const pod = (await s.judge.listNamespacedPod({ namespace: 'dev' })).items.find((p) => p.metadata.name.startsWith('web-'))
      assert.ok(pod, 'the seed has no web pod in dev')
      await inTempDir(async (dir) => {
        const record = join(dir, 'record.jsonl')
        await guarded(
          s.kubeconfig,
          async (core) => {
            // On the real server the operator's RBAC allows writes in prod: the refusal is the policy's.
            const status = await apiError(core.createNamespacedConfigMap({ namespace: 'prod', body: configMap(name) }), 403)
            assert.equal(status.reason, 'Forbidden')
            assert.match(status.message, /^kubeleash: /)
            assert.match(status.message, /hands-off-prod/)
            // No rule allows deleting pods.
            await apiError(core.deleteNamespacedPod({ name: pod.metadata.name, namespace: 'dev' }), 403)
          },
          { record },
        )
        await apiError(s.judge.readNamespacedConfigMap({ name, namespace: 'prod' }), 404)
        const still = await s.judge.readNamespacedPod({ name: pod.metadata.name, namespace: 'dev' })
        assert.equal(still.metadata.uid, pod.metadata.uid)
        assert.equal(still.metadata.deletionTimestamp, undefined)
        const check = verifyRecord(readFileSync(record, 'utf8'))
        assert.ok(check.ok, JSON.stringify(check.problems))
        const outcomes = check.records.filter((r) => r.kind === 'request').map((r) => [r.request.method, r.decision.outcome])
        assert.deepEqual(outcomes, [
          ['POST', 'refused'],
          ['DELETE', 'refused'],
        ])
      })
    })

    test('a watch streams events masked as they happen', async () => {
      const s = await server(kind)
      const name = unique('watched')
      await guarded(s.kubeconfig, async (_core, kc) => {
        const events = []
        let sawNew
        const seen = new Promise((resolve) => (sawNew = resolve))
        const req = await new k8s.Watch(kc).watch(
          '/api/v1/namespaces/dev/secrets',
          {},
          (type, obj) => {
            events.push({ type, obj })
            if (obj?.metadata?.name === name) sawNew({ type, obj })
          },
          () => {},
        )
        try {
          // Someone else (the judge) makes a secret after the watch started: its event must
          // arrive while the watch is open.
          await s.judge.createNamespacedSecret({ namespace: 'dev', body: secret(name, 'fresh-Pa55word-123') })
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
    })

    describe('approvals', () => {
      let kc
      let asked = []

      before(async () => {
        const s = await server(kind)
        kc = await connect(POLICY, {
          kubeconfig: s.kubeconfig,
          ...AGENT,
          onError: () => {},
          approver: async (request) => {
            asked.push(request)
            await new Promise((resolve) => setTimeout(resolve, 10))
            if (request.body?.includes('"please-approve-')) return { approve: true, by: 'alice' }
            if (request.body?.includes('"throws-')) throw new Error('approver crashed')
            return { approve: false, by: 'bob', reason: 'not today' }
          },
        })
      })

      after(() => kc?.close())

      test('approved: the request goes through, as the agent sent it', async () => {
        const s = await server(kind)
        asked = []
        const name = unique('please-approve')
        const made = await kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(name, 'approved-Pa55word') })
        assert.equal(made.metadata.name, name)
        assert.equal(made.data.password, MASKED)
        assert.equal(asked.length, 1)
        const r = asked[0]
        assert.equal(r.rule, 'secrets-need-a-human')
        assert.equal(r.user, 'agent-1')
        assert.deepEqual(r.groups, ['ai-agents'])
        assert.equal(r.method, 'POST')
        assert.equal(r.attributes.verb, 'create')
        assert.equal(r.attributes.resource, 'secrets')
        assert.match(r.kubectl, /^kubectl create -n dev/)
        // The person sees the body masked.
        assert.ok(!r.body.includes('approved-Pa55word'), r.body)
        // Random per hold (at least 64 bits): only the shape is stable.
        assert.match(r.id, /^[0-9a-f]{16,}$/)
        // No X-Kubeleash-Reason: none. A create's dry run has no live object: only additions,
        // the password masked.
        assert.equal(r.agentReason, null)
        assert.equal(r.dryRun?.status, 201, JSON.stringify(r.dryRun))
        assert.equal(r.dryRun.rejected, undefined)
        assert.ok(r.dryRun.changes.length > 0 && r.dryRun.changes.every((c) => !('before' in c) && 'after' in c), JSON.stringify(r.dryRun))
        assert.ok(r.dryRun.diff.startsWith('+ ') && r.dryRun.diff.includes(name) && r.dryRun.diff.includes(MASKED), r.dryRun.diff)
        assert.ok(!JSON.stringify(r).includes('approved-Pa55word') && !JSON.stringify(r).includes(Buffer.from('approved-Pa55word').toString('base64')))
        const real = await s.judge.readNamespacedSecret({ name, namespace: 'dev' })
        assert.equal(Buffer.from(real.data.password, 'base64').toString(), 'approved-Pa55word')
      })

      test('denied: ApiException 403 with who and why, and nothing reaches the server', async () => {
        const s = await server(kind)
        const name = unique('please-deny')
        const status = await apiError(kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(name, 'pw-123456') }), 403)
        assert.match(status.message, /bob denied approval [0-9a-f]+: not today/)
        await apiError(s.judge.readNamespacedSecret({ name, namespace: 'dev' }), 404)
      })

      test("a held patch: the approver sees the API server's dry run as a diff, and the agent's reason", async () => {
        const s = await server(kind)
        const name = unique('kl-node')
        const seen = []
        const edits = await connect(POLICY, {
          kubeconfig: s.kubeconfig,
          ...AGENT,
          approver: (request) => {
            seen.push(request)
            const ok = request.dryRun && request.dryRun.rejected === undefined && request.agentReason?.startsWith('approve me')
            return ok ? { approve: true, by: 'alice' } : { approve: false, by: 'alice', reason: 'not this one' }
          },
        })
        const core = edits.makeApiClient(k8s.CoreV1Api)
        // The agent's reason is a request header: client-node sets it with a middleware.
        const patch = (data, reason) => {
          let options = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch)
          if (reason !== undefined) options = k8s.setHeaderOptions('X-Kubeleash-Reason', reason, options)
          return core.patchNamespacedConfigMap({ name, namespace: 'dev', body: { data } }, options)
        }
        const stored = async () => (await s.judge.readNamespacedConfigMap({ name, namespace: 'dev' })).data
        try {
          await core.createNamespacedConfigMap({ namespace: 'dev', body: { ...configMap(name), data: { k: 'v', 'db-password': 'Old-Pa55word-41' } } })
          assert.equal(seen.length, 0, 'an allowed create asks nobody')
          const status = await apiError(patch({ k: 'x' }, 'just looking'), 403)
          assert.match(status.message, /alice denied approval [0-9a-f]+: not this one/)
          // A write the API server would refuse: the approver is told why.
          await apiError(patch({ 'not a key!': 'x' }), 403)
          // The dry runs stored nothing.
          assert.deepEqual(await stored(), { k: 'v', 'db-password': 'Old-Pa55word-41' })
          await patch({ k: 'w', 'db-password': 'New-Pa55word-42' }, 'approve me: rotate k for INC-42')
          assert.deepEqual(await stored(), { k: 'w', 'db-password': 'New-Pa55word-42' })
        } finally {
          edits.close()
          await s.judge.deleteNamespacedConfigMap({ name, namespace: 'dev' }).catch(() => {})
        }
        assert.equal(seen.length, 3, JSON.stringify(seen))
        const [looking, refused, approved] = seen
        assert.equal(looking.rule, 'configmap-edits-need-a-human')
        assert.equal(looking.method, 'PATCH')
        assert.equal(looking.agentReason, 'just looking')
        assert.deepEqual(looking.dryRun, {
          status: 200,
          changes: [{ path: 'data.k', before: 'v', after: 'x', masked: false }],
          diff: '~ data.k: v -> x\n',
        })

        assert.equal(refused.agentReason, null)
        assert.equal(refused.dryRun?.status, 422, JSON.stringify(refused.dryRun))
        assert.match(refused.dryRun.rejected, /valid config key/)
        assert.deepEqual(refused.dryRun.changes, [])

        assert.equal(approved.agentReason, 'approve me: rotate k for INC-42')
        assert.ok(approved.dryRun.diff.includes('~ data.k: v -> w\n'), approved.dryRun.diff)
        assert.ok(approved.dryRun.diff.includes('~ data.db-password: changed (masked)\n'), approved.dryRun.diff)
        const changed = Object.fromEntries(approved.dryRun.changes.map((c) => [c.path, c]))
        assert.equal(changed['data.db-password'].masked, true)
        assert.deepEqual(changed['data.k'], { path: 'data.k', before: 'v', after: 'w', masked: false })
        // The person never sees either password: not in the body, not in the diff.
        assert.doesNotMatch(JSON.stringify(seen), /Pa55word/)
      })

      test('an approver that throws denies, with a fixed reason', async () => {
        const status = await apiError(
          kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(unique('throws'), 'pw-123456') }),
          403,
        )
        assert.ok(status.message.includes(APPROVER_FAILED), status.message)
        assert.doesNotMatch(status.message, /approver crashed/)
      })

      test('simple answers: true and "deny"; no approver denies', async () => {
        const s = await server(kind)
        const yes = await connect(POLICY, { kubeconfig: s.kubeconfig, ...AGENT, approver: () => true })
        const no = await connect(POLICY, { kubeconfig: s.kubeconfig, ...AGENT, approver: () => 'deny' })
        const none = await connect(POLICY, { kubeconfig: s.kubeconfig, ...AGENT })
        try {
          await yes.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(unique('yes'), 'pw-123456') })
          await apiError(no.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(unique('no'), 'pw-123456') }), 403)
          const status = await apiError(none.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(unique('none'), 'pw-123456') }), 403)
          assert.match(status.message, /secrets-need-a-human/)
          assert.match(status.message, /no approver/)
        } finally {
          yes.close()
          no.close()
          none.close()
        }
      })

      test('an approver that never answers times out into a denial', async () => {
        const s = await server(kind)
        let asked
        const wasAsked = new Promise((resolve) => {
          asked = resolve
        })
        const slow = await connect(POLICY, {
          kubeconfig: s.kubeconfig,
          ...AGENT,
          // A promise nothing can settle and nothing else references.
          approver: () => {
            asked()
            return new Promise(() => {})
          },
          approvalTimeoutSeconds: 0.3,
        })
        try {
          const denied = apiError(slow.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secret(unique('late'), 'pw-123456') }), 403)
          // The garbage collector runs while the request is held: the unanswered promise must
          // stay an unanswered approval (the timeout's denial), not become an approver failure.
          await wasAsked
          // After the microtasks that still reference the approver's promise have run.
          await new Promise((resolve) => setImmediate(resolve))
          collectGarbage()
          collectGarbage()
          const status = await denied
          assert.match(status.message, /nobody answered/)
        } finally {
          slow.close()
        }
      })
    })

    test('every request is recorded, the log verifies, and holds no secret', async () => {
      const s = await server(kind)
      await inTempDir(async (dir) => {
        const path = join(dir, 'record.jsonl')
        await guarded(
          s.kubeconfig,
          async (core) => {
            await core.listNamespacedSecret({ namespace: 'dev' })
            await apiError(core.deleteNamespace({ name: 'prod' }), 403)
          },
          { record: path },
        )
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
        assert.equal(listed.decision.outcome, 'forwarded')
        assert.equal(v.records.at(-1).kind, 'end')
        assert.ok(!text.includes(DB_PASSWORD))
        for (const secret of s.secrets) assert.ok(!text.includes(secret))
        // Any edit breaks the chain.
        const tampered = text.replace('"protect-prod"', '"read-dev"')
        assert.equal(verifyRecord(tampered).ok, false)
      })
    })

    for (const mode of ['observe', 'audit']) test(`${mode} mode decides and records but lets the request through, still masked`, async () => {
      const s = await server(kind)
      await guarded(
        s.kubeconfig,
        async (core) => {
          const list = await core.listNamespacedSecret({ namespace: 'kube-system' })
          // Both seeds hold a bootstrap token in kube-system.
          const values = list.items.flatMap((item) => Object.values(item.data ?? {}))
          assert.ok(values.length > 0)
          for (const v of values) assert.equal(v, MASKED)
        },
        { mode },
      )
    })
  })
}

// --- one server only --------------------------------------------------------------------------

describe('on the sandbox only', () => {
  // SANDBOX ONLY: a pod's log comes from its kubelet, and the real test cluster has none (its
  // pods stay Pending; tests/cluster/README.md). The sandbox serves seeded, never-ending logs.
  test('a followed log streams through masked while it stays open', async () => {
    const s = await server('sandbox')
    await guarded(s.kubeconfig, async (core, kc) => {
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
})

describe('on the real kube-apiserver only', () => {
  // REAL ONLY: the sandbox authenticates nobody, so any credential works there; only a real
  // server shows that kubeleash sends the token and runs the exec plugin.
  for (const which of ['KUBECONFIG_OPERATOR_TOKEN', 'KUBECONFIG_OPERATOR_EXEC']) {
    test(`the ${which === 'KUBECONFIG_OPERATOR_TOKEN' ? 'token' : 'exec plugin'} kubeconfig works too`, async () => {
      const { env } = await server('real')
      await guarded(env[which], async (core, kc) => {
        const pods = await core.listNamespacedPod({ namespace: 'dev' })
        assert.ok(pods.items.some((p) => p.metadata.name.startsWith('web-')), pods.items.map((p) => p.metadata.name).join(' '))
        assert.ok(!(kc.exportConfig() + JSON.stringify(kc)).includes(env.KUBELEASH_CLUSTER_OPERATOR_TOKEN))
      })
    })
  }

  // REAL ONLY: the sandbox serves plain HTTP; a CA to distrust needs the real server's TLS.
  test('a server the kubeconfig does not trust: the agent gets an id, onError the details', async () => {
    const { env } = await server('real')
    const text = readFileSync(env.KUBECONFIG_OPERATOR_TOKEN, 'utf8')
    // The server's own serving certificate is not the CA that signed it.
    const wrong = readFileSync(join(dirname(env.KUBELEASH_CLUSTER_CA), 'apiserver.crt')).toString('base64')
    assert.match(text, /certificate-authority-data:/)
    const reports = []
    await inTempDir(async (dir) => {
      const path = join(dir, 'wrong-ca.kubeconfig')
      writeFileSync(path, text.replace(/certificate-authority-data: .*/, `certificate-authority-data: ${wrong}`))
      await guarded(
        path,
        async (core) => {
          const status = await apiError(core.listNamespacedPod({ namespace: 'dev' }), 502)
          const body = JSON.stringify(status)
          assert.ok(!body.includes(env.KUBELEASH_CLUSTER_SERVER) && !body.includes(env.KUBELEASH_CLUSTER_OPERATOR_TOKEN), body)
          const id = /correlation id ([0-9a-f]+)/.exec(status.message)?.[1]
          assert.ok(id, status.message)
          // The report crosses threads: wait for it (30 s is a failure bound, never a measurement).
          for (const deadline = Date.now() + 30_000; reports.length === 0 && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 10))
          assert.equal(reports.length, 1, JSON.stringify(reports))
          assert.equal(reports[0].kind, 'upstream')
          assert.equal(reports[0].id, id)
          assert.match(reports[0].message, /does not trust/)
          assert.ok(reports[0].message.includes(env.KUBELEASH_CLUSTER_SERVER), reports[0].message)
          assert.ok(!reports[0].message.includes(env.KUBELEASH_CLUSTER_OPERATOR_TOKEN), reports[0].message)
        },
        { onError: (r) => reports.push(r) },
      )
    })
  })
})
