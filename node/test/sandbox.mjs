// `kubeleash sandbox` as a subprocess, and an operator kubeconfig pointing at it.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

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
