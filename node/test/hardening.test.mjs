// The binding as a front door an adversarial agent (or a web page) uses (issue 12).
//
// Invariants stated here:
// - an approver's failure (throw, rejection, with any value), through `connect` or the native
//   `listen`, reaches the agent and the record only as the fixed APPROVER_FAILED reason; the
//   error goes to the operator (`onError`, else a process warning);
// - nothing derived from the operator's kubeconfig, credential plugin or an upstream connection
//   error reaches the agent: a generic message with a correlation id;
// - the listener serves no browser (`Origin`) and no name but its own (`Host`), whatever the
//   secret;
// - the upstream receives exactly the body that was decided and recorded, whatever framing or
//   hop-by-hop headers the caller sent.
import assert from 'node:assert/strict'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import * as k8s from '@kubernetes/client-node'
import { APPROVER_FAILED, Policy, connect, listen, verifyRecord } from 'kubeleash'

import { operatorKubeconfig, startSandbox } from './sandbox.mjs'

const require = createRequire(import.meta.url)
const native = require('../native.js')

const SECRET = `xoxb-0000-TOPSECRET-${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`
const WEBHOOK = `https://hooks.slack.example/services/T000/B000/${SECRET}`
const OPERATOR_TOKEN = 'operator-token-never-shown'
const AGENT = { user: 'agent-1', groups: ['ai-agents'] }

const POLICY = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: node-hardening}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list], apiGroups: [""], resources: [configmaps, namespaces], namespaces: [dev, ""]}
    - {name: list-namespaces, effect: allow, verbs: [list], apiGroups: [""], resources: [namespaces]}
    - {name: write-cm, effect: allow, verbs: [create, update, patch], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: secrets-need-a-human, effect: approve, verbs: [create], apiGroups: [""], resources: [secrets], namespaces: [dev]}
`)

let sandbox
let kubeconfig

before(async () => {
  sandbox = await startSandbox()
  kubeconfig = operatorKubeconfig(sandbox.url, OPERATOR_TOKEN)
})

after(async () => {
  await sandbox?.stop()
})

const secretBody = (name) => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name }, stringData: { k: 'v' } })
let serial = 0
const fresh = (prefix) => `${prefix}-${process.pid}-${++serial}`

/** Wait until `ready()`, e.g. for a report that crosses threads: 30 s is a failure bound, never a measurement. */
async function until(ready, what) {
  const deadline = Date.now() + 30_000
  while (!ready()) {
    if (Date.now() > deadline) assert.fail(`${what} did not happen in 30 s`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Everything an agent could render of an error. */
function seen(e) {
  const parts = [String(e), e?.message, e?.stack, typeof e?.body === 'string' ? e.body : JSON.stringify(e?.body)]
  try {
    parts.push(JSON.stringify(e))
  } catch {
    // circular: the other renderings stand
  }
  return parts.join('\n')
}

/** Await `promise`, expecting an ApiException with `code`; returns it and its Status. */
async function apiError(promise, code) {
  try {
    await promise
  } catch (e) {
    assert.ok(e instanceof k8s.ApiException, `not an ApiException: ${e?.stack}`)
    assert.equal(e.code, code, e.message)
    const status = typeof e.body === 'string' ? JSON.parse(e.body) : e.body
    return { error: e, status }
  }
  assert.fail(`expected HTTP ${code}`)
}

/** One raw HTTP/1.1 exchange: the exact bytes of `head` and `body`; resolves status and body. */
function raw(port, head, body = '') {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1')
    let text = ''
    socket.setEncoding('latin1')
    socket.on('data', (d) => (text += d))
    socket.on('error', reject)
    socket.on('end', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
      resolve({ status: m ? Number(m[1]) : 0, text })
    })
    // Not end(): a server may drop a half-closed connection's response. Every request here
    // asks for `Connection: close`, so the server ends the exchange.
    socket.write(head.join('\r\n') + '\r\n\r\n' + body)
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer in 10 s: ${text}`)))
  })
}

/** A stand-in API server that keeps each request's headers and body. */
async function stubUpstream() {
  const seenRequests = []
  const server = createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      seenRequests.push({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks) })
      res.setHeader('content-type', 'application/json')
      res.statusCode = req.method === 'POST' ? 201 : 200
      res.end(JSON.stringify({ kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: 'x' } }))
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { seen: seenRequests, url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() }
}

