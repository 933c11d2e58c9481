//! What the API server fills in on write (defaulting, system metadata) and what the controllers of
//! a real cluster would soon write (a Pod running, a Deployment's status following its spec): the
//! sandbox has no controllers, so it writes their end state at once.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::catalog::ResourceDef;
use crate::ids::Ids;

/// The one node pods run on.
pub const NODE: &str = "sandbox-control-plane";
const NODE_IP: &str = "172.18.0.2";

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    m.entry(key.to_owned()).or_insert(value);
}

/// System metadata of a new object.
pub fn new_metadata(o: &mut Value, ids: &Ids, now: &str) {
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".to_owned(), json!(ids.uid()));
        meta.insert("creationTimestamp".to_owned(), json!(now));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
    }
}

/// `stringData` is write-only: merged into `data` as base64 and never stored.
fn fold_string_data(o: &mut Value) {
    let Some(m) = obj(o) else { return };
    let Some(Value::Object(sd)) = m.remove("stringData") else {
        return;
    };
    let data = m
        .entry("data".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            d.insert(k, json!(STANDARD.encode(v.as_str().unwrap_or(""))));
        }
    }
}

fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            None | Some((_, "latest")) => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

fn container_defaults(c: &mut Value) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(m) = obj(c) else { return };
    set_default(m, "imagePullPolicy", json!(pull_policy(&image)));
    set_default(m, "resources", json!({}));
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// PodSpec defaults (`pkg/apis/core/v1/defaults.go`), for pods and pod templates.
fn pod_spec_defaults(spec: &mut Value) {
    let Some(m) = obj(spec) else { return };
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "securityContext", json!({}));
    set_default(m, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container_defaults);
        }
    }
}

fn hex(ids: &Ids, bytes: usize) -> String {
    ids.bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the scheduler, the service-account admission plugin and the kubelet do to a new pod:
/// place it, mount the API token, and report it running and ready.
fn pod_runs(o: &mut Value, ids: &Ids, now: &str) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "serviceAccountName", json!("default"));
    set_default(spec, "nodeName", json!(NODE));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    set_default(
        spec,
        "tolerations",
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]),
    );
    if spec.get("automountServiceAccountToken") != Some(&json!(false)) {
        let volume = format!("kube-api-access-{}", ids.suffix(5));
        let volumes = spec
            .entry("volumes".to_owned())
            .or_insert_with(|| json!([]));
        if let Some(v) = volumes.as_array_mut() {
            v.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}));
        }
        if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let mounts = c
                    .entry("volumeMounts".to_owned())
                    .or_insert_with(|| json!([]));
                if let Some(m) = mounts.as_array_mut() {
                    m.push(json!({"name": volume, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
                }
            }
        }
    }
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let repo = image.split(['@', ':']).next().unwrap_or(image);
            json!({
                "name": c.get("name").cloned().unwrap_or(Value::Null),
                "state": {"running": {"startedAt": now}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": image,
                "imageID": format!("{repo}@sha256:{}", hex(ids, 32)),
                "containerID": format!("containerd://{}", hex(ids, 32)),
                "started": true,
            })
        })
        .collect();
    let ip = ids.pod_ip();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let status = json!({
        "phase": "Running",
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
                       condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    if let Some(m) = obj(o) {
        m.insert("status".to_owned(), status);
    }
}

/// A Deployment's status as the deployment controller leaves it once rolled out.
pub fn deployment_status(o: &mut Value, now: &str) {
    let replicas = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = o
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{name}-{}\" has successfully progressed.", template_hash(o))}
        ],
    });
    if replicas == 0
        && let Some(m) = status.as_object_mut()
    {
        for k in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = obj(o) {
        m.insert("status".to_owned(), status);
    }
}

/// The pod-template-hash a ReplicaSet of this template would get: stable for a template.
pub fn template_hash(o: &Value) -> String {
    let text = o
        .pointer("/spec/template")
        .map(Value::to_string)
        .unwrap_or_default();
    // FNV-1a, then the generateName alphabet, like the controller's safe-encoded hash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| char::from(alphabet[((h >> (i * 6)) % alphabet.len() as u64) as usize]))
        .collect()
}

