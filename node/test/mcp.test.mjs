// `kubeleash mcp` end to end, driven by the official MCP TypeScript SDK's `Client`, against its
// interface spec (the command, the tools, the errors). Every scenario runs over both transports
// (stdio: the SDK spawns `kubeleash mcp`; streamable HTTP: `kubeleash mcp --listen 127.0.0.1:0
// --agent-token-file F`, the token sent as a bearer) and on both API servers: `kubeleash sandbox`
// and a real kube-apiserver (tests/cluster/start.sh, started once at the beginning, while the
// sandbox half runs). What really happened on a server is checked with an unguarded client with
// full rights, the judge: the sandbox itself, or the cluster's admin. A server that does not
// start fails the tests that need it; none is skipped.
//
// One server only, each saying why: pod logs need a kubelet (sandbox only). On the real server the
// operator is a restricted RBAC user that may not write RBAC objects; the approval scenarios
// (binding cluster-admin) there run with the cluster admin's kubeconfig as the operator's.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'

import * as k8s from '@kubernetes/client-node'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js'

import { repo } from './helpers.mjs'
import { kubeleashBinary, sandboxKubeConfig, startCluster, startSandbox } from './sandbox.mjs'

const run = promisify(execFile)

/** The demo policy: read-dev, protect-production, rbac-needs-a-human, discovery. */
const DEMO_POLICY = join(repo, 'examples', 'agent-policy.yaml')
const AGENT = ['--user', 'agent-1', '--group', 'ai-agents']
const MASKED = 'W21hc2tlZF0=' // base64('[masked]')
const DB_PASSWORD = 'S3cr3t-Db-P4ssw0rd!' // dev/db-credentials in both seeds
/** A bound on waits that normally take milliseconds: a failure bound under load, never a measurement. */
const PATIENCE = 60_000
/** Every tool the spec names. */
const ALL_TOOLS = ['get', 'list', 'events', 'logs', 'apply', 'patch', 'delete', 'scale', 'rollout_restart', 'can_i', 'api_resources']

// --- the API servers ----------------------------------------------------------------------------

const started = {}
/** Started once each (the real one at the beginning, so it starts while the sandbox half runs). */
function start(kind) {
  started[kind] ??= kind === 'sandbox' ? startSandbox() : startCluster()
  // Failures are reported by each test that needs the server, not as an unhandled rejection.
  started[kind].catch(() => {})
  return started[kind]
}

const scratch = mkdtempSync(join(tmpdir(), 'kl-mcp-'))

before(() => {
  start('sandbox')
  start('real')
})

after(async () => {
  await Promise.allSettled(Object.values(started).map((p) => p.then((s) => s.stop())))
  rmSync(scratch, { recursive: true, force: true })
})

/** An unguarded client with full rights on `kubeconfigPath`'s server. */
function judgeFromFile(kubeconfigPath) {
  const kc = new k8s.KubeConfig()
  kc.loadFromFile(kubeconfigPath)
  return { core: kc.makeApiClient(k8s.CoreV1Api), rbac: kc.makeApiClient(k8s.RbacAuthorizationV1Api) }
}

/** The judge for the sandbox (unguarded, no credential). */
async function sandboxJudge(url) {
  const kc = await sandboxKubeConfig(url)
  return { core: kc.makeApiClient(k8s.CoreV1Api), rbac: kc.makeApiClient(k8s.RbacAuthorizationV1Api) }
}

/**
 * An operator kubeconfig for the sandbox at `server`: namespace dev, no user credential (the
 * sandbox authenticates nobody), as cli/tests/support/process.rs sandbox_for_operator writes it.
 */
function sandboxKubeconfig(server, file) {
  const path = join(scratch, file)
  writeFileSync(
    path,
    `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: ${server}\ncontexts:\n- name: c\n  context: {cluster: c, user: u, namespace: dev}\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n`,
  )
  return path
}

/** The strings of a kubeconfig's credential (client key, its first line of base64, token). */
function credentialStrings(kubeconfigPath, token) {
  const text = readFileSync(kubeconfigPath, 'utf8')
  const key = /client-key-data: *(\S+)/.exec(text)?.[1]
  assert.ok(key, `${kubeconfigPath} holds no client key`)
  return [key, Buffer.from(key, 'base64').toString().split('\n')[1], token].filter(Boolean)
}

const servers = {}
/**
 * One API server as the scenarios see it: `kubeconfig` (the operator's), `adminKubeconfig` (an
 * operator that may write RBAC), `url`, `judge`, `secrets` (strings of the operators'
 * credentials, which must never appear in any MCP output).
 */
function server(kind) {
  servers[kind] ??= start(kind).then(async (s) => {
    if (kind === 'sandbox') {
      const kubeconfig = sandboxKubeconfig(s.url, 'sandbox.kubeconfig')
      return { kind, url: s.url, kubeconfig, adminKubeconfig: kubeconfig, judge: await sandboxJudge(s.url), secrets: [] }
    }
    return {
      kind,
      url: s.env.KUBELEASH_CLUSTER_SERVER,
      kubeconfig: s.env.KUBECONFIG_OPERATOR_CERT,
      adminKubeconfig: s.env.KUBECONFIG_ADMIN,
      judge: judgeFromFile(s.env.KUBECONFIG_ADMIN),
      secrets: [
        ...credentialStrings(s.env.KUBECONFIG_OPERATOR_CERT, s.env.KUBELEASH_CLUSTER_OPERATOR_TOKEN),
        ...credentialStrings(s.env.KUBECONFIG_ADMIN, s.env.KUBELEASH_CLUSTER_ADMIN_TOKEN),
      ],
    }
  })
  return servers[kind]
}

// --- helpers ------------------------------------------------------------------------------------

