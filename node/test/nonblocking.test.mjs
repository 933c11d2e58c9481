// Non-blocking approvals (`connect(policy, { approvals: 'nonblocking', retryAfterSeconds })`) with
// the real @kubernetes/client-node, end to end on both API servers: `kubeleash sandbox` and a real
// kube-apiserver over HTTPS (tests/cluster/start.sh, seeded like the sandbox; started at the
// beginning, while the sandbox half runs). What really happened on a server is checked with an
// unguarded client with full rights, the judge. A server that does not start fails the tests
// that need it; none is skipped.
//
// A held write fails at once with ApiException 403 naming its approval; the approver is asked in
// the background; the agent sends the identical request again and learns the answer. The
// approver here is a desk the test answers (`desk()`): the test awaits each question and answers
// it, so nothing depends on how long anything takes. The layer keeps the approver's answer just
// after the approver's promise settles, so the first retry after an answer may still find the
// request pending: `untilAnswered` sends it again at once until it is not (as an agent would,
// without waiting out `retry-after`).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import * as k8s from '@kubernetes/client-node'
import { Policy, connect, listen } from 'kubeleash'

import { operatorKubeconfig, startCluster, startSandbox } from './sandbox.mjs'

const POLICY = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: node-nonblocking-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], resources: [configmaps], namespaces: [dev]}
    - {name: configmaps-need-a-human, effect: approve, reason: new configmaps are for people, subjects: {groups: [ai-agents]}, verbs: [create], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
`)
const AGENT = { user: 'agent-1', groups: ['ai-agents'] }
const RETRY_AFTER = 7
/** A bound on a wait that normally takes milliseconds (a question, an answer), never a measurement. */
const PATIENCE_MS = 60_000

// --- the servers ----------------------------------------------------------------------------

const started = {}
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

/** An unguarded CoreV1Api with full rights: the sandbox itself (plain HTTP), or the cluster's admin. */
function judge(kind, s) {
  const kc = new k8s.KubeConfig()
  if (kind === 'real') {
    kc.loadFromFile(s.env.KUBECONFIG_ADMIN)
  } else {
    kc.loadFromOptions({
      clusters: [{ name: 'sandbox', server: s.url, skipTLSVerify: true }],
      users: [{ name: 'judge' }],
      contexts: [{ name: 'judge', cluster: 'sandbox', user: 'judge' }],
      currentContext: 'judge',
    })
  }
  return kc.makeApiClient(k8s.CoreV1Api)
}

const servers = {}
/** One API server: `kubeconfig` (the operator's, read by kubeleash) and `judge`. */
function server(kind) {
  servers[kind] ??= start(kind).then((s) => ({
    kubeconfig: kind === 'real' ? s.env.KUBECONFIG_OPERATOR_CERT : operatorKubeconfig(s.url, 'operator-token').path,
    judge: judge(kind, s),
  }))
  return servers[kind]
}

// --- helpers ----------------------------------------------------------------------------------

const configMap = (name) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { k: 'v' } })
const unique = () => `kl-node-nb-${Math.random().toString(16).slice(2, 10)}`

/** `promise`, or a failure after PATIENCE_MS. */
async function within(promise, what) {
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not arrive in ${PATIENCE_MS / 1000} s`)), PATIENCE_MS)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * An approver the test answers: each call is a question `{ request, answer }` the test takes with
 * `next()` and settles with `answer(value)`. `calls` lists every request the approver was given.
 */
function desk() {
  const calls = []
  const unclaimed = []
  const claims = []
  const approver = (request) =>
    new Promise((answer) => {
      calls.push(request)
      const question = { request, answer }
      const claim = claims.shift()
      if (claim) claim(question)
      else unclaimed.push(question)
    })
  const next = () => within(unclaimed.length > 0 ? Promise.resolve(unclaimed.shift()) : new Promise((claim) => claims.push(claim)), "the approver's question")
  return { approver, calls, next, unclaimed }
}

/** The error `promise` rejects with; fails if it resolves. */
async function failure(promise) {
  try {
    await promise
  } catch (e) {
    assert.ok(e instanceof k8s.ApiException, `not an ApiException: ${e?.stack ?? e}`)
    return e
  }
  assert.fail('expected the call to fail')
}

const statusOf = (e) => (typeof e.body === 'string' ? JSON.parse(e.body) : e.body)

/** A held answer as client-node shows it: 403, the id in the header and the Status, `retry-after`. */
function assertPending(e, retryAfter = RETRY_AFTER) {
  assert.equal(e.code, 403, e.message)
  const status = statusOf(e)
  assert.equal(status.kind, 'Status')
  assert.equal(status.reason, 'Forbidden')
  assert.equal(status.code, 403)
  const id = e.headers['x-kubeleash-approval-id']
  assert.match(id ?? '', /^[0-9a-f]{32}$/, JSON.stringify(e.headers))
  assert.equal(status.details.uid, id)
  assert.equal(e.headers['retry-after'], String(retryAfter))
  assert.equal(status.details.retryAfterSeconds, retryAfter)
  assert.equal(status.details.causes[0].reason, 'ApprovalPending')
  assert.ok(status.message.includes(id) && status.message.includes('new configmaps are for people'), status.message)
  return id
}