describe('approver failures', () => {
  const failing = {
    throws: () => {
      throw new Error(`cannot post to ${WEBHOOK}`)
    },
    rejects: async () => {
      await new Promise((resolve) => setTimeout(resolve, 1))
      throw new Error(`cannot post to ${WEBHOOK}`)
    },
    'rejects with a string': () => Promise.reject(WEBHOOK),
    'throws a non-Error': () => {
      throw { toString: () => `token=${SECRET}`, webhook: WEBHOOK }
    },
    'rejects with a cause': () => Promise.reject(new Error('post failed', { cause: new Error(WEBHOOK) })),
    'returns a rejected thenable': () => ({ then: (_, reject) => reject(new Error(WEBHOOK)) }),
  }

  for (const [name, approver] of Object.entries(failing)) {
    test(`an approver that ${name}: the agent and the record get the fixed reason, onError the error`, async () => {
      const reports = []
      const path = join(kubeconfig.dir, `${fresh('record')}.jsonl`)
      const kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, approver, record: path, onError: (r) => reports.push(r) })
      let error
      let status
      try {
        ;({ error, status } = await apiError(kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secretBody(fresh('held')) }), 403))
      } finally {
        kc.close()
      }
      assert.ok(status.message.includes(APPROVER_FAILED), status.message)
      assert.ok(!seen(error).includes(SECRET) && !seen(error).includes('hooks.slack'), 'the secret reached the agent')
      const text = readFileSync(path, 'utf8')
      assert.ok(!text.includes(SECRET) && !text.includes('hooks.slack'), 'the secret reached the record')
      assert.ok(text.includes(APPROVER_FAILED))
      assert.equal(verifyRecord(text).ok, true)
      // The report crosses threads: it may come after the 403.
      await until(() => reports.length > 0, 'the onError report')
      assert.equal(reports.length, 1)
      assert.equal(reports[0].kind, 'approver')
      assert.match(reports[0].id, /^[0-9a-f]{16,}$/)
      assert.ok(status.message.includes(reports[0].id), 'the agent can quote the id the operator has')
      assert.ok(`${reports[0].message}\n${String(reports[0].error?.cause ?? '')}`.includes(SECRET), reports[0].message)
    })
  }

  test('without onError the details are a process warning', async () => {
    const warnings = []
    const onWarning = (w) => warnings.push(w)
    process.on('warning', onWarning)
    const kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, approver: failing.throws })
    try {
      const { error } = await apiError(kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secretBody(fresh('warn')) }), 403)
      assert.ok(!seen(error).includes(SECRET))
      // The warning crosses threads and is emitted on a later tick: it may come after the 403.
      await until(() => warnings.some((w) => w.code === 'KUBELEASH_APPROVER_ERROR'), 'the warning')
    } finally {
      kc.close()
      process.off('warning', onWarning)
    }
    const mine = warnings.filter((w) => w.code === 'KUBELEASH_APPROVER_ERROR')
    assert.equal(mine.length, 1)
    assert.ok(mine[0].message.includes(SECRET))
  })

  test('an onError that throws is ignored: still a fixed 403', async () => {
    const kc = await connect(POLICY, {
      kubeconfig: kubeconfig.path,
      ...AGENT,
      approver: failing.rejects,
      onError: () => {
        throw new Error(`onError broke ${SECRET}`)
      },
    })
    try {
      const { error, status } = await apiError(kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secretBody(fresh('x')) }), 403)
      assert.ok(status.message.includes(APPROVER_FAILED) && !seen(error).includes(SECRET))
    } finally {
      kc.close()
    }
  })

  test('the native listen, without the JavaScript wrapper, also hides a rejection', async () => {
    const reports = []
    const conn = await native.listen(POLICY, {
      kubeconfig: kubeconfig.path,
      ...AGENT,
      approver: () => Promise.reject(new Error(`cannot post to ${WEBHOOK}`)),
      onError: (r) => reports.push(r),
    })
    try {
      const r = await fetch(`${conn.url}/api/v1/namespaces/dev/secrets`, {
        method: 'POST',
        headers: { authorization: `Bearer ${conn.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(secretBody(fresh('native'))),
      })
      const text = await r.text()
      assert.equal(r.status, 403)
      assert.ok(text.includes(APPROVER_FAILED) && !text.includes(SECRET), text)
      // The report crosses threads: wait for it.
      await until(() => reports.length > 0, 'the onError report')
      assert.equal(reports.length, 1)
      assert.equal(reports[0].kind, 'approver')
      assert.ok(reports[0].message.includes(SECRET))
    } finally {
      conn.close()
    }
  })

  test('a huge approval window approves and cannot crash the binding', async () => {
    for (const windowSeconds of [1e300, Number.MAX_VALUE, 1e20, 86400 * 365]) {
      const kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, approver: () => ({ approve: true, by: 'alice', windowSeconds }) })
      try {
        const name = fresh('window')
        const made = await kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secretBody(name) })
        assert.equal(made.metadata.name, name, String(windowSeconds))
      } finally {
        kc.close()
      }
    }
  })

  test('approval ids are random per hold, not computed from the request', async () => {
    const ids = []
    const kc = await connect(POLICY, { kubeconfig: kubeconfig.path, ...AGENT, approver: (r) => (ids.push(r.id), false) })
    try {
      for (let i = 0; i < 2; i++) {
        await apiError(kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({ namespace: 'dev', body: secretBody('same-name') }), 403)
      }
    } finally {
      kc.close()
    }
    assert.equal(ids.length, 2)
    for (const id of ids) assert.match(id, /^[0-9a-f]{16,}$/)
  })
})

describe('operator errors', () => {
  test('an unreachable server: the agent gets a correlation id, not the server', async () => {
    const kc = operatorKubeconfig(`http://127.0.0.1:1/clusters/${SECRET}`, `operator-${SECRET}`)
    const conn = await listen(POLICY, { kubeconfig: kc.path, ...AGENT, onError: () => {} })
    try {
      const r = await fetch(`${conn.url}/api/v1/namespaces`, { headers: { authorization: `Bearer ${conn.token}` } })
      const text = await r.text()
      assert.ok(r.status === 502 || r.status === 503, `${r.status} ${text}`)
      assert.ok(!text.includes(SECRET) && !text.includes('127.0.0.1:1'), text)
      assert.match(JSON.parse(text).message, /correlation id [0-9a-f]+/)
    } finally {
      conn.close()
    }
  })

  // A credential plugin that fails, printing secrets, with secrets in its args and env: at
  // connect (kube runs it once to start), and at refresh (its first token has expired).
  function execKubeconfig(failFirst) {
    const dir = operatorKubeconfig('http://127.0.0.1:1', 'x').dir
    const plugin = join(dir, 'plugin.sh')
    const marker = join(dir, 'ran-once')
    writeFileSync(
      plugin,
      [
        '#!/bin/sh',
        failFirst ? '' : `if [ ! -f '${marker}' ]; then touch '${marker}'; echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"short-lived","expirationTimestamp":"2000-01-01T00:00:00Z"}}'; exit 0; fi`,
        `echo "refresh token ${SECRET} rejected" >&2`,
        `echo "{\\"leaked\\": \\"${SECRET}\\"}"`,
        'exit 1',
        '',
      ].join('\n'),
    )
    chmodSync(plugin, 0o755)
    const path = join(dir, 'exec-kubeconfig')
    writeFileSync(
      path,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: sandbox.url } }],
        users: [
          {
            name: 'u',
            user: {
              exec: {
                apiVersion: 'client.authentication.k8s.io/v1',
                command: plugin,
                args: ['--client-secret', SECRET],
                env: [{ name: 'AWS_SECRET_ACCESS_KEY', value: SECRET }],
                interactiveMode: 'Never',
              },
            },
          },
        ],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u', namespace: 'dev' } }],
        'current-context': 'x',
      }),
    )
    return path
  }

  test('a credential plugin that fails at connect: a code and an id, details to onError', async () => {
    const reports = []
    let error
    try {
      await connect(POLICY, { kubeconfig: execKubeconfig(true), ...AGENT, onError: (r) => reports.push(r) })
    } catch (e) {
      error = e
    }
    assert.ok(error, 'connect did not fail')
    assert.equal(error.code, 'kubeconfig')
    assert.ok(!seen(error).includes(SECRET), seen(error))
    const id = /correlation id ([0-9a-f]+)/.exec(error.message)?.[1]
    assert.ok(id, error.message)
    await until(() => reports.length > 0, 'the onError report')
    assert.equal(reports.length, 1)
    assert.equal(reports[0].kind, 'connect')
    assert.equal(reports[0].id, id)
  })

  test('a credential plugin that fails at refresh: the agent sees neither its command, its env nor its output', async () => {
    const conn = await listen(POLICY, { kubeconfig: execKubeconfig(false), ...AGENT, onError: () => {} })
    try {
      const r = await fetch(`${conn.url}/api/v1/namespaces/dev/configmaps`, { headers: { authorization: `Bearer ${conn.token}` } })
      const text = await r.text()
      assert.ok(r.status >= 500, `${r.status} ${text}`)
      assert.ok(!text.includes(SECRET) && !text.includes('plugin.sh') && !text.includes('AWS_SECRET'), text)
      assert.match(JSON.parse(text).message, /correlation id/)
    } finally {
      conn.close()
    }
  })
})

