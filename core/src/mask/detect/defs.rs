//! The built-in detectors: what each finds, its keywords, its patterns.
//!
//! Patterns are byte regexes (ASCII classes, `(?i)` ASCII-only, any byte matches a negated
//! class). The span masked is the first capture group that took part in the match, or the whole
//! match when a pattern has none. Order matters: where two patterns match at the same start,
//! the earlier one wins, so specific detectors come before generic ones.

use super::DetectorInfo;
use super::prefilter::{Class, Guard, Kw, kw};

/// What to do with a match before it becomes a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Post {
    /// Nothing.
    Plain,
    /// An assigned value: at least `min` non-space bytes and not a placeholder (see
    /// [`super::is_placeholder`]); with `path_ok == false`, not a path either (`PWD=/home/x`).
    Value { min: u8, path_ok: bool },
    /// A base64 `user:password` (HTTP Basic, docker config `auth`): must decode and hold a `:`.
    Basic,
    /// A bearer token: not a lowercase word (`Bearer authentication`).
    Word,
    /// A PEM header: the span runs to the end of the matching `-----END ...-----` line, or to
    /// the end of the text when there is none.
    Pem,
    /// A fragment of base64: the span grows over the whole base64 run around it.
    Base64Run,
    /// A value in prose (`the password is X`): as [`Post::Value`] with 4 bytes, and not a word
    /// that goes on the sentence (`is required`, `was changed`).
    Prose,
}

