// The package as a user installs it, in fresh projects outside the checkout: the tarballs
// `npm pack` makes (scripts/pack.mjs: the main package and the platform package with the
// prebuilt addon, installed with no Rust build), a link install from the checkout, and a copy
// of the checkout's package (`--install-links`). In each, `@kubernetes/client-node` is the
// project's own copy, from the npm registry, and `connect` must use that copy: its KubeConfig
// is an instance of the class the application imported, and it lists Secrets (masked) from the
// sandbox through the Rust stack.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { here } from './helpers.mjs'
import { operatorKubeconfig, startSandbox } from './sandbox.mjs'

const nodeDir = join(here, '..')
const lock = JSON.parse(readFileSync(join(nodeDir, 'package-lock.json'), 'utf8'))
// The versions the binding is tested with: the same client and undici as node/package.json.
const CLIENT = `@kubernetes/client-node@${lock.packages['node_modules/@kubernetes/client-node'].version}`
const UNDICI = JSON.parse(readFileSync(join(nodeDir, 'package.json'), 'utf8')).overrides.undici
const MASKED = 'W21hc2tlZF0='

let work
let sandbox
let kubeconfig
let tarballs

function npm(cwd, ...args) {
  return execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

/** A new project with the client from the registry and `kubeleash` from `spec` (npm args). */
function project(name, ...spec) {
  const dir = join(work, name)
  execFileSync('mkdir', ['-p', dir])
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true, overrides: { undici: UNDICI } }, null, 2),
  )
  npm(dir, 'install', ...spec, CLIENT)
  for (const f of ['app.mjs', 'app.cjs']) copyFileSync(join(here, 'consumer', f), join(dir, f))
  return dir
}

function run(dir, file, ...args) {
  const out = execFileSync(process.execPath, [file, ...args], { cwd: dir, encoding: 'utf8' })
  return JSON.parse(out.trim().split('\n').pop())
}

/** What every install must give the application. */
function checkApp(dir) {
  const esm = run(dir, 'app.mjs', kubeconfig.path)
  assert.equal(esm.sameClient, true, 'connect used another copy of @kubernetes/client-node than the application')
  assert.ok(esm.client.startsWith(join(dir, 'node_modules')), `the client came from ${esm.client}`)
  assert.equal(esm.denied, 'deny')
  assert.ok(esm.secretValues.length > 0, 'no Secret values came back')
  for (const v of esm.secretValues) assert.equal(v, MASKED)
  const cjs = run(dir, 'app.cjs')
  assert.equal(cjs.verb, 'list')
  for (const name of ['Policy', 'Masker', 'MaskerStream', 'classify', 'connect', 'listen', 'verifyRecord']) {
    assert.ok(cjs.exported.includes(name), `require('kubeleash') has no ${name}`)
  }
  return { esm, cjs }
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'kubeleash-packaging-'))
  sandbox = await startSandbox()
  kubeconfig = operatorKubeconfig(sandbox.url, 'operator-token-for-packaging')
  const printed = execFileSync(process.execPath, [join(nodeDir, 'scripts', 'pack.mjs'), join(work, 'dist')], {
    encoding: 'utf8',
  })
  tarballs = printed.trim().split('\n')
})

after(async () => {
  await sandbox?.stop()
  if (work) rmSync(work, { recursive: true, force: true })
})

describe('the npm package, installed outside the checkout', () => {
  test('npm pack makes the main package and the platform package with the prebuilt addon', () => {
    assert.equal(tarballs.length, 2)
    const [main, platformPkg] = tarballs
    assert.match(main, /kubeleash-\d+\.\d+\.\d+\.tgz$/)
    assert.match(platformPkg, /kubeleash-linux-x64-gnu-\d+\.\d+\.\d+\.tgz$/)
    const list = (t) => execFileSync('tar', ['-tzf', t], { encoding: 'utf8' }).split('\n')
    const mainFiles = list(main)
    assert.ok(mainFiles.includes('package/native.js'))
    assert.ok(mainFiles.includes('package/index.d.ts'))
    assert.ok(!mainFiles.some((f) => f.endsWith('.node')), 'the main package carries an addon')
    assert.ok(!mainFiles.some((f) => f.startsWith('package/scripts/')), 'the main package carries an install script')
    assert.ok(list(platformPkg).includes('package/kubeleash.linux-x64-gnu.node'))
    const manifest = JSON.parse(execFileSync('tar', ['-xzOf', main, 'package/package.json'], { encoding: 'utf8' }))
    assert.equal(manifest.scripts, undefined, 'the published package runs scripts at install')
    assert.deepEqual(Object.keys(manifest.optionalDependencies), ['kubeleash-linux-x64-gnu'])
  })

  test('from the tarballs: no build, the prebuilt addon, the project\'s own client', () => {
    const dir = project('tarball', ...tarballs)
    assert.ok(existsSync(join(dir, 'node_modules', 'kubeleash-linux-x64-gnu', 'kubeleash.linux-x64-gnu.node')))
    assert.ok(!lstatSync(join(dir, 'node_modules', 'kubeleash')).isSymbolicLink())
    const { esm } = checkApp(dir)
    assert.equal(esm.kubeleash, join(dir, 'node_modules', 'kubeleash', 'index.js'))
  })

  test('linked from the checkout: the client still resolves from the project', () => {
    const dir = project('link', nodeDir)
    assert.ok(lstatSync(join(dir, 'node_modules', 'kubeleash')).isSymbolicLink(), 'npm did not link the checkout')
    const { esm } = checkApp(dir)
    // The package itself is the checkout's: the client must not be the checkout's copy.
    assert.ok(esm.kubeleash.startsWith(nodeDir), esm.kubeleash)
  })

  test('copied from the checkout (--install-links): the addon the checkout built, no cargo', () => {
    const dir = project('copy', '--install-links', nodeDir)
    assert.ok(!lstatSync(join(dir, 'node_modules', 'kubeleash')).isSymbolicLink())
    assert.ok(existsSync(join(dir, 'node_modules', 'kubeleash', 'kubeleash.linux-x64-gnu.node')))
    checkApp(dir)
  })
})