const unique = (prefix) => `${prefix}-${Math.random().toString(16).slice(2, 10)}`
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** `promise`, or a failure after `ms` (a failure bound under load, never a measurement). */
async function within(promise, what, ms = PATIENCE) {
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen in ${ms / 1000} s`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Poll `probe` until it returns a truthy value (bounded by PATIENCE); that value. */
async function until(what, probe) {
  const deadline = Date.now() + PATIENCE
  for (;;) {
    const v = await probe()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`${what} did not happen in ${PATIENCE / 1000} s`)
    await delay(50)
  }
}

/** A policy file with `rules` (YAML text of a list), in the scratch directory. */
function policyFile(name, rules) {
  const path = join(scratch, `${unique(name)}.yaml`)
  writeFileSync(path, `apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {name: ${name}}\nspec:\n  rules:\n${rules}`)
  return path
}

/** The text of a tool result's content. */
const textOf = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n')

/** A tool result, shortened, for assertion messages. */
function describeResult(r) {
  return JSON.stringify(r).slice(0, 2000)
}

/** Expect the judge's read to fail with 404: the object is not on the server. */
async function absent(promise) {
  try {
    await promise
  } catch (e) {
    assert.ok(e instanceof k8s.ApiException, `not an ApiException: ${e.stack}`)
    assert.equal(e.code, 404, e.message)
    return
  }
  assert.fail('the object exists')
}

/**
 * `kubeleash mcp` with `args` (after the command), as an MCP client sees it over `transport`
 * ('stdio' or 'http'): `client`, `call(name, args, options)` (every result checked to hold none
 * of `secrets`), `stderr()`, `close()` (the server stopped as a client or an operator stops it:
 * stdin closed, or SIGTERM, and waited for). Over HTTP also `url`, `token`, `tokenFile`,
 * `extraStdout()` (what it printed after its one line).
 */
async function startMcp(transport, args, secrets = []) {
  const dir = mkdtempSync(join(scratch, 'm-'))
  const env = { PATH: process.env.PATH, HOME: dir, USER: 'operator' }
  let stderr = ''
  const client = new Client({ name: 'kubeleash-node-tests', version: '0.0.0' })
  // Where the server departs from the spec in what it says rather than what it does (a text that
  // is not the structured result's JSON, a hold's wording): collected, so the rest of a scenario
  // still runs, and failed on at the end of the scenario (withMcp).
  const m = { dir, client, stderr: () => stderr, deviations: [] }
  if (transport === 'stdio') {
    const t = new StdioClientTransport({ command: kubeleashBinary(), args: ['mcp', ...args], env, stderr: 'pipe', cwd: dir })
    t.stderr.on('data', (d) => (stderr += d))
    try {
      await within(client.connect(t), 'the stdio MCP handshake')
    } catch (e) {
      await client.close().catch(() => {})
      throw new Error(`kubeleash mcp (stdio) did not start: ${e.message}\nstderr:\n${stderr}`)
    }
    m.close = async () => {
      await client.close()
    }
  } else {
    const tokenFile = join(dir, 'agent-token')
    const child = spawn(kubeleashBinary(), ['mcp', ...args, '--listen', '127.0.0.1:0', '--agent-token-file', tokenFile], {
      env,
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stderr.on('data', (d) => (stderr += d))
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    let extra = ''
    const lines = createInterface({ input: child.stdout })
    const first = new Promise((resolve, reject) => {
      child.once('error', reject)
      exited.then(({ code, signal }) => reject(new Error(`kubeleash mcp exited with ${code ?? signal}`)))
      lines.once('line', (line) => {
        lines.on('line', (l) => (extra += `${l}\n`))
        resolve(line)
      })
    })
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        try {
          await within(exited, 'kubeleash mcp stopping on SIGTERM')
        } finally {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        }
      }
    }
    let line
    try {
      line = await within(first, 'the line `listening on URL`')
    } catch (e) {
      await stop()
      throw new Error(`kubeleash mcp --listen did not start: ${e.message}\nstderr:\n${stderr}`)
    }
    const match = /^listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)$/.exec(line)
    if (!match) {
      await stop()
      assert.fail(`unexpected first line from kubeleash mcp --listen: ${JSON.stringify(line)}\nstderr:\n${stderr}`)
    }
    m.url = match[1]
    m.tokenFile = tokenFile
    m.token = readFileSync(tokenFile, 'utf8').trim()
    m.extraStdout = () => extra
    const t = new StreamableHTTPClientTransport(new URL(m.url), { requestInit: { headers: { Authorization: `Bearer ${m.token}` } } })
    try {
      await within(client.connect(t), 'the HTTP MCP handshake')
    } catch (e) {
      await stop()
      throw new Error(`MCP over HTTP did not connect: ${e.message}\nstderr:\n${stderr}`)
    }
    m.close = async () => {
      await client.close().catch(() => {})
      await stop()
    }
  }
  m.call = async (name, toolArgs, options) => {
    const r = await client.callTool({ name, arguments: toolArgs }, undefined, options)
    const seen = JSON.stringify(r)
    for (const secret of secrets) assert.ok(!seen.includes(secret), `a result of ${name} holds the operator's credential (${secret.length} chars)`)
    return r
  }
  /** The spec: text content = JSON, structuredContent = the same JSON object. */
  m.checkText = (name, r) => {
    let parsed
    try {
      parsed = JSON.parse(textOf(r))
    } catch {
      if (m.deviations.some((d) => d.startsWith(`${name}: the text content is not JSON`))) return
      m.deviations.push(`${name}: the text content is not JSON (spec: text content = JSON, structuredContent the same object): ${JSON.stringify(textOf(r).slice(0, 200))}`)
      return
    }
    try {
      assert.deepEqual(r.structuredContent, parsed)
    } catch {
      m.deviations.push(`${name}: structuredContent is not the text content's JSON`)
    }
  }
  /** Call a tool expecting success; its structuredContent. */
  m.ok = async (name, toolArgs, options) => {
    const r = await m.call(name, toolArgs, options)
    assert.notEqual(r.isError, true, `${name} ${JSON.stringify(toolArgs).slice(0, 300)} failed: ${describeResult(r)}`)
    assert.equal(typeof r.structuredContent, 'object', `${name}: no structuredContent: ${describeResult(r)}`)
    m.checkText(name, r)
    return r.structuredContent
  }
  return m
}

