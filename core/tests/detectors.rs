//! Secret detectors: a positive sample per detector with the exact span of the secret, negative
//! samples from ordinary Kubernetes objects and logs, `disabled`, the catalog, span invariants,
//! and property tests over arbitrary bytes.
//!
//! Every secret here is fake: generated from a seeded pseudo-random sequence in the format the
//! vendor uses, never a real credential.

#![allow(clippy::panic, reason = "tests")]

use std::collections::HashSet;

use kubeleash_core::mask::detect::{DetectorError, Detectors, Span, catalog, is_placeholder};
use proptest::prelude::*;

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const UPPER_DIGIT: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const UPPER32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LOWER_DIGIT: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const BECH32: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";
const DIGITS: &str = "0123456789";

/// `n` pseudo-random characters of `alpha`, reproducible from `seed`.
fn fake(alpha: &str, n: usize, seed: u64) -> String {
    let a = alpha.as_bytes();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(a[(x >> 11) as usize % a.len()])
        })
        .collect()
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = match c.len() {
            3 => (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]),
            2 => (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8),
            _ => u32::from(c[0]) << 16,
        };
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(label: &str, seed: u64) -> String {
    let mut s = format!("-----BEGIN {label}-----\n");
    for i in 0..6 {
        s.push_str(&fake(B64, 64, seed + i));
        s.push('\n');
    }
    s.push_str(&fake(B64, 20, seed + 99));
    s.push_str("==\n");
    s.push_str(&format!("-----END {label}-----"));
    s
}

fn detectors() -> Detectors {
    static D: std::sync::LazyLock<Detectors> =
        std::sync::LazyLock::new(|| match Detectors::new(&[]) {
            Ok(d) => d,
            Err(e) => panic!("built-in detectors must compile: {e}"),
        });
    D.clone()
}

fn index(name: &str) -> u16 {
    let i = catalog().iter().position(|d| d.name == name);
    u16::try_from(i.unwrap_or_else(|| panic!("no detector {name}"))).unwrap_or(u16::MAX)
}

fn find(d: &Detectors, text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    d.find(text.as_bytes(), &mut out);
    out
}