describe('the listener refuses browsers and other names', () => {
  let upstream
  let conn
  let port

  before(async () => {
    upstream = await stubUpstream()
    conn = await listen(POLICY, { kubeconfig: operatorKubeconfig(upstream.url, OPERATOR_TOKEN).path, ...AGENT })
    port = Number(new URL(conn.url).port)
  })

  after(() => {
    conn?.close()
    upstream?.close()
  })

  const request = (extra, host = `127.0.0.1:${port}`) => [
    'GET /api/v1/namespaces/dev/configmaps HTTP/1.1',
    ...(host === null ? [] : [`Host: ${host}`]),
    `Authorization: Bearer ${conn.token}`,
    'Connection: close',
    ...extra,
  ]

  test('the client the listener was made for is served', async () => {
    const before = upstream.seen.length
    const r = await raw(port, request([]))
    assert.equal(r.status, 200, r.text)
    assert.equal(upstream.seen.length, before + 1)
  })

  test('any Origin is refused, the listener’s own included', async () => {
    const origins = ['http://evil.example', 'null', `http://127.0.0.1:${port}`, `http://localhost:${port}`, 'https://kubeleash.invalid', '']
    for (const origin of origins) {
      const before = upstream.seen.length
      const r = await raw(port, request([`Origin: ${origin}`]))
      assert.equal(r.status, 403, `Origin ${JSON.stringify(origin)}: ${r.text}`)
      assert.equal(upstream.seen.length, before, `Origin ${origin} reached the upstream`)
    }
  })

  test('a target naming a scheme or host is refused, whatever the Host', async () => {
    const targets = [
      'http://evil.example/api/v1/namespaces/dev/configmaps',
      `http://127.0.0.1:${port}/api/v1/namespaces/dev/configmaps`,
      'https://kubernetes.default.svc/api/v1/namespaces/dev/configmaps',
      'evil.example:443',
      '*',
    ]
    for (const target of targets) {
      const before = upstream.seen.length
      const [, ...rest] = request([])
      const r = await raw(port, [`GET ${target} HTTP/1.1`, ...rest])
      assert.ok(r.status === 400 || r.status === 403, `${target}: ${r.text}`)
      assert.equal(upstream.seen.length, before, `${target} reached the upstream`)
    }
  })

  test('a Host that is not the listener is refused (DNS rebinding)', async () => {
    const hosts = [
      'evil.example',
      `evil.example:${port}`,
      `localhost:${port}`,
      '127.0.0.1',
      `127.0.0.1:${port + 1}`,
      `127.0.0.1:${port}.evil.example`,
      `127.0.0.1:0${port}`,
      `[::1]:${port}`,
      `0x7f.0.0.1:${port}`,
      '',
      null,
    ]
    for (const host of hosts) {
      const before = upstream.seen.length
      const r = await raw(port, request([], host))
      assert.ok(r.status === 403 || r.status === 400, `Host ${JSON.stringify(host)}: ${r.text}`)
      assert.equal(upstream.seen.length, before, `Host ${host} reached the upstream`)
    }
    // Two Host headers, even both right.
    const twice = await raw(port, request([`Host: 127.0.0.1:${port}`]))
    assert.ok(twice.status === 403 || twice.status === 400, twice.text)
  })
})