/** Run `body(m)` with `kubeleash mcp` started by `startMcp`, and stop it after, however it ends. */
async function withMcp(transport, args, secrets, body) {
  const m = await startMcp(transport, args, secrets)
  try {
    const result = await body(m)
    assert.deepEqual(m.deviations, [], 'departures from the spec of kubeleash mcp')
    return result
  } catch (e) {
    let more = ''
    if (m.deviations.length > 0 && !String(e.message).startsWith('departures from the spec')) more += `\n--- also, departures from the spec:\n${m.deviations.join('\n')}`
    more += `\n--- kubeleash mcp stderr (last 4000 chars):\n${m.stderr().slice(-4000)}`
    // Both: the reporter shows an assertion's stack, taken before this.
    e.message += more
    if (typeof e.stack === 'string') e.stack += more
    throw e
  } finally {
    await m.close()
  }
}

/** The common arguments: policy, operator kubeconfig, the agent's identity, namespace dev. */
const baseArgs = (policy, kubeconfig) => ['--policy', policy, '--kubeconfig', kubeconfig, ...AGENT, '--namespace', 'dev']

/** All tools a server lists (every page). */
async function listAllTools(client) {
  const tools = []
  let cursor
  do {
    const page = await client.listTools(cursor ? { cursor } : undefined)
    tools.push(...page.tools)
    cursor = page.nextCursor
  } while (cursor)
  return tools
}

/**
 * A bad call: an isError result or a JSON-RPC invalid-params error, both fine by the spec; what
 * came back, as text.
 */
async function refusedArguments(m, name, args) {
  let r
  try {
    r = await m.call(name, args)
  } catch (e) {
    assert.ok(e instanceof McpError, `${name} ${JSON.stringify(args).slice(0, 200)}: not an MCP error: ${e.stack}`)
    assert.equal(e.code, ErrorCode.InvalidParams, `${name} ${JSON.stringify(args).slice(0, 200)}: ${e.message}`)
    return e.message
  }
  assert.equal(r.isError, true, `${name} ${JSON.stringify(args).slice(0, 200)} was not refused: ${describeResult(r)}`)
  return textOf(r)
}

/** The operator answering over the approvals socket `socket` (as the operator `alice`). */
function operator(socket) {
  const approvals = async (...args) => {
    try {
      return await run(kubeleashBinary(), ['approvals', ...args, '--socket', socket], {
        env: { PATH: process.env.PATH, USER: 'alice', HOME: scratch },
        timeout: PATIENCE,
      })
    } catch (e) {
      throw new Error(`kubeleash approvals ${args.join(' ')} failed (${e.code}): ${e.stderr}`)
    }
  }
  const pending = async () => JSON.parse((await approvals('list', '--json')).stdout).pending
  return {
    pending,
    /** Wait until approval `id` (or, with none, any one) is held; the held request. */
    untilListed: (id) => until(`approval ${id ?? '(any)'} listed`, async () => (await pending()).find((p) => id === undefined || p.id === id)),
    approve: (id) => approvals('approve', id),
    deny: (id, reason) => approvals('deny', id, '--reason', reason),
  }
}

/** A ClusterRoleBinding of cluster-admin to agent-1, named `name`, as YAML. */
const bindClusterAdmin = (name) => `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ${name}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: agent-1}
`

/** A non-blocking hold: isError, the approval in structuredContent; its id. */
function heldId(m, r) {
  assert.equal(r.isError, true, `not held: ${describeResult(r)}`)
  const approval = r.structuredContent?.approval
  assert.ok(approval, `no structuredContent.approval: ${describeResult(r)}`)
  assert.match(approval.id, /^[0-9a-f]{32}$/, describeResult(r))
  assert.equal(approval.state, 'pending', describeResult(r))
  assert.equal(typeof approval.retryAfterSeconds, 'number', describeResult(r))
  assert.ok(textOf(r).includes(approval.id), textOf(r))
  const said = "a hold's text does not say"
  if (!textOf(r).includes("held for a person's approval") && !m.deviations.some((d) => d.startsWith(said))) m.deviations.push(`${said} \`held for a person's approval\`: ${JSON.stringify(textOf(r))}`)
  return approval.id
}

/** The names of the objects an apply result says it applied. */
const appliedNames = (sc) => (sc?.applied ?? [sc]).map((o) => o?.metadata?.name)

/** Call until the answer is no longer "held as `id`" (the server has taken the person's answer). */
async function untilAnswered(id, call) {
  return until(`approval ${id} answered`, async () => {
    const r = await call()
    return r.isError && r.structuredContent?.approval?.id === id ? undefined : r
  })
}

