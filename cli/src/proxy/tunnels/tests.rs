#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::HeaderMap;
use kubeleash_core::policy::{Identity, Policy};
use proptest::prelude::*;

use super::{Admitted, Tunnels};

fn policy(rules: &str) -> Policy {
    Policy::from_yaml(&format!(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n{rules}"
    ))
    .unwrap()
}

const EXEC_ALLOWED: &str = "    - {name: exec, effect: allow, verbs: [create], resources: [pods/exec, pods/attach, pods/portforward, pods/proxy], namespaces: [dev]}\n";
const EXEC_APPROVE: &str = "    - {name: exec, effect: approve, verbs: [create], resources: [pods/exec, pods/attach, pods/portforward, pods/proxy], namespaces: [dev]}\n";
const EXEC_DENIED: &str = "    - {name: exec, effect: allow, verbs: [create], resources: [pods/exec, pods/attach, pods/portforward, pods/proxy], namespaces: [dev]}\n    - {name: no-exec, effect: deny, verbs: [create], resources: [pods/exec, pods/attach, pods/portforward, pods/proxy]}\n";

fn none() -> Policy {
    Policy::from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n")
        .unwrap()
}

fn tunnel(method: &str, sub: &str, upgrade: &str, approved: bool) -> Admitted {
    let mut headers = HeaderMap::new();
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert("upgrade", upgrade.parse().unwrap());
    Admitted {
        identity: Identity::new("agent-1", ["ai-agents"]),
        method: method.into(),
        target: format!("/api/v1/namespaces/dev/pods/web-1/{sub}?command=sh&stdin=true"),
        headers,
        body: Bytes::new(),
        approved,
    }
}

#[test]
fn a_tunnel_the_policy_allows_stays_and_one_it_denies_is_cut() {
    let t = tunnel("POST", "exec", "SPDY/3.1", false);
    assert!(t.refused_by(&policy(EXEC_ALLOWED)).is_none());
    assert!(t.refused_by(&policy(EXEC_DENIED)).is_some());
    assert!(t.refused_by(&none()).is_some());
    // Held for a person: only a tunnel a person approved stays while the policy still asks.
    assert!(t.refused_by(&policy(EXEC_APPROVE)).is_some());
    let approved = tunnel("POST", "exec", "SPDY/3.1", true);
    assert!(approved.refused_by(&policy(EXEC_APPROVE)).is_none());
    assert!(approved.refused_by(&none()).is_some());
}

#[test]
fn a_reload_cuts_exactly_the_tunnels_it_no_longer_allows() {
    let tunnels = Arc::new(Tunnels::default());
    let allowed = policy(EXEC_ALLOWED);
    let a = tunnels
        .register(tunnel("POST", "exec", "SPDY/3.1", false), || {
            allowed.clone()
        })
        .unwrap();
    let b = tunnels
        .register(tunnel("GET", "attach", "websocket", true), || {
            allowed.clone()
        })
        .unwrap();
    assert_eq!(tunnels.len(), 2);
    assert!(tunnels.reloaded(&allowed).is_empty());
    assert!(!*a.cut.borrow() && !*b.cut.borrow());
    // Approve: the one a person approved stays, the one a rule allowed is cut.
    let cut = tunnels.reloaded(&policy(EXEC_APPROVE));
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert!(*a.cut.borrow() && !*b.cut.borrow());
    assert!(cut[0].contains("POST"), "{cut:?}");
    let cut = tunnels.reloaded(&none());
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(*b.cut.borrow());
    drop(a);
    drop(b);
    assert_eq!(tunnels.len(), 0, "a closed tunnel leaves the list");
}

#[test]
fn a_tunnel_registered_after_a_reload_is_decided_by_the_new_policy() {
    let tunnels = Arc::new(Tunnels::default());
    let r = tunnels.register(tunnel("POST", "exec", "SPDY/3.1", false), none);
    assert!(r.is_err());
    assert_eq!(tunnels.len(), 0, "a refused tunnel is not kept");
}

static ALLOWED: LazyLock<Policy> = LazyLock::new(|| policy(EXEC_ALLOWED));
static DENIED: LazyLock<Policy> = LazyLock::new(|| policy(EXEC_DENIED));
static NONE: LazyLock<Policy> = LazyLock::new(none);

proptest! {
    /// Whatever the subresource, method, upgrade token and target, a policy with no rules
    /// leaves no tunnel open, and a policy that allows the subresource keeps it.
    #[test]
    fn no_rules_cut_every_tunnel(
        sub in prop::sample::select(vec!["exec", "attach", "portforward", "proxy"]),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        upgrade in "[a-zA-Z0-9./]{0,12}",
        approved in any::<bool>(),
        name in "[a-z][a-z0-9-]{0,20}",
    ) {
        let mut t = tunnel(method, sub, &upgrade, approved);
        t.target = format!("/api/v1/namespaces/dev/pods/{name}/{sub}");
        let tunnels = Arc::new(Tunnels::default());
        let registered = tunnels.register(t.clone(), || ALLOWED.clone());
        // Anything that can start a stream on these is `create`, which the rule allows.
        if sub != "proxy" && !upgrade.is_empty() {
            prop_assert!(registered.is_ok(), "{} {} {:?}", method, t.target, upgrade);
        }
        if let Ok(ticket) = registered {
            let cut = tunnels.reloaded(&NONE);
            prop_assert_eq!(cut.len(), 1);
            prop_assert!(*ticket.cut.borrow());
            drop(ticket);
            prop_assert_eq!(tunnels.len(), 0);
        }
        prop_assert!(t.refused_by(&NONE).is_some());
        prop_assert!(t.refused_by(&DENIED).is_some());
    }
}
