// The platform part of the addon's file and package names, as napi's loader (native.js) spells
// it: one owner for install.js and pack.mjs.
'use strict'

function platform() {
  const { platform: os, arch } = process
  if (os === 'linux') {
    const glibc = process.report?.getReport()?.header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (os === 'win32') return `win32-${arch}-msvc`
  return `${os}-${arch}`
}

module.exports = { platform }
