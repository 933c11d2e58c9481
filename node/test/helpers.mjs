// Shared by the tests: where the corpus lives, and reading it.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const here = dirname(fileURLToPath(import.meta.url))
export const repo = join(here, '..', '..')
export const testdata = join(repo, 'tests', 'testdata')

export function readJson(...parts) {
  return JSON.parse(readFileSync(join(...parts), 'utf8'))
}

/** A small deterministic generator, for split points. */
export function xorshift(seed) {
  let s = BigInt(seed) | 1n
  const mask = (1n << 64n) - 1n
  return (n) => {
    s ^= (s << 13n) & mask
    s ^= s >> 7n
    s ^= (s << 17n) & mask
    return Number(s % BigInt(Math.max(1, n)))
  }
}

/** Split `buf` at random points into pieces of 1 byte up to `max`. */
export function randomSplit(buf, below, max) {
  const pieces = []
  let at = 0
  while (at < buf.length) {
    const end = Math.min(buf.length, at + 1 + below(max))
    pieces.push(buf.subarray(at, end))
    at = end
  }
  return pieces
}
