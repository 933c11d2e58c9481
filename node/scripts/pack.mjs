// Packs the npm package the way napi-rs packages ship: `kubeleash` (JavaScript, types, loader)
// and, for each platform built here, `kubeleash-<platform>` holding the prebuilt addon, which
// the main package names as an optional dependency so npm installs only the one that fits.
//
//   node scripts/pack.mjs OUT_DIR
//
// Run after `npm run build` (the addon for this machine). Writes OUT_DIR/kubeleash-<v>.tgz and
// OUT_DIR/kubeleash-<platform>-<v>.tgz and prints their paths, one per line. The published
// package has no install script: nothing is compiled on a user's machine. (A checkout installed
// with `npm install ./node` still builds the addon with cargo: see scripts/install.js.)
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { platform } from './platform.js'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = path.resolve(process.argv[2] ?? '')
if (!process.argv[2]) {
  console.error('usage: node scripts/pack.mjs OUT_DIR')
  process.exit(2)
}

const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
const here = platform()
const addon = `kubeleash.${here}.node`
if (!existsSync(path.join(root, addon))) {
  console.error(`kubeleash: no addon ${addon} in ${root}: run \`npm run build\` first`)
  process.exit(1)
}
const platformDir = path.join(root, 'npm', here)
if (!existsSync(path.join(platformDir, 'package.json'))) {
  console.error(
    `kubeleash: no npm/${here}/package.json: add the target to napi.targets in package.json and run \`napi create-npm-dirs\``,
  )
  process.exit(1)
}

const stage = path.join(out, 'stage')
rmSync(stage, { recursive: true, force: true })
mkdirSync(stage, { recursive: true })

function npmPack(dir) {
  const name = execFileSync('npm', ['pack', '--silent', '--pack-destination', out], {
    cwd: dir,
    encoding: 'utf8',
  })
    .trim()
    .split('\n')
    .pop()
  return path.join(out, name)
}

// The platform package: napi's own layout (npm/<platform>/package.json), with the addon.
const platformStage = path.join(stage, here)
cpSync(platformDir, platformStage, { recursive: true })
copyFileSync(path.join(root, addon), path.join(platformStage, addon))
const platformPkg = JSON.parse(readFileSync(path.join(platformStage, 'package.json'), 'utf8'))
if (platformPkg.version !== pkg.version) {
  console.error(`kubeleash: npm/${here} is version ${platformPkg.version}, the package ${pkg.version}: run \`napi version\``)
  process.exit(1)
}

// The main package: what `files` lists but the addon, no install script, no development-only
// fields, and the platform packages as optional dependencies (what `napi pre-publish` adds).
const mainStage = path.join(stage, 'kubeleash')
mkdirSync(mainStage)
const files = pkg.files.filter((f) => !f.endsWith('.node') && !f.startsWith('scripts/'))
for (const f of [...files, 'README.md']) {
  cpSync(path.join(root, f), path.join(mainStage, f), { recursive: true })
}
const published = { ...pkg, files }
delete published.scripts
delete published.devDependencies
delete published.overrides
published.optionalDependencies = Object.fromEntries(
  (pkg.napi.targets ?? []).map((t) => [`kubeleash-${napiPlatform(t)}`, pkg.version]),
)
writeFileSync(path.join(mainStage, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)

console.log(npmPack(mainStage))
console.log(npmPack(platformStage))
rmSync(stage, { recursive: true, force: true })

/** The platform part of napi's package names for a Rust target triple. */
function napiPlatform(triple) {
  const known = {
    'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
    'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
    'x86_64-unknown-linux-musl': 'linux-x64-musl',
    'aarch64-unknown-linux-musl': 'linux-arm64-musl',
    'x86_64-apple-darwin': 'darwin-x64',
    'aarch64-apple-darwin': 'darwin-arm64',
    'x86_64-pc-windows-msvc': 'win32-x64-msvc',
  }
  const p = known[triple]
  if (!p) throw new Error(`kubeleash: no npm platform name for target ${triple}`)
  return p
}