describe('framing: the upstream gets exactly the body decided', () => {
  let upstream
  let conn
  let port
  let record

  before(async () => {
    upstream = await stubUpstream()
    record = join(operatorKubeconfig('http://x', 'y').dir, 'framing.jsonl')
    conn = await listen(POLICY, { kubeconfig: operatorKubeconfig(upstream.url, OPERATOR_TOKEN).path, ...AGENT, record })
    port = Number(new URL(conn.url).port)
  })

  after(() => {
    conn?.close()
    upstream?.close()
  })

  const head = (extra) => [
    'POST /api/v1/namespaces/dev/configmaps HTTP/1.1',
    `Host: 127.0.0.1:${port}`,
    `Authorization: Bearer ${conn.token}`,
    'Content-Type: application/json',
    ...extra,
  ]
  const cm = (name, fill) => JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { x: 'y'.repeat(fill) } })
  const chunked = (s) => {
    const mid = Math.floor(s.length / 2)
    return [s.slice(0, mid), s.slice(mid)].map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('') + '0\r\n\r\n'
  }

  test('hop-by-hop and framing headers never reach the upstream; its body is the decided one', async () => {
    const cases = []
    for (let i = 0; i < 24; i++) {
      const body = cm(`cm-${i}`, (i * 37) % 150)
      const n = Buffer.byteLength(body)
      const hop = [
        'Connection: close, X-Hop-A',
        'X-Hop-A: must-not-pass',
        'Keep-Alive: timeout=999',
        'Proxy-Connection: keep-alive',
        'TE: trailers',
        'Trailer: X-Smuggled',
        'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA',
      ].filter((_, k) => (i >> (k % 5)) & 1 || k === 0)
      if (i % 3 === 0) cases.push({ body, wire: chunked(body), extra: ['Transfer-Encoding: chunked', ...hop] })
      else if (i % 3 === 1) cases.push({ body, wire: body, extra: [`Content-Length: ${n}`, ...hop] })
      else cases.push({ body, wire: chunked(body), extra: ['Transfer-Encoding: chunked', `Content-Length: ${Math.max(1, n - 7)}`, ...hop] })
    }
    for (const c of cases) {
      const before = upstream.seen.length
      const r = await raw(port, head(c.extra), c.wire)
      if (upstream.seen.length === before) {
        // Refused before it left (hyper refuses a Content-Length beside chunked): nothing sent.
        assert.ok(r.status >= 400, r.text)
        continue
      }
      assert.equal(r.status, 201, r.text)
      const got = upstream.seen.at(-1)
      assert.equal(got.body.toString(), c.body, c.extra.join(' | '))
      assert.equal(got.headers['content-length'], String(got.body.length))
      assert.equal(got.headers['transfer-encoding'], undefined)
      for (const h of ['x-hop-a', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'http2-settings']) {
        assert.equal(got.headers[h], undefined, `${h} reached the upstream`)
      }
      assert.equal(got.headers.host, new URL(upstream.url).host)
      assert.equal(got.headers.authorization, `Bearer ${OPERATOR_TOKEN}`)
    }
    // The Content-Length and chunked cases go through; only TE beside CL may be refused.
    assert.ok(upstream.seen.length >= 16, `only ${upstream.seen.length} of ${cases.length} were forwarded`)
    conn.close()
    const records = verifyRecord(readFileSync(record, 'utf8')).records.filter((r) => r.kind === 'request' && r.decision.outcome === 'forwarded')
    assert.equal(records.length, upstream.seen.length)
    for (const [i, r] of records.entries()) assert.equal(r.request.body, upstream.seen[i].body.toString())
  })

  test('a Content-Length shorter than the bytes sent: what is forwarded is what was decided', async () => {
    const conn2 = await listen(POLICY, { kubeconfig: operatorKubeconfig(upstream.url, OPERATOR_TOKEN).path, ...AGENT })
    const port2 = Number(new URL(conn2.url).port)
    try {
      const body = cm('short', 10)
      const prefix = body.slice(0, 20)
      const before = upstream.seen.length
      const r = await raw(
        port2,
        ['POST /api/v1/namespaces/dev/configmaps HTTP/1.1', `Host: 127.0.0.1:${port2}`, `Authorization: Bearer ${conn2.token}`, 'Content-Type: application/json', 'Connection: close', 'Content-Length: 20'],
        body,
      )
      assert.ok(r.status >= 200, r.text)
      for (const got of upstream.seen.slice(before)) {
        assert.equal(got.body.toString(), prefix)
        assert.equal(got.headers['content-length'], '20')
      }
    } finally {
      conn2.close()
    }
  })
})
