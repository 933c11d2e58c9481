// The ES module face of the package: the same objects as `require('kubeleash')`.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const kubeleash = require('./index.js')

export const { Policy, Masker, MaskerStream, Connection, classify, connect, listen, verifyRecord, APPROVER_FAILED } = kubeleash
export default kubeleash
