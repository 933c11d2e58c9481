// A user's application, run from a project outside the checkout that installed `kubeleash`
// (test/packaging.test.mjs copies it there). It prints one JSON line saying what it got.
//   node app.mjs KUBECONFIG
import { createRequire } from 'node:module'

import * as k8s from '@kubernetes/client-node'
import { Policy, connect } from 'kubeleash'

const require = createRequire(import.meta.url)
const policy = Policy.fromYaml(`
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: consumer}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list], apiGroups: [""], resources: [secrets], namespaces: [dev]}
`)
const denied = policy.evaluate({ method: 'DELETE', target: '/api/v1/namespaces/dev/secrets/db', user: 'a', groups: [] })
const kc = await connect(policy, { kubeconfig: process.argv[2], user: 'agent-1', groups: [] })
try {
  const api = kc.makeApiClient(k8s.CoreV1Api)
  const secrets = await api.listNamespacedSecret({ namespace: 'dev' })
  console.log(
    JSON.stringify({
      kubeleash: require.resolve('kubeleash'),
      client: require.resolve('@kubernetes/client-node'),
      sameClient: kc instanceof k8s.KubeConfig,
      denied: denied.effect,
      secretValues: secrets.items.flatMap((s) => Object.values(s.data ?? {})),
    }),
  )
} finally {
  kc.close()
}
