// Builds the native addon with cargo when the package is installed from a checkout
// (`npm install ./node`, a link): a release build of the `kubeleash-node` crate (HTTPS to the
// cluster comes with kubeleash-connect), copied to the file name `native.js` loads.
// It needs only Rust; `npm run build` (the napi CLI) also regenerates `native.js` and
// `index.d.ts`. KUBELEASH_SKIP_BUILD=1 skips it (the addon is built some other way).
//
// A copy of the package (`npm install --install-links ./node`) is not in the Rust workspace and
// cannot be built where it lands: it uses the addon the checkout had built (`npm run build`).
// The published package (scripts/pack.mjs) has no install script at all: its addon comes
// prebuilt, in the platform package npm picks.
'use strict'

const { spawnSync } = require('node:child_process')
const { copyFileSync, existsSync } = require('node:fs')
const path = require('node:path')

const { platform } = require('./platform.js')

const root = path.join(__dirname, '..')

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
// In the checkout: node/Cargo.toml, a member of the workspace one level up.
const inCheckout = existsSync(path.join(root, 'Cargo.toml')) && existsSync(path.join(root, '..', 'Cargo.toml'))
if (!inCheckout) {
  if (existsSync(path.join(root, `kubeleash.${platform()}.node`))) process.exit(0)
  console.error(
    `kubeleash: this copy of the package has no addon for ${platform()} and no Rust workspace to build one in: ` +
      'install the published package (with its platform package), or run `npm run build` in the checkout\'s node/ before copying it',
  )
  process.exit(1)
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
