//! Request body decoding: Kubernetes protobuf (what kubectl's typed `create` commands send)
//! against the same object as JSON, the baseline, measured in the same run.
//!
//! Questions: how much does reading a protobuf body cost next to reading its JSON, per request,
//! for kubectl's real bodies (`tests/testdata/protobuf`)? And what does the first protobuf
//! body pay once, to load the bundled Kubernetes schema? No goal is set; the JSON decode is the
//! baseline every write already pays.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group};
use http::{HeaderMap, HeaderValue};
use kubeleash_core::body::{self, BodyLimits};
use kubeleash_core::request::{Request, classify};

const CASES: [(&str, &str); 3] = [
    ("secret-generic", "/api/v1/namespaces/dev/secrets"),
    (
        "clusterrolebinding",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    ),
    ("deployment", "/apis/apps/v1/namespaces/dev/deployments"),
];

fn fixture(name: &str, ext: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/testdata/protobuf")
        .join(format!("{name}.{ext}"));
    match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {}: {e}", p.display());
            std::process::exit(1);
        }
    }
}

fn request(target: &str, content_type: &'static str) -> Request {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static(content_type));
    match classify("POST", target, &h) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot classify {target}: {e}");
            std::process::exit(1);
        }
    }
}

fn decodes(r: &Request, b: &[u8]) -> bool {
    matches!(body::decode(r, b, &BodyLimits::default()), Ok(Some(_)))
}

fn benches(c: &mut Criterion) {
    // The schema loads on first use: measured once, before criterion warms anything up.
    let (name, target) = CASES[0];
    let pb = request(target, "application/vnd.kubernetes.protobuf");
    let start = Instant::now();
    let ok = decodes(&pb, &fixture(name, "pb"));
    eprintln!(
        "body/schema-load: the first protobuf body took {:.2} ms (decoded: {ok})",
        start.elapsed().as_secs_f64() * 1e3
    );
    let mut g = c.benchmark_group("body");
    for (name, target) in CASES {
        let pb_body = fixture(name, "pb");
        let json_body = fixture(name, "json");
        let pb = request(target, "application/vnd.kubernetes.protobuf");
        let json = request(target, "application/json");
        if !decodes(&pb, &pb_body) || !decodes(&json, &json_body) {
            eprintln!("{name}: a fixture does not decode");
            std::process::exit(1);
        }
        g.bench_with_input(BenchmarkId::new("json", name), &json_body, |b, body| {
            b.iter(|| black_box(decodes(&json, body)))
        });
        g.bench_with_input(BenchmarkId::new("protobuf", name), &pb_body, |b, body| {
            b.iter(|| black_box(decodes(&pb, body)))
        });
    }
    g.finish();
}

criterion_group!(group, benches);

fn main() {
    group();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
