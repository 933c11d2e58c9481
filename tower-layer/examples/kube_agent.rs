//! A kube-rs agent behind the kubeleash layer, against the sandbox API server.
//!
//! `cargo run -p kubeleash-tower --example kube_agent`
//!
//! The agent lists pods and secrets in `dev` (allowed; secret values come back masked), then
//! tries to delete the `kube-system` namespace (denied with a 403 naming the rule).

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams};
use kube::client::ClientBuilder;
use kube::{Api, ResourceExt};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_sandbox::{Sandbox, Seed};
use kubeleash_tower::KubeleashLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::start("127.0.0.1:0".parse()?, Seed::Default).await?;
    let policy = Policy::from_yaml(include_str!("../../examples/agents.yaml"))?;
    let layer = KubeleashLayer::new(policy).identity(Identity::new("agent-1", ["ai-agents"]));

    // kube's own stack (base URI, auth from the kubeconfig) stays inside the layer.
    let client = ClientBuilder::try_from(kube::Config::new(sandbox.url().parse()?))?
        .with_layer(&layer)
        .build();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "dev");
    for p in pods.list(&ListParams::default()).await? {
        println!("pod {}", p.name_any());
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "dev");
    match secrets.get("db-credentials").await {
        Ok(s) => println!(
            "secret db-credentials: {:?}",
            s.data.unwrap_or_default().keys().collect::<Vec<_>>()
        ),
        Err(kube::Error::Api(e)) => println!("get secret refused ({}): {}", e.code, e.message),
        Err(e) => return Err(e.into()),
    }
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces
        .delete("kube-system", &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(e)) => println!(
            "delete namespace kube-system refused ({}): {}",
            e.code, e.message
        ),
        other => println!("unexpected: {:?}", other.map(|_| ())),
    }
    sandbox.shutdown().await;
    Ok(())
}
