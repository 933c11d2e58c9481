//! Adversarial review of two pieces: the Kubernetes protobuf body decoder
//! (`core/src/body/protobuf*`) and the OpenAPI masking mode (`core/src/mask.rs` `is_openapi`,
//! `Origin.schema`).
//!
//! The invariant under attack: the JSON kubeleash judges is what the kube-apiserver acts on, or
//! the body is refused; and decoding never panics, loops or explodes.
//!
//! Every statement below about Go was checked by decoding the same bytes with the API server's
//! own code: `protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Decode` from
//! k8s.io/apimachinery v0.34.4 with the client-go v0.34.4 scheme (the gogo-generated `Unmarshal`
//! of k8s.io/api v0.34.4, the hand-written ones of `Time`, `MicroTime` and `Quantity`), then
//! `encoding/json`. The results are written into the tests as constants.
//!
//! Every test passes: the attack is refused, or decoded exactly as Go decodes it. Where Go
//! accepts a body that kubeleash refuses, the comment or constant says what Go would have acted
//! on; refusing is the safe direction (the agent is told to send JSON instead).
//!
//! History: this file first held three `bypass_*` tests that failed (time fields, absent
//! quantities, unbounded JSON). The decoder has since gained a wire pre-scan against the 1.34
//! descriptor (`core/src/body/protobuf/wire.rs`) that refuses unknown fields, singular fields
//! written twice, messages in a non-length-delimited wire type, groups, over-long varints and
//! more than 100,000 wire fields, and a budget of 500,000 rendered JSON values; those tests now
//! pass under names that say what they prove, and the cases that used to be "decoded as Go
//! merges it" are now "refused".
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue};
use kubeleash_core::body::{self, BodyError, BodyLimits};
use kubeleash_core::policy::{Effect, Identity, Policy};
use kubeleash_core::request::classify;
use serde_json::{Value, json};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const POD_TARGET: &str = "/api/v1/namespaces/dev/pods";
const CRB_TARGET: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";

// ---------------------------------------------------------------------------------------------
// Wire-format helpers.

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A field key: number and wire type (0 varint, 1 fixed64, 2 length-delimited, 3 start group,
/// 4 end group, 5 fixed32).
fn key(number: u64, wire: u8) -> Vec<u8> {
    varint(number << 3 | u64::from(wire))
}

/// A length-delimited field.
fn ld(number: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = key(number, 2);
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

/// A varint field.
fn vi(number: u64, n: u64) -> Vec<u8> {
    let mut out = key(number, 0);
    out.extend(varint(n));
    out
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// `k8s\0` and a `runtime.Unknown` made of these fields.
fn raw_envelope(fields: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"k8s\0".to_vec();
    out.extend(cat(fields));
    out
}

fn type_meta(api_version: &str, kind: &str) -> Vec<u8> {
    ld(
        1,
        &cat(&[ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())]),
    )
}

/// The envelope kubectl writes: typeMeta (1), raw (2).
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    raw_envelope(&[type_meta(api_version, kind), ld(2, raw)])
}

/// `metadata` (field 1 of every object) with a name.
fn meta(name: &str) -> Vec<u8> {
    ld(1, &ld(1, name.as_bytes()))
}

/// A Pod: metadata, spec (2) = one container (2: name 1, image 2) and `spec_fields`.
fn pod(spec_fields: &[Vec<u8>]) -> Vec<u8> {
    let container = ld(2, &cat(&[ld(1, b"c"), ld(2, b"img")]));
    let spec = cat(&[vec![container], spec_fields.to_vec()].concat());
    envelope("v1", "Pod", &cat(&[meta("p"), ld(2, &spec)]))
}

/// A ClusterRoleBinding: metadata, and `fields` (2 subjects, 3 roleRef).
fn crb(fields: &[Vec<u8>]) -> Vec<u8> {
    let subject = ld(2, &cat(&[ld(1, b"User"), ld(3, b"mallory")]));
    let raw = cat(&[vec![meta("b"), subject], fields.to_vec()].concat());
    envelope("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", &raw)
}

/// roleRef (3) {apiGroup 1, kind 2, name 3}.
fn role_ref(name: &str) -> Vec<u8> {
    ld(
        3,
        &cat(&[
            ld(1, b"rbac.authorization.k8s.io"),
            ld(2, b"ClusterRole"),
            ld(3, name.as_bytes()),
        ]),
    )
}

// ---------------------------------------------------------------------------------------------
// Decoding and judging.

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static(PROTOBUF));
    h
}

fn decode(method: &str, target: &str, body: &[u8]) -> Result<Option<Value>, BodyError> {
    let req = classify(method, target, &headers()).unwrap();
    body::decode(&req, body, &BodyLimits::default()).map(|d| d.map(|d| d.value))
}

/// The JSON kubeleash judges for a POST of `body` to `target`.
fn judged(target: &str, body: &[u8]) -> Value {
    match decode("POST", target, body) {
        Ok(Some(v)) => v,
        other => panic!("expected a decoded body, got {other:?}"),
    }
}

/// Whether a POST of `body` to `target` is refused as protobuf kubeleash cannot read.
fn is_refused(target: &str, body: &[u8]) -> bool {
    match decode("POST", target, body) {
        Err(e) => {
            assert_eq!(e.code(), "protobuf-body", "{e}");
            true
        }
        Ok(_) => false,
    }
}

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: agent, effect: allow, subjects: {users: [agent]}, verbs: ["*"], apiGroups: ["*"], resources: ["*"]}
    - {name: agent-bindings, effect: allow, subjects: {users: [agent]}, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [clusterrolebindings]}
    - name: no-cluster-admin
      effect: deny
      verbs: [create, update]
      apiGroups: [rbac.authorization.k8s.io]
      resources: [clusterrolebindings, rolebindings]
      when: [{path: "$.roleRef.name", equals: cluster-admin}]
    - name: no-host-pid
      effect: deny
      verbs: [create, update]
      apiGroups: [""]
      resources: [pods]
      when: [{path: "$.spec.hostPID", equals: true}]
    - name: no-orphaning
      effect: deny
      verbs: [delete]
      apiGroups: [""]
      resources: [pods]
      when: [{path: "$.propagationPolicy", equals: Orphan}]
