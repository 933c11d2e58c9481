//! kubeleash's own state in the cluster: the approvals and grants kept as `kubeleash.dev`
//! objects, and the definitions of those objects. An agent's requests go upstream with the very
//! credential that writes them, so no policy, and no mode, lets one reach them.

use crate::request::Attributes;

/// The API group of kubeleash's own objects.
pub(crate) const GROUP: &str = "kubeleash.dev";

/// Why a request with these attributes would reach kubeleash's own state, or `None`.
pub(crate) fn reach(a: &Attributes) -> Option<&'static str> {
    if !a.resource_request {
        return None;
    }
    if a.api_group == GROUP {
        return Some(
            "kubeleash.dev objects are kubeleash's own (held approvals and the grants they \
             leave): no policy lets an agent's request reach them",
        );
    }
    // A definition changed (a conversion webhook that answers every read, a schema that drops
    // a field) or deleted (every approval and grant with it) would decide for agents as surely
    // as a forged object: reads and creates of other definitions are the policy's business.
    let definitions =
        a.api_group == "apiextensions.k8s.io" && a.resource == "customresourcedefinitions";
    let changes = !matches!(a.verb.as_str(), "get" | "list" | "watch" | "create");
    let ours = a.name.is_empty() || a.name.strip_suffix(GROUP).is_some_and(|r| r.ends_with('.'));
    (definitions && changes && ours).then_some(
        "the definitions of kubeleash's own objects (*.kubeleash.dev) are kubeleash's: no policy \
         lets an agent's request change or delete them (nor delete definitions by collection)",
    )
}
