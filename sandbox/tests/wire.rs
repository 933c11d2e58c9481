//! Response shapes on the wire, byte for byte where clients or the masker depend on them:
//! discovery, Tables, PartialObjectMetadata, watch framing, gzip, Status errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read as _;

use common::raw;
use kubeleash_sandbox::Seed;
use serde_json::{Value, json};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

#[tokio::test]
async fn discovery_version_and_health() {
    let sb = common::start(Seed::Empty).await;
    let v = raw(&sb, "GET", "/version", &[], b"").await.json();
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("33"))
    );
    for probe in ["/healthz", "/readyz", "/livez"] {
        let r = raw(&sb, "GET", probe, &[], b"").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    let agg = raw(&sb, "GET", "/apis", &[("Accept", DISCOVERY)], b"").await;
    assert_eq!(
        agg.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    let agg = agg.json();
    assert_eq!(agg["kind"], "APIGroupDiscoveryList");
    let apps = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .unwrap();
    let deploy = &apps["versions"][0]["resources"][0];
    assert_eq!(deploy["resource"], "deployments");
    assert_eq!(deploy["subresources"][0]["subresource"], "scale");
    let core = raw(&sb, "GET", "/api", &[("Accept", DISCOVERY)], b"")
        .await
        .json();
    let pods = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "pods")
        .unwrap()
        .clone();
    assert_eq!(pods["shortNames"], json!(["po"]));

    let legacy = raw(
        &sb,
        "GET",
        "/api",
        &[("Accept", "application/json, */*")],
        b"",
    )
    .await
    .json();
    assert_eq!(legacy["kind"], "APIVersions");
    let groups = raw(&sb, "GET", "/apis", &[], b"").await.json();
    assert_eq!(groups["kind"], "APIGroupList");
    let v1 = raw(&sb, "GET", "/api/v1", &[], b"").await.json();
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"pods/log") && names.contains(&"serviceaccounts/token"),
        "{names:?}"
    );
    let token = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .unwrap();
    assert_eq!(
        (token["group"].as_str(), token["kind"].as_str()),
        (Some("authentication.k8s.io"), Some("TokenRequest"))
    );
    assert_eq!(
        raw(&sb, "GET", "/apis/apps/v1", &[], b"").await.json()["groupVersion"],
        "apps/v1"
    );
    assert_eq!(
        raw(&sb, "GET", "/apis/nope/v1/things", &[], b"")
            .await
            .status,
        404
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn lists_tables_and_metadata() {
    let sb = common::start(Seed::Default).await;
    let list = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/secrets?limit=500",
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(list.header("content-type"), Some("application/json"));
    let text = list.text();
    assert!(
        text.starts_with(
            r#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":""#
        ),
        "{text}"
    );
    let list = list.json();
    assert!(
        list["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    assert!(list["items"][0]["data"].is_object());

    let page = raw(&sb, "GET", "/api/v1/secrets?limit=2", &[], b"")
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["metadata"]["continue"].is_string());
    assert!(page["metadata"]["remainingItemCount"].as_u64().unwrap() >= 7);

    let table = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/secrets?limit=500",
        &[("Accept", TABLE)],
        b"",
    )
    .await;
    assert_eq!(
        table.header("content-type"),
        Some("application/json;as=Table;v=v1;g=meta.k8s.io")
    );
    let table = table.json();
    assert_eq!(
        (table["kind"].as_str(), table["apiVersion"].as_str()),
        (Some("Table"), Some("meta.k8s.io/v1"))
    );
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Type", "Data", "Age"]);
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "db-credentials")
        .unwrap();
    assert_eq!(row["cells"][1], "Opaque");
    assert_eq!(row["cells"][2], 3);
    // includeObject defaults to Metadata: the annotation (with the plaintext stringData) is there.
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert!(row["object"]["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap().contains("S3cr3t"));
    assert!(row["object"].get("data").is_none());
    let full = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/secrets?includeObject=Object",
        &[("Accept", TABLE)],
        b"",
    )
    .await
    .json();
    assert!(full["rows"][0]["object"]["data"].is_object());
    let none = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/secrets?includeObject=None",
        &[("Accept", TABLE)],
        b"",
    )
    .await
    .json();
    assert_eq!(none["rows"][0]["object"], Value::Null);
    let pods = raw(&sb, "GET", "/api/v1/pods", &[("Accept", TABLE)], b"")
        .await
        .json();
    let columns: Vec<&str> = pods["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let one = raw(
        &sb,
        "GET",
        "/apis/apps/v1/namespaces/dev/deployments/web",
        &[("Accept", TABLE)],
        b"",
    )
    .await
    .json();
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0]["cells"][1], "2/2");

    let meta = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let partial = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/configmaps",
        &[("Accept", meta)],
        b"",
    )
    .await
    .json();
    assert_eq!(partial["kind"], "PartialObjectMetadataList");
    assert_eq!(partial["items"][0]["kind"], "PartialObjectMetadata");
    assert!(partial["items"][0].get("data").is_none());
    let single = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let partial = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/configmaps/app-config",
        &[("Accept", single)],
        b"",
    )
    .await
    .json();
    assert_eq!(partial["metadata"]["name"], "app-config");
    let refused = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/configmaps",
        &[("Accept", "application/vnd.kubernetes.protobuf")],
        b"",
    )
    .await;
    assert_eq!(refused.status, 406);
    let yaml = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/configmaps/app-config",
        &[("Accept", "application/yaml")],
        b"",
    )
    .await;
    assert_eq!(yaml.header("content-type"), Some("application/yaml"));
    assert!(yaml.text().contains("kind: ConfigMap"));
    sb.shutdown().await;
}