"#;

fn policy() -> Policy {
    Policy::from_yaml(POLICY).unwrap()
}

fn evaluate(method: &str, target: &str, body: &[u8]) -> (Effect, String) {
    let e = policy().evaluate(
        &Identity::new("agent", Vec::<String>::new()),
        method,
        target,
        &headers(),
        Some(body),
    );
    (e.decision.effect, e.decision.reason)
}

// ---------------------------------------------------------------------------------------------
// 1. Duplicated singular fields: gogo's generated `Unmarshal` merges a repeated embedded message
//    into the one already read (strings: last wins). kubeleash now refuses any singular field
//    written twice in one message: the safe direction (kubectl and client-go never write one
//    twice, and `metav1.Time`'s hand-written `Unmarshal` replaces instead of merging).

#[test]
fn duplicate_singular_fields_are_refused() {
    // Controls: one roleRef is judged as written.
    let (effect, reason) = evaluate("POST", CRB_TARGET, &crb(&[role_ref("cluster-admin")]));
    assert_eq!(effect, Effect::Deny, "{reason}");
    assert!(reason.contains("no-cluster-admin"), "{reason}");
    let body = crb(&[role_ref("view")]);
    assert_eq!(judged(CRB_TARGET, &body)["roleRef"]["name"], "view");
    assert_eq!(evaluate("POST", CRB_TARGET, &body).0, Effect::Allow);

    // (body, the roleRef.name Go acts on): every one is refused, whatever Go reads.
    let cases = [
        // roleRef {view}, then roleRef {name: cluster-admin}: merged, the last name wins.
        (
            crb(&[role_ref("view"), ld(3, &ld(3, b"cluster-admin"))]),
            "cluster-admin",
        ),
        // roleRef {cluster-admin}, then an empty roleRef: merging nothing changes nothing.
        (
            crb(&[role_ref("cluster-admin"), ld(3, b"")]),
            "cluster-admin",
        ),
        // One roleRef whose name is written twice.
        (
            crb(&[ld(
                3,
                &cat(&[
                    ld(1, b"rbac.authorization.k8s.io"),
                    ld(2, b"ClusterRole"),
                    ld(3, b"view"),
                    ld(3, b"cluster-admin"),
                ]),
            )]),
            "cluster-admin",
        ),
        // The other order: Go acts on `view`, and so does the policy.
        (crb(&[role_ref("cluster-admin"), role_ref("view")]), "view"),
    ];
    for (body, go) in cases {
        // Refusing is the safe direction: Go would act on roleRef.name = `go`.
        assert!(is_refused(CRB_TARGET, &body), "Go reads {go}: {body:02x?}");
        let (effect, reason) = evaluate("POST", CRB_TARGET, &body);
        assert_eq!(effect, Effect::Deny, "{reason}");
        assert!(reason.starts_with("request body refused"), "{reason}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Varint and key tricks on `spec.hostPID` (PodSpec field 12, bool).

#[test]
fn bool_varint_and_key_tricks_read_as_go_or_refused() {
    let host_pid_true_as_go_reads_it = [
        // A varint with only bit 35 set: Go's `bool(v != 0)` is true.
        vi(12, 1 << 35),
        // A non-minimal key (0x60 as 0xE0 0x00) and a non-minimal value (1 as 0x81 0x80 0x00).
        vec![0xE0, 0x00, 0x81, 0x80, 0x00],
    ];
    for f in host_pid_true_as_go_reads_it {
        let body = pod(&[f]);
        assert_eq!(judged(POD_TARGET, &body)["spec"]["hostPID"], true);
        assert_eq!(evaluate("POST", POD_TARGET, &body).0, Effect::Deny);
    }

    // Go reads hostPID = true from each of these; kubeleash refuses them (safe).
    let mut key_over_u32 = varint(((1u64 << 32) | 12) << 3); // Go: int32(wire >> 3) == 12
    key_over_u32.push(1);
    let mut tenth_byte_high = vec![0x60];
    tenth_byte_high.extend([0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f]);
    // Go: proto: wrong wireType = 2 for field HostPID.
    let wrong_wire_type = ld(12, &[1]);
    // Go skips an unknown group whose end tag names another field; prost does not.
    let group_mismatch = cat(&[key(100, 3), vi(12, 1), key(101, 4)]);
    for f in [
        key_over_u32,
        tenth_byte_high,
        wrong_wire_type,
        group_mismatch,
    ] {
        let body = pod(std::slice::from_ref(&f));
        assert!(is_refused(POD_TARGET, &body), "{f:02x?}");
        let (effect, reason) = evaluate("POST", POD_TARGET, &body);
        assert_eq!(effect, Effect::Deny, "{reason}");
    }

    // hostPID inside an unknown group: Go skips the whole group (hostPID false). kubeleash
    // refuses it (an unknown field, and a group): the safe direction.
    let body = pod(&[cat(&[key(100, 3), vi(12, 1), key(100, 4)])]);
    assert!(is_refused(POD_TARGET, &body));
    assert_eq!(evaluate("POST", POD_TARGET, &body).0, Effect::Deny);
}

#[test]
fn int32_overflow_and_negative_varints_read_as_go() {
    let dep = |spec: Vec<u8>| envelope("apps/v1", "Deployment", &cat(&[meta("d"), ld(2, &spec)]));
    let target = "/apis/apps/v1/namespaces/dev/deployments";
    // replicas (DeploymentSpec 1, int32): Go keeps the low 32 bits.
    assert_eq!(
        judged(target, &dep(vi(1, (1 << 32) + 1)))["spec"]["replicas"],
        1
    );
    assert_eq!(
        judged(target, &dep(vi(1, u64::MAX)))["spec"]["replicas"],
        -1
    );
    // A ten-byte varint whose last byte carries bits past 64: Go reads 1, kubeleash refuses.
    let mut ten = vec![0x08, 0x81];
    ten.extend([0x80; 8]);
    ten.push(0x7f);
    assert!(is_refused(target, &dep(ten)));
}

// ---------------------------------------------------------------------------------------------
// 3. Maps, packed fields, unknown fields, inline structs.

#[test]
fn map_entries_read_as_go_or_refused() {
    let secret = |data: &[Vec<u8>]| {
        let raw = cat(&[vec![meta("s")], data.to_vec()].concat());
        envelope("v1", "Secret", &raw)
    };
    let target = "/api/v1/namespaces/dev/secrets";
    // The same key twice: Go's map keeps the last value.
    let body = secret(&[
        ld(2, &cat(&[ld(1, b"k"), ld(2, b"a")])),
        ld(2, &cat(&[ld(1, b"k"), ld(2, b"b")])),
    ]);
    assert_eq!(judged(target, &body)["data"], json!({"k": "Yg=="}));
    // A key written twice in one entry: Go keeps the last (data {"j": "YQ=="}); kubeleash
    // refuses it, the safe direction. The same for a value written twice (gogo's generated map
    // code keeps the last, {"k": "Yg=="}; read from the code, not run through the oracle).
    let body = secret(&[ld(2, &cat(&[ld(1, b"k"), ld(2, b"a"), ld(1, b"j")]))]);
    assert!(is_refused(target, &body));
    let body = secret(&[ld(2, &cat(&[ld(1, b"k"), ld(2, b"a"), ld(2, b"b")]))]);
    assert!(is_refused(target, &body));

    // gogo's map code never checks the wire type of an entry's key or value, and bounds a key
    // by the whole buffer, not the entry. Go accepts both of these; kubeleash refuses them.
    let cm = |rest: Vec<u8>| envelope("v1", "ConfigMap", &cat(&[meta("c"), rest]));
    let cm_target = "/api/v1/namespaces/dev/configmaps";
    // key as a varint-typed field: Go reads data {"k": "v"}.
    let wrong_wire = cm(ld(2, &cat(&[vi(1, 1), b"k".to_vec(), ld(2, b"v")])));
    assert!(is_refused(cm_target, &wrong_wire));
    // key (len 2) running past the entry into an unknown field that follows it: Go reads
    // data {"z\0": ""} and then parses the same bytes again as the unknown field.
    let overrun = cm(cat(&[vec![0x12, 0x02, 0x0a, 0x02], ld(15, b"")]));
    assert!(is_refused(cm_target, &overrun));
}

#[test]
fn packed_and_unpacked_repeated_scalars_read_as_go() {
    // securityContext (14) supplementalGroups (4, repeated int64): one unpacked, two packed.
    let body = pod(&[ld(14, &cat(&[vi(4, 5), ld(4, &[6, 7])]))]);
    assert_eq!(
        judged(POD_TARGET, &body)["spec"]["securityContext"],
        json!({"supplementalGroups": [5, 6, 7]})
    );
    // A packed run with no elements: Go leaves the slice nil (omitted).
    let body = pod(&[ld(14, &ld(4, b""))]);
    assert_eq!(
        judged(POD_TARGET, &body)["spec"]["securityContext"],
        json!({})
    );
}

#[test]
fn unknown_fields_are_refused_though_go_1_34_skips_them() {
    // Go v1.34 skips fields it has no number for, of every wire type: for the ConfigMap below
    // with all five unknown fields it acts on exactly the control's JSON. kubeleash refuses
    // each of them: the safe direction, and it closes version skew (against a newer API
    // server, a field added after 1.34 would be skipped here but acted on there).
    let target = "/api/v1/namespaces/dev/configmaps";
    let cm = |extra: &[Vec<u8>]| {
        let raw = cat(&[
            vec![meta("c"), ld(2, &cat(&[ld(1, b"k"), ld(2, b"v")]))],
            extra.to_vec(),
        ]
        .concat());
        envelope("v1", "ConfigMap", &raw)
    };
    let go = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "c", "creationTimestamp": null}, "data": {"k": "v"}});
    assert_eq!(judged(target, &cm(&[])), go);
    let unknown = [
        ld(99, b"hostPID"),
        vi(98, 1),
        cat(&[key(97, 1), vec![0; 8]]),
        cat(&[key(96, 5), vec![0; 4]]),
        cat(&[key(95, 3), ld(2, b"x"), key(95, 4)]),
    ];
    for f in &unknown {
        assert!(is_refused(target, &cm(std::slice::from_ref(f))), "{f:02x?}");
    }
    assert!(is_refused(target, &cm(&unknown)));
    // Deeper down too: an unknown field inside metadata (ObjectMeta has no field 99).
    let body = envelope(
        "v1",
        "ConfigMap",
        &ld(1, &cat(&[ld(1, b"c"), ld(99, b"x")])),
    );
    assert!(is_refused(target, &body));
}