/** An upstream in front of the sandbox that logs every request it passes on (method, URL). */
async function loggingUpstream(target) {
  const log = []
  const front = http.createServer((req, res) => {
    log.push({ method: req.method, url: req.url })
    const url = new URL(target)
    const out = http.request({ host: url.hostname, port: url.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers)
      up.pipe(res)
    })
    out.on('error', () => res.destroy())
    req.pipe(out)
  })
  await new Promise((resolve) => front.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${front.address().port}`, log, close: () => new Promise((resolve) => front.close(resolve)) }
}

/** A label selector that would be more query parameters if it were not encoded as one value. */
const SNEAKY = 'app=web&watch=true&labelSelector=app'

/** A discovery request (the only kind a bad call may cause, to resolve a resource). */
const DISCOVERY = /^\/(api(\/v1)?|apis(\/[a-z0-9.-]+(\/v[a-z0-9]+)?)?|version|openapi\/v[23](\/[a-z0-9./-]*)?)(\?.*)?$/

/** A raw HTTP POST of `body` to `url` with `headers` (no fetch: Host must be settable). */
function rawPost(url, headers, body) {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } },
      (res) => {
        let text = ''
        res.on('data', (d) => (text += d))
        res.on('end', () => resolve({ status: res.statusCode, body: text }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.setTimeout(PATIENCE, () => req.destroy(new Error('no answer in 60 s')))
    req.end(body)
  })
}

const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
})

// --- both servers, both transports ----------------------------------------------------------------

for (const kind of ['sandbox', 'real']) {
  for (const transport of ['stdio', 'http']) {
    describe(`kubeleash mcp over ${transport} on the ${kind === 'real' ? 'real kube-apiserver' : 'sandbox'}`, () => {
      test('listTools reflects the policy: a tool iff an allow/approve rule covering the identity has one of its verbs; can_i always', async () => {
        const s = await server(kind)
        const names = async (policy) =>
          withMcp(transport, baseArgs(policy, s.kubeconfig), s.secrets, async (m) => {
            const tools = await listAllTools(m.client)
            return { tools, names: tools.map((t) => t.name).sort() }
          })

        // The demo policy: reads (allow) and RBAC writes (approve, no subjects: everyone) cover
        // get, list, watch, create, update, patch, delete: every tool.
        const demo = await names(DEMO_POLICY)
        for (const t of ['get', 'list', 'logs', 'apply', 'patch', 'delete', 'can_i']) assert.ok(demo.names.includes(t), `${t} not in ${demo.names}`)
        for (const n of demo.names) assert.ok(ALL_TOOLS.includes(n), `an unspecified tool ${n}`)
        const byName = Object.fromEntries(demo.tools.map((t) => [t.name, t]))
        for (const t of ['get', 'list', 'logs']) assert.equal(byName[t].annotations?.readOnlyHint, true, `${t}: ${JSON.stringify(byName[t].annotations)}`)
        for (const t of ['get', 'list']) assert.notEqual(byName[t].annotations?.destructiveHint, true, `${t}: ${JSON.stringify(byName[t].annotations)}`)
        assert.equal(byName.delete.annotations?.destructiveHint, true, JSON.stringify(byName.delete.annotations))
        assert.notEqual(byName.delete.annotations?.readOnlyHint, true, JSON.stringify(byName.delete.annotations))
        for (const t of demo.tools) assert.equal(t.inputSchema?.type, 'object', `${t.name}: ${JSON.stringify(t.inputSchema)}`)
        assert.deepEqual([...(byName.get.inputSchema.required ?? [])].sort(), ['name', 'resource'], JSON.stringify(byName.get.inputSchema))

        // Reads only: no writing tool.
        const reads = await names(
          policyFile(
            'reads-only',
            `    - {name: reads, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: ["*"], namespaces: [dev]}\n`,
          ),
        )
        for (const t of ['get', 'list', 'logs', 'can_i']) assert.ok(reads.names.includes(t), `${t} not in ${reads.names}`)
        for (const t of ['apply', 'patch', 'delete', 'scale', 'rollout_restart']) assert.ok(!reads.names.includes(t), `${t} listed under a read-only policy: ${reads.names}`)

        // Deletes only, for this identity; everything for another group (it does not cover us),
        // and a deny of everything (a deny makes no tool).
        const deletes = await names(
          policyFile(
            'deletes-only',
            `    - {name: tidy, effect: allow, subjects: {groups: [ai-agents]}, verbs: [delete], resources: [configmaps], namespaces: [dev]}\n` +
              `    - {name: others, effect: allow, subjects: {groups: [someone-else]}, verbs: ["*"], resources: ["*"]}\n` +
              `    - {name: no-get, effect: deny, verbs: [get, list], resources: ["*"]}\n`,
          ),
        )

        // Patches, held for a person: the patching tools, no reads, no delete.
        const patches = await names(policyFile('patches-held', `    - {name: held, effect: approve, verbs: [patch], resources: ["*"], namespaces: [dev]}\n`))
        for (const t of ['apply', 'patch', 'scale', 'rollout_restart', 'can_i']) assert.ok(patches.names.includes(t), `${t} not in ${patches.names}`)
        for (const t of ['get', 'list', 'logs', 'delete']) assert.ok(!patches.names.includes(t), `${t} listed under a patch-only policy: ${patches.names}`)

        // Nothing for this identity: can_i alone.
        const none = await names(policyFile('nothing', `    - {name: others, effect: allow, subjects: {users: [someone-else]}, verbs: ["*"], resources: ["*"]}\n`))

        // Exactly: neither policy lets this identity send a discovery request (no rule covers
        // it), so api_resources could never be used; the spec lists can_i alone whatever the policy.
        assert.deepEqual(
          { deletesOnly: deletes.names, nothing: none.names },
          { deletesOnly: ['can_i', 'delete'], nothing: ['can_i'] },
          'the tools listed under a deletes-only policy, and under a policy with nothing for this identity',
        )
      })

      test('can_i answers from the policy', async () => {
        const s = await server(kind)
        await withMcp(transport, baseArgs(DEMO_POLICY, s.kubeconfig), s.secrets, async (m) => {
          const yes = await m.ok('can_i', { verb: 'list', resource: 'secrets', namespace: 'dev' })
          assert.equal(yes.allowed, true, JSON.stringify(yes))
          assert.match(yes.reason, /read-dev/)
          const no = await m.ok('can_i', { verb: 'delete', resource: 'namespaces', name: 'prod' })
          assert.equal(no.allowed, false, JSON.stringify(no))
          assert.equal(no.denied, true, JSON.stringify(no))
          assert.match(no.reason, /protect-production/)
          for (const args of [
            { verb: 'create', resource: 'clusterrolebindings' },
            { verb: 'create', resource: 'clusterrolebindings.rbac.authorization.k8s.io' },
            // Last: the spec's apiGroup argument.
            { verb: 'create', resource: 'clusterrolebindings', apiGroup: 'rbac.authorization.k8s.io' },
          ]) {
            const held = await m.ok('can_i', args)
            assert.equal(held.allowed, false, JSON.stringify(held))
            assert.notEqual(held.denied, true, JSON.stringify(held))
            assert.match(held.reason, /rbac-needs-a-human/)
          }
        })
      })

      test('lists pods in dev as the server has them; a seeded Secret comes back masked', async () => {
        const s = await server(kind)
        const real = await s.judge.core.readNamespacedSecret({ name: 'db-credentials', namespace: 'dev' })
        // The server does hold the password: the masking is kubeleash's.
        assert.equal(Buffer.from(real.data.password, 'base64').toString(), DB_PASSWORD)
        const values = Object.values(real.data)
          .flatMap((v) => [v, Buffer.from(v, 'base64').toString()])
          .filter((v) => v.length >= 8)
        const judged = (await s.judge.core.listNamespacedPod({ namespace: 'dev' })).items.map((p) => p.metadata.name).sort()
        await withMcp(transport, baseArgs(DEMO_POLICY, s.kubeconfig), s.secrets, async (m) => {
          const pods = await m.ok('list', { resource: 'pods', namespace: 'dev' })
          const names = pods.items.map((p) => p.metadata.name).sort()
          assert.ok(names.filter((n) => n.startsWith('web-')).length >= 2, names.join(' '))
          assert.deepEqual(names, judged)
          assert.ok(!JSON.stringify(pods).includes('managedFields'), 'metadata.managedFields is not dropped')
          // kubectl's names for the resource.
          for (const resource of ['po', 'Pod', 'pod']) {
            const again = await m.ok('list', { resource, namespace: 'dev' })
            assert.deepEqual(again.items.map((p) => p.metadata.name).sort(), judged, resource)
          }
          const web = await m.ok('get', { resource: 'deploy', name: 'web', namespace: 'dev' })
          assert.equal(web.kind, 'Deployment')
          assert.equal(web.metadata.name, 'web')

          const r = await m.call('get', { resource: 'secrets', name: 'db-credentials', namespace: 'dev' })
          assert.notEqual(r.isError, true, describeResult(r))
          const secret = r.structuredContent
          assert.deepEqual(secret, JSON.parse(textOf(r)))
          assert.equal(secret.metadata.name, 'db-credentials')
          assert.deepEqual(Object.keys(secret.data).sort(), Object.keys(real.data).sort())
          for (const [k, v] of Object.entries(secret.data)) assert.equal(v, MASKED, k)
          const seen = JSON.stringify(r)
          assert.ok(!seen.includes(DB_PASSWORD), 'the seeded password came through')
          for (const v of values) assert.ok(!seen.includes(v), `the result holds a real value (${v.length} chars)`)
          assert.ok(!seen.includes('managedFields'), 'metadata.managedFields is not dropped')
        })
      })

      test('delete namespace prod is refused, with the rule; prod still exists upstream', async () => {
        const s = await server(kind)
        await withMcp(transport, baseArgs(DEMO_POLICY, s.kubeconfig), s.secrets, async (m) => {
          const r = await m.call('delete', { resource: 'namespaces', name: 'prod' })
          assert.equal(r.isError, true, describeResult(r))
          const text = textOf(r)
          assert.ok(text.startsWith('kubeleash refused this:'), text)
          assert.ok(text.includes('protect-production'), text)
          assert.ok(text.includes('rule "protect-production"'), text)
          const status = r.structuredContent?.status
          assert.equal(status?.kind, 'Status', describeResult(r))
          assert.equal(status.code, 403)
          // The Status message, but for its "kubeleash: " (the text says who refused already).
          assert.ok(text.includes(status.message.replace(/^kubeleash: /, '')), `the text does not include the Status message (${status.message}): ${text}`)
          const causes = Object.fromEntries((status.details?.causes ?? []).map((c) => [c.field, c.message]))
          assert.equal(causes['kubeleash.rule'], 'protect-production', JSON.stringify(status))
        })
        const prod = await s.judge.core.readNamespace({ name: 'prod' })
        assert.equal(prod.status.phase, 'Active')
        assert.equal(prod.metadata.deletionTimestamp, undefined)
      })

      test('delete a configmap the policy lets the agent delete: gone upstream; another is refused and stays', async () => {
        const s = await server(kind)
        const policy = policyFile(
          'tidy',
          `    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], resources: [configmaps], namespaces: [dev]}\n` +
            `    - {name: tidy, effect: allow, subjects: {groups: [ai-agents]}, verbs: [delete], resources: [configmaps], namespaces: [dev], names: ["kl-mcp-*"]}\n` +
            `    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}\n`,
        )
        const name = unique('kl-mcp-cm')
        await s.judge.core.createNamespacedConfigMap({ namespace: 'dev', body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { k: 'v' } } })
        try {
          await withMcp(transport, baseArgs(policy, s.kubeconfig), s.secrets, async (m) => {
            assert.equal((await m.ok('get', { resource: 'cm', name, namespace: 'dev' })).data.k, 'v')
            await m.ok('delete', { resource: 'configmaps', name, namespace: 'dev' })
            await absent(s.judge.core.readNamespacedConfigMap({ name, namespace: 'dev' }))
            const r = await m.call('delete', { resource: 'configmaps', name: 'app-config', namespace: 'dev' })
            assert.equal(r.isError, true, describeResult(r))
            assert.ok(textOf(r).startsWith('kubeleash refused this:'), textOf(r))
            assert.equal(r.structuredContent?.status?.code, 403, describeResult(r))
          })
          assert.equal((await s.judge.core.readNamespacedConfigMap({ name: 'app-config', namespace: 'dev' })).metadata.name, 'app-config')
        } finally {
          await s.judge.core.deleteNamespacedConfigMap({ name, namespace: 'dev' }).catch(() => {})
        }
      })

      test('binding cluster-admin is held (non-blocking): approved, the same call performs it once; denied, it is refused', async () => {
        const s = await server(kind)
        const socket = join(mkdtempSync(join(scratch, 's-')), 'a.sock')
        const op = operator(socket)
        const args = [...baseArgs(DEMO_POLICY, s.adminKubeconfig), '--approvals', 'socket', '--approvals-socket', socket, '--approvals-nonblocking=1']
        const name = unique('kl-mcp-admin')
        const denied = unique('kl-mcp-denied')
        try {
          await withMcp(transport, args, s.secrets, async (m) => {
            const apply = (n) => m.call('apply', { manifest: bindClusterAdmin(n), reason: 'INC-7: the agent needs to read everything' })
            const id = heldId(m, await apply(name))
            const held = await op.untilListed(id)
            assert.ok(JSON.stringify(held).includes('INC-7: the agent needs to read everything'), `the approver is not shown the agent's reason: ${JSON.stringify(held)}`)
            // The same call again, before an answer: the same hold, nothing written.
            assert.equal(heldId(m, await apply(name)), id)
            assert.deepEqual((await op.pending()).map((p) => p.id), [id])
            await absent(s.judge.rbac.readClusterRoleBinding({ name }))

            await op.approve(id)
            const done = await untilAnswered(id, () => apply(name))
            assert.notEqual(done.isError, true, describeResult(done))
            m.checkText('apply', done)
            assert.deepEqual(appliedNames(done.structuredContent), [name], describeResult(done))
            const crb = await s.judge.rbac.readClusterRoleBinding({ name })
            assert.equal(crb.roleRef.name, 'cluster-admin')
            assert.deepEqual(crb.subjects.map((x) => x.name), ['agent-1'])
            // Performed once: the same call is held anew, under another id.
            const again = heldId(m, await apply(name))
            assert.notEqual(again, id)

            // Denied: the call again is refused, with the person's reason.
            const id2 = heldId(m, await apply(denied))
            await op.untilListed(id2)
            await op.deny(id2, 'not today')
            const refused = await untilAnswered(id2, () => apply(denied))
            assert.equal(refused.isError, true, describeResult(refused))
            const text = textOf(refused)
            assert.ok(text.startsWith('kubeleash refused this:'), text)
            assert.ok(text.includes(`alice denied approval ${id2}`), text)
            assert.ok(text.includes('not today'), text)
            await absent(s.judge.rbac.readClusterRoleBinding({ name: denied }))
          })
        } finally {
          await s.judge.rbac.deleteClusterRoleBinding({ name }).catch(() => {})
          await s.judge.rbac.deleteClusterRoleBinding({ name: denied }).catch(() => {})
        }
      })

      test('binding cluster-admin is held (blocking): progress names the approval; approved, the call resolves; denied, it is refused', async () => {
        const s = await server(kind)
        const socket = join(mkdtempSync(join(scratch, 's-')), 'a.sock')
        const op = operator(socket)
        const args = [...baseArgs(DEMO_POLICY, s.adminKubeconfig), '--approvals', 'socket', '--approvals-socket', socket]
        const name = unique('kl-mcp-blocking')
        const denied = unique('kl-mcp-blocked')
        try {
          await withMcp(transport, args, s.secrets, async (m) => {
            const progress = []
            const call = m.call('apply', { manifest: bindClusterAdmin(name) }, { onprogress: (p) => progress.push(p), timeout: 2 * PATIENCE })
            call.catch(() => {}) // awaited below; no unhandled rejection meanwhile
            const held = await op.untilListed()
            await absent(s.judge.rbac.readClusterRoleBinding({ name }))
            // The first progress notification names the approval id.
            await until('a progress notification', () => progress.length > 0)
            assert.ok(String(progress[0].message).includes(held.id), JSON.stringify(progress))
            await op.approve(held.id)
            const r = await within(call, 'the approved apply')
            assert.notEqual(r.isError, true, describeResult(r))
            m.checkText('apply', r)
            assert.deepEqual(appliedNames(r.structuredContent), [name], describeResult(r))
            assert.equal((await s.judge.rbac.readClusterRoleBinding({ name })).roleRef.name, 'cluster-admin')

            const refused = m.call('apply', { manifest: bindClusterAdmin(denied) }, { onprogress: () => {}, timeout: 2 * PATIENCE })
            refused.catch(() => {})
            const held2 = await op.untilListed()
            await op.deny(held2.id, 'not this one')
            const r2 = await within(refused, 'the denied apply')
            assert.equal(r2.isError, true, describeResult(r2))
            assert.ok(textOf(r2).includes('not this one'), textOf(r2))
            assert.ok(textOf(r2).includes(held2.id), textOf(r2))
            await absent(s.judge.rbac.readClusterRoleBinding({ name: denied }))
          })
        } finally {
          await s.judge.rbac.deleteClusterRoleBinding({ name }).catch(() => {})
          await s.judge.rbac.deleteClusterRoleBinding({ name: denied }).catch(() => {})
        }
      })

      test('--record: the session verifies with `kubeleash replay --verify` and reads as kubectl commands', async () => {
        const s = await server(kind)
        const record = join(mkdtempSync(join(scratch, 'r-')), 'session.jsonl')
        await withMcp(transport, [...baseArgs(DEMO_POLICY, s.kubeconfig), '--record', record], s.secrets, async (m) => {
          await m.ok('list', { resource: 'pods', namespace: 'dev' })
          await m.ok('get', { resource: 'secrets', name: 'db-credentials', namespace: 'dev' })
          const r = await m.call('delete', { resource: 'namespaces', name: 'prod' })
          assert.equal(r.isError, true, describeResult(r))
        })
        let out
        try {
          out = await run(kubeleashBinary(), ['replay', record, '--verify'], { timeout: PATIENCE })
        } catch (e) {
          assert.fail(`kubeleash replay --verify failed (${e.code}):\n${e.stderr}\n${e.stdout}`)
        }
        assert.match(out.stderr, /verified: \d+ records, chain intact/)
        assert.ok(out.stdout.includes('kubectl get pods -n dev'), out.stdout)
        assert.ok(out.stdout.includes('kubectl get secret db-credentials -n dev'), out.stdout)
        assert.ok(out.stdout.includes('kubectl delete namespace prod'), out.stdout)
        assert.ok(out.stdout.includes('DENIED by rule protect-production'), out.stdout)
        const text = readFileSync(record, 'utf8')
        assert.ok(!text.includes(DB_PASSWORD), 'the record holds the seeded password')
        for (const secret of s.secrets) assert.ok(!text.includes(secret), "the record holds the operator's credential")
        const records = text.trim().split('\n').map((l) => JSON.parse(l))
        assert.equal(records.at(-1).kind, 'end')
        assert.ok(records.filter((r) => r.kind === 'request').every((r) => r.identity.user === 'agent-1'))
      })

      test('malformed calls are refused and nothing reaches the upstream as another path', async () => {
        const s = await server(kind)
        // On the sandbox, the upstream logs what reaches it; on both, the record says what was sent.
        const upstream = kind === 'sandbox' ? await loggingUpstream(s.url) : undefined
        const kubeconfig = upstream ? sandboxKubeconfig(upstream.url, `${unique('logged')}.kubeconfig`) : s.kubeconfig
        const record = join(mkdtempSync(join(scratch, 'r-')), 'session.jsonl')
        const bad = [
          ['no_such_tool', { resource: 'pods' }],
          ['exec', { name: 'web', command: ['sh'] }],
          ['get/../delete', { resource: 'namespaces', name: 'prod' }],
          ['../get', { resource: 'secrets', name: 'db-credentials', namespace: 'dev' }],
          ['get', { resource: 'secrets', namespace: 'dev' }], // no name
          ['get', { name: 'db-credentials', namespace: 'dev' }], // no resource
          ['get', { resource: 'secrets', name: 'a/b', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: '../../../prod/secrets/db-credentials', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: '..', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: '.', namespace: 'dev' }], // secrets/. is the list
          ['get', { resource: 'secrets', name: 'db-credentials%2f..%2f..', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: '%2e%2e', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: 'x%2Fy', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: 'db-credentials\r\nX-Injected: 1', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: 'db\u0000credentials', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: 'db-credentials', namespace: '..' }],
          ['get', { resource: 'secrets', name: 'db-credentials', namespace: 'dev/../prod' }],
          ['get', { resource: 'secrets', name: 'db-credentials', namespace: 'dev%2f..%2fprod' }],
          ['get', { resource: 'secrets/../../namespaces', name: 'prod' }],
          ['list', { resource: 'secrets', namespace: 'prod/../dev' }],
          ['logs', { name: 'web/../../secrets/db-credentials', namespace: 'dev' }],
          ['delete', { resource: 'namespaces', name: 'prod/..' }],
          ['delete', { resource: 'configmaps', name: '../../../namespaces/prod', namespace: 'dev' }],
          ['get', { resource: 'secrets', name: 'a'.repeat(100_000), namespace: 'dev' }],
          ['get', { resource: 'secrets', name: 'db-credentials', namespace: 'd'.repeat(100_000) }],
        ]
        try {
          await withMcp(transport, [...baseArgs(DEMO_POLICY, kubeconfig), '--record', record], s.secrets, async (m) => {
            // One good call first: whatever discovery the server does happens now too.
            await m.ok('list', { resource: 'pods', namespace: 'dev' })
            const before = upstream?.log.length ?? 0
            for (const [name, args] of bad) await refusedArguments(m, name, args)
            if (upstream) {
              assert.ok(upstream.log.some((r) => r.url.startsWith('/api/v1/namespaces/dev/pods')), 'the good call did not go through the logged upstream')
              const sent = upstream.log.slice(before)
              for (const r of sent) assert.ok(r.method === 'GET' && DISCOVERY.test(r.url), `a bad call reached the upstream: ${r.method} ${r.url}`)
            }
            // Query parameters are values, never more parameters: not a watch, one selector.
            const r = await m.call('list', { resource: 'pods', namespace: 'dev', labelSelector: SNEAKY })
            if (!r.isError) assert.equal(r.structuredContent?.kind, 'PodList', describeResult(r))
            if (upstream && !r.isError) {
              const asked = upstream.log.map((x) => new URL(x.url, 'http://upstream')).filter((u) => u.searchParams.get('labelSelector') === SNEAKY)
              assert.equal(asked.length, 1, JSON.stringify(upstream.log))
            }
            // The server still serves.
            const pods = await m.ok('list', { resource: 'pods', namespace: 'dev' })
            assert.ok(pods.items.length >= 2)
          })
        } finally {
          await upstream?.close()
        }
        const records = readFileSync(record, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l))
        const requests = records.filter((r) => r.request?.target)
        const lists = requests.filter((r) => r.request.target.startsWith('/api/v1/namespaces/dev/pods'))
        assert.ok(lists.length >= 2, 'the good calls were not recorded')
        for (const r of requests) {
          const t = r.request.target
          if (/^\/api\/v1\/namespaces\/dev\/pods(\?|$)/.test(t) && r.request.method === 'GET') {
            const q = new URL(t, 'http://upstream').searchParams
            assert.ok(!q.has('watch') && q.getAll('labelSelector').length <= 1, `a selector became parameters: ${t}`)
            continue
          }
          assert.ok(r.request.method === 'GET' && DISCOVERY.test(t), `a bad call was sent: ${r.request.method} ${t} (${r.decision?.outcome})`)
        }
      })
    })
  }
}