fn service_defaults(o: &mut Value, old: Option<&Value>, ids: &Ids) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    let typ = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    set_default(spec, "sessionAffinity", json!("None"));
    if typ != "ExternalName" {
        let kept = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
        let ip = spec
            .get("clusterIP")
            .cloned()
            .or(kept)
            .unwrap_or_else(|| json!(ids.cluster_ip()));
        spec.insert("clusterIP".to_owned(), ip.clone());
        spec.insert("clusterIPs".to_owned(), json!([ip]));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    let node_ports = typ == "NodePort" || typ == "LoadBalancer";
    if node_ports {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
            if node_ports {
                set_default(p, "nodePort", json!(30000 + ids.next_u64() % 2768));
            }
        }
    }
    if let Some(m) = obj(o) {
        set_default(m, "status", json!({"loadBalancer": {}}));
    }
}

/// Defaults for a new object of `def`'s kind, after validation of what the client sent.
pub fn on_create(def: &ResourceDef, o: &mut Value, ids: &Ids, now: &str) {
    new_metadata(o, ids, now);
    if def.is_custom() {
        set_generation(o, 1);
        return;
    }
    match def.kind {
        "CustomResourceDefinition" => {
            set_generation(o, 1);
            crate::crd::on_create(o);
        }
        "Namespace" => {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = meta.entry("labels".to_owned()).or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".to_owned(), name);
                }
            }
            if let Some(m) = obj(o) {
                m.insert("spec".to_owned(), json!({"finalizers": ["kubernetes"]}));
                m.insert("status".to_owned(), json!({"phase": "Active"}));
            }
        }
        "Secret" => {
            fold_string_data(o);
            if let Some(m) = obj(o) {
                set_default(m, "type", json!("Opaque"));
            }
        }
        "Pod" => {
            if let Some(spec) = o.get_mut("spec") {
                pod_spec_defaults(spec);
            }
            pod_runs(o, ids, now);
        }
        "Deployment" => {
            if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".to_owned(), json!(1));
                let ann = meta
                    .entry("annotations".to_owned())
                    .or_insert_with(|| json!({}));
                if let Some(a) = ann.as_object_mut() {
                    a.insert("deployment.kubernetes.io/revision".to_owned(), json!("1"));
                }
            }
            deployment_defaults(o);
            deployment_status(o, now);
        }
        "Service" => service_defaults(o, None, ids),
        _ => {}
    }
}

fn set_generation(o: &mut Value, generation: i64) {
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".to_owned(), json!(generation));
    }
}

/// `metadata.generation` goes up when what it covers changes: the spec (everything but
/// metadata and status) for kinds with a status subresource, everything but metadata otherwise.
fn bump_generation(def: &ResourceDef, old: &Value, o: &mut Value) {
    let covered = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if def.has_status {
                m.remove("status");
            }
        }
        v
    };
    if covered(old) != covered(o) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        set_generation(o, generation + 1);
    }
}

fn deployment_defaults(o: &mut Value) {
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        set_default(
            spec,
            "strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
        );
        if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
            pod_spec_defaults(ps);
        }
    }
}

/// Defaults and controller effects on an update from `old` to `o`.
pub fn on_update(def: &ResourceDef, old: &Value, o: &mut Value, ids: &Ids, now: &str) {
    // Identity and creation time are the server's, whatever the client sent.
    for key in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        let kept = old.pointer(&format!("/metadata/{key}")).cloned();
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            match kept {
                Some(v) => meta.insert(key.to_owned(), v),
                None => meta.remove(key),
            };
        }
    }
    if def.is_custom() {
        bump_generation(def, old, o);
        return;
    }
    match def.kind {
        "CustomResourceDefinition" => bump_generation(def, old, o),
        "Secret" => {
            fold_string_data(o);
            if let Some(m) = obj(o) {
                set_default(m, "type", json!("Opaque"));
            }
        }
        "Namespace" => {
            let name = old
                .pointer("/metadata/name")
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(l) = o
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                l.insert("kubernetes.io/metadata.name".to_owned(), name);
            }
            let spec = old.get("spec").cloned();
            if let (Some(m), Some(spec)) = (obj(o), spec) {
                m.insert("spec".to_owned(), spec);
            }
        }
        "Pod" => {
            if let Some(spec) = o.get_mut("spec") {
                pod_spec_defaults(spec);
            }
        }
        "Deployment" => {
            deployment_defaults(o);
            if old.get("spec") != o.get("spec") {
                let generation = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    + 1;
                if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("generation".to_owned(), json!(generation));
                }
                deployment_status(o, now);
            }
        }
        "Service" => service_defaults(o, Some(old), ids),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn string_data_becomes_data() {
        let (_, secrets) = catalog::find("", "v1", "secrets").unwrap_or_else(|| unreachable!());
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}});
        on_create(secrets, &mut s, &Ids::new(1), "2025-01-01T00:00:00Z");
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn image_pull_policy() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/nginx"), "Always");
    }
}
