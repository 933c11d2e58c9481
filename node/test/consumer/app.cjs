// The CommonJS face of the installed package, from a user's project: prints one JSON line.
const kubeleash = require('kubeleash')

const exported = Object.keys(kubeleash).sort()
const classified = kubeleash.classify('GET', '/api/v1/namespaces/dev/pods')
console.log(JSON.stringify({ kubeleash: require.resolve('kubeleash'), exported, verb: classified.verb }))