fn show(text: &str, spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            let name = catalog()
                .get(usize::from(s.detector))
                .map_or("?", |d| d.name);
            format!(
                "{name}@{}..{}={:?}",
                s.start,
                s.end,
                text.get(s.start..s.end).unwrap_or("<non-utf8>")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// (detector, text, the secret inside text that must be exactly the one span found)
fn positives() -> Vec<(&'static str, String, String)> {
    let mut v: Vec<(&'static str, String, String)> = Vec::new();
    let mut add = |name: &'static str, before: &str, secret: String, after: &str| {
        v.push((name, format!("{before}{secret}{after}"), secret));
    };
    // Private keys: from BEGIN to the end of the END line.
    add(
        "private-key-rsa",
        "loaded key:\n",
        pem("RSA PRIVATE KEY", 1),
        "\nnext line",
    );
    add("private-key-ec", "", pem("EC PRIVATE KEY", 2), "\n");
    add(
        "private-key-dsa",
        "dsa: |\n",
        pem("DSA PRIVATE KEY", 3),
        "\n",
    );
    add(
        "private-key-openssh",
        "id_ed25519:\n",
        pem("OPENSSH PRIVATE KEY", 4),
        "\n",
    );
    add(
        "private-key-pkcs8",
        "tls.key: ",
        pem("PRIVATE KEY", 5),
        "\n",
    );
    add(
        "private-key-encrypted",
        "",
        pem("ENCRYPTED PRIVATE KEY", 6),
        "",
    );
    add(
        "private-key-pgp",
        "gpg export:\n",
        pem("PGP PRIVATE KEY BLOCK", 7),
        "\n",
    );
    add(
        "private-key-base64",
        "tls.key: ",
        b64(pem("RSA PRIVATE KEY", 8).as_bytes()),
        "\n",
    );
    // Cloud.
    add(
        "aws-access-key-id",
        "aws_access_key_id = ",
        format!("AKIA{}", fake(UPPER32, 16, 10)),
        "\n",
    );
    add(
        "aws-secret-access-key",
        "aws_secret_access_key = ",
        fake(B64, 40, 11),
        "\n",
    );
    add(
        "aws-mws-key",
        "mws: ",
        format!(
            "amzn.mws.{}-{}-{}-{}-{}",
            fake(HEX, 8, 12),
            fake(HEX, 4, 13),
            fake(HEX, 4, 14),
            fake(HEX, 4, 15),
            fake(HEX, 12, 16)
        ),
        "",
    );
    add(
        "gcp-api-key",
        "maps key ",
        format!("AIza{}", fake(B64URL, 35, 17)),
        " loaded",
    );
    add(
        "gcp-service-account-private-key",
        &format!(
            r#"{{"type": "service_account", "private_key_id": "{}", "private_key": ""#,
            fake(HEX, 40, 18)
        ),
        format!("{}\\n", pem("PRIVATE KEY", 18).replace('\n', "\\n")),
        r#"", "client_email": "agent@shop-prod.iam.gserviceaccount.com"}"#,
    );
    add(
        "gcp-oauth-client-secret",
        "oauth client ",
        format!("GOCSPX-{}", fake(B64URL, 28, 19)),
        "",
    );
    add(
        "google-oauth-access-token",
        "got ",
        format!("ya29.{}", fake(B64URL, 120, 20)),
        " for sa",
    );
    add(
        "google-oauth-refresh-token",
        "refresh ",
        format!("1//0{}", fake(B64URL, 60, 21)),
        "",
    );
    add(
        "azure-storage-account-key",
        "DefaultEndpointsProtocol=https;AccountName=prodstore;AccountKey=",
        format!("{}==", fake(B64, 86, 22)),
        ";EndpointSuffix=core.windows.net",
    );
    add(
        "azure-shared-access-key",
        "Endpoint=sb://orders.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=",
        format!("{}=", fake(B64, 43, 23)),
        "",
    );
    add(
        "azure-sas-signature",
        "GET https://acct.blob.core.windows.net/backups/db.tar?sv=2022-11-02&ss=b&srt=o&sp=r&se=2025-01-01T00:00:00Z&spr=https&sig=",
        format!("{}%2B{}%3D", fake(ALNUM, 30, 24), fake(ALNUM, 10, 25)),
        " 200",
    );
    add(
        "alibaba-access-key-id",
        "ALIYUN key ",
        format!("LTAI{}", fake(ALNUM, 20, 26)),
        "",
    );
    add(
        "digitalocean-pat",
        "doctl auth init -t ",
        format!("dop_v1_{}", fake(HEX, 64, 27)),
        "",
    );
    add(
        "digitalocean-oauth-token",
        "oauth ",
        format!("doo_v1_{}", fake(HEX, 64, 28)),
        "",
    );
    add(
        "digitalocean-refresh-token",
        "refresh ",
        format!("dor_v1_{}", fake(HEX, 64, 29)),
        "",
    );
    add(
        "heroku-api-key",
        "HEROKU_API_KEY=",
        format!(
            "{}-{}-{}-{}-{}",
            fake(HEX, 8, 30),
            fake(HEX, 4, 31),
            fake(HEX, 4, 32),
            fake(HEX, 4, 33),
            fake(HEX, 12, 34)
        ),
        "\n",
    );
    add(
        "heroku-api-key-v2",
        "heroku ",
        format!("HRKU-AA{}", fake(B64URL, 58, 35)),
        "",
    );
    // Source hosting, CI, registries.
    add(
        "github-pat",
        "cloning with ",
        format!("ghp_{}", fake(ALNUM, 36, 40)),
        " failed",
    );
    add(
        "github-oauth-token",
        "oauth ",
        format!("gho_{}", fake(ALNUM, 36, 41)),
        "",
    );
    add(
        "github-app-user-token",
        "user ",
        format!("ghu_{}", fake(ALNUM, 36, 42)),
        "",
    );
    add(
        "github-app-installation-token",
        "installation ",
        format!("ghs_{}", fake(ALNUM, 36, 43)),
        "",
    );
    add(
        "github-refresh-token",
        "refresh ",
        format!("ghr_{}", fake(ALNUM, 36, 44)),
        "",
    );
    add(
        "github-fine-grained-pat",
        "pat ",
        format!("github_pat_{}_{}", fake(ALNUM, 22, 45), fake(ALNUM, 59, 46)),
        "",
    );
    add(
        "gitlab-pat",
        "remote ",
        format!("glpat-{}", fake(B64URL, 20, 47)),
        " ok",
    );
    add(
        "gitlab-pipeline-trigger-token",
        "trigger ",
        format!("glptt-{}", fake(HEX, 40, 48)),
        "",
    );
    add(
        "gitlab-runner-token",
        "runner ",
        format!("glrt-{}", fake(B64URL, 20, 49)),
        "",
    );
    add(
        "gitlab-deploy-token",
        "deploy ",
        format!("gldt-{}", fake(B64URL, 20, 50)),
        "",
    );
    add(
        "atlassian-api-token",
        "jira ",
        format!("ATATT3{}", fake(B64URL, 186, 51)),
        "",
    );
    add(
        "npm-access-token",
        "npm token ",
        format!("npm_{}", fake(ALNUM, 36, 52)),
        " created",
    );
    add(
        "pypi-upload-token",
        "twine ",
        format!("pypi-AgEIcHlwaS5vcmc{}", fake(B64URL, 70, 53)),
        "",
    );
    add(
        "rubygems-api-key",
        "gem ",
        format!("rubygems_{}", fake(HEX, 48, 54)),
        "",
    );
    add(
        "nuget-api-key",
        "nuget push -k ",
        format!("oy2{}", fake(LOWER_DIGIT, 43, 55)),
        " -s feed",
    );
    add(
        "dockerhub-pat",
        "docker ",
        format!("dckr_pat_{}", fake(B64URL, 27, 56)),
        "",
    );
    add(
        "docker-config-auth",
        r#"{"auths":{"registry.example.com":{"auth":""#,
        b64(b"deployer:s3cr3t-Regi5try"),
        r#""}}}"#,
    );
    add(
        "artifactory-api-key",
        "X-JFrog-Art ",
        format!("AKCp{}", fake(ALNUM, 69, 57)),
        "",
    );
    add(
        "pulumi-access-token",
        "pulumi ",
        format!("pul-{}", fake(HEX, 40, 58)),
        "",
    );
    add(
        "terraform-cloud-token",
        "tfc ",
        format!("{}.atlasv1.{}", fake(ALNUM, 14, 59), fake(B64URL, 67, 60)),
        "",
    );
    add(
        "vault-service-token",
        "vault ",
        format!("hvs.{}", fake(B64URL, 90, 61)),
        "",
    );
    add(
        "vault-batch-token",
        "vault ",
        format!("hvb.{}", fake(B64URL, 120, 62)),
        "",
    );
    add(
        "doppler-api-token",
        "doppler ",
        format!("dp.pt.{}", fake(ALNUM, 43, 63)),
        "",
    );
    add(
        "tailscale-key",
        "tailscale up --authkey=",
        format!(
            "tskey-auth-{}CNTRL-{}",
            fake(ALNUM, 6, 64),
            fake(ALNUM, 30, 65)
        ),
        "",
    );
    add(
        "age-secret-key",
        "# created\n",
        format!("AGE-SECRET-KEY-1{}", fake(BECH32, 58, 66)),
        "\n",
    );
    add(
        "onepassword-service-account-token",
        "op ",
        format!("ops_eyJ{}", fake(B64URL, 300, 67)),
        "",
    );
    // Chat and webhooks.
    add(
        "slack-bot-token",
        "slack ",
        format!(
            "xoxb-{}-{}-{}",
            fake(DIGITS, 12, 70),
            fake(DIGITS, 13, 71),
            fake(ALNUM, 24, 72)
        ),
        "",
    );
    add(
        "slack-user-token",
        "slack ",
        format!(
            "xoxp-{}-{}-{}-{}",
            fake(DIGITS, 11, 73),
            fake(DIGITS, 11, 74),
            fake(DIGITS, 13, 75),
            fake(HEX, 32, 76)
        ),
        "",
    );
    add(
        "slack-workspace-token",
        "slack ",
        format!("xoxa-2-{}", fake(ALNUM, 40, 77)),
        "",
    );
    add(
        "slack-app-token",
        "slack ",
        format!(
            "xapp-1-A{}-{}-{}",
            fake(UPPER_DIGIT, 10, 78),
            fake(DIGITS, 13, 79),
            fake(HEX, 64, 80)
        ),
        "",
    );
    add(
        "slack-config-token",
        "slack ",
        format!("xoxe.xoxp-1-{}", fake(ALNUM, 164, 81)),
        "",
    );
    add(
        "slack-webhook-url",
        "POST https://hooks.slack.com/services/",
        format!(
            "T{}/B{}/{}",
            fake(UPPER_DIGIT, 8, 82),
            fake(UPPER_DIGIT, 10, 83),
            fake(ALNUM, 24, 84)
        ),
        " 200",
    );
    add(
        "discord-webhook-url",
        "https://discord.com/api/webhooks/123456789012345678/",
        fake(B64URL, 68, 85),
        "",
    );
    add(
        "teams-webhook-url",
        "https://contoso.webhook.office.com/webhookb2/",
        format!(
            "{}@{}/IncomingWebhook/{}/{}",
            fake(HEX, 32, 86),
            fake(HEX, 32, 87),
            fake(HEX, 32, 88),
            fake(HEX, 32, 89)
        ),
        "",
    );
    add(
        "telegram-bot-token",
        "bot ",
        format!("{}:AA{}", fake(DIGITS, 10, 90), fake(B64URL, 33, 91)),
        " started",
    );
    add(
        "twilio-credential",
        "TWILIO_AUTH_TOKEN=",
        fake(HEX, 32, 92),
        "\n",
    );
    add(
        "sendgrid-api-key",
        "mail via ",
        format!("SG.{}.{}", fake(B64URL, 22, 93), fake(B64URL, 43, 94)),
        "",
    );
    add(
        "mailgun-api-key",
        "mailgun ",
        format!("key-{}", fake(HEX, 32, 95)),
        "",
    );
    add(
        "brevo-api-key",
        "brevo ",
        format!("xkeysib-{}-{}", fake(HEX, 64, 96), fake(ALNUM, 16, 97)),
        "",
    );
    // Payments.
    add(
        "stripe-secret-key",
        "stripe ",
        format!("sk_live_{}", fake(ALNUM, 24, 100)),
        "",
    );
    add(
        "stripe-restricted-key",
        "stripe ",
        format!("rk_live_{}", fake(ALNUM, 24, 101)),
        "",
    );
    add(
        "stripe-webhook-secret",
        "endpoint ",
        format!("whsec_{}", fake(ALNUM, 32, 102)),
        "",
    );
    add(
        "square-access-token",
        "square ",
        format!("sq0atp-{}", fake(B64URL, 22, 103)),
        "",
    );
    add(
        "square-oauth-secret",
        "square ",
        format!("sq0csp-{}", fake(B64URL, 43, 104)),
        "",
    );
    add(
        "shopify-access-token",
        "shop ",
        format!("shpat_{}", fake(HEX, 32, 105)),
        "",
    );
    add(
        "shopify-shared-secret",
        "shop ",
        format!("shpss_{}", fake(HEX, 32, 106)),
        "",
    );
    add(
        "shippo-api-token",
        "shippo ",
        format!("shippo_live_{}", fake(HEX, 40, 107)),
        "",
    );
    add(
        "easypost-api-key",
        "easypost ",
        format!("EZAK{}", fake(ALNUM, 54, 108)),
        "",
    );
    // AI and data.
    add(
        "openai-api-key",
        "openai ",
        format!("sk-proj-{}", fake(B64URL, 120, 110)),
        "",
    );
    add(
        "openai-api-key",
        "legacy ",
        format!(
            "sk-{}T3BlbkFJ{}",
            fake(ALNUM, 20, 111),
            fake(ALNUM, 20, 112)
        ),
        "",
    );
    add(
        "anthropic-api-key",
        "claude ",
        format!("sk-ant-api03-{}AA", fake(B64URL, 93, 113)),
        "",
    );
    add(
        "huggingface-token",
        "hf ",
        format!("hf_{}", fake(LETTERS, 34, 114)),
        "",
    );
    add(
        "huggingface-org-token",
        "hf ",
        format!("api_org_{}", fake(LETTERS, 34, 115)),
        "",
    );
    add(
        "groq-api-key",
        "groq ",
        format!("gsk_{}", fake(ALNUM, 52, 116)),
        "",
    );
    add(
        "replicate-api-token",
        "replicate ",
        format!("r8_{}", fake(ALNUM, 37, 117)),
        "",
    );
    add(
        "perplexity-api-key",
        "pplx ",
        format!("pplx-{}", fake(ALNUM, 48, 118)),
        "",
    );
    add(
        "xai-api-key",
        "grok ",
        format!("xai-{}", fake(ALNUM, 80, 119)),
        "",
    );
    add(
        "databricks-token",
        "databricks ",
        format!("dapi{}", fake(HEX, 32, 120)),
        "",
    );
    add(
        "mapbox-secret-token",
        "mapbox ",
        format!(
            "sk.eyJ1IjoibWFwdXNlciIsImEiOiJja2FrZSJ9.{}",
            fake(B64URL, 22, 121)
        ),
        "",
    );
    add(
        "planetscale-password",
        "pscale ",
        format!("pscale_pw_{}", fake(B64URL, 43, 122)),
        "",
    );
    add(
        "planetscale-token",
        "pscale ",
        format!("pscale_tkn_{}", fake(B64URL, 43, 123)),
        "",
    );
    add(
        "supabase-access-token",
        "supabase ",
        format!("sbp_{}", fake(HEX, 40, 124)),
        "",
    );
    // Observability.
    add("datadog-api-key", "DD_API_KEY=", fake(HEX, 32, 130), "\n");
    add(
        "dynatrace-api-token",
        "dt ",
        format!(
            "dt0c01.{}.{}",
            fake(UPPER_DIGIT, 24, 131),
            fake(UPPER_DIGIT, 64, 132)
        ),
        "",
    );
    add(
        "grafana-cloud-api-token",
        "grafana ",
        format!("glc_{}", fake(B64, 100, 133)),
        "",
    );
    add(
        "grafana-service-account-token",
        "grafana ",
        format!("glsa_{}_{}", fake(ALNUM, 32, 134), fake(HEX, 8, 135)),
        "",
    );
    add(
        "new-relic-user-api-key",
        "newrelic ",
        format!("NRAK-{}", fake(UPPER_DIGIT, 27, 136)),
        "",
    );
    add(
        "sentry-org-token",
        "sentry ",
        format!("sntrys_eyJpYXQiOjE3MDAwMDAwMDB9_{}", fake(ALNUM, 43, 137)),
        "",
    );
    add(
        "sentry-user-token",
        "sentry ",
        format!("sntryu_{}", fake(HEX, 64, 138)),
        "",
    );
    add(
        "postman-api-key",
        "postman ",
        format!("PMAK-{}-{}", fake(HEX, 24, 139), fake(HEX, 34, 140)),
        "",
    );
    add(
        "linear-api-key",
        "linear ",
        format!("lin_api_{}", fake(ALNUM, 40, 141)),
        "",
    );
    add(
        "figma-pat",
        "figma ",
        format!("figd_{}", fake(B64URL, 40, 142)),
        "",
    );
    add(
        "notion-token",
        "notion ",
        format!("ntn_{}{}", fake(DIGITS, 11, 143), fake(ALNUM, 35, 144)),
        "",
    );
    add(
        "prefect-api-key",
        "prefect ",
        format!("pnu_{}", fake(ALNUM, 36, 145)),
        "",
    );
    // Tokens, kubeconfig, URLs, headers.
    add(
        "jwt",
        "session ",
        format!(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6YWdlbnQifQ.{}",
            fake(B64URL, 342, 150)
        ),
        " expired",
    );
    add(
        "kubeconfig-client-key-data",
        "users:\n- name: admin\n  user:\n    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=\n    client-key-data: ",
        b64(pem("RSA PRIVATE KEY", 151).as_bytes()),
        "\n",
    );
    add(
        "kubeconfig-token",
        "users:\n- name: agent\n  user:\n    token: ",
        format!(
            "kubeconfig-u-{}:{}",
            fake(LOWER_DIGIT, 5, 152),
            fake(LOWER_DIGIT, 40, 153)
        ),
        "\n",
    );
    add(
        "kubeconfig-token",
        r#"{"kind":"TokenReview","spec":{"token":""#,
        format!("sha256~{}", fake(B64URL, 43, 154)),
        r#""}}"#,
    );
    add(
        "dsn-postgres",
        "DATABASE_URL=postgres://app:",
        "Sup3r-S3cret".to_string(),
        "@db.internal:5432/shop?sslmode=require",
    );
    add(
        "dsn-postgres",
        "url: jdbc:postgresql+psycopg2://app:",
        "p@ss:w0rd!".to_string(),
        "@db:5432/x",
    );
    add(
        "dsn-mysql",
        "mysql://root:",
        "r00tPassw0rd".to_string(),
        "@mysql:3306/app",
    );
    add(
        "dsn-mongodb",
        "MONGO_URL=mongodb+srv://admin:",
        "M0ngoPass!".to_string(),
        "@cluster0.abcde.mongodb.net/db",
    );
    add(
        "dsn-redis",
        "redis://:",
        "R3disPass".to_string(),
        "@redis-master:6379/0",
    );
    add(
        "dsn-amqp",
        "broker amqp://guest:",
        "Rabb1tPass".to_string(),
        "@rabbitmq:5672/",
    );
    add(
        "dsn-mysql-go",
        r#"dsn: "app:"#,
        "G0-Pa55word".to_string(),
        r#"@tcp(mysql:3306)/orders?parseTime=true""#,
    );
    add(
        "url-credentials",
        "fetching https://deploy:",
        "Tok3nValue42".to_string(),
        "@git.example.com/repo.git",
    );
    add(
        "http-bearer-token",
        "Authorization: Bearer ",
        fake(HEX, 40, 160),
        "\r\n",
    );
    add(
        "http-basic-auth",
        "authorization: Basic ",
        b64(b"admin:s3cr3tPass"),
        "\n",
    );
    add(
        "cli-credential-flag",
        "exec mysql -u root --password ",
        "S3cretFlagPw".to_string(),
        " -h db",
    );
    add(
        "cli-credential-flag",
        "kubeadm join 10.0.0.1:6443 --token ",
        "abcdef.0123456789abcdef".to_string(),
        " --discovery-token-ca-cert-hash sha256:",
    );
    add(
        "cli-credential-flag",
        "redis-server --db-pass ",
        "Rd1sPassW0rd".to_string(),
        " --port 6379",
    );
    add(
        "cli-credential-flag",
        "app -password ",
        "GoFlagPw99".to_string(),
        " -v",
    );
    add(
        "cli-short-credential-flag",
        "curl -u admin:",
        "CurlPw123".to_string(),
        " https://api.example.com",
    );
    add(
        "cli-short-credential-flag",
        "+ curl --user admin:",
        "CurlPw456".to_string(),
        " -X POST",
    );
    add(
        "cli-short-credential-flag",
        "mysql -h db -u root -p",
        "MyR00tPw".to_string(),
        " orders",
    );
    add(
        "cli-short-credential-flag",
        "redis-cli -h redis -a ",
        "R3disPw77".to_string(),
        " ping",
    );
    add(
        "cli-short-credential-flag",
        "docker login -u bot -p ",
        "D0ckerPw55".to_string(),
        " registry.example.com",
    );
    add(
        "cli-short-credential-flag",
        "sshpass -p ",
        "SshPw4455".to_string(),
        " ssh deploy@host",
    );
    add(
        "prose-credential",
        "note: the password is ",
        "Hunter2Prose".to_string(),
        " for now",
    );
    add(
        "prose-credential",
        "user\tbob\tpassword\t",
        "TabPw9911".to_string(),
        "\n",
    );
    add(
        "config-directive-credential",
        "bind 0.0.0.0\nrequirepass ",
        "R3disPass991".to_string(),
        "\nmaxmemory 2gb",
    );
    add(
        "config-directive-credential",
        "masterauth \"",
        "Repl1caPass".to_string(),
        "\"",
    );
    add(
        "config-directive-credential",
        "  authentication {\n    auth_type PASS\n    auth_pass ",
        "KeepAl1ve".to_string(),
        "\n  }",
    );
    add(
        "config-directive-credential",
        "userlist admins\n  user admin insecure-password ",
        "HaPr0xyPw".to_string(),
        "\n",
    );
    add(
        "config-directive-credential",
        "machine api.example.com login bob password ",
        "N3trcPass".to_string(),
        "\n",
    );
    add(
        "config-directive-credential",
        "machine api.example.com\n  login bob\n  password ",
        "N3trcMulti".to_string(),
        "\n",
    );
    add(
        "config-directive-credential",
        "<match es.**>\n  user elastic\n  password ",
        "Flu3ntdPw".to_string(),
        "\n</match>",
    );
    // Generic assignments, in every form.
    add(
        "generic-password",
        "login attempt user=bob password=",
        "hunter2hunter".to_string(),
        " from 10.0.0.7",
    );
    add(
        "generic-password",
        r#"{"user":"bob","password":""#,
        "c0rrect horse battery".to_string(),
        r#"","remember":true}"#,
    );
    add(
        "generic-password",
        "  password: ",
        "yaml-S3cret".to_string(),
        "\n  user: app\n",
    );
    add(
        "generic-password",
        "env: DB_PASSWORD=",
        "envS3cret!".to_string(),
        " PORT=5432",
    );
    add(
        "generic-password",
        r#"{"msg":"{\"password\":\""#,
        "inn3rS3cret".to_string(),
        r#"\"}"}"#,
    );
    add(
        "generic-password",
        "spring.datasource.password = ",
        "javaS3cret".to_string(),
        "\n",
    );
    add(
        "generic-password",
        "Server=db;Database=app;User Id=sa;Password=",
        "Mssql!Pass1".to_string(),
        ";",
    );
    add(
        "generic-password",
        "export MYSQL_PWD=",
        "pwdS3cret".to_string(),
        "\n",
    );
    add(
        "generic-password",
        "settings = {'passwd': '",
        "py-S3cret".to_string(),
        "'}",
    );
    add(
        "generic-secret",
        "CLIENT_SECRET=",
        "abcd1234efgh".to_string(),
        "\n",
    );
    add(
        "generic-secret",
        r#"{"clientSecret": ""#,
        fake(ALNUM, 32, 161),
        r#""}"#,
    );
    add("generic-api-key", "x-api-key: ", fake(ALNUM, 24, 162), "\n");
    add(
        "generic-api-key",
        "?apikey=",
        fake(HEX, 32, 163),
        "&format=json",
    );
    add(
        "generic-secret-key",
        "SECRET_KEY=",
        "django-insecure-abc123".to_string(),
        "\n",
    );
    add(
        "generic-secret-key",
        "signing_key: ",
        fake(B64, 44, 164),
        "\n",
    );
    add(
        "generic-token",
        "access_token=",
        "abcDEF123456ghiJKL".to_string(),
        "&expires_in=3600",
    );
    add(
        "generic-token",
        "GITHUB_TOKEN=",
        "not-a-ghp-format-but-secret".to_string(),
        "\n",
    );
    add("generic-token", "X-Auth-Token: ", fake(HEX, 32, 165), "\n");
    add(
        "generic-xml-credential",
        "<server><id>nexus</id><password>",
        "xmlS3cret".to_string(),
        "</password></server>",
    );
    v
}

#[test]
fn every_detector_has_a_positive_sample() {
    let have: HashSet<&str> = positives().iter().map(|p| p.0).collect();
    let missing: Vec<&str> = catalog()
        .iter()
        .map(|d| d.name)
        .filter(|n| !have.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "detectors without a positive sample: {missing:?}"
    );
    assert!(catalog().len() >= 50, "only {} detectors", catalog().len());
}

#[test]
fn positives_are_found_with_the_exact_span() {
    let d = detectors();
    let mut failures = Vec::new();
    for (name, text, secret) in positives() {
        let Some(start) = text.find(&secret) else {
            panic!("{name}: sample does not hold its secret")
        };
        let want = vec![Span {
            start,
            end: start + secret.len(),
            detector: index(name),
        }];
        let got = find(&d, &text);
        if got != want {
            failures.push(format!(
                "{name}: want {}\n   got {}\n  text {text:?}",
                show(&text, &want),
                show(&text, &got)
            ));
        }
        assert!(
            d.might_contain(text.as_bytes()),
            "{name}: might_contain is false"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The prefilter samples every other byte; a secret must be found at either parity, after any
/// prefix, and at the very start and end of the text.
#[test]
fn positives_are_found_at_every_offset() {
    let d = detectors();
    let fillers = [
        "",
        " ",
        "x ",
        "ab ",
        "\n",
        "a\nbc ",
        "12345 ",
        "é ",
        "1234567 ",
        "\u{1F600}\t",
    ];
    for (name, text, secret) in positives() {
        for f in fillers {
            for tail in ["", "\n", " z"] {
                let t = format!("{f}{text}{tail}");
                let Some(start) = t.find(&secret) else {
                    continue;
                };
                let got = find(&d, &t);
                let want = Span {
                    start,
                    end: start + secret.len(),
                    detector: index(name),
                };
                assert_eq!(got, vec![want], "{name} after {f:?}: {}", show(&t, &got));
            }
        }
        // The secret alone, for detectors whose secret carries its own keyword.
        let alone = find(&d, &secret);
        if let Some(first) = alone.first() {
            assert_eq!(first.start, 0, "{name} alone: {}", show(&secret, &alone));
        }
    }
}

#[test]
fn spans_are_appended() {
    let d = detectors();
    let mut out = vec![Span {
        start: 7,
        end: 9,
        detector: 0,
    }];
    d.find(format!("x ghp_{}", fake(ALNUM, 36, 1)).as_bytes(), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0],
        Span {
            start: 7,
            end: 9,
            detector: 0
        }
    );
    assert_eq!((out[1].start, out[1].end), (2, 42));
}

#[test]
fn pem_block_without_end_runs_to_the_end_of_the_text() {
    let d = detectors();
    let text = "key follows\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\nabcdef";
    let got = find(&d, text);
    let start = text.find("-----BEGIN").unwrap_or(0);
    assert_eq!(
        got,
        vec![Span {
            start,
            end: text.len(),
            detector: index("private-key-rsa")
        }]
    );
}

#[test]
fn pem_block_in_json_escaped_text() {
    let d = detectors();
    let key = pem("EC PRIVATE KEY", 77).replace('\n', "\\n");
    let text = format!(
        r#"{{"level":"debug","msg":"tls config","key":"{key}\n","cert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}}"#
    );
    let start = text.find("-----BEGIN EC").unwrap_or(0);
    let end = text.find("-----END EC PRIVATE KEY-----").unwrap_or(0)
        + "-----END EC PRIVATE KEY-----".len();
    assert_eq!(
        find(&d, &text),
        vec![Span {
            start,
            end,
            detector: index("private-key-ec")
        }]
    );
}

#[test]
fn gcp_service_account_json() {
    let d = detectors();
    let key = pem("PRIVATE KEY", 78).replace('\n', "\\n") + "\\n";
    let text = format!(
        r#"{{"type": "service_account", "project_id": "shop-prod", "private_key_id": "{}", "private_key": "{key}", "client_email": "agent@shop-prod.iam.gserviceaccount.com"}}"#,
        fake(HEX, 40, 79)
    );
    let start = text.find("-----BEGIN").unwrap_or(0);
    let want = vec![Span {
        start,
        end: start + key.len(),
        detector: index("gcp-service-account-private-key"),
    }];
    assert_eq!(find(&d, &text), want, "{}", show(&text, &find(&d, &text)));
}

#[test]
fn base64_private_keys_are_found_and_certificates_are_not() {
    let d = detectors();
    for label in [
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
    ] {
        let enc = b64(pem(label, 5).as_bytes());
        let text = format!(r#"{{"tls.key":"{enc}"}}"#);
        let start = text.find(&enc).unwrap_or(0);
        assert_eq!(
            find(&d, &text),
            vec![Span {
                start,
                end: start + enc.len(),
                detector: index("private-key-base64")
            }],
            "{label}"
        );
    }
    // The literal prefixes the issue names.
    for prefix in [
        "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ",
        "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t",
        "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t",
    ] {
        assert!(
            !find(&d, &format!("data: {prefix}Ck1JSUV")).is_empty(),
            "{prefix}"
        );
    }
    // A base64 text that embeds a key at another alignment (a whole kubeconfig, base64'd).
    let kubeconfig = format!(
        "apiVersion: v1\nusers:\n- user:\n    client-key-data-raw: |\n{}\n",
        pem("RSA PRIVATE KEY", 6)
    );
    let enc = b64(kubeconfig.as_bytes());
    assert_eq!(find(&d, &enc).len(), 1);
    let cert = b64(pem("CERTIFICATE", 7).as_bytes());
    assert!(cert.starts_with("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"));
    assert!(find(&d, &format!("certificate-authority-data: {cert}")).is_empty());
    assert!(find(&d, &format!("client-certificate-data: {cert}")).is_empty());
}

const K8S_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-7d4b9c8f6-x2x9k","namespace":"shop","uid":"6b1f3c3e-2f4a-4c1e-9a7b-0c2d5e8f9a1b","resourceVersion":"48213377","generation":1,"creationTimestamp":"2024-05-01T12:00:00Z","labels":{"app":"web","pod-template-hash":"7d4b9c8f6"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2024-05-01T11:59:00Z"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d4b9c8f6","uid":"0f9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c","controller":true,"blockOwnerDeletion":true}],"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2024-05-01T12:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{"f:env":{"k:{\"name\":\"DB_PASSWORD\"}":{".":{},"f:name":{},"f:valueFrom":{".":{},"f:secretKeyRef":{}}}}}}}}}]},"spec":{"serviceAccountName":"web","automountServiceAccountToken":true,"containers":[{"name":"web","image":"registry.example.com/shop/web@sha256:3f5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a","env":[{"name":"DB_HOST","value":"postgres.shop.svc"},{"name":"DB_PASSWORD","valueFrom":{"secretKeyRef":{"name":"db-credentials","key":"password"}}},{"name":"API_TOKEN_FILE","value":"/var/run/secrets/api/token"}],"envFrom":[{"secretRef":{"name":"web-secrets"}}],"volumeMounts":[{"name":"kube-api-access-abcde","mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","readOnly":true},{"name":"tls","mountPath":"/etc/tls"}]}],"volumes":[{"name":"tls","secret":{"secretName":"web-tls","defaultMode":420}},{"name":"kube-api-access-abcde","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}}]}}]},"status":{"phase":"Running","podIP":"10.244.1.17","containerStatuses":[{"name":"web","ready":true,"restartCount":0,"image":"registry.example.com/shop/web@sha256:3f5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a","imageID":"registry.example.com/shop/web@sha256:3f5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a","containerID":"containerd://9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b"}]}}"#;

const K8S_SECRET_META: &str = r#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"9912"},"items":[{"metadata":{"name":"db-credentials","namespace":"shop","uid":"1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d","managedFields":[{"manager":"kubectl-create","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:password":{},"f:username":{}},"f:type":{}}}]},"type":"Opaque"},{"metadata":{"name":"sa-token","annotations":{"kubernetes.io/service-account.name":"default"}},"type":"kubernetes.io/service-account-token"}]}"#;

const CONFIGMAP_CA: &str = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"kube-root-ca.crt","namespace":"default"},"data":{"ca.crt":"-----BEGIN CERTIFICATE-----\nMIIDBTCCAe2gAwIBAgIIQjZ5pQ1Zq4QwDQYJKoZIhvcNAQELBQAwFTETMBEGA1UE\nAxMKa3ViZXJuZXRlczAeFw0yNDA1MDExMjAwMDBaFw0zNDA0MjkxMjAwMDBaMBUx\n-----END CERTIFICATE-----\n"}}"#;

const KUBECONFIG_NO_KEY: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUMvakNDQWVhZ0F3SUJBZ0lCQURBTkJna3Foa2lHOXcwQkFRc0ZBREFWTVJNd0VRWURWUVFERXdwcmRXSmwKY201bGRHVnpNQjRYRFRJME1EVXdNVEV5TURBd01Gb1hEVE0wTURReU9URXlNREF3TUZvd0ZURVRNQkVHQTFVRQo=\n    server: https://10.0.0.1:6443\n  name: prod\ncontexts:\n- context:\n    cluster: prod\n    user: agent\n  name: prod\ncurrent-context: prod\nusers:\n- name: agent\n  user:\n    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURJVENDQWdtZ0F3SUJBZ0lJYk1tZzl5\n    exec:\n      command: kubelogin\n      args: [\"get-token\", \"--oidc-issuer-url=https://issuer.example.com\"]\n";

const LOG_LINES: &[&str] = &[
    "I0501 12:00:00.123456       1 controller.go:123] \"Reconciling\" deployment=\"shop/web\" generation=7",
    "E0501 12:00:01.000001       1 authentication.go:63] \"Unable to authenticate the request\" err=\"[invalid bearer token, service account token has expired]\"",
    "10.0.3.17 - - [01/May/2024:12:00:02 +0000] \"GET /api/v1/namespaces/shop/secrets?limit=500 HTTP/1.1\" 200 5123 \"https://dashboard.example.com/\" \"kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b\" 12",
    "{\"level\":\"info\",\"ts\":\"2024-05-01T12:00:03.001Z\",\"caller\":\"auth/token.go:88\",\"msg\":\"token refreshed\",\"expires_in\":3600,\"request_id\":\"4f9c2a7e8b1d3c5f\"}",
    "2024-05-01 12:00:04,123 WARN  [main] o.s.s.PasswordEncoder - password encoding strength is low",
    "2024-05-01 12:00:05 UTC [1234]: FATAL:  password authentication failed for user \"postgres\"",
    "WWW-Authenticate: Bearer realm=\"kubernetes\", error=\"invalid_token\"",
    "using basic authentication against https://registry.example.com/v2/",
    "secret \"shop/db-credentials\" synced; 3 keys; resourceVersion=48213377",
    "level=info msg=\"pulled image\" image=registry.example.com/shop/web@sha256:3f5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
    "uid=6b1f3c3e-2f4a-4c1e-9a7b-0c2d5e8f9a1b name=web-0 node=ip-10-0-1-17.eu-west-1.compute.internal zone=eu-west-1a TZ=Asia/Tokyo",
    "password: ${DB_PASSWORD}",
    "api_key=<redacted> token=**** secret=[REDACTED] password=null passwd=\"\" pwd=/home/app",
    "GET https://api.example.com/v1/orders?page_token=&limit=50 200",
    "connect postgres://app@db.internal:5432/shop?sslmode=disable",
    "proxy to http://10.0.0.5:8080/healthz ok",
    "secretName: web-tls",
    "  password:\n    valueFrom:\n      secretKeyRef: {name: db, key: password}",
    "email=ops@example.com cc=team@example.com",
    "git clone git@github.com:example/shop.git",
    "GOCSPX is the prefix of Google OAuth client secrets; ghp_ is GitHub's; nothing here is one",
    "message=\"Scaled up replica set web-7d4b9c8f6 to 3\" reason=ScalingReplicaSet",
    "cache key-value store ready (keys=128)",
    "password reset requested for user bob",
    "Password must be at least 12 characters",
    "password policy updated\npasswd file loaded",
    "requirepass \"\"",
    // The API server's own OpenAPI descriptions, which kubectl explain prints.
    "BoundObjectReference is a reference to an object that a token is bound to.",
    "The kubelet will start trying to rotate the token if the token is older than 80 percent of its time to live",
    "Authenticated indicates that the token was associated with a known user.",
    "token authenticators will verify that the token was intended for at least one of the audiences",
    "serviceAccountToken is information about the serviceAccountToken data to project",
];

#[test]
fn ordinary_kubernetes_objects_and_logs_have_no_spans() {
    let d = detectors();
    let mut texts: Vec<String> = vec![
        K8S_POD.into(),
        K8S_SECRET_META.into(),
        CONFIGMAP_CA.into(),
        KUBECONFIG_NO_KEY.into(),
    ];
    texts.extend(LOG_LINES.iter().map(|s| s.to_string()));
    texts.push(LOG_LINES.join("\n"));
    for t in &texts {
        let got = find(&d, t);
        assert!(
            got.is_empty(),
            "false positive: {}\n  in {t:?}",
            show(t, &got)
        );
    }
}

#[test]
fn disabled_detectors_are_off_and_unknown_names_are_errors() {
    let text = "password=hunter2hunter access_token=abcDEF123456ghiJKL";
    let all = find(&detectors(), text);
    assert_eq!(all.len(), 2);
    let d = Detectors::new(&["generic-password"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.enabled(), catalog().len() - 1);
    let got = find(&d, text);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].detector, index("generic-token"));
    // Disabling every detector finds nothing.
    let names: Vec<&str> = catalog().iter().map(|c| c.name).collect();
    let none = Detectors::new(&names).unwrap_or_else(|e| panic!("{e}"));
    assert!(find(&none, text).is_empty());
    assert!(!none.might_contain(text.as_bytes()));
    // A keyword shared by detectors stays while one of them is on.
    let pem_only = names
        .iter()
        .copied()
        .filter(|n| *n != "private-key-ec")
        .collect::<Vec<_>>();
    let d = Detectors::new(&pem_only).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(find(&d, &pem("EC PRIVATE KEY", 1)).len(), 1);
    assert!(find(&d, &pem("RSA PRIVATE KEY", 1)).is_empty());
    match Detectors::new(&["no-such-detector"]) {
        Err(DetectorError::Unknown { name }) => assert_eq!(name, "no-such-detector"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    let as_string: String = DetectorError::Unknown { name: "x".into() }.into();
    assert!(as_string.contains("unknown detector `x`"));
}

#[test]
fn catalog_names_are_unique_kebab_case_and_described() {
    let mut seen = HashSet::new();
    for d in catalog() {
        assert!(seen.insert(d.name), "duplicate {}", d.name);
        let kebab = !d.name.is_empty()
            && d.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !d.name.starts_with('-')
            && !d.name.ends_with('-')
            && !d.name.contains("--");
        assert!(kebab, "not kebab-case: {}", d.name);
        assert!(!d.description.is_empty(), "{} has no description", d.name);
    }
}

#[test]
fn spans_are_sorted_and_disjoint_on_a_mixed_text() {
    let d = detectors();
    let text: String = positives()
        .into_iter()
        .map(|(_, t, _)| t)
        .collect::<Vec<_>>()
        .join("\n");
    let spans = find(&d, &text);
    assert!(
        spans.len() >= positives().len() - 10,
        "{} spans",
        spans.len()
    );
    for w in spans.windows(2) {
        assert!(w[0].end <= w[1].start, "overlap: {:?}", w);
    }
    // Every secret is inside some span.
    for (name, _, secret) in positives() {
        let at = text.find(&secret).unwrap_or(0);
        assert!(
            spans
                .iter()
                .any(|s| s.start <= at && at + secret.len() <= s.end),
            "{name}: secret not covered in the mixed text"
        );
    }
}

#[test]
fn overlapping_matches_merge_into_one_span() {
    let d = detectors();
    // A bearer token that is also a JWT: one span.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLWJ5dGVz";
    let text = format!("Authorization: Bearer {jwt}");
    let got = find(&d, &text);
    assert_eq!(got.len(), 1, "{}", show(&text, &got));
    assert_eq!((got[0].start, got[0].end), (22, 22 + jwt.len()));
    // A password that is a GitHub token: one span.
    let tok = format!("ghp_{}", fake(ALNUM, 36, 3));
    let got = find(&d, &format!("password={tok}"));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].start, got[0].end), (9, 9 + tok.len()));
}