#[tokio::test]
async fn gzip_above_128_kib_only_when_asked() {
    let sb = common::start(Seed::Empty).await;
    let big = "x".repeat(200 * 1024);
    let body = json!({"metadata": {"name": "big"}, "data": {"blob": big}}).to_string();
    let made = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(made.status, 201);
    assert_eq!(made.header("content-encoding"), None, "not asked for gzip");
    let plain = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[],
        b"",
    )
    .await;
    assert_eq!(plain.header("content-encoding"), None);
    let zipped = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("Accept-Encoding", "gzip")],
        b"",
    )
    .await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert!(zipped.body.len() < 20 * 1024);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(zipped.body.as_slice())
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain.body);
    let small = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/default",
        &[("Accept-Encoding", "gzip")],
        b"",
    )
    .await;
    assert_eq!(
        small.header("content-encoding"),
        None,
        "small responses stay plain"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn status_errors_in_the_api_servers_shape() {
    let sb = common::start(Seed::Default).await;
    let nf = raw(&sb, "GET", "/api/v1/namespaces/dev/secrets/nope", &[], b"").await;
    assert_eq!(nf.status, 404);
    assert_eq!(
        nf.text(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"secrets"},"code":404}"#
    );
    let nf = raw(
        &sb,
        "GET",
        "/apis/apps/v1/namespaces/dev/deployments/nope",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(nf["message"], r#"deployments.apps "nope" not found"#);
    assert_eq!(nf["details"]["group"], "apps");

    let cm = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-config"}}"#;
    let dup = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        &[("Content-Type", "application/json")],
        cm,
    )
    .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["reason"], "AlreadyExists");
    let stale = br#"{"metadata":{"name":"app-config","resourceVersion":"1"},"data":{}}"#;
    let conflict = raw(
        &sb,
        "PUT",
        "/api/v1/namespaces/dev/configmaps/app-config",
        &[("Content-Type", "application/json")],
        stale,
    )
    .await
    .json();
    assert_eq!(
        (conflict["code"].as_u64(), conflict["reason"].as_str()),
        (Some(409), Some("Conflict"))
    );
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#;
    let invalid = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/pods",
        &[("Content-Type", "application/json")],
        pod,
    )
    .await
    .json();
    assert_eq!(invalid["code"], 422);
    assert_eq!(
        invalid["message"],
        r#"Pod "p" is invalid: spec.containers[0].image: Required value"#
    );
    assert_eq!(
        invalid["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"})
    );
    let noname = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await
    .json();
    assert_eq!(
        noname["message"],
        r#"ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required"#
    );

    let unsupported = raw(
        &sb,
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/app-config",
        &[("Content-Type", "text/plain")],
        b"{}",
    )
    .await;
    assert_eq!(unsupported.status, 415);
    assert_eq!(unsupported.json()["reason"], "UnsupportedMediaType");
    let typed = raw(&sb, "POST", "/api/v1/namespaces/dev/pods", &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"p"},"spec":{"hostPID":"true","containers":[{"name":"c","image":"i"}]}}"#).await;
    assert_eq!(typed.status, 400, "{}", typed.text());
    let strict = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/configmaps?fieldValidation=Strict",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"s"},"bogus":1}"#,
    )
    .await
    .json();
    assert_eq!(
        strict["message"],
        r#"strict decoding error: unknown field "bogus""#
    );
    let warned = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"w"},"bogus":1}"#,
    )
    .await;
    assert_eq!(warned.status, 201);
    assert_eq!(
        warned.header("warning"),
        Some(r#"299 - "unknown field \"bogus\"""#)
    );
    assert!(warned.json().get("bogus").is_none());
    let no_ns = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"x"}}"#,
    )
    .await
    .json();
    assert_eq!(no_ns["message"], r#"namespaces "nowhere" not found"#);
    let method = raw(&sb, "PUT", "/api/v1/namespaces/dev/configmaps", &[], b"{}").await;
    assert_eq!(method.status, 405);
    let exec = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/pods/x/exec?command=ls",
        &[],
        b"",
    )
    .await;
    assert_eq!(exec.status, 400);
    sb.shutdown().await;
}