const pendingUnder = (e, id) => e instanceof k8s.ApiException && e.code === 403 && e.headers?.['x-kubeleash-approval-id'] === id && 'retry-after' in e.headers

/** `call()` again at once until its answer is not "pending under `id`": its result, or the error. */
async function untilAnswered(call, id, tries = 10_000) {
  for (let i = 0; i < tries; i++) {
    try {
      return await call()
    } catch (e) {
      if (!pendingUnder(e, id)) return e
    }
  }
  assert.fail(`approval ${id} stayed pending after the approver answered (${tries} retries)`)
}

async function notFound(promise) {
  const e = await failure(promise)
  assert.equal(e.code, 404, e.message)
}

/** `connect` as the agent, non-blocking, with `approver`; `body(core)`; close. */
async function guarded(kubeconfig, approver, body, options = {}) {
  const kc = await connect(POLICY, { kubeconfig, ...AGENT, approver, approvals: 'nonblocking', retryAfterSeconds: RETRY_AFTER, ...options })
  try {
    return await body(kc.makeApiClient(k8s.CoreV1Api))
  } finally {
    kc.close()
  }
}

// --- both servers -----------------------------------------------------------------------------

for (const kind of ['sandbox', 'real']) {
  describe(`non-blocking approvals on the ${kind === 'real' ? 'real kube-apiserver' : 'sandbox'}`, () => {
    test('a held write fails at once with 403, its approval id and retry-after; approved, the identical retry goes through once', async () => {
      const s = await server(kind)
      const d = desk()
      const [name, other] = [unique(), unique()]
      const ids = await guarded(s.kubeconfig, d.approver, async (core) => {
        const create = (n = name) => core.createNamespacedConfigMap({ namespace: 'dev', body: configMap(n) })

        // Answered at once: the call fails while nobody has answered yet (bounded, so that a
        // call held open fails here rather than after the approval timeout).
        const id = assertPending(await failure(within(create(), 'the answer to the held create')))
        const first = await d.next()
        const r = first.request
        assert.equal(r.id, id)
        assert.equal(r.method, 'POST')
        assert.equal(r.rule, 'configmaps-need-a-human')
        assert.equal(r.user, 'agent-1')
        assert.match(r.kubectl, /^kubectl create -n dev/)
        assert.ok(r.body.includes(name), r.body)
        assert.equal(r.dryRun?.status, 201, JSON.stringify(r.dryRun))
        assert.equal(r.dryRun.rejected, undefined)
        assert.ok(r.dryRun.diff.startsWith('+ ') && r.dryRun.diff.includes(name), r.dryRun.diff)
        await notFound(s.judge.readNamespacedConfigMap({ name, namespace: 'dev' }))

        // Sent again before anyone answered: the same approval, still pending.
        assert.equal(assertPending(await failure(create())), id)

        first.answer({ approve: true, by: 'alice' })
        const made = await untilAnswered(create, id)
        assert.ok(!(made instanceof Error), made?.message)
        assert.equal(made.metadata.name, name)
        assert.ok(made.metadata.uid)
        assert.deepEqual((await s.judge.readNamespacedConfigMap({ name, namespace: 'dev' })).data, { k: 'v' })

        // The approval let that request through once: the identical request is held anew.
        const renewed = assertPending(await failure(create()))
        assert.notEqual(renewed, id)
        const again = await d.next()
        assert.equal(again.request.id, renewed)
        // The object exists now: the API server's dry run says so.
        assert.ok(again.request.dryRun?.rejected, JSON.stringify(again.request.dryRun))
        again.answer({ approve: false, by: 'alice', reason: 'it exists' })

        // A different request is not covered by the approval: held under an id of its own.
        const otherId = assertPending(await failure(create(other)))
        assert.ok(![id, renewed].includes(otherId))
        const third = await d.next()
        assert.equal(third.request.id, otherId)
        assert.ok(third.request.body.includes(other), third.request.body)
        third.answer({ approve: false, by: 'alice', reason: 'one is enough' })
        const told = await untilAnswered(() => create(other), otherId)
        assert.ok(told instanceof k8s.ApiException && told.code === 403, String(told))
        assert.match(statusOf(told).message, /one is enough/)
        return [id, renewed, otherId]
      })
      // Asked once per hold: never again for a request that was already held.
      assert.deepEqual(
        d.calls.map((r) => r.id),
        ids,
      )
      assert.equal(d.unclaimed.length, 0)
      await notFound(s.judge.readNamespacedConfigMap({ name: other, namespace: 'dev' }))
      await s.judge.deleteNamespacedConfigMap({ name, namespace: 'dev' })
    })

    test('a denied write is told the reason when sent again, and the refusal stands', async () => {
      const s = await server(kind)
      const d = desk()
      const name = unique()
      const id = await guarded(s.kubeconfig, d.approver, async (core) => {
        const create = () => core.createNamespacedConfigMap({ namespace: 'dev', body: configMap(name) })
        const id = assertPending(await failure(within(create(), 'the answer to the held create')))
        const q = await d.next()
        assert.equal(q.request.id, id)
        q.answer({ approve: false, by: 'bob', reason: 'not on a Friday' })

        const told = await untilAnswered(create, id)
        assert.ok(told instanceof k8s.ApiException, String(told))
        assert.equal(told.code, 403)
        assert.equal(told.headers['x-kubeleash-approval-id'], id)
        assert.equal(told.headers['retry-after'], undefined, JSON.stringify(told.headers))
        const status = statusOf(told)
        assert.equal(status.reason, 'Forbidden')
        assert.equal(status.details.uid, id)
        assert.equal(status.details.causes[0].reason, 'ApprovalRefused')
        assert.equal(status.details.retryAfterSeconds, undefined)
        assert.ok(status.message.includes(`bob denied approval ${id}: not on a Friday`), status.message)

        // The refusal stands for the identical request: told again, nobody asked again.
        const again = await failure(create())
        assert.equal(again.headers['x-kubeleash-approval-id'], id)
        assert.match(statusOf(again).message, /not on a Friday/)
        return id
      })
      assert.deepEqual(
        d.calls.map((r) => r.id),
        [id],
      )
      assert.equal(d.unclaimed.length, 0)
      await notFound(s.judge.readNamespacedConfigMap({ name, namespace: 'dev' }))
    })

    test('a fractional retryAfterSeconds is rounded up; without an approver a held write is denied at once', async () => {
      const s = await server(kind)
      const d = desk()
      await guarded(
        s.kubeconfig,
        d.approver,
        async (core) => {
          const held = core.createNamespacedConfigMap({ namespace: 'dev', body: configMap(unique()) })
          const id = assertPending(await failure(within(held, 'the answer to the held create')), 2)
          const q = await d.next()
          assert.equal(q.request.id, id)
          q.answer(false)
        },
        { retryAfterSeconds: 1.5 },
      )
      await guarded(s.kubeconfig, undefined, async (core) => {
        const e = await failure(core.createNamespacedConfigMap({ namespace: 'dev', body: configMap(unique()) }))
        assert.equal(e.code, 403)
        assert.match(statusOf(e).message, /no approver is configured/)
        assert.equal(e.headers['retry-after'], undefined)
        assert.equal(e.headers['x-kubeleash-approval-id'], undefined)
      })
    })
  })
}