#[test]
fn placeholder_values_are_left_alone() {
    let d = detectors();
    for v in [
        "${DB_PASSWORD}",
        "$DB_PASS",
        "<password>",
        "********",
        "{{ .Values.password }}",
        "[masked:generic-password]",
        "null",
        "abc",
    ] {
        for form in [
            format!("password={v}"),
            format!("\"password\": \"{v}\""),
            format!("password: '{v}'"),
        ] {
            assert!(find(&d, &form).is_empty(), "{form}");
        }
        assert!(is_placeholder(v.as_bytes()) || v.len() < 4, "{v}");
    }
}

#[test]
fn long_lines_do_not_cut_tokens() {
    let d = detectors();
    // A keyword far from the start of a long line, and a very long token.
    let tok = format!("glpat-{}", fake(B64URL, 290, 9));
    let text = format!("{} {tok} {}", "x".repeat(10_000), "y".repeat(10_000));
    let start = 10_001;
    assert_eq!(
        find(&d, &text),
        vec![Span {
            start,
            end: start + tok.len(),
            detector: index("gitlab-pat")
        }]
    );
    let long = format!("Bearer {}", fake(B64URL, 9000, 10));
    let got = find(&d, &long);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].start, got[0].end), (7, long.len()));
}

/// Texts built to make a naive scanner quadratic: many key headers and no END, a long base64
/// run full of key fragments, a long line full of keywords.
#[test]
fn adversarial_inputs_stay_linear() {
    let d = detectors();
    let t = std::time::Instant::now();
    let headers = "-----BEGIN RSA PRIVATE KEY-----\n".repeat(20_000);
    assert_eq!(
        find(&d, &headers),
        vec![Span {
            start: 0,
            end: headers.len(),
            detector: index("private-key-rsa")
        }]
    );
    let b64run = "UFJJVkFURSBLRV".repeat(40_000);
    assert_eq!(find(&d, &b64run).len(), 1);
    let keywords = "password=x token=y secret=z ://a ghp_ Bearer  ".repeat(20_000);
    let _ = find(&d, &keywords);
    let long_token = format!("Bearer {}", "A".repeat(2_000_000));
    assert_eq!(find(&d, &long_token).len(), 1);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn short_and_empty_texts() {
    let d = detectors();
    for t in [
        "",
        "a",
        "password",
        "token=",
        "ghp_",
        "pwd=",
        "://",
        "-----BEGIN",
    ] {
        assert!(find(&d, t).is_empty(), "{t}");
    }
}

#[test]
fn sample_log_file_matches_its_manifest() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testdata/detectors");
    let log = std::fs::read_to_string(format!("{dir}/log.txt"))
        .unwrap_or_else(|e| panic!("log.txt: {e}"));
    let manifest = std::fs::read_to_string(format!("{dir}/log.json"))
        .unwrap_or_else(|e| panic!("log.json: {e}"));
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).unwrap_or_else(|e| panic!("log.json: {e}"));
    let Some(entries) = manifest["secrets"].as_array() else {
        panic!("log.json has no secrets array")
    };
    let d = detectors();
    let spans = find(&d, &log);
    let lines: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut at = 0;
        for l in log.split_inclusive('\n') {
            v.push((at, at + l.len()));
            at += l.len();
        }
        v
    };
    let mut expected_lines = HashSet::new();
    for e in entries {
        let line = e["line"].as_u64().unwrap_or(0) as usize;
        let secret = e["secret"].as_str().unwrap_or_default();
        let name = e["detector"].as_str().unwrap_or_default();
        let (ls, le) = lines[line - 1];
        let Some(off) = log[ls..].find(secret) else {
            panic!("line {line}: secret not in log")
        };
        let at = ls + off;
        assert!(
            at < le || name.starts_with("private-key"),
            "line {line}: secret not on its line"
        );
        let covering = spans
            .iter()
            .find(|s| s.start <= at && at + secret.len() <= s.end);
        let Some(s) = covering else {
            panic!("line {line} ({name}): not masked: {}", show(&log, &spans))
        };
        assert_eq!(catalog()[usize::from(s.detector)].name, name, "line {line}");
        for l in line..=line + e["lines"].as_u64().unwrap_or(1) as usize - 1 {
            expected_lines.insert(l);
        }
    }
    for s in &spans {
        let line = lines
            .iter()
            .position(|&(a, b)| a <= s.start && s.start < b)
            .unwrap_or(0)
            + 1;
        assert!(
            expected_lines.contains(&line),
            "unexpected span on line {line}: {}",
            show(&log, &[*s])
        );
    }
}