// --- one server only ------------------------------------------------------------------------------

for (const transport of ['stdio', 'http']) {
  describe(`kubeleash mcp over ${transport} on the sandbox only`, () => {
    // SANDBOX ONLY: a pod's log comes from its kubelet, and the real test cluster has none (its
    // pods stay Pending). The sandbox serves seeded logs; one leaks a service-account token.
    test('logs: the leaked service-account token is masked', async () => {
      const s = await server('sandbox')
      const pods = (await s.judge.core.listNamespacedPod({ namespace: 'dev', labelSelector: 'app=web' })).items.map((p) => p.metadata.name)
      let leaky
      let jwt
      for (const name of pods) {
        const res = await fetch(`${s.url}/api/v1/namespaces/dev/pods/${name}/log`)
        assert.equal(res.status, 200)
        const m = /Bearer (eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)/.exec(await res.text())
        if (m) [leaky, jwt] = [name, m[1]]
      }
      assert.ok(jwt, `no seeded log leaks a token (pods ${pods.join(' ')})`)
      const signature = jwt.split('.')[2]
      await withMcp(transport, baseArgs(DEMO_POLICY, s.kubeconfig), [], async (m) => {
        const r = await m.call('logs', { name: leaky, namespace: 'dev' })
        assert.notEqual(r.isError, true, describeResult(r))
        const log = r.structuredContent?.log
        assert.equal(typeof log, 'string', describeResult(r))
        // The spec: structuredContent {"log": "<text>"}: the text is the log (or that object's JSON).
        if (textOf(r) !== log) m.checkText('logs', r)
        assert.ok(log.includes('listening on :8080'), log)
        const seen = JSON.stringify(r)
        assert.ok(!seen.includes(jwt), 'the leaked token came through')
        assert.ok(!seen.includes(signature), "the leaked token's signature came through")
        assert.ok(log.includes('[masked:'), `no mask marker in the log:\n${log}`)
        assert.doesNotMatch(log, /PRIVATE KEY-----\n[A-Za-z0-9+/]{20}/)
      })
    })
  })
}

