// Builds the native addon with cargo when the package is installed (`npm install ./node`):
// a release build of the `kubeleash-node` crate (HTTPS to the cluster comes with
// kubeleash-connect), copied to the file name `native.js` loads.
// It needs only Rust; `npm run build` (the napi CLI) also regenerates `native.js` and
// `index.d.ts`. KUBELEASH_SKIP_BUILD=1 skips it (the addon is built some other way).
'use strict'

const { spawnSync } = require('node:child_process')
const { copyFileSync } = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')

/** The platform part of the addon's file name, as napi's loader spells it. */
function platform() {
  const { platform: os, arch } = process
  if (os === 'linux') {
    const glibc = process.report?.getReport()?.header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (os === 'win32') return `win32-${arch}-msvc`
  return `${os}-${arch}`
}

function libraryName() {
  if (process.platform === 'win32') return 'kubeleash_node.dll'
  if (process.platform === 'darwin') return 'libkubeleash_node.dylib'
  return 'libkubeleash_node.so'
}

function runTool(tool, args) {
  const r = spawnSync(tool, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' })
  if (r.error) throw new Error(`kubeleash: cannot run ${tool} (Rust is needed to build the addon): ${r.error.message}`)
  if (r.status !== 0) throw new Error(`kubeleash: \`${tool} ${args.join(' ')}\` failed with exit code ${r.status}`)
  return r.stdout
}

if (process.env.KUBELEASH_SKIP_BUILD) {
  process.exit(0)
}
try {
  // With an explicit --target, as `napi build` passes it, so both share one build directory.
  const host = /^host: (.+)$/m.exec(runTool('rustc', ['-vV']))?.[1]
  if (!host) throw new Error('kubeleash: cannot tell the host triple from `rustc -vV`')
  runTool('cargo', ['build', '--release', '-p', 'kubeleash-node', '--target', host])
  const metadata = runTool('cargo', ['metadata', '--format-version', '1', '--no-deps'])
  const built = path.join(JSON.parse(metadata).target_directory, host, 'release', libraryName())
  copyFileSync(built, path.join(root, `kubeleash.${platform()}.node`))
} catch (e) {
  console.error(e.message)
  process.exit(1)
}