#[test]
fn inline_volume_sources_read_as_go_or_refused() {
    // volumes (1): {name 1, volumeSource 2 (inline) {hostPath 1 {path 1}}}.
    let host_path = |p: &[u8]| ld(1, &ld(1, p));
    let body = pod(&[ld(1, &cat(&[ld(1, b"v"), ld(2, &host_path(b"/"))]))]);
    assert_eq!(
        judged(POD_TARGET, &body)["spec"]["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/"}}])
    );
    // volumeSource (an inline struct) twice: Go merges it, the last path wins (hostPath.path
    // "/"). kubeleash refuses it, the safe direction.
    let body = pod(&[ld(
        1,
        &cat(&[
            ld(1, b"v"),
            ld(2, &host_path(b"/tmp")),
            ld(2, &host_path(b"/")),
        ]),
    )]);
    assert!(is_refused(POD_TARGET, &body));
    // Two sources in one volume (hostPath, emptyDir 2) through two volumeSource fields: both
    // are set in Go (validation then refuses); kubeleash refuses volumeSource written twice,
    // the safe direction.
    let body = pod(&[ld(
        1,
        &cat(&[
            ld(1, b"v"),
            ld(2, &host_path(b"/")),
            ld(2, &ld(2, &ld(1, b"Memory"))),
        ]),
    )]);
    assert!(is_refused(POD_TARGET, &body));
    // The same two sources in one volumeSource: set in Go as above, and both are visible to a
    // condition.
    let body = pod(&[ld(
        1,
        &cat(&[
            ld(1, b"v"),
            ld(2, &cat(&[host_path(b"/"), ld(2, &ld(1, b"Memory"))])),
        ]),
    )]);
    let v = &judged(POD_TARGET, &body)["spec"]["volumes"][0];
    assert_eq!(v["hostPath"]["path"], "/");
    assert_eq!(v["emptyDir"]["medium"], "Memory");
    // A path that is not UTF-8: Go keeps the bytes; kubeleash refuses.
    let body = pod(&[ld(1, &cat(&[ld(1, b"v"), ld(2, &host_path(b"/\xff"))]))]);
    assert!(is_refused(POD_TARGET, &body));
}