fn check_invariants(text: &[u8], spans: &[Span]) -> Result<(), TestCaseError> {
    for s in spans {
        prop_assert!(
            s.start < s.end && s.end <= text.len(),
            "span {:?} out of bounds {}",
            s,
            text.len()
        );
        prop_assert!(usize::from(s.detector) < catalog().len());
    }
    for w in spans.windows(2) {
        prop_assert!(w[0].end <= w[1].start, "not sorted/disjoint: {:?}", w);
    }
    Ok(())
}

const FRAGMENTS: &[&str] = &[
    "password",
    "=",
    ":",
    "\"",
    "'",
    " ",
    "\n",
    "\\",
    "token",
    "secret",
    "ghp_",
    "AKIA",
    "eyJ",
    ".eyJ",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END",
    "://",
    "u:p@",
    "@tcp(",
    "Bearer ",
    "Basic ",
    "dXNlcjpwYXNz",
    "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t",
    "client-key-data: ",
    "sk-ant-",
    "hf_",
    "SG.",
    "xoxb-",
    "1234567890",
    "abcdefghijklmnopqrstuvwxyzABCDEF",
    "${X}",
    "pwd",
    "api_key",
    "<password>",
    "</",
    "AA",
    "0:AA",
    "\u{0}",
    "\u{ff}",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_bytes(text in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let d = detectors();
        let mut out = Vec::new();
        d.find(&text, &mut out);
        check_invariants(&text, &out)?;
    }

    #[test]
    fn never_panics_on_keyword_soup(parts in proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ], 0..80)) {
        let text: Vec<u8> = parts.concat();
        let d = detectors();
        let mut out = Vec::new();
        d.find(&text, &mut out);
        check_invariants(&text, &out)?;
        // might_contain is a superset of find.
        if !out.is_empty() {
            prop_assert!(d.might_contain(&text));
        }
    }

    #[test]
    fn secrets_survive_any_surrounding_bytes(
        prefix in proptest::collection::vec(any::<u8>(), 0..40),
        which in 0usize..1000,
    ) {
        let ps = positives();
        let (name, text, secret) = &ps[which % ps.len()];
        let mut t = prefix.clone();
        t.push(b'\n');
        t.extend_from_slice(text.as_bytes());
        let d = detectors();
        let mut out = Vec::new();
        d.find(&t, &mut out);
        check_invariants(&t, &out)?;
        let at = prefix.len() + 1 + text.find(secret.as_str()).unwrap_or(0);
        prop_assert!(out.iter().any(|s| s.start <= at && at + secret.len() <= s.end), "{} lost after {:?}", name, prefix);
    }
}
