//! Credentials cut short at the end of a log stream.
//!
//! A log read with `limitBytes` (or a stream that stops) can end inside a credential: `ghp_`
//! and 30 of its 36 characters, `AWS_SECRET_ACCESS_KEY=` and 39 of 40. The detectors want whole
//! tokens, so they miss it, and the part shown is most of the secret. At the end of a stream the
//! last line's trailing run of token bytes is read the strictest way: if it holds a known token
//! prefix, or is the value of a credential assignment (`KEY=`, `"key":"`, `key: `, a tab, a
//! credential flag, `Bearer `/`Basic `, `user:` in a URL), it is masked from there to the end.

use super::credname::is_credential_name;

/// Prefixes of known token formats (ASCII case-insensitive), from the detector catalog: what
/// follows one at the end of a stream is masked with it.
const PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "glptt-",
    "glrt-",
    "gldt-",
    "akia",
    "asia",
    "abia",
    "acca",
    "aiza",
    "ya29.",
    "gocspx-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxe",
    "xapp-",
    "sk-",
    "sk_live_",
    "sk_test_",
    "sk_prod_",
    "rk_live_",
    "rk_test_",
    "rk_prod_",
    "whsec_",
    "npm_",
    "pypi-",
    "dckr_pat_",
    "hvs.",
    "hvb.",
    "dop_v1_",
    "doo_v1_",
    "dor_v1_",
    "hrku-",
    "tskey-",
    "age-secret-key-",
    "ops_eyj",
    "atatt3",
    "sq0atp-",
    "sq0csp-",
    "shpat_",
    "shpca_",
    "shppa_",
    "shpss_",
    "shippo_",
    "xkeysib-",
    "sg.",
    "hf_",
    "api_org_",
    "gsk_",
    "r8_",
    "pplx-",
    "xai-",
    "dapi",
    "pscale_pw_",
    "pscale_tkn_",
    "sbp_",
    "dt0c01.",
    "glc_",
    "glsa_",
    "nrak-",
    "sntrys_",
    "sntryu_",
    "pmak-",
    "lin_api_",
    "figd_",
    "ntn_",
    "pnu_",
    "ltai",
    "eyj",
    "hooks.slack.com/",
    "/api/webhooks/",
    "webhook.office.com/",
    "accountkey=",
    "sharedaccesskey=",
    "sig=",
    "amzn.mws.",
    "1//0",
    "ezak",
    "akcp",
    "pul-",
];

/// How much of a trailing run is searched for a token prefix.
const SCAN: usize = 16 * 1024;

/// Words before a value that make it a credential (`Authorization: Bearer X`, `token X`).
const SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate"];

/// Short flags whose value is a credential (`mysql -p X`, `redis-cli -a X`, `curl -u u:p`).
const SHORT_FLAGS: &[&[u8]] = &[b"-p", b"-a", b"-u", b"--user"];

/// Bytes that end a run of token bytes.
fn stops(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"'`,;<>(){}[]\\".contains(&b)
}

/// Where the masked tail of the last, unterminated line of a stream starts, if the line ends
/// inside what may be a credential (see the module docs).
pub(crate) fn partial_tail(line: &[u8]) -> Option<usize> {
    let t0 = line.iter().rposition(|&b| stops(b)).map_or(0, |p| p + 1);
    let tail = line.get(t0..)?;
    if tail.is_empty() {
        return None;
    }
    // A known token prefix in the run (its last `SCAN` bytes: a token is shorter, and a run of
    // megabytes costs no more than that).
    let from = tail.len().saturating_sub(SCAN);
    let lower = tail[from..].to_ascii_lowercase();
    let prefixed = PREFIXES
        .iter()
        .filter_map(|p| memchr::memmem::find(&lower, p.as_bytes()))
        .min()
        .map(|at| from + at);
    // An assignment inside the run: `KEY=v`, `--db-pass=v`, `password:v`, `user:` in a URL.
    let assigned = assignment_in(tail);
    let own = match (prefixed, assigned) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(at) = own {
        return Some(t0 + at);
    }
    // Short credential flags joined to their value: `-pSECRET`.
    if tail.len() > 2 && (tail.starts_with(b"-p") || tail.starts_with(b"-a")) {
        return Some(t0 + 2);
    }
    // The run is the value of what comes before it.
    value_of_previous(&line[..t0]).then_some(t0)
}