#[test]
fn int_or_string_types_read_as_go_or_refused() {
    // Deployment spec (2) strategy (4) rollingUpdate (2) maxSurge (2): {type 1, intVal 2, strVal 3}.
    let dep = |ios: Vec<u8>| {
        let spec = ld(4, &ld(2, &ld(2, &ios)));
        envelope("apps/v1", "Deployment", &cat(&[meta("d"), ld(2, &spec)]))
    };
    let target = "/apis/apps/v1/namespaces/dev/deployments";
    let surge =
        |body: &[u8]| judged(target, body)["spec"]["strategy"]["rollingUpdate"]["maxSurge"].clone();
    // type 0 with a strVal: Go's IntOrString is the int.
    assert_eq!(
        surge(&dep(cat(&[vi(1, 0), vi(2, 3), ld(3, b"100%")]))),
        json!(3)
    );
    // type 1 with an intVal: the string.
    assert_eq!(
        surge(&dep(cat(&[vi(1, 1), vi(2, 3), ld(3, b"100%")]))),
        json!("100%")
    );
    // type 2: Go's MarshalJSON fails ("impossible IntOrString.Type"); refused.
    assert!(is_refused(target, &dep(vi(1, 2))));
    assert!(is_refused(target, &dep(vi(1, 1 << 40))));
}

// ---------------------------------------------------------------------------------------------
// 4. The envelope.

#[test]
fn envelope_tricks_read_as_go_or_refused() {
    let cm_raw = cat(&[meta("c"), ld(2, &cat(&[ld(1, b"k"), ld(2, b"v")]))]);
    let secret_raw = cat(&[meta("s"), ld(2, &cat(&[ld(1, b"k"), ld(2, b"v")]))]);
    let target = "/api/v1/namespaces/dev/configmaps";
    // typeMeta twice: merged as Go merges it (apiVersion v1, kind ConfigMap).
    let body = raw_envelope(&[
        type_meta("v1", "Secret"),
        ld(1, &ld(2, b"ConfigMap")),
        ld(2, &cm_raw),
    ]);
    let got = judged(target, &body);
    assert_eq!(
        (got["apiVersion"].clone(), got["kind"].clone()),
        (json!("v1"), json!("ConfigMap"))
    );
    // raw twice: Go keeps the last bytes.
    let body = raw_envelope(&[
        type_meta("v1", "ConfigMap"),
        ld(2, &secret_raw),
        ld(2, &cm_raw),
    ]);
    assert_eq!(judged(target, &body)["metadata"]["name"], "c");
    // An unknown envelope field: skipped by both.
    let body = raw_envelope(&[type_meta("v1", "ConfigMap"), ld(2, &cm_raw), ld(9, b"zz")]);
    assert_eq!(judged(target, &body)["data"]["k"], "v");

    // Go ignores contentType and contentEncoding and decodes raw as protobuf; kubeleash refuses
    // anything but the protobuf content type and an empty encoding (safe either way).
    for extra in [ld(4, b"application/json"), ld(3, b"gzip")] {
        let body = raw_envelope(&[type_meta("v1", "ConfigMap"), ld(2, &cm_raw), extra]);
        assert!(is_refused(target, &body));
    }
    // No kind, no apiVersion, another magic, trailing junk, a kind Kubernetes has no message
    // for, `meta.k8s.io/v1 DeleteOptions` (which client-go's scheme refuses too).
    let mut junk = envelope("v1", "ConfigMap", &cm_raw);
    junk.push(0);
    let mut other_magic = envelope("v1", "ConfigMap", &cm_raw);
    other_magic[0] = b'K';
    for body in [
        envelope("", "ConfigMap", &cm_raw),
        envelope("v1", "", &cm_raw),
        raw_envelope(&[ld(2, &cm_raw)]),
        other_magic,
        junk,
        envelope("example.com/v1", "Widget", b""),
        envelope("meta.k8s.io/v1", "DeleteOptions", &ld(4, b"Orphan")),
    ] {
        assert!(is_refused(target, &body), "{body:02x?}");
    }

    // The envelope names a kind other than the URL's: kubeleash judges the kind the body names
    // (as Go decodes it), and the API server then refuses the request (no conversion from
    // v1.Secret to the internal ConfigMap; `AcceptsGroupVersion` for another group version).
    let body = envelope("v1", "Secret", &secret_raw);
    assert_eq!(judged(target, &body)["kind"], "Secret");
}

