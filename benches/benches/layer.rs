//! Added latency of the tower layer per allowed request, over the bare inner service measured
//! in the same run: with no response body, and with a 10 KiB JSON response (masked as it goes).
//! Goal (issue 5): under 2 µs p50 added for the first.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::KubeleashLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

fn configmap_json(bytes: usize) -> Bytes {
    let mut data = String::new();
    let mut i = 0;
    while data.len() < bytes {
        data.push_str(&format!(
            r#""key-{i}":"value number {i} of an ordinary configuration map entry","#
        ));
        i += 1;
    }
    data.pop();
    Bytes::from(format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"app","namespace":"dev"}},"data":{{{data}}}}}"#
    ))
}

/// The API server stand-in: answers at once with a fixed body.
fn inner(
    body: Bytes,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body.clone();
        async move {
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(r)
        }
    })
}

fn request() -> Request<Full<Bytes>> {
    Request::builder()
        .uri("/api/v1/namespaces/dev/configmaps/app")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

async fn one<S, B>(svc: &mut S) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    B: http_body::Body<Data = Bytes>,
{
    let Ok(ready) = svc.ready().await else {
        return 0;
    };
    let Ok(r) = ready.call(request()).await else {
        return 0;
    };
    r.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().len())
        .unwrap_or(0)
}

fn policy() -> Policy {
    match Policy::from_yaml(include_str!("../../examples/agents.yaml")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("example policy does not compile: {e}");
            std::process::exit(1)
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1)
        }
    }
}

fn benches(c: &mut Criterion) {
    let rt = rt();
    let layer = KubeleashLayer::new(policy()).identity(Identity::new("agent-1", ["ai-agents"]));
    for (name, body) in [
        ("empty", Bytes::new()),
        ("10KiB", configmap_json(10 * 1024)),
    ] {
        let mut g = c.benchmark_group(format!("layer-{name}"));
        let mut bare = inner(body.clone());
        g.bench_function("bare", |b| {
            b.iter(|| black_box(rt.block_on(one(&mut bare))))
        });
        let mut layered = ServiceBuilder::new()
            .layer(layer.clone())
            .service(inner(body.clone()));
        g.bench_function("layered", |b| {
            b.iter(|| black_box(rt.block_on(one(&mut layered))))
        });
        g.finish();
    }
}

fn p50(mut f: impl FnMut(), budget: Duration) -> f64 {
    const BATCH: u32 = 64;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        for _ in 0..BATCH {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn summary() {
    let quick = std::env::args().any(|a| a == "--test");
    let budget = if quick {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(2)
    };
    let rt = rt();
    let layer = KubeleashLayer::new(policy()).identity(Identity::new("agent-1", ["ai-agents"]));
    println!("\nsummary (same run, p50 per request, current-thread runtime):");
    for (name, body) in [
        ("no body", Bytes::new()),
        ("10 KiB JSON", configmap_json(10 * 1024)),
    ] {
        let mut bare = inner(body.clone());
        let mut layered = ServiceBuilder::new()
            .layer(layer.clone())
            .service(inner(body));
        let b = p50(
            || {
                black_box(rt.block_on(one(&mut bare)));
            },
            budget,
        );
        let l = p50(
            || {
                black_box(rt.block_on(one(&mut layered)));
            },
            budget,
        );
        println!(
            "{name:>12}: bare {b:>8.0} ns, layered {l:>8.0} ns, added {:>8.0} ns ({:.1}x)",
            l - b,
            l / b
        );
    }
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