#[tokio::test]
async fn dry_run_and_deletes_read_back_data() {
    let sb = common::start(Seed::Default).await;
    // A dry-run merge patch of {} returns the whole secret and changes nothing.
    let before = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/secrets/db-credentials",
        &[],
        b"",
    )
    .await
    .json();
    let dry = raw(
        &sb,
        "PATCH",
        "/api/v1/namespaces/dev/secrets/db-credentials?dryRun=All",
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"data":{"x":"eA=="}}"#,
    )
    .await
    .json();
    assert_eq!(dry["data"]["password"], before["data"]["password"]);
    let after = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/secrets/db-credentials",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(after, before);
    let listed = raw(
        &sb,
        "DELETE",
        "/api/v1/namespaces/dev/secrets?dryRun=All",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(listed["kind"], "SecretList");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["data"]["password"].is_string())
    );
    assert_eq!(
        raw(
            &sb,
            "GET",
            "/api/v1/namespaces/dev/secrets/db-credentials",
            &[],
            b""
        )
        .await
        .status,
        200
    );
    let deleted = raw(
        &sb,
        "DELETE",
        "/api/v1/namespaces/dev/secrets/db-credentials",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(deleted["kind"], "Status");
    assert_eq!(deleted["status"], "Success");
    assert_eq!(deleted["details"]["kind"], "secrets");
    // kubectl create sends protobuf: the sandbox decodes it for the kinds kubectl creates.
    let proto = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x1f\n\x13\n\x03foo\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00\x1a\x00\"\x00";
    let made = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/secrets",
        &[("Content-Type", "application/vnd.kubernetes.protobuf")],
        proto,
    )
    .await;
    assert_eq!(made.status, 201);
    assert_eq!(made.json()["data"]["a"], "Yg==");
    let tok = raw(
        &sb,
        "POST",
        "/api/v1/namespaces/dev/serviceaccounts/deployer/token",
        &[("Content-Type", "application/json")],
        br#"{"spec":{"audiences":["x"]}}"#,
    )
    .await
    .json();
    assert_eq!(tok["kind"], "TokenRequest");
    assert!(tok["status"]["token"].as_str().unwrap().starts_with("eyJ"));
    sb.shutdown().await;
}

#[tokio::test]
async fn watch_framing() {
    let sb = common::start(Seed::Default).await;
    let got = common::stream_until(&sb, "/api/v1/namespaces/dev/configmaps?watch=1", &[], |t| {
        t.matches("\"type\":\"ADDED\"").count() >= 2
    })
    .await;
    let head = got.split("\r\n\r\n").next().unwrap();
    assert!(
        head.contains("Transfer-Encoding: chunked") || head.contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(got.contains(r#"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"app-config""#), "{got}");

    // A Table watch carries column definitions on its first event only.
    let tables = common::stream_until(
        &sb,
        "/api/v1/namespaces/dev/configmaps?watch=1",
        &[("Accept", TABLE)],
        |t| t.matches("\"type\":\"ADDED\"").count() >= 2,
    )
    .await;
    let events: Vec<Value> = tables
        .lines()
        .filter_map(|l| l.find("{\"type\"").map(|i| &l[i..]))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(events[0]["object"]["columnDefinitions"].is_array());
    assert_eq!(events[1]["object"]["columnDefinitions"], Value::Null);
    assert_eq!(events[1]["object"]["kind"], "Table");

    let expired = common::stream_until(
        &sb,
        "/api/v1/namespaces/dev/configmaps?watch=1&resourceVersion=1",
        &[],
        |t| t.contains("ERROR"),
    )
    .await;
    assert!(
        expired.contains(r#""reason":"Expired","code":410"#)
            || expired.contains("Gone")
            || expired.contains("\"code\":410"),
        "{expired}"
    );

    let bad = raw(
        &sb,
        "GET",
        "/api/v1/namespaces/dev/configmaps?watch=1&sendInitialEvents=true",
        &[],
        b"",
    )
    .await;
    assert_eq!(bad.status, 422);
    sb.shutdown().await;
}

#[tokio::test]
async fn loopback_only_and_shutdown_ends_watches() {
    let refused =
        kubeleash_sandbox::Sandbox::start("0.0.0.0:0".parse().unwrap(), Seed::Empty).await;
    assert!(matches!(
        refused,
        Err(kubeleash_sandbox::Error::NotLoopback(_))
    ));

    let sb = common::start(Seed::Empty).await;
    let addr = sb.addr();
    // The sandbox stops once the watch is open (its first event in: event, not time).
    let (open, opened) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/v1/namespaces?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut all = Vec::new();
        let mut open = Some(open);
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&all).contains(r#""type":"ADDED""#)
                && let Some(o) = open.take()
            {
                let _ = o.send(());
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), opened)
        .await
        .expect("the watch opened")
        .unwrap();
    sb.shutdown().await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), watcher)
        .await
        .expect("the watch ends when the sandbox stops")
        .unwrap();
    assert!(seen.contains(r#""type":"ADDED""#), "{seen}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
