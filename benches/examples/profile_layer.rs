//! A loop of allowed requests through the tower layer with no response body, for profilers
//! (`valgrind --tool=callgrind`): `profile_layer ROUNDS [record]`. The same request, policy and
//! inner service as the `layer` bench's "no body" case; with `record`, every request is also
//! recorded to a hash-chained file in a temporary directory (the writer thread's work counts
//! too, so the difference is what a record costs in all).

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::KubeleashLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The CLI's allocator (see `mimalloc` in cli/Cargo.toml): with glibc's, the recorder thread's
/// frees of records built on the request thread contend for an arena lock, a cost the proxy
/// does not pay.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), BoxError> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let policy =
        Policy::from_yaml(include_str!("../../examples/agents.yaml")).map_err(|e| e.to_string())?;
    let mut layer = KubeleashLayer::new(policy).identity(Identity::new("agent-1", ["ai-agents"]));
    let dir = std::env::temp_dir().join(format!("kubeleash-profile-{}", std::process::id()));
    let recorder = if std::env::args().nth(2).as_deref() == Some("record") {
        std::fs::create_dir_all(&dir)?;
        let r = std::sync::Arc::new(kubeleash_tower::JsonlRecorder::open(
            dir.join("session.jsonl"),
            kubeleash_tower::RecorderOptions::default(),
        )?);
        layer = layer.recorder(std::sync::Arc::clone(&r));
        Some(r)
    } else {
        None
    };
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        let mut r = Response::new(Full::new(Bytes::new()));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        Ok::<_, Infallible>(r)
    });
    let mut svc = ServiceBuilder::new().layer(layer).service(inner);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        for _ in 0..rounds {
            let req = Request::builder()
                .uri("/api/v1/namespaces/dev/configmaps/app")
                .header("accept", "application/json")
                .body(Full::new(Bytes::new()))?;
            let r = svc.ready().await?.call(req).await?;
            black_box(r.into_body().collect().await?.to_bytes().len());
        }
        Ok::<_, BoxError>(())
    })?;
    if let Some(r) = recorder {
        r.close();
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