for (const kind of ['sandbox', 'real']) {
  describe(`kubeleash mcp over HTTP on the ${kind === 'real' ? 'real kube-apiserver' : 'sandbox'}: the door`, () => {
    test('a missing or wrong bearer token, a browser (Origin, Sec-Fetch-Site) and a foreign Host are refused', async () => {
      const s = await server(kind)
      await withMcp('http', baseArgs(DEMO_POLICY, s.kubeconfig), s.secrets, async (m) => {
        // The token file: private, `kubeleash-` + 64 hex.
        assert.equal(statSync(m.tokenFile).mode & 0o777, 0o600)
        assert.match(m.token, /^kubeleash-[0-9a-f]{64}$/)
        const good = { authorization: `Bearer ${m.token}` }
        const port = new URL(m.url).port

        // The control: the right token, no browser headers, is served.
        const ok = await rawPost(m.url, good, INITIALIZE)
        assert.equal(ok.status, 200, ok.body)
        assert.ok(ok.body.includes('"result"'), ok.body)

        const refusals = {
          'no token': [{}, [401, 403]],
          'a wrong token': [{ authorization: `Bearer kubeleash-${'0'.repeat(64)}` }, [401, 403]],
          'the token, not as a bearer': [{ authorization: m.token }, [401, 403]],
          'a bearer with the token cut short': [{ authorization: `Bearer ${m.token.slice(0, -1)}` }, [401, 403]],
          'an Origin': [{ ...good, origin: 'http://evil.example' }, [403]],
          'its own Origin': [{ ...good, origin: `http://127.0.0.1:${port}` }, [403]],
          'Sec-Fetch-Site: cross-site': [{ ...good, 'sec-fetch-site': 'cross-site' }, [403]],
          'Sec-Fetch-Site: same-origin': [{ ...good, 'sec-fetch-site': 'same-origin' }, [403]],
          'a foreign Host': [{ ...good, host: `evil.example:${port}` }, null],
        }
        for (const [what, [headers, codes]] of Object.entries(refusals)) {
          const r = await rawPost(m.url, headers, INITIALIZE)
          if (codes) assert.ok(codes.includes(r.status), `${what}: HTTP ${r.status} ${r.body.slice(0, 300)}`)
          else assert.ok(r.status >= 400 && r.status < 500, `${what}: HTTP ${r.status} ${r.body.slice(0, 300)}`)
          assert.ok(!r.body.includes('"result"'), `${what}: served ${r.body.slice(0, 300)}`)
          assert.ok(!r.body.includes(m.token), `${what}: the answer holds the token`)
        }

        // The SDK with a wrong token does not get in.
        const intruder = new Client({ name: 'intruder', version: '0' })
        const t = new StreamableHTTPClientTransport(new URL(m.url), { requestInit: { headers: { Authorization: `Bearer kubeleash-${'f'.repeat(64)}` } } })
        await assert.rejects(within(intruder.connect(t), 'a refused handshake'))
        await intruder.close().catch(() => {})

        // The right client still works, and the server printed one line only.
        const pods = await m.ok('list', { resource: 'pods', namespace: 'dev' })
        assert.ok(pods.items.length >= 2)
        assert.equal(m.extraStdout(), '')
      })
    })
  })
}
