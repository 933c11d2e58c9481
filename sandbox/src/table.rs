//! Server-side printing: `as=Table` with the columns kubectl prints for each kind
//! (`pkg/printers/internalversion/printers.go`), and `as=PartialObjectMetadata[List]`.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::catalog::ResourceDef;
use crate::time;

/// What `rows[].object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(v: Option<&str>) -> Result<Include, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

#[derive(Debug, Serialize)]
struct Column {
    name: &'static str,
    #[serde(rename = "type")]
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
    priority: u8,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority,
    }
}

const fn name_col() -> Column {
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESC,
        priority: 0,
    }
}

const fn age_col() -> Column {
    col("Age", "string", AGE_DESC, 0)
}

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            col(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age_col(),
            col(
                "IP",
                "string",
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            col(
                "Node",
                "string",
                "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler simply schedules this pod onto that node, assuming that it fits resource requirements.",
                1,
            ),
            col(
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
                1,
            ),
            col(
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
                1,
            ),
        ],
        "Namespace" => vec![
            name_col(),
            col("Status", "string", "The status of the namespace", 0),
            age_col(),
        ],
        "Secret" => vec![
            name_col(),
            col(
                "Type",
                "string",
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
                0,
            ),
            col(
                "Data",
                "string",
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
                0,
            ),
            age_col(),
        ],
        "ConfigMap" => vec![
            name_col(),
            col(
                "Data",
                "string",
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
                0,
            ),
            age_col(),
        ],
        "ServiceAccount" => vec![
            name_col(),
            col(
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                0,
            ),
            age_col(),
        ],
        "Service" => vec![
            name_col(),
            col(
                "Type",
                "string",
                "type determines how the Service is exposed. Defaults to ClusterIP.",
                0,
            ),
            col(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
                0,
            ),
            col(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
                0,
            ),
            col(
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service.",
                0,
            ),
            age_col(),
            col(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
                1,
            ),
        ],
        "Deployment" => vec![
            name_col(),
            col("Ready", "string", "Number of the pod with ready state", 0),
            col(
                "Up-to-date",
                "string",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            col(
                "Available",
                "string",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age_col(),
            col(
                "Containers",
                "string",
                "Names of each container in the template.",
                1,
            ),
            col(
                "Images",
                "string",
                "Images referenced by each container in the template.",
                1,
            ),
            col(
                "Selector",
                "string",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                1,
            ),
        ],
        "Role" | "ClusterRole" => vec![name_col(), col("Created At", "date", AGE_DESC, 0)],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            name_col(),
            col(
                "Role",
                "string",
                "RoleRef can only reference the current namespace and the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
                0,
            ),
            age_col(),
            col("Users", "string", "Users in the roleBinding", 1),
            col("Groups", "string", "Groups in the roleBinding", 1),
            col(
                "ServiceAccounts",
                "string",
                "ServiceAccounts in the roleBinding",
                1,
            ),
        ],
        "Event" => vec![
            col(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
                0,
            ),
            col(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future",
                0,
            ),
            col(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            col(
                "Object",
                "string",
                "The object that this event is about.",
                0,
            ),
            col(
                "Subobject",
                "string",
                "The subobject that this event is about.",
                1,
            ),
            col(
                "Source",
                "string",
                "The component reporting this event. Should be a short machine understandable string.",
                1,
            ),
            col(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
                0,
            ),
            col(
                "First Seen",
                "string",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
                1,
            ),
            col(
                "Count",
                "string",
                "The number of times this event has occurred.",
                1,
            ),
            Column {
                name: "Name",
                type_: "string",
                format: "name",
                description: NAME_DESC,
                priority: 1,
            },
        ],
        _ => vec![name_col(), age_col()],
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".to_owned()
    } else {
        x.to_owned()
    }
}

fn count(v: &Value, pointer: &str) -> usize {
    match v.pointer(pointer) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn label_string(m: Option<&Value>) -> String {
    let Some(Value::Object(m)) = m else {
        return "<none>".to_owned();
    };
    if m.is_empty() {
        return "<none>".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

fn pod_cells(o: &Value, name: &str, age: String) -> Vec<Value> {
    let total = count(o, "/spec/containers");
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut reason = s(o, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = s(o, "/status/phase").to_owned();
    }
    let mut restarts = 0;
    let mut last_restart: Option<i64> = None;
    for c in &statuses {
        restarts += int(c, "/restartCount");
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if !terminated.is_empty() {
            reason = terminated.to_owned();
        }
        if let Some(t) = time::parse_rfc3339(s(c, "/lastState/terminated/finishedAt")) {
            last_restart = Some(last_restart.map_or(t, |l: i64| l.max(t)));
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".to_owned();
    }
    let restarts = match last_restart {
        Some(t) => format!("{restarts} ({} ago)", time::human_duration(time::now() - t)),
        None => restarts.to_string(),
    };
    let gates = count(o, "/spec/readinessGates");
    vec![
        json!(name),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age),
        json!(or_none(s(o, "/status/podIP"))),
        json!(or_none(s(o, "/spec/nodeName"))),
        json!(or_none(s(o, "/status/nominatedNodeName"))),
        json!(if gates == 0 {
            "<none>".to_owned()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn service_cells(o: &Value, name: &str, age: String) -> Vec<Value> {
    let typ = match s(o, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let external = match typ {
        "ExternalName" => s(o, "/spec/externalName").to_owned(),
        "LoadBalancer" => {
            let ips: Vec<&str> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.get("ip").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            if ips.is_empty() {
                "<pending>".to_owned()
            } else {
                ips.join(",")
            }
        }
        _ => "<none>".to_owned(),
    };
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    let port = int(p, "/port");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        json!(name),
        json!(typ),
        json!(or_none(s(o, "/spec/clusterIP"))),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports.join(",")
        }),
        json!(age),
        json!(label_string(o.pointer("/spec/selector"))),
    ]
}

fn deployment_cells(o: &Value, name: &str, age: String) -> Vec<Value> {
    let desired = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let containers = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    vec![
        json!(name),
        json!(format!("{}/{desired}", int(o, "/status/readyReplicas"))),
        json!(int(o, "/status/updatedReplicas")),
        json!(int(o, "/status/availableReplicas")),
        json!(age),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(label_string(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn binding_cells(o: &Value, name: &str, age: String) -> Vec<Value> {
    let subjects = o
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|x| s(x, "/kind") == kind)
            .map(|x| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
                } else {
                    s(x, "/name").to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(name),
        json!(format!(
            "{}/{}",
            s(o, "/roleRef/kind"),
            s(o, "/roleRef/name")
        )),
        json!(age),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}

fn event_cells(o: &Value, name: &str) -> Vec<Value> {
    let last = [
        s(o, "/lastTimestamp"),
        s(o, "/eventTime"),
        s(o, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty());
    let first = [
        s(o, "/firstTimestamp"),
        s(o, "/eventTime"),
        s(o, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty());
    let host = s(o, "/source/host");
    let source = match (s(o, "/source/component"), host) {
        (c, "") => c.to_owned(),
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(time::age(last)),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        )),
        json!(s(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(o, "/message").trim()),
        json!(time::age(first)),
        json!(o.get("count").and_then(Value::as_i64).unwrap_or(1)),
        json!(name),
    ]
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = s(o, "/metadata/name");
    let created = o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    let age = time::age(created);
    match kind {
        "Pod" => pod_cells(o, name, age),
        "Namespace" => vec![json!(name), json!(s(o, "/status/phase")), json!(age)],
        "Secret" => vec![
            json!(name),
            json!(s(o, "/type")),
            json!(count(o, "/data")),
            json!(age),
        ],
        "ConfigMap" => vec![
            json!(name),
            json!(count(o, "/data") + count(o, "/binaryData")),
            json!(age),
        ],
        "ServiceAccount" => vec![json!(name), json!(count(o, "/secrets")), json!(age)],
        "Service" => service_cells(o, name, age),
        "Deployment" => deployment_cells(o, name, age),
        "Role" | "ClusterRole" => vec![json!(name), json!(created.unwrap_or(""))],
        "RoleBinding" | "ClusterRoleBinding" => binding_cells(o, name, age),
        "Event" => event_cells(o, name),
        _ => vec![json!(name), json!(age)],
    }
}

/// `{"kind":"PartialObjectMetadata", ...}` for one object.
pub fn partial(object: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// `PartialObjectMetadataList` for a list.
pub fn partial_list(objects: &[Value], list_meta: Map<String, Value>, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "items": objects.iter().map(|o| partial(o, version)).collect::<Vec<_>>(),
    })
}

/// A Table of `objects`. `headers` is false for every watch event after the first, as the API
/// server sends column definitions once per watch.
pub fn table(
    def: &ResourceDef,
    objects: &[Value],
    include: Include,
    headers: bool,
    list_meta: Map<String, Value>,
    version: &str,
) -> Value {
    let custom = crate::crd::printer_columns(def).filter(|c| !c.is_empty());
    let row_cells = |o: &Value| match custom {
        Some(cols) => std::iter::once(json!(s(o, "/metadata/name")))
            .chain(cols.iter().map(|c| crate::crd::cell(o, c)))
            .collect(),
        None if def.is_custom() => vec![
            json!(s(o, "/metadata/name")),
            json!(time::age(
                o.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
            )),
        ],
        None => cells(def.kind, o),
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include {
                Include::None => Value::Null,
                Include::Metadata => partial(o, "v1"),
                Include::Object => o.clone(),
            };
            json!({"cells": row_cells(o), "object": object})
        })
        .collect();
    let column_definitions = match (headers, custom) {
        (false, _) => Value::Null,
        (true, Some(cols)) => {
            let mut defs = vec![serde_json::to_value(name_col()).unwrap_or(Value::Null)];
            for c in cols {
                defs.push(json!({"name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority}));
            }
            Value::Array(defs)
        }
        (true, None) if def.is_custom() => {
            serde_json::to_value(vec![name_col(), age_col()]).unwrap_or(Value::Null)
        }
        (true, None) => serde_json::to_value(columns(def.kind)).unwrap_or(Value::Null),
    };
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn secret_rows_count_keys_and_hide_values() {
        let (_, secrets) = catalog::find("", "v1", "secrets").unwrap_or_else(|| unreachable!());
        let o = json!({"metadata": {"name": "db", "creationTimestamp": time::rfc3339(time::now() - 30 * 86_400)},
            "type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}});
        let t = table(secrets, &[o], Include::None, true, Map::new(), "v1");
        assert_eq!(t["rows"][0]["cells"], json!(["db", "Opaque", 2, "30d"]));
        assert_eq!(t["rows"][0]["object"], Value::Null);
        assert_eq!(t["columnDefinitions"][2]["name"], "Data");
    }
}