/// A pattern: a regex, or a key regex that takes the generic assignment and value after it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pat {
    Re(&'static str, Post),
    Assign(&'static str, Post),
}

pub(crate) struct Def {
    pub(crate) info: DetectorInfo,
    pub(crate) keywords: &'static [Kw],
    pub(crate) patterns: &'static [Pat],
}

/// Between a key and its value: an optional closing quote (maybe escaped), then `=`, `:`, `:=`
/// or `=>` with spaces or tabs around (never a newline: `password:` at the end of a YAML line
/// introduces a nested map, not a value).
pub(crate) const ASSIGN: &str = r#"(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*"#;

/// A value: an escaped-JSON string (`\"...\"`), a double-quoted string (with `\` escapes), a
/// single-quoted string, or a bare run that stops at whitespace, quotes, `` ` ``, `,`, `;`,
/// `&`, `<`, `>` and `\` (but not at an escaped backslash `\\`), and does not start with a
/// bracket, brace or parenthesis (`"f:password":{}` in managedFields is structure, not a
/// value). A bare value with spaces in it is masked up to its first space.
pub(crate) const VALUE: &str = r#"(?:\\"((?:[^"\\\r\n]|\\[^"\r\n])*)\\"|"((?:[^"\\\r\n]|\\[^\r\n])*)"|'([^'\r\n]*)'|((?:[^\s"'`,;&\\<>{}\[\]()]|\\\\)(?:[^\s"'`,;&\\<>]|\\\\)*))"#;

const fn d(
    name: &'static str,
    description: &'static str,
    keywords: &'static [Kw],
    patterns: &'static [Pat],
) -> Def {
    Def {
        info: DetectorInfo { name, description },
        keywords,
        patterns,
    }
}

use Class::{
    Alnum, Alpha, AssignStart, B64, B64Url, Digit, DotDash, Hex, NonWord, NotAlpha, Scheme,
    Token68, Upper32, UserInfo,
};
use Pat::{Assign, Re};
use Post::{Base64Run, Basic, Pem, Plain, Prose, Value, Word};

const GENERIC: Post = Value {
    min: 4,
    path_ok: true,
};
const URL_PW: Post = Value {
    min: 1,
    path_ok: true,
};
const PEM_KW: &[Kw] = &[
    kw("private key-----").at(9),
    kw("private key block-----").at(14),
];
const URL_KW: &[Kw] = &[kw("://")
    .prev(Scheme)
    .next(UserInfo)
    .guard(Guard::Url)
    .back(40)];
const ASSIGN_KW: Guard = Guard::Assign;

macro_rules! userinfo {
    ($scheme:literal) => {
        concat!(
            $scheme,
            r#"://[^\s:/?#@"'<>\\]{0,256}:([^\s/"'<>\\]{1,256})@"#
        )
    };
}

pub(crate) const DEFS: &[Def] = &[
    // ---- Private keys -------------------------------------------------------------------
    d(
        "private-key-rsa",
        "PEM RSA private key block (BEGIN RSA PRIVATE KEY .. END)",
        PEM_KW,
        &[Re("-----BEGIN RSA PRIVATE KEY-----", Pem)],
    ),
    d(
        "private-key-ec",
        "PEM EC private key block",
        PEM_KW,
        &[Re("-----BEGIN EC PRIVATE KEY-----", Pem)],
    ),
    d(
        "private-key-dsa",
        "PEM DSA private key block",
        PEM_KW,
        &[Re("-----BEGIN DSA PRIVATE KEY-----", Pem)],
    ),
    d(
        "private-key-openssh",
        "OpenSSH private key block",
        PEM_KW,
        &[Re("-----BEGIN OPENSSH PRIVATE KEY-----", Pem)],
    ),
    d(
        "private-key-pkcs8",
        "PEM PKCS#8 private key block (BEGIN PRIVATE KEY)",
        PEM_KW,
        &[Re("-----BEGIN PRIVATE KEY-----", Pem)],
    ),
    d(
        "private-key-encrypted",
        "PEM encrypted PKCS#8 private key block",
        PEM_KW,
        &[Re("-----BEGIN ENCRYPTED PRIVATE KEY-----", Pem)],
    ),
    d(
        "private-key-pgp",
        "PGP private key block",
        PEM_KW,
        &[Re("-----BEGIN PGP PRIVATE KEY BLOCK-----", Pem)],
    ),
    d(
        "private-key-base64",
        "base64 of a PEM private key (kubeconfig client-key-data, Secret data copied around); the whole base64 run",
        &[
            kw("ufjjvkfursblrv"),
            kw("bssvzbveugs0vz"),
            kw("quklwqvrfietfw"),
        ],
        // "PRIVATE KEY" in base64 at each of the three alignments.
        &[Re(
            "UFJJVkFURSBLRV|BSSVZBVEUgS0VZ|QUklWQVRFIEtFW",
            Base64Run,
        )],
    ),
    // ---- Cloud providers ----------------------------------------------------------------
    d(
        "aws-access-key-id",
        "AWS access key id (AKIA/ASIA/ABIA/ACCA + 16)",
        &[
            kw("akia").tail(Upper32, 16),
            kw("asia").tail(Upper32, 16),
            kw("abia").tail(Upper32, 16),
            kw("acca").tail(Upper32, 16),
        ],
        &[Re(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b", Plain)],
    ),
    d(
        "aws-secret-access-key",
        "AWS secret access key assigned to aws_secret_access_key / SecretAccessKey",
        &[
            kw("secret_access_key").guard(ASSIGN_KW).at(6),
            kw("secretaccesskey").guard(ASSIGN_KW).at(5),
            kw("secret-access-key").guard(ASSIGN_KW).at(6),
            kw("secret_key").guard(ASSIGN_KW),
            kw("secretkey").guard(ASSIGN_KW),
        ],
        &[Re(
            r#"(?i:aws_?secret_?key|secret_access_key|secretaccesskey|secret-access-key)(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*(?:\\?["'])?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)"#,
            Plain,
        )],
    ),
    d(
        "aws-mws-key",
        "Amazon MWS auth token",
        &[kw("amzn.mws.")],
        &[Re(
            r"amzn\.mws\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            Plain,
        )],
    ),
    d(
        "gcp-api-key",
        "Google API key (AIza...)",
        &[kw("aiza").tail(B64Url, 35)],
        &[Re(r"AIza[0-9A-Za-z_-]{35}", Plain)],
    ),
    d(
        "gcp-service-account-private-key",
        "the private_key field of a GCP service account JSON key",
        &[kw("private_key").guard(ASSIGN_KW).at(5)],
        &[Re(
            r#""private_key"[ \t]*:[ \t]*"((?:[^"\\\r\n]|\\[^\r\n])*)""#,
            URL_PW,
        )],
    ),
    d(
        "gcp-oauth-client-secret",
        "Google OAuth client secret (GOCSPX-)",
        &[kw("gocspx-")],
        &[Re(r"GOCSPX-[A-Za-z0-9_-]{28}", Plain)],
    ),
    d(
        "google-oauth-access-token",
        "Google OAuth access token (ya29.)",
        &[kw("ya29.")],
        &[Re(r"ya29\.[0-9A-Za-z_-]{30,}", Plain)],
    ),
    d(
        "google-oauth-refresh-token",
        "Google OAuth refresh token (1//0)",
        &[kw("1//0").tail(B64Url, 40)],
        &[Re(r"1//0[0-9A-Za-z_-]{40,}", Plain)],
    ),
    d(
        "azure-storage-account-key",
        "AccountKey= in an Azure storage connection string",
        &[kw("accountkey=").at(5)],
        &[Re(r"(?i:AccountKey)=([A-Za-z0-9+/]{80,100}={0,2})", Plain)],
    ),
    d(
        "azure-shared-access-key",
        "SharedAccessKey= in an Azure Service Bus / Event Hubs connection string",
        &[kw("sharedaccesskey=").at(4)],
        &[Re(
            r"(?i:SharedAccessKey)=([A-Za-z0-9+/]{40,}={0,2})",
            Plain,
        )],
    ),
    d(
        "azure-sas-signature",
        "sig= of an Azure shared access signature URL",
        &[kw("&sig="), kw("?sig=")],
        &[Re(r"[?&](?i:sig)=([A-Za-z0-9%+/=]{30,})", Plain)],
    ),
    d(
        "alibaba-access-key-id",
        "Alibaba Cloud access key id (LTAI...)",
        &[kw("ltai").tail(Alnum, 20)],
        &[Re(r"\bLTAI[A-Za-z0-9]{20}\b", Plain)],
    ),
    d(
        "digitalocean-pat",
        "DigitalOcean personal access token",
        &[kw("dop_v1_")],
        &[Re(r"dop_v1_[a-f0-9]{64}", Plain)],
    ),
    d(
        "digitalocean-oauth-token",
        "DigitalOcean OAuth token",
        &[kw("doo_v1_")],
        &[Re(r"doo_v1_[a-f0-9]{64}", Plain)],
    ),
    d(
        "digitalocean-refresh-token",
        "DigitalOcean refresh token",
        &[kw("dor_v1_")],
        &[Re(r"dor_v1_[a-f0-9]{64}", Plain)],
    ),
    d(
        "heroku-api-key",
        "Heroku API key (a UUID assigned to a heroku..key/token)",
        &[kw("heroku").at(1)],
        &[Re(
            r#"(?i:heroku)[A-Za-z0-9_.-]{0,20}(?i:key|token|secret)(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*(?:\\?["'])?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\b"#,
            Plain,
        )],
    ),
    d(
        "heroku-api-key-v2",
        "Heroku API key (HRKU-)",
        &[kw("hrku-")],
        &[Re(r"HRKU-AA[0-9A-Za-z_-]{58}", Plain)],
    ),
    // ---- Source hosting and CI ----------------------------------------------------------
    d(
        "github-pat",
        "GitHub personal access token (ghp_)",
        &[kw("ghp_").tail(Alnum, 36)],
        &[Re(r"ghp_[A-Za-z0-9]{36}", Plain)],
    ),
    d(
        "github-oauth-token",
        "GitHub OAuth access token (gho_)",
        &[kw("gho_").tail(Alnum, 36)],
        &[Re(r"gho_[A-Za-z0-9]{36}", Plain)],
    ),
    d(
        "github-app-user-token",
        "GitHub App user-to-server token (ghu_)",
        &[kw("ghu_").tail(Alnum, 36)],
        &[Re(r"ghu_[A-Za-z0-9]{36}", Plain)],
    ),
    d(
        "github-app-installation-token",
        "GitHub App installation (server-to-server) token (ghs_)",
        &[kw("ghs_").tail(Alnum, 36)],
        &[Re(r"ghs_[A-Za-z0-9]{36}", Plain)],
    ),
    d(
        "github-refresh-token",
        "GitHub refresh token (ghr_)",
        &[kw("ghr_").tail(Alnum, 36)],
        &[Re(r"ghr_[A-Za-z0-9]{36}", Plain)],
    ),
    d(
        "github-fine-grained-pat",
        "GitHub fine-grained personal access token (github_pat_)",
        &[kw("github_pat_").at(6)],
        &[Re(r"github_pat_[A-Za-z0-9_]{82}", Plain)],
    ),
    d(
        "gitlab-pat",
        "GitLab personal access token (glpat-)",
        &[kw("glpat-")],
        &[Re(r"glpat-[A-Za-z0-9_.-]{20,300}", Plain)],
    ),
    d(
        "gitlab-pipeline-trigger-token",
        "GitLab pipeline trigger token (glptt-)",
        &[kw("glptt-")],
        &[Re(r"glptt-[0-9a-f]{40}", Plain)],
    ),
    d(
        "gitlab-runner-token",
        "GitLab runner authentication token (glrt-)",
        &[kw("glrt-")],
        &[Re(r"glrt-[A-Za-z0-9_.-]{20,300}", Plain)],
    ),
    d(
        "gitlab-deploy-token",
        "GitLab deploy token (gldt-)",
        &[kw("gldt-")],
        &[Re(r"gldt-[A-Za-z0-9_-]{20,300}", Plain)],
    ),
    d(
        "atlassian-api-token",
        "Atlassian API token (ATATT3)",
        &[kw("atatt3")],
        &[Re(r"ATATT3[A-Za-z0-9_=-]{186}", Plain)],
    ),
    d(
        "npm-access-token",
        "npm access token (npm_)",
        &[kw("npm_").tail(Alnum, 36)],
        &[Re(r"npm_[A-Za-z0-9]{36}", Plain)],
    ),
    d(
        "pypi-upload-token",
        "PyPI upload token (pypi-AgEIcHlwaS5vcmc)",
        &[kw("pypi-ageichlwas5vcmc")],
        &[Re(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", Plain)],
    ),
    d(
        "rubygems-api-key",
        "RubyGems API key (rubygems_)",
        &[kw("rubygems_").at(4)],
        &[Re(r"rubygems_[a-f0-9]{48}", Plain)],
    ),
    d(
        "nuget-api-key",
        "NuGet API key (oy2...)",
        &[kw("oy2").prev(NonWord).next(Alnum)],
        &[Re(r"\boy2[a-z0-9]{43}\b", Plain)],
    ),
    d(
        "dockerhub-pat",
        "Docker Hub personal access token (dckr_pat_)",
        &[kw("dckr_pat_")],
        &[Re(r"dckr_pat_[A-Za-z0-9_-]{27}", Plain)],
    ),
    d(
        "docker-config-auth",
        "base64 user:password in a docker config.json \"auth\" field",
        &[kw("auth\"").next(AssignStart).at(1), kw("auth\\\"").at(1)],
        &[Re(
            r#"\\?"auth\\?"[ \t]*:[ \t]*\\?"([A-Za-z0-9+/]{8,}={0,2})\\?""#,
            Basic,
        )],
    ),
    d(
        "artifactory-api-key",
        "JFrog Artifactory API key (AKCp)",
        &[kw("akcp").tail(Alnum, 69)],
        &[Re(r"\bAKCp[A-Za-z0-9]{69}\b", Plain)],
    ),
    d(
        "pulumi-access-token",
        "Pulumi access token (pul-)",
        &[kw("pul-").tail(Hex, 40)],
        &[Re(r"pul-[a-f0-9]{40}", Plain)],
    ),
    d(
        "terraform-cloud-token",
        "Terraform Cloud / Enterprise API token (.atlasv1.)",
        &[kw("atlasv1").back(32)],
        &[Re(
            r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}",
            Plain,
        )],
    ),
    d(
        "vault-service-token",
        "HashiCorp Vault service token (hvs.)",
        &[kw("hvs.").tail(B64Url, 24)],
        &[Re(r"hvs\.[A-Za-z0-9_-]{24,}", Plain)],
    ),
    d(
        "vault-batch-token",
        "HashiCorp Vault batch token (hvb.)",
        &[kw("hvb.").tail(B64Url, 24)],
        &[Re(r"hvb\.[A-Za-z0-9_-]{24,}", Plain)],
    ),
    d(
        "doppler-api-token",
        "Doppler API token (dp.pt.)",
        &[kw("dp.pt.")],
        &[Re(r"dp\.pt\.[A-Za-z0-9]{43}", Plain)],
    ),
    d(
        "tailscale-key",
        "Tailscale auth or API key (tskey-)",
        &[kw("tskey-")],
        &[Re(r"tskey-[a-z]+-[A-Za-z0-9]+-[A-Za-z0-9]+", Plain)],
    ),
    d(
        "age-secret-key",
        "age encryption secret key",
        &[kw("age-secret-key-1").at(8)],
        &[Re(
            r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
            Plain,
        )],
    ),
    d(
        "onepassword-service-account-token",
        "1Password service account token (ops_eyJ)",
        &[kw("ops_eyj")],
        &[Re(r"ops_eyJ[A-Za-z0-9+/=_-]{250,}", Plain)],
    ),
    // ---- Chat and webhooks --------------------------------------------------------------
    d(
        "slack-bot-token",
        "Slack bot token (xoxb-)",
        &[kw("xoxb-")],
        &[Re(r"xoxb-[0-9]{10,13}-[0-9]{10,13}[A-Za-z0-9-]*", Plain)],
    ),
    d(
        "slack-user-token",
        "Slack user token (xoxp-)",
        &[kw("xoxp-")],
        &[Re(
            r"xoxp-[0-9]{10,13}(?:-[0-9]{10,13}){2}-[A-Za-z0-9-]{28,34}",
            Plain,
        )],
    ),
    d(
        "slack-workspace-token",
        "Slack workspace access or refresh token (xoxa-, xoxr-)",
        &[kw("xoxa-"), kw("xoxr-")],
        &[Re(r"xox[ar]-(?:[0-9]-)?[0-9A-Za-z]{8,48}", Plain)],
    ),
    d(
        "slack-app-token",
        "Slack app-level token (xapp-)",
        &[kw("xapp-")],
        &[Re(r"(?i:xapp)-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+", Plain)],
    ),
    d(
        "slack-config-token",
        "Slack configuration access or refresh token (xoxe.xoxp-, xoxe-)",
        &[kw("xoxe").next(DotDash)],
        &[Re(
            r"xoxe\.xox[bp]-[0-9]-[A-Za-z0-9]{163,166}|xoxe-[0-9]-[A-Za-z0-9]{140,150}",
            Plain,
        )],
    ),
    d(
        "slack-webhook-url",
        "Slack incoming webhook URL (the path after hooks.slack.com)",
        &[kw("hooks.slack.com").at(5)],
        &[Re(
            r"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9+/_-]{20,})",
            Plain,
        )],
    ),
    d(
        "discord-webhook-url",
        "Discord webhook URL token",
        &[kw("/api/webhooks/").at(5)],
        &[Re(
            r"discord(?:app)?\.com/api/webhooks/[0-9]+/([A-Za-z0-9_-]{60,68})",
            Plain,
        )],
    ),
    d(
        "teams-webhook-url",
        "Microsoft Teams incoming webhook URL (the path after webhookb2/)",
        &[kw("webhook.office.com").at(7)],
        &[Re(
            r"webhook\.office\.com/webhookb2/([A-Za-z0-9@/_.-]{40,})",
            Plain,
        )],
    ),
    d(
        "telegram-bot-token",
        "Telegram bot token (digits:AA...)",
        &[kw(":aa").prev(Digit).next(B64Url).back(16)],
        &[Re(r"\b[0-9]{8,10}:AA[A-Za-z0-9_-]{33}\b", Plain)],
    ),
    d(
        "twilio-credential",
        "Twilio auth token, API key (SK...) or secret assigned to a twilio.. setting",
        &[kw("twilio")],
        &[Re(
            r#"(?i:twilio)[A-Za-z0-9_.-]{0,30}(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*(?:\\?["'])?((?:SK)?[0-9a-fA-F]{32}|[A-Za-z0-9]{32})\b"#,
            Plain,
        )],
    ),
    d(
        "sendgrid-api-key",
        "SendGrid API key (SG.)",
        &[kw("sg.").prev(NonWord).next(B64Url)],
        &[Re(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", Plain)],
    ),
    d(
        "mailgun-api-key",
        "Mailgun API key (key- + 32 hex)",
        &[kw("key-").tail(Hex, 32)],
        &[Re(r"\bkey-[0-9a-f]{32}\b", Plain)],
    ),
    d(
        "brevo-api-key",
        "Brevo (Sendinblue) API key (xkeysib-)",
        &[kw("xkeysib-")],
        &[Re(r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}", Plain)],
    ),
    // ---- Payments and commerce ----------------------------------------------------------
    d(
        "stripe-secret-key",
        "Stripe secret key (sk_live_, sk_test_)",
        &[kw("sk_live_"), kw("sk_test_"), kw("sk_prod_")],
        &[Re(r"sk_(?:live|test|prod)_[A-Za-z0-9]{10,99}", Plain)],
    ),
    d(
        "stripe-restricted-key",
        "Stripe restricted key (rk_live_, rk_test_)",
        &[kw("rk_live_"), kw("rk_test_"), kw("rk_prod_")],
        &[Re(r"rk_(?:live|test|prod)_[A-Za-z0-9]{10,99}", Plain)],
    ),
    d(
        "stripe-webhook-secret",
        "Stripe webhook signing secret (whsec_)",
        &[kw("whsec_")],
        &[Re(r"whsec_[A-Za-z0-9+/=]{32,}", Plain)],
    ),
    d(
        "square-access-token",
        "Square access token (sq0atp-)",
        &[kw("sq0atp-")],
        &[Re(r"sq0atp-[0-9A-Za-z_-]{22}", Plain)],
    ),
    d(
        "square-oauth-secret",
        "Square OAuth secret (sq0csp-)",
        &[kw("sq0csp-")],
        &[Re(r"sq0csp-[0-9A-Za-z_-]{43}", Plain)],
    ),
    d(
        "shopify-access-token",
        "Shopify access token (shpat_, shpca_, shppa_)",
        &[kw("shpat_"), kw("shpca_"), kw("shppa_")],
        &[Re(r"shp(?:at|ca|pa)_[a-fA-F0-9]{32}", Plain)],
    ),
    d(
        "shopify-shared-secret",
        "Shopify shared secret (shpss_)",
        &[kw("shpss_")],
        &[Re(r"shpss_[a-fA-F0-9]{32}", Plain)],
    ),
    d(
        "shippo-api-token",
        "Shippo API token (shippo_live_, shippo_test_)",
        &[kw("shippo_").at(2)],
        &[Re(r"shippo_(?:live|test)_[a-f0-9]{40}", Plain)],
    ),
    d(
        "easypost-api-key",
        "EasyPost API key (EZAK)",
        &[kw("ezak").tail(Alnum, 54)],
        &[Re(r"\bEZAK[A-Za-z0-9]{54}\b", Plain)],
    ),
    // ---- AI and data --------------------------------------------------------------------
    d(
        "openai-api-key",
        "OpenAI API key (sk-proj-, sk-svcacct-, sk-admin-, or sk-...T3BlbkFJ...)",
        &[
            kw("t3blbkfj").back(256),
            kw("sk-proj-"),
            kw("sk-svcacct-"),
            kw("sk-admin-"),
        ],
        &[Re(
            r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|sk-[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}",
            Plain,
        )],
    ),
    d(
        "anthropic-api-key",
        "Anthropic API key (sk-ant-)",
        &[kw("sk-ant-")],
        &[Re(r"sk-ant-[a-z]{2,10}[0-9]{2}-[A-Za-z0-9_-]{32,}", Plain)],
    ),
    d(
        "huggingface-token",
        "Hugging Face access token (hf_)",
        &[kw("hf_").prev(NonWord).next(Alpha)],
        &[Re(r"\bhf_[A-Za-z]{34}\b", Plain)],
    ),
    d(
        "huggingface-org-token",
        "Hugging Face organization token (api_org_)",
        &[kw("api_org_")],
        &[Re(r"api_org_[A-Za-z]{34}", Plain)],
    ),
    d(
        "groq-api-key",
        "Groq API key (gsk_)",
        &[kw("gsk_").tail(Alnum, 52)],
        &[Re(r"gsk_[A-Za-z0-9]{52}", Plain)],
    ),
    d(
        "replicate-api-token",
        "Replicate API token (r8_)",
        &[kw("r8_").prev(NonWord).next(Alnum)],
        &[Re(r"\br8_[A-Za-z0-9]{37}", Plain)],
    ),
    d(
        "perplexity-api-key",
        "Perplexity API key (pplx-)",
        &[kw("pplx-")],
        &[Re(r"pplx-[A-Za-z0-9]{48}", Plain)],
    ),
    d(
        "xai-api-key",
        "xAI API key (xai-)",
        &[kw("xai-").tail(Alnum, 80)],
        &[Re(r"xai-[A-Za-z0-9]{80}", Plain)],
    ),
    d(
        "databricks-token",
        "Databricks personal access token (dapi)",
        &[kw("dapi").tail(Hex, 32)],
        &[Re(r"\bdapi[a-f0-9]{32}(?:-[0-9]+)?\b", Plain)],
    ),
    d(
        "mapbox-secret-token",
        "Mapbox secret token (sk.eyJ1Ijoi)",
        &[kw("sk.eyj1ijoi")],
        &[Re(r"sk\.eyJ1Ijoi[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{20,}", Plain)],
    ),
    d(
        "planetscale-password",
        "PlanetScale database password (pscale_pw_)",
        &[kw("pscale_pw_").at(5)],
        &[Re(r"pscale_pw_[A-Za-z0-9_.-]{32,64}", Plain)],
    ),
    d(
        "planetscale-token",
        "PlanetScale API token (pscale_tkn_)",
        &[kw("pscale_tkn_").at(5)],
        &[Re(r"pscale_tkn_[A-Za-z0-9_.-]{32,64}", Plain)],
    ),
    d(
        "supabase-access-token",
        "Supabase access token (sbp_)",
        &[kw("sbp_").tail(Hex, 40)],
        &[Re(r"sbp_[a-f0-9]{40}", Plain)],
    ),
    // ---- Observability and productivity -------------------------------------------------
    d(
        "datadog-api-key",
        "Datadog API or application key assigned to dd_api_key / DD-APPLICATION-KEY",
        &[
            kw("datadog").at(2),
            kw("dd_api").at(1),
            kw("dd-api").at(1),
            kw("ddapi"),
            kw("dd_app").at(1),
            kw("dd-app").at(1),
            kw("ddapp"),
        ],
        &[Re(
            r#"(?i:datadog|dd)[_-]?(?i:api|app|application)[_-]?(?i:key)(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*(?:\\?["'])?([a-fA-F0-9]{32,40})\b"#,
            Plain,
        )],
    ),
    d(
        "dynatrace-api-token",
        "Dynatrace API token (dt0c01.)",
        &[kw("dt0c01.")],
        &[Re(r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}", Plain)],
    ),
    d(
        "grafana-cloud-api-token",
        "Grafana Cloud API token (glc_)",
        &[kw("glc_").tail(B64, 32)],
        &[Re(r"glc_[A-Za-z0-9+/]{32,400}={0,2}", Plain)],
    ),
    d(
        "grafana-service-account-token",
        "Grafana service account token (glsa_)",
        &[kw("glsa_")],
        &[Re(r"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}", Plain)],
    ),
    d(
        "new-relic-user-api-key",
        "New Relic user API key (NRAK-)",
        &[kw("nrak-")],
        &[Re(r"NRAK-[A-Z0-9]{27}", Plain)],
    ),
    d(
        "sentry-org-token",
        "Sentry organization auth token (sntrys_)",
        &[kw("sntrys_")],
        &[Re(r"sntrys_[A-Za-z0-9+/=_-]{50,}", Plain)],
    ),
    d(
        "sentry-user-token",
        "Sentry user auth token (sntryu_)",
        &[kw("sntryu_")],
        &[Re(r"sntryu_[a-f0-9]{64}", Plain)],
    ),
    d(
        "postman-api-key",
        "Postman API key (PMAK-)",
        &[kw("pmak-")],
        &[Re(r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}", Plain)],
    ),
    d(
        "linear-api-key",
        "Linear API key (lin_api_)",
        &[kw("lin_api_")],
        &[Re(r"lin_api_[A-Za-z0-9]{40}", Plain)],
    ),
    d(
        "figma-pat",
        "Figma personal access token (figd_)",
        &[kw("figd_")],
        &[Re(r"figd_[A-Za-z0-9_-]{40,}", Plain)],
    ),
    d(
        "notion-token",
        "Notion integration token (ntn_)",
        &[kw("ntn_").tail(Digit, 11)],
        &[Re(r"ntn_[0-9]{11}[A-Za-z0-9]{35}", Plain)],
    ),
    d(
        "prefect-api-key",
        "Prefect API key (pnu_)",
        &[kw("pnu_").tail(Alnum, 36)],
        &[Re(r"pnu_[A-Za-z0-9]{36}", Plain)],
    ),
    // ---- Tokens, kubeconfig, URLs, headers ----------------------------------------------
    d(
        "jwt",
        "JSON Web Token (eyJ...eyJ...signature)",
        &[kw(".eyj").next(B64Url).back(2048)],
        &[Re(
            r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            Plain,
        )],
    ),
    d(
        "kubeconfig-client-key-data",
        "client-key-data: of a kubeconfig user (base64 private key); client-certificate-data is public and left alone",
        &[kw("client-key-data").guard(ASSIGN_KW).at(8)],
        &[Re(
            r#"client-key-data(?:\\?["'])?[ \t]*:[ \t]*(?:\\?["'])?([A-Za-z0-9+/]{8,}={0,2})"#,
            Plain,
        )],
    ),
    d(
        "kubeconfig-token",
        "a bare token: / \"token\": / token= value, as in a kubeconfig user",
        &[kw("token").guard(ASSIGN_KW)],
        &[Assign(r"(?:(?m:^)|[^A-Za-z0-9_.-])(?i:token)", GENERIC)],
    ),
    d(
        "dsn-postgres",
        "password in a postgres:// or postgresql:// URL",
        URL_KW,
        &[Re(
            userinfo!(r"(?i:postgres(?:ql)?)(?:\+[A-Za-z0-9]+)?"),
            URL_PW,
        )],
    ),
    d(
        "dsn-mysql",
        "password in a mysql:// or mariadb:// URL",
        URL_KW,
        &[Re(
            userinfo!(r"(?i:mysqlx?|mariadb)(?:\+[A-Za-z0-9]+)?"),
            URL_PW,
        )],
    ),
    d(
        "dsn-mongodb",
        "password in a mongodb:// or mongodb+srv:// URL",
        URL_KW,
        &[Re(userinfo!(r"(?i:mongodb(?:\+srv)?)"), URL_PW)],
    ),
    d(
        "dsn-redis",
        "password in a redis:// or rediss:// URL",
        URL_KW,
        &[Re(userinfo!(r"(?i:rediss?)"), URL_PW)],
    ),
    d(
        "dsn-amqp",
        "password in an amqp:// or amqps:// URL",
        URL_KW,
        &[Re(userinfo!(r"(?i:amqps?)"), URL_PW)],
    ),
    d(
        "dsn-mysql-go",
        "password in a Go MySQL DSN (user:password@tcp(host)/db)",
        &[kw("@tcp(").back(400), kw("@unix(").back(400)],
        &[Re(
            r#"[A-Za-z0-9_.-]{1,64}:([^\s/"'<>\\]{1,256})@(?:tcp|unix)\("#,
            URL_PW,
        )],
    ),
    d(
        "url-credentials",
        "password in any scheme://user:password@host URL",
        URL_KW,
        &[Re(userinfo!(r"[A-Za-z][A-Za-z0-9+.-]{0,31}"), URL_PW)],
    ),
    d(
        "http-bearer-token",
        "Authorization: Bearer <token>",
        &[kw("bearer").at(1).guard(Guard::SpaceThen(Token68, 8))],
        &[Re(r"(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]{8,}=*)", Word)],
    ),
    d(
        "http-basic-auth",
        "Authorization: Basic <base64 user:password>",
        &[kw("basic").guard(Guard::SpaceThen(B64, 8))],
        &[Re(r"(?i:basic)[ \t]+([A-Za-z0-9+/]{8,}={0,2})", Basic)],
    ),
    d(
        "cli-credential-flag",
        "--password value, --db-pass=value, -password value, --token, --api-key, --client-secret and any flag whose name ends in a credential word",
        &[
            kw("--password").guard(Guard::Space),
            kw("--passwd").guard(Guard::Space),
            kw("--token").guard(Guard::Space),
            kw("--secret").guard(Guard::Space),
            kw("--api-key").guard(Guard::Space),
            kw("--client-secret").guard(Guard::Space).at(7),
            kw("--access-token").guard(Guard::Space),
            kw("--auth-token").guard(Guard::Space),
            // Guarded: names such as `app-credentials` and `default-token-x` are everywhere.
            kw("-pass").guard(Guard::Space),
            kw("-password").guard(Guard::Space).at(2),
            kw("-passwd").guard(Guard::Space),
            kw("-passphrase").guard(Guard::Space).at(3),
            kw("-pwd").next(AssignStart).guard(Guard::Space),
            kw("-secret").guard(Guard::Space),
            kw("-token").guard(Guard::Space),
            kw("-apikey").guard(Guard::Space),
            kw("-credential").guard(Guard::Space),
            kw("-credentials").guard(Guard::Space),
        ],
        &[Re(
            r#"(?:^|[\s"'=])--?[A-Za-z0-9_.-]*?(?i:password|passwd|passphrase|pass|pwd|secret|token|api-?key|apikey|credentials?)[ \t=]+(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s"'\-][^\s"']*))"#,
            GENERIC,
        )],
    ),
    d(
        "cli-short-credential-flag",
        "short credential flags of known tools: curl -u user:password, --user user:password, mysql -pPASSWORD, redis-cli -a X, docker login -p X, sshpass -p X, mongo -p X",
        &[
            // Tool names followed by a space (a command line), not `mysql-0` or `mongodb://`.
            kw("curl").next(AssignStart).guard(Guard::Space),
            kw("--user").guard(Guard::Space),
            kw("mysql").guard(Guard::Space),
            kw("mysqldump").guard(Guard::Space),
            kw("mysqladmin").guard(Guard::Space),
            kw("mysqlimport").guard(Guard::Space),
            kw("mysqlcheck").guard(Guard::Space),
            kw("mysqlshow").guard(Guard::Space),
            kw("mysqlsh").guard(Guard::Space),
            kw("mariadb").guard(Guard::Space),
            kw("mariadb-dump").guard(Guard::Space),
            kw("mariadb-admin").guard(Guard::Space),
            kw("redis-cli").at(2).guard(Guard::Space),
            kw("valkey-cli").at(3).guard(Guard::Space),
            kw("keydb-cli").at(2).guard(Guard::Space),
            kw("login").guard(Guard::Space),
            kw("sshpass").guard(Guard::Space),
            kw("mongo").guard(Guard::Space),
            kw("mongosh").guard(Guard::Space),
            kw("mongodump").guard(Guard::Space),
            kw("mongorestore").guard(Guard::Space),
            kw("mongoexport").guard(Guard::Space),
            kw("mongoimport").guard(Guard::Space),
        ],
        &[
            Re(
                r#"(?:^|[\s"'])(?:-u[ \t]*|--user[ \t=]+)["']?[^\s:"'/@]{1,256}:([^\s"']{1,256})"#,
                URL_PW,
            ),
            Re(
                r#"(?i:mysql(?:dump|admin|import|check|show|sh)?|mariadb(?:-dump|-admin)?)\b[^\r\n]{0,256}?[ \t]-p([^\s"'-][^\s"']*)"#,
                URL_PW,
            ),
            Re(
                r#"(?i:redis-cli|valkey-cli|keydb-cli)\b[^\r\n]{0,256}?[ \t](?:-a|--pass)[ \t]+([^\s"']+)"#,
                URL_PW,
            ),
            Re(
                r#"(?i:login)\b[^\r\n]{0,256}?[ \t]-p[ \t]*([^\s"'-][^\s"']*)"#,
                URL_PW,
            ),
            Re(r#"(?i:sshpass)[ \t]+-p[ \t]*([^\s"']+)"#, URL_PW),
            Re(
                r#"(?i:mongo(?:sh|dump|restore|export|import)?)\b[^\r\n]{0,256}?[ \t]-p[ \t]+([^\s"'-][^\s"']*)"#,
                URL_PW,
            ),
        ],
    ),
    d(
        "prose-credential",
        "tab-separated and prose forms: password<TAB>value, \"the password is value\", token was value",
        &[
            kw("password").guard(ASSIGN_KW).at(2),
            kw("passwd").guard(ASSIGN_KW).at(1),
            kw("passphrase").guard(ASSIGN_KW).at(3),
            kw("secret").guard(ASSIGN_KW),
            kw("token").guard(ASSIGN_KW),
            kw("api_key").guard(ASSIGN_KW).at(2),
            kw("api-key").guard(ASSIGN_KW).at(2),
            kw("apikey").guard(ASSIGN_KW).at(1),
        ],
        &[
            Re(
                r#"(?i:password|passwd|passphrase|secret|token|api[_.-]?key)(?:\\?["'])?\t+["']?([^\s"'`,;&\\<>{}\[\]()][^\s"'`,;&\\<>]*)"#,
                GENERIC,
            ),
            Re(
                r#"(?i:password|passwd|passphrase|secret|token|api[_.-]?key)(?:\\?["'])?[ \t]+(?i:is|was)[ \t]*:?[ \t]+["']?([^\s"'`,;&\\<>{}\[\]()][^\s"'`,;&\\<>]*)"#,
                Prose,
            ),
        ],
    ),
    d(
        "config-directive-credential",
        "space-separated credentials of config files: redis requirepass/masterauth X, keepalived auth_pass X, haproxy insecure-password X, netrc login u password X, a line that starts with password X (netrc, fluentd)",
        &[
            kw("requirepass").at(3).guard(Guard::Space),
            kw("masterauth").at(3).guard(Guard::Space),
            kw("auth_pass").at(2).guard(Guard::Space),
            kw("insecure-password").at(5).guard(Guard::Space),
            kw("password").at(2).guard(Guard::Space),
            kw("passwd").at(1).guard(Guard::Space),
        ],
        &[
            Re(
                r#"(?i:requirepass|masterauth|auth_pass|insecure-password)[ \t]+["']?([^\s"'`,;&\\<>{}\[\]()][^\s"'`,;&\\<>]*)"#,
                GENERIC,
            ),
            // netrc on one line: `machine h login u password p`.
            Re(
                r#"(?i:\blogin)[ \t]+[^\s]+[ \t]+(?i:password|passwd)[ \t]+["']?([^\s"'`,;&\\<>{}\[\]()][^\s"'`,;&\\<>]*)"#,
                GENERIC,
            ),
            // A directive at the start of a line (netrc over several lines, fluentd, many
            // daemons): judged as prose, so `password is required` stays.
            Re(
                r#"(?m:^)[ \t]*(?i:password|passwd)[ \t]+["']?([^\s"'`,;&\\<>{}\[\]()=:][^\s"'`,;&\\<>]*)"#,
                Prose,
            ),
        ],
    ),
    // ---- Generic assignments (last: anything more specific wins) ------------------------
    d(
        "generic-password",
        "password=, passwd:, pwd=, \"password\": \"...\", DB_PASSWORD=... (the value)",
        &[
            kw("password").guard(ASSIGN_KW).at(2),
            kw("passwd").guard(ASSIGN_KW).at(1),
            kw("passphrase").guard(ASSIGN_KW).at(3),
            kw("pwd").prev(NotAlpha).next(AssignStart).guard(ASSIGN_KW),
        ],
        &[
            Assign(r"(?i:password|passwd|passphrase)", GENERIC),
            Assign(
                r"(?:(?m:^)|[^A-Za-z])(?i:pwd)",
                Value {
                    min: 4,
                    path_ok: false,
                },
            ),
        ],
    ),
    d(
        "generic-secret",
        "secret=, client_secret:, \"clientSecret\": ... (a key ending in secret)",
        &[kw("secret").guard(ASSIGN_KW)],
        &[Assign(r"(?i:secret)", GENERIC)],
    ),
    d(
        "generic-api-key",
        "api_key=, apikey:, X-API-Key: ... (the value)",
        &[
            kw("api_key").guard(ASSIGN_KW).at(2),
            kw("api-key").guard(ASSIGN_KW).at(2),
            kw("apikey").guard(ASSIGN_KW).at(1),
            kw("api.key").guard(ASSIGN_KW).at(2),
        ],
        &[Assign(r"(?i:api[_.-]?key)", GENERIC)],
    ),
    d(
        "generic-secret-key",
        "secret_key=, private_key:, signing_key=, encryption_key=, master_key= (the value)",
        &[
            kw("secret_key").guard(ASSIGN_KW),
            kw("secret-key").guard(ASSIGN_KW),
            kw("secretkey").guard(ASSIGN_KW),
            kw("private_key").guard(ASSIGN_KW).at(5),
            kw("private-key").guard(ASSIGN_KW).at(5),
            kw("privatekey").guard(ASSIGN_KW).at(4),
            kw("signing_key").guard(ASSIGN_KW),
            kw("signing-key").guard(ASSIGN_KW),
            kw("signingkey").guard(ASSIGN_KW),
            kw("encryption_key").guard(ASSIGN_KW),
            kw("encryption-key").guard(ASSIGN_KW),
            kw("encryptionkey").guard(ASSIGN_KW),
            kw("master_key").guard(ASSIGN_KW).at(3),
            kw("master-key").guard(ASSIGN_KW).at(3),
            kw("masterkey").guard(ASSIGN_KW).at(3),
        ],
        &[Assign(
            r"(?i:(?:secret|private|signing|encryption|master)[_-]?key)",
            GENERIC,
        )],
    ),
    d(
        "generic-token",
        "access_token=, auth_token:, GITHUB_TOKEN=, X-Auth-Token: ... (a key ending in token)",
        &[kw("token").guard(ASSIGN_KW)],
        &[Assign(r"[A-Za-z0-9_.-](?i:token)", GENERIC)],
    ),
    d(
        "generic-xml-credential",
        "<password>...</password>, <secret>, <token>, <apiKey> elements",
        &[
            kw("password").guard(ASSIGN_KW).at(2),
            kw("passwd").guard(ASSIGN_KW).at(1),
            kw("secret").guard(ASSIGN_KW),
            kw("token").guard(ASSIGN_KW),
            kw("api_key").guard(ASSIGN_KW).at(2),
            kw("api-key").guard(ASSIGN_KW).at(2),
            kw("apikey").guard(ASSIGN_KW).at(1),
        ],
        &[Re(
            r"<[A-Za-z0-9_:.-]*(?i:password|passwd|secret|token|api[_-]?key)>([^<\r\n]{1,1024})</",
            GENERIC,
        )],
    ),
];