#[test]
fn raw_extensions_read_as_go_or_refused() {
    let cr = |data: Vec<u8>| {
        envelope(
            "apps/v1",
            "ControllerRevision",
            &cat(&[meta("r"), ld(2, &data)]),
        )
    };
    let target = "/apis/apps/v1/namespaces/dev/controllerrevisions";
    assert_eq!(
        judged(target, &cr(ld(1, br#"{"a":1}"#)))["data"],
        json!({"a": 1})
    );
    // JSON that another reader could read differently, and an empty raw (Go's MarshalJSON
    // fails on it): refused.
    assert!(is_refused(target, &cr(ld(1, br#"{"a":1,"a":2}"#))));
    assert!(is_refused(target, &cr(ld(1, b""))));
    // An embedded protobuf object is decoded with its own envelope, with every envelope rule.
    let inner = envelope("v1", "ConfigMap", &meta("inner"));
    assert_eq!(
        judged(target, &cr(ld(1, &inner)))["data"]["metadata"]["name"],
        "inner"
    );
    let mut gz = inner.clone();
    gz.extend(ld(3, b"gzip"));
    assert!(is_refused(target, &cr(ld(1, &gz))));
}

// ---------------------------------------------------------------------------------------------
// 5. DeleteOptions in protobuf on a DELETE.

#[test]
fn delete_options_in_protobuf_are_judged_or_refused() {
    let target = "/api/v1/namespaces/dev/pods/p";
    let opts = |raw: Vec<u8>| envelope("v1", "DeleteOptions", &raw);
    // propagationPolicy (4) Orphan: the condition sees it.
    let (effect, reason) = evaluate("DELETE", target, &opts(ld(4, b"Orphan")));
    assert_eq!(effect, Effect::Deny, "{reason}");
    assert!(reason.contains("no-orphaning"), "{reason}");
    // The legacy orphanDependents (3) = true is the same delete: judged as Orphan.
    let (effect, reason) = evaluate("DELETE", target, &opts(vi(3, 1)));
    assert_eq!(effect, Effect::Deny, "{reason}");
    // Background is allowed; dryRun (5) ["All"] reaches the request's facts.
    let (effect, reason) = evaluate("DELETE", target, &opts(ld(4, b"Background")));
    assert_eq!(effect, Effect::Allow, "{reason}");
    let e = policy().evaluate(
        &Identity::new("agent", Vec::<String>::new()),
        "DELETE",
        target,
        &headers(),
        Some(&opts(ld(5, b"All"))),
    );
    assert!(e.request.unwrap().facts.dry_run);
    // Refused: another kind in the envelope, a policy Go does not know, a dryRun other than
    // All, options in the query as well as the body, options of meta.k8s.io/v1.
    for (t, body) in [
        (target.to_string(), envelope("v1", "Pod", &meta("p"))),
        (target.to_string(), opts(ld(4, b"orphan"))),
        (target.to_string(), opts(ld(5, b"Some"))),
        (
            format!("{target}?gracePeriodSeconds=0"),
            opts(ld(4, b"Background")),
        ),
        (
            target.to_string(),
            envelope("meta.k8s.io/v1", "DeleteOptions", &ld(4, b"Background")),
        ),
    ] {
        let (effect, reason) = evaluate("DELETE", &t, &body);
        assert_eq!(effect, Effect::Deny, "{t} {body:02x?}: {reason}");
        assert!(reason.starts_with("request body refused"), "{reason}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Nesting: no stack overflow, no unbounded recursion.

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let cm_target = "/api/v1/namespaces/dev/configmaps";
    // 500,000 nested unknown groups (1 MB): the wire pre-scan refuses the first one (an unknown
    // field, and a group) before anything recurses.
    let n = 500_000;
    let mut raw = vec![0x7b; n]; // field 15, start group
    raw.extend(vec![0x7c; n]); // field 15, end group
    assert!(is_refused(cm_target, &envelope("v1", "ConfigMap", &raw)));

    // A CRD schema nesting `properties` (JSONSchemaProps 29, map) 90 and 500 deep.
    let crd = |depth: usize| {
        let mut props = ld(5, b"object"); // type
        for _ in 0..depth {
            props = ld(29, &cat(&[ld(1, b"a"), ld(2, &props)]));
        }
        // spec (2) {group 1, versions 7 [{name 1, schema 4 {openAPIV3Schema 1}}]}
        let version = ld(7, &cat(&[ld(1, b"v1"), ld(4, &ld(1, &props))]));
        let spec = cat(&[ld(1, b"example.com"), version]);
        envelope(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            &cat(&[meta("w.example.com"), ld(2, &spec)]),
        )
    };
    let target = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    assert!(judged(target, &crd(20))["spec"]["versions"][0]["schema"].is_object());
    assert!(is_refused(target, &crd(90)));
    assert!(is_refused(target, &crd(500)));

    // v1 List whose one item is an embedded `k8s\0` List whose one item is ...: every level
    // is a new prost decode; the JSON depth limit stops it.
    let mut inner = envelope("v1", "ConfigMap", &meta("c"));
    for _ in 0..80 {
        inner = envelope("v1", "List", &ld(2, &ld(1, &inner)));
    }
    assert!(is_refused(cm_target, &inner));
}

// ---------------------------------------------------------------------------------------------
// 7. `metav1.Time` and `metav1.MicroTime` (once a BYPASS: kubeleash merged occurrences).
//
// Their `Unmarshal` is hand-written (time_proto.go, micro_time_proto.go): each occurrence of the
// field REPLACES the value (`p := Timestamp{}`; empty bytes are the zero time), the seconds of a
// Time come from the last occurrence alone, and a MicroTime's nanoseconds are truncated toward
// zero to microseconds BEFORE `time.Unix` normalizes them. prost-reflect merges occurrences. Now
// kubeleash refuses a field written twice and an unknown field, and cuts nanos toward zero.

/// What kubeleash must do with a body: decode it to Go's value, or refuse it (safe).
#[derive(Debug)]
enum Want {
    /// Decoded, and the value at the pointer is what Go acts on (`null`: absent).
    Go(Value),
    /// Refused; Go would act on this value, which kubeleash does not try to match.
    Refused { go: Value },
}

fn check(target: &str, body: &[u8], pointer: &str, want: &Want) -> Result<(), String> {
    match (decode("POST", target, body), want) {
        (Ok(Some(got)), Want::Go(go)) => {
            let got = got.pointer(pointer).cloned().unwrap_or(Value::Null);
            if &got == go {
                Ok(())
            } else {
                Err(format!("kubeleash judges {got}, Go acts on {go}"))
            }
        }
        (Err(e), Want::Refused { .. }) if e.code() == "protobuf-body" => Ok(()),
        (Ok(Some(got)), Want::Refused { go }) => {
            let got = got.pointer(pointer).cloned().unwrap_or(Value::Null);
            Err(format!(
                "kubeleash judges {got}, expected refused (Go acts on {go})"
            ))
        }
        (got, want) => Err(format!("kubeleash: {got:?}; wanted {want:?}")),
    }
}

#[test]
fn time_fields_decode_as_go_or_are_refused() {
    let event = |t: Vec<u8>| envelope("v1", "Event", &cat(&[meta("e"), t]));
    let lease = |spec: Vec<u8>| {
        envelope(
            "coordination.k8s.io/v1",
            "Lease",
            &cat(&[meta("l"), ld(2, &spec)]),
        )
    };
    let events = "/api/v1/namespaces/dev/events";
    let leases = "/apis/coordination.k8s.io/v1/namespaces/dev/leases";
    // Refusing any of these is the safe direction; `go` is what the API server would act on.
    let cases = [
        (
            "Time {seconds 100}, then Time {}",
            events,
            event(cat(&[ld(6, &vi(1, 100)), ld(6, b"")])),
            "/firstTimestamp",
            Want::Refused { go: json!(null) },
        ),
        (
            "Time {seconds 100}, then Time {nanos 5}",
            events,
            event(cat(&[ld(6, &vi(1, 100)), ld(6, &vi(2, 5))])),
            "/firstTimestamp",
            Want::Refused {
                go: json!("1970-01-01T00:00:00Z"),
            },
        ),
        (
            "Time with only an unknown field",
            events,
            event(ld(6, &vi(9, 1))),
            "/firstTimestamp",
            Want::Refused {
                go: json!("1970-01-01T00:00:00Z"),
            },
        ),
        (
            "MicroTime {seconds 100}, then MicroTime {}",
            leases,
            lease(cat(&[ld(4, &vi(1, 100)), ld(4, b"")])),
            "/spec/renewTime",
            Want::Refused { go: json!(null) },
        ),
        (
            "MicroTime {seconds 100, nanos -1500}",
            leases,
            lease(ld(4, &cat(&[vi(1, 100), vi(2, (-1500i64) as u64)]))),
            "/spec/renewTime",
            Want::Go(json!("1970-01-01T00:01:39.999999Z")),
        ),
        (
            "Time {}, then Time {seconds 100}",
            events,
            event(cat(&[ld(6, b""), ld(6, &vi(1, 100))])),
            "/firstTimestamp",
            Want::Refused {
                go: json!("1970-01-01T00:01:40Z"),
            },
        ),
        // Controls: one occurrence each, decoded.
        (
            "Time {seconds 100}",
            events,
            event(ld(6, &vi(1, 100))),
            "/firstTimestamp",
            Want::Go(json!("1970-01-01T00:01:40Z")),
        ),
        (
            "Time {}",
            events,
            event(ld(6, b"")),
            "/firstTimestamp",
            Want::Go(json!(null)),
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(what, target, body, pointer, want)| {
            check(target, body, pointer, want)
                .err()
                .map(|e| format!("{what}: {e}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "time fields decode differently from Go:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 8. An absent `Quantity` is Go's zero Quantity, written "0"; an empty string is refused by Go's
//    `ParseQuantity` (once a BYPASS: kubeleash judged an absent one as "" or absent).

#[test]
fn absent_quantity_is_go_zero_and_empty_is_refused() {
    let sizelimit = |q: Vec<u8>| {
        // volumes (1) {name, emptyDir (2) {sizeLimit (2) q}}
        pod(&[ld(1, &cat(&[ld(1, b"v"), ld(2, &ld(2, &ld(2, &q)))]))])
    };
    // containers[0].resources (8).limits (1): an entry with a key and no value.
    let limits = |entry: Vec<u8>| {
        let container = ld(
            2,
            &cat(&[ld(1, b"c"), ld(2, b"img"), ld(8, &ld(1, &entry))]),
        );
        envelope("v1", "Pod", &cat(&[meta("p"), ld(2, &container)]))
    };
    let cases = [
        (
            "limits {cpu: <no value>}",
            limits(ld(1, b"cpu")),
            "/spec/containers/0/resources/limits/cpu",
            Want::Go(json!("0")),
        ),
        (
            "emptyDir.sizeLimit {}",
            sizelimit(Vec::new()),
            "/spec/volumes/0/emptyDir/sizeLimit",
            Want::Go(json!("0")),
        ),
        (
            "emptyDir.sizeLimit {string: \"\"}",
            sizelimit(ld(1, b"")),
            "/spec/volumes/0/emptyDir/sizeLimit",
            // Go: "quantities must match the regular expression ..."; no value to act on.
            Want::Refused { go: json!(null) },
        ),
        // Controls.
        (
            "limits {cpu: {string: \"2\"}}",
            limits(cat(&[ld(1, b"cpu"), ld(2, &ld(1, b"2"))])),
            "/spec/containers/0/resources/limits/cpu",
            Want::Go(json!("2")),
        ),
        (
            "emptyDir.sizeLimit {string: \"1Gi\"}",
            sizelimit(ld(1, b"1Gi")),
            "/spec/volumes/0/emptyDir/sizeLimit",
            Want::Go(json!("1Gi")),
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(what, body, pointer, want)| {
            check(POD_TARGET, body, pointer, want)
                .err()
                .map(|e| format!("{what}: {e}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "quantities decode differently from Go:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Denial of service (once a BYPASS): the JSON rendered for a protobuf body was unbounded.
//
// `Render::message` writes every absent non-nillable struct field as its whole zero value, so a
// two-byte repeated element (`22 00`: an empty PersistentVolumeClaim, `12 00`: an empty Node)
// becomes hundreds of bytes of JSON and many heap objects. Every create or update with a body is
// decoded before any rule is looked at (`write_checks`), so an identity no rule allows can do it.
// Measured before the fix (release build): a 3 MiB StatefulSet POST by a user with no rules
// peaked at 3.1 GB of heap and took 11 s; a 3 MiB NodeList (any protobuf POST: the envelope's
// kind is not checked against the URL) extrapolated to about 7 GB.
//
// Now the wire pre-scan refuses more than 100,000 wire fields and the renderer more than 500,000
// JSON values per body, so the cost of a body is bounded by a constant, not by its size. Measured
// after the fix (debug build, idle 2-core machine), for 3 MiB bodies: 1.5 million empty items
// refused by the field count in 0.1 s, 9 MiB; 99,000 empty items refused by the value budget in
// about 1 s, 116-173 MiB; the JSON path's own worst 3 MiB body (`{"a":[{"":0},...]}`) peaks at
// 286 MiB. The bounds below are loose (no flakiness on a loaded machine) yet an order of
// magnitude under the old behaviour.

mod heap {
    //! A global allocator that counts the bytes live on the current thread, so that tests
    //! running in parallel do not disturb each other's numbers.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: forwards to the system allocator and only counts.
    #[allow(
        unsafe_code,
        reason = "a global allocator is the only way to measure heap use in-process"
    )]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = LIVE.try_with(|live| {
                let now = live.get() + layout.size();
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static A: Counting = Counting;

    /// `f`'s result and the peak heap it used on this thread above the starting point.
    pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let t = f();
        (t, PEAK.with(Cell::get).saturating_sub(base))
    }
}

/// The most heap one protobuf body may take while it is judged: well over the measured 173 MiB,
/// well under the 3.1 GB the unbounded decoder took.
const HEAP_BOUND: usize = 512 << 20;
/// The longest one 3 MiB body may take to judge in a debug build on a loaded machine: measured
/// about 1 s idle; the unbounded decoder took 11 s in a release build.
const TIME_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

#[test]
fn amplifying_bodies_are_refused_with_bounded_heap_and_time() {
    let max = BodyLimits::default().max_bytes;
    let repeated = |field: u64, n: usize| {
        let mut v = Vec::with_capacity(2 * n);
        for _ in 0..n {
            v.extend(ld(field, b""));
        }
        v
    };
    // Pads a body to the largest one accepted with a long metadata.name, so that every case is
    // a worst case of 3 MiB.
    let padded = |api_version: &str, kind: &str, rest: Vec<u8>| {
        let short = envelope(api_version, kind, &cat(&[meta(""), rest.clone()]));
        let name = vec![b'a'; max - short.len() - 8];
        let body = envelope(api_version, kind, &cat(&[ld(1, &ld(1, &name)), rest]));
        assert!(body.len() <= max && body.len() > max - 16, "{}", body.len());
        body
    };
    let sts = "/apis/apps/v1/namespaces/dev/statefulsets";
    let cm = "/api/v1/namespaces/dev/configmaps";
    let nobody = Identity::new("nobody", Vec::<String>::new());
    let policy = policy();
    let mut wrong = Vec::new();
    for (what, target, body) in [
        (
            "StatefulSet of 1.5 million empty volumeClaimTemplates (over the field count)",
            sts,
            // spec (2) volumeClaimTemplates (4)
            envelope("apps/v1", "StatefulSet", &ld(2, &repeated(4, max / 2 - 64))),
        ),
        (
            "StatefulSet of 99,000 empty volumeClaimTemplates (under the field count)",
            sts,
            padded("apps/v1", "StatefulSet", ld(2, &repeated(4, 99_000))),
        ),
        (
            "NodeList of 99,000 empty Nodes, POSTed as a ConfigMap",
            cm,
            padded("v1", "NodeList", repeated(2, 99_000)),
        ),
    ] {
        assert!(body.len() <= max, "{what}: {} bytes", body.len());
        let start = std::time::Instant::now();
        let (e, peak) =
            heap::peak(|| policy.evaluate(&nobody, "POST", target, &headers(), Some(&body)));
        let took = start.elapsed();
        // Refused as a body kubeleash cannot read, before any rule is looked at.
        assert_eq!(e.decision.effect, Effect::Deny, "{what}");
        if !e.decision.reason.starts_with("request body refused") {
            wrong.push(format!("{what}: not refused: {}", e.decision.reason));
        }
        if !is_refused(target, &body) {
            wrong.push(format!("{what}: decoded"));
        }
        if peak > HEAP_BOUND || took > TIME_BOUND {
            wrong.push(format!(
                "{what}: a {} byte body peaked at {} MiB of heap and took {took:?} (bounds: {} \
                 MiB, {TIME_BOUND:?})",
                body.len(),
                peak >> 20,
                HEAP_BOUND >> 20,
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "memory/time DoS, reached by an identity no rule allows:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn nested_embedded_objects_stay_within_the_heap_bound() {
    // A v1 List whose one item (RawExtension) is an embedded `k8s\0` List ..., 40 deep, around a
    // ConfigMap whose name fills the 3 MiB. Every level holds its own copy of the bytes below
    // it while they are decoded (about 6 MiB a level here: 249-255 MiB measured at 40 levels, 261
    // at the deepest the JSON depth allows); it decodes, and stays under the bound.
    let max = BodyLimits::default().max_bytes;
    let levels = 40;
    let mut inner = envelope(
        "v1",
        "ConfigMap",
        &meta(&"a".repeat(max - 200 - levels * 40)),
    );
    for _ in 0..levels {
        inner = envelope("v1", "List", &ld(2, &ld(1, &inner)));
    }
    assert!(inner.len() <= max);
    let start = std::time::Instant::now();
    let (got, peak) = heap::peak(|| judged("/api/v1/namespaces/dev/configmaps", &inner));
    let took = start.elapsed();
    assert_eq!(got["kind"], "List");
    assert!(
        peak <= HEAP_BOUND && took <= TIME_BOUND,
        "{levels} nested Lists: {} MiB, {took:?}",
        peak >> 20
    );
}

// ---------------------------------------------------------------------------------------------
// 10. The OpenAPI masking mode: value detectors only, no kind or key rules. A response to any
//     request that can return objects must never be masked that way.

#[test]
fn openapi_schema_mode_is_only_for_the_openapi_documents() {
    let masks =
        Policy::from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n")
            .unwrap();
    let value = "aHVudGVyMg=="; // "hunter2": no detector knows it; only the Secret rule does.
    let secret = format!(
        r#"{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"s"}},"data":{{"password":"{value}"}}}}"#
    );
    // Returns whether `value` came out of a response to GET `target` holding a Secret (None
    // when the request is refused before it reaches the API server).
    let leaks = |method: &str, target: &str| -> Option<bool> {
        let req = classify(method, target, &HeaderMap::new()).ok()?;
        match masks.mask(&req, Some("application/json"), None, secret.as_bytes()) {
            Ok(out) => Some(String::from_utf8_lossy(&out).contains(value)),
            Err(_) => Some(false),
        }
    };

    // The positive control: the three documents really are masked by detectors alone (so what
    // the API server serves there must never be an object). Query strings do not change the
    // path, and the API server's OpenAPI handlers ignore them.
    for target in [
        "/openapi/v2",
        "/openapi/v3",
        "/openapi/v3/apis/apps/v1",
        "/openapi/v2?x=/api/v1/secrets",
    ] {
        assert_eq!(leaks("GET", target), Some(true), "{target}");
    }
    // Any `/openapi/v3/<rest>` is the mode too. The API server answers 404 for a `<rest>` that
    // is no group version of its OpenAPI discovery (kube-openapi handler3, and kube-aggregator's
    // `handleGroupVersion`, which proxies only a path an APIService's own discovery lists, to
    // that APIService's server): no object comes back from here unless an aggregated API
    // server, which is the upstream, chooses to send one.
    assert_eq!(
        leaks("GET", "/openapi/v3/api/v1/namespaces/d/secrets/s"),
        Some(true)
    );

    // Everything an agent could try to reach objects through the OpenAPI mode: refused by the
    // classifier, or masked with every rule.
    for target in [
        // path cleaning: dot segments raw and encoded, encoded slashes, empty segments
        "/openapi/v3/../../api/v1/namespaces/d/secrets",
        "/openapi/v3/%2e%2e/%2e%2e/api/v1/namespaces/d/secrets",
        "/openapi/./v2",
        "/openapi%2Fv2",
        "/openapi/v3/api%2Fv1%2Fnamespaces%2Fd%2Fsecrets",
        "//openapi/v2",
        "/openapi//v2",
        "/openapi/v2//",
        "/openapi/v2;/api/v1/secrets",
        "/openapi/v2%3F/api/v1/secrets",
        // case and trailing slashes (Go's mux is case-sensitive; these are 404s)
        "/OPENAPI/v2",
        "/openapi/V2",
        "/openapi/v2/",
        "/openapi/v3/",
        // resource requests with openapi in them
        "/api/v1/namespaces/openapi/secrets",
        "/api/v1/namespaces/openapi/secrets/s",
        "/apis/openapi/v2/secrets",
        "/apis/openapi/v3/namespaces/d/secrets",
        "/api/v1/namespaces/d/services/openapi:80/proxy/openapi/v2",
        "/api/v1/namespaces/d/pods/p/proxy/openapi/v3/apis/apps/v1",
        "/api/v1/nodes/n/proxy/openapi/v2",
        // aggregated API servers: their resources are resource requests
        "/apis/metrics.k8s.io/v1beta1/openapi/v2",
        "/apis/metrics.k8s.io/v1beta1/namespaces/openapi/pods",
        // non-resource neighbours
        "/openapi",
        "/openapi/v2/api/v1/namespaces/d/secrets",
        "/openapi/v2x",
        "/openapiv2",
        "/api/v1/openapi/v2",
    ] {
        for method in ["GET", "HEAD"] {
            assert_ne!(leaks(method, target), Some(true), "{method} {target}");
        }
    }
}
