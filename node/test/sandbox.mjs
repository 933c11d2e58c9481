// The API servers the end-to-end tests run against: `kubeleash sandbox` as a subprocess (and an
// operator kubeconfig pointing at it), and a real etcd + kube-apiserver (tests/cluster/start.sh).
import { execFile, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'

import { repo } from './helpers.mjs'

/** The CLI binary: $KUBELEASH_BIN, or target/debug/kubeleash (built when missing). */
export function kubeleashBinary() {
  if (process.env.KUBELEASH_BIN) return process.env.KUBELEASH_BIN
  const bin = join(repo, 'target', 'debug', process.platform === 'win32' ? 'kubeleash.exe' : 'kubeleash')
  if (!existsSync(bin)) {
    const r = spawnSync('cargo', ['build', '--quiet', '-p', 'kubeleash-cli'], { cwd: repo, stdio: 'inherit' })
    if (r.status !== 0) throw new Error('cannot build the kubeleash CLI')
  }
  return bin
}

/** Start the sandbox on a free loopback port; resolves once it prints its URL. */
export async function startSandbox() {
  const child = spawn(kubeleashBinary(), ['sandbox', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const lines = createInterface({ input: child.stdout })
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the sandbox did not start in 30 s: ${stderr}`)), 30_000)
    child.once('exit', (code) => reject(new Error(`the sandbox exited with ${code}: ${stderr}`)))
    lines.once('line', (line) => {
      clearTimeout(timer)
      const m = /^listening on (http:\/\/\S+)$/.exec(line)
      if (m) resolve(m[1])
      else reject(new Error(`unexpected first line from the sandbox: ${line}`))
    })
  })
  return {
    url,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.once('exit', resolve)
        child.kill('SIGTERM')
      }),
  }
}

/** A kubeconfig file for the operator: `server` with a bearer `token`. */
export function operatorKubeconfig(server, token, namespace = 'dev') {
  const dir = mkdtempSync(join(tmpdir(), 'kubeleash-node-'))
  const path = join(dir, 'kubeconfig')
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'sandbox', cluster: { server } }],
      users: [{ name: 'operator', user: { token } }],
      contexts: [{ name: 'operator', context: { cluster: 'sandbox', user: 'operator', namespace } }],
      'current-context': 'operator',
    }),
  )
  return { dir, path }
}

const run = promisify(execFile)
const CLUSTER = join(repo, 'tests', 'cluster')

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

/**
 * Start a real etcd + kube-apiserver seeded like the sandbox (tests/cluster/start.sh, ~11 s; the
 * binaries are built once, then cached). Resolves to start.sh's variables (`env`: the server's
 * URL, the admin's and the operator's kubeconfigs...) and `stop`; rejects, saying why, if it
 * does not start. If this process dies first, start.sh's watcher stops the servers.
 */
export async function startCluster() {
  const dir = mkdtempSync(join(tmpdir(), 'kubeleash-node-cluster-'))
  const started = performance.now()
  const stop = async () => {
    try {
      await run(join(CLUSTER, 'stop.sh'), [dir], { timeout: 120_000 })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }
  try {
    await run(join(CLUSTER, 'start.sh'), [dir], {
      env: { ...process.env, KUBELEASH_CLUSTER_OWNER_PID: String(process.pid) },
      maxBuffer: 16 * 1024 * 1024,
      timeout: 900_000,
    })
  } catch (e) {
    throw new Error(`tests/cluster/start.sh failed (${e.code ?? e.signal}); a real API server is required (logs in ${dir}):\n${String(e.stderr ?? e.message).slice(-4000)}`)
  }
  const env = await readEnv(join(dir, 'env'))
  for (const k of ['KUBELEASH_CLUSTER_SERVER', 'KUBELEASH_CLUSTER_CA', 'KUBECONFIG_ADMIN', 'KUBECONFIG_OPERATOR_CERT', 'KUBECONFIG_OPERATOR_TOKEN', 'KUBECONFIG_OPERATOR_EXEC']) {
    if (!env[k]) {
      await stop()
      throw new Error(`tests/cluster/start.sh wrote no ${k} in ${dir}/env`)
    }
  }
  console.log(`# real API server started in ${((performance.now() - started) / 1000).toFixed(1)} s at ${env.KUBELEASH_CLUSTER_SERVER}`)
  return { dir, env, stop }
}

/** A `@kubernetes/client-node` KubeConfig for the sandbox at `url`, with no credential (the
 * sandbox authenticates nobody): plain HTTP, which client-node allows only with skipTLSVerify. */
export async function sandboxKubeConfig(url) {
  const k8s = await import('@kubernetes/client-node')
  const kc = new k8s.KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'sandbox', server: url, skipTLSVerify: true }],
    users: [{ name: 'judge' }],
    contexts: [{ name: 'judge', cluster: 'sandbox', user: 'judge' }],
    currentContext: 'judge',
  })
  return kc
}