// --- no API server: the options are checked before anything is read --------------------------

describe('non-blocking options', () => {
  const cases = [
    [{ approvals: 'sometimes' }, 'invalid-approvals', 'approvals `sometimes` is neither `blocking` nor `nonblocking`'],
    [{ approvals: 'Nonblocking' }, 'invalid-approvals', 'approvals `Nonblocking` is neither `blocking` nor `nonblocking`'],
    [{ approvals: 'nonblocking', retryAfterSeconds: 0 }, 'invalid-retry-after', 'retryAfterSeconds must be a positive number of seconds, not `0`'],
    [{ approvals: 'nonblocking', retryAfterSeconds: -1 }, 'invalid-retry-after', 'retryAfterSeconds must be a positive number of seconds, not `-1`'],
    [{ approvals: 'nonblocking', retryAfterSeconds: Number.NaN }, 'invalid-retry-after', 'retryAfterSeconds must be a positive number of seconds, not `NaN`'],
    [{ approvals: 'nonblocking', retryAfterSeconds: Number.POSITIVE_INFINITY }, 'invalid-retry-after', 'retryAfterSeconds must be a positive number of seconds, not `Infinity`'],
    [{ retryAfterSeconds: 5 }, 'invalid-retry-after', "retryAfterSeconds applies only to `approvals: 'nonblocking'`"],
    [{ approvalTimeoutSeconds: 1e300 }, 'invalid-timeout', 'approvalTimeoutSeconds must be a positive number, not `1e300`'],
  ]
  // A kubeconfig that cannot be read: the options are refused before it is.
  const kubeconfig = '/nonexistent/kubeleash/kubeconfig'
  for (const [options, code, message] of cases) {
    const shown = Object.entries(options)
      .map(([k, v]) => `${k}: ${typeof v === 'string' ? `'${v}'` : String(v)}`)
      .join(', ')
    test(`{ ${shown} } is refused with ${code}`, async () => {
      for (const [how, call] of [
        ['connect', () => connect(POLICY, { kubeconfig, ...AGENT, ...options })],
        ['listen', async () => listen(POLICY, { kubeconfig, ...AGENT, ...options })],
      ]) {
        await assert.rejects(call, (e) => {
          assert.ok(e instanceof TypeError, `${how}: ${e?.stack ?? e}`)
          assert.equal(e.code, code, `${how}: ${e.message}`)
          assert.ok(e.message.includes(message), `${how}: ${e.message}`)
          assert.match(e.message, /^[a-z]/)
          return true
        })
      }
    })
  }
})