/// The offset in `run` where an assigned credential value starts.
fn assignment_in(run: &[u8]) -> Option<usize> {
    // `scheme://user:partial` (no `@` yet: it was cut before it).
    if let Some(s) = memchr::memmem::find(run, b"://") {
        let rest = &run[s + 3..];
        if let Some(c) = rest.iter().position(|&b| b == b':')
            && !rest[c..].contains(&b'@')
            && !rest[..c].contains(&b'/')
        {
            return Some(s + 3 + c + 1);
        }
        return None;
    }
    let eq = run.iter().position(|&b| b == b'=' || b == b':')?;
    let key = &run[..eq];
    let mut v = eq + 1;
    while run
        .get(v)
        .is_some_and(|&b| b == b'=' || b == b'>' || b == b':')
    {
        v += 1;
    }
    let key = std::str::from_utf8(key).ok()?;
    (is_credential_name(key) && v < run.len()).then_some(v)
}

/// Whether what precedes a trailing run makes the run a credential value: an assignment to a
/// credential key (with quotes, spaces or a tab around it), a credential flag, an
/// authorization scheme, or `password is`.
fn value_of_previous(before: &[u8]) -> bool {
    let mut i = before.len();
    let skip = |i: &mut usize, set: &[u8]| {
        while *i > 0 && set.contains(&before[*i - 1]) {
            *i -= 1;
        }
    };
    skip(&mut i, b"\"'\\ ");
    let tab = i > 0 && before[i - 1] == b'\t';
    skip(&mut i, b" \t");
    let mut assign = tab;
    if i > 0 && matches!(before[i - 1], b'=' | b':' | b'>') {
        assign = true;
        i -= 1;
        skip(&mut i, b"=:>");
    }
    skip(&mut i, b"\"'\\ \t");
    let end = i;
    while i > 0 && !stops(before[i - 1]) && !matches!(before[i - 1], b'=' | b':') {
        i -= 1;
    }
    let word = &before[i..end];
    let Ok(w) = std::str::from_utf8(word) else {
        return false;
    };
    let lw = w.to_ascii_lowercase();
    if (assign || w.starts_with('-'))
        && (SHORT_FLAGS.contains(&word) || is_credential_name(w.trim_start_matches('-')))
    {
        return true;
    }
    if SCHEMES.contains(&lw.as_str()) {
        return true;
    }
    // `the password is X`: the word before `is`.
    if lw == "is" || lw == "was" {
        return value_of_previous_word(&before[..i]);
    }
    false
}

fn value_of_previous_word(before: &[u8]) -> bool {
    let end = before
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    let start = before[..end]
        .iter()
        .rposition(|&b| stops(b))
        .map_or(0, |p| p + 1);
    std::str::from_utf8(&before[start..end]).is_ok_and(is_credential_name)
}

#[cfg(test)]
mod tests {
    use super::partial_tail;

    fn tail(s: &str) -> Option<&str> {
        partial_tail(s.as_bytes()).map(|p| &s[p..])
    }

    #[test]
    fn finds_the_cut_credential() {
        assert_eq!(tail("export AWS_SECRET_ACCESS_KEY=hB6hRL"), Some("hB6hRL"));
        assert_eq!(tail("token: ghp_BMUAPTT0aZ"), Some("ghp_BMUAPTT0aZ"));
        assert_eq!(tail("clone https://x:ghp_abc"), Some("ghp_abc"));
        assert_eq!(tail("db postgres://orders:0rd"), Some("0rd"));
        assert_eq!(tail(r#"{"password":"Pg-Up"#), Some("Pg-Up"));
        assert_eq!(tail(r#"{\"password\":\"Pg-Up"#), Some("Pg-Up"));
        assert_eq!(tail("Authorization: Bearer c9cb3d"), Some("c9cb3d"));
        assert_eq!(tail("password\thun"), Some("hun"));
        assert_eq!(tail("mysql -u root -phun"), Some("hun"));
        assert_eq!(tail("redis-cli -a hun"), Some("hun"));
        assert_eq!(tail("app --db-pass hun"), Some("hun"));
        assert_eq!(tail("the admin password is hun"), Some("hun"));
        assert_eq!(tail("client-key-data: LS0tLS1"), Some("LS0tLS1"));
    }

    #[test]
    fn leaves_ordinary_endings() {
        for s in [
            "GET /healthz 200",
            "level=info msg=ok",
            "user=bob",
            "",
            "the end ",
            "x=",
        ] {
            assert_eq!(tail(s), None, "{s}");
        }
    }
}
