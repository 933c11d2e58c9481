//! Whether a name (an env var, an HTTP header, a command-line flag) names a credential.
//!
//! The rule, token-based so that every spelling of a word is caught the same way:
//!
//! 1. The name is split into tokens at every byte that is not an ASCII letter or digit (`_`,
//!    `-`, `.`, `/`, spaces), at camelCase boundaries (`dbPassword` → `db` `password`,
//!    `DBPassword` → `db` `password`) and between letters and digits (`PASSWORD2`). Tokens are
//!    compared lowercase.
//! 2. It names a credential when a token is one of the credential words (`pass`, `passwd`,
//!    `password`, `passphrase`, `pwd`, `pw`, `secret`, `token`, `key`, `apikey`, `credential`,
//!    `cred`, `auth`, `authorization`, `cert`, `private`, `session`, `cookie`, `dsn`,
//!    `connstr`, `signature`, `salt`, `otp`, `pin`, plurals included), or when adjacent tokens
//!    spell `connection string` / `conn str`;
//! 3. or when a token *contains* one of the unambiguous words (`password`, `passwd`,
//!    `passphrase`, `secret`, `token`, `apikey`, `credential`, `cookie`): `PGPASSWORD`,
//!    `clientsecret`, `accesstoken`;
//! 4. or when a token *ends* with a short one (`pass`, `pwd`, `pw`, `key`, `auth`): `PGPASS`,
//!    `MYSQLPWD`, `privkey`, `basicauth`.
//!
//! False positives (`BYPASS`, `MONKEY`) cost a masked value in a view; a false negative leaks
//! a credential, so the rule errs towards masking.

/// Tokens that name a credential on their own.
const WORDS: &[&str] = &[
    "pass",
    "passes",
    "passwd",
    "password",
    "passwords",
    "passphrase",
    "pwd",
    "pw",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "keys",
    "apikey",
    "apikeys",
    "credential",
    "credentials",
    "cred",
    "creds",
    "auth",
    "authorization",
    "cert",
    "certs",
    "private",
    "privatekey",
    "session",
    "sessionid",
    "cookie",
    "cookies",
    "dsn",
    "connstr",
    "connectionstring",
    "signature",
    "salt",
    "otp",
    "pin",
];

/// Words that name a credential wherever they occur in a token.
const INSIDE: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "cookie",
];

/// Words that name a credential at the end of a token.
const SUFFIX: &[&str] = &["pass", "pwd", "pw", "key", "auth"];

/// The tokens of a name (see the module docs), as slices of it, in their original case:
/// compared ignoring ASCII case, so judging a key allocates nothing (the masker judges every
/// key of a ConfigMap and of every custom resource).
struct Tokens<'a> {
    name: &'a str,
    at: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.name.as_bytes();
        while b.get(self.at).is_some_and(|c| !c.is_ascii_alphanumeric()) {
            self.at += 1;
        }
        let start = self.at;
        let mut p = *b.get(start)?;
        let mut i = start + 1;
        while let Some(&c) = b.get(i) {
            let next_lower = b.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            let boundary = !c.is_ascii_alphanumeric()
                || (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                || (p.is_ascii_uppercase() && c.is_ascii_uppercase() && next_lower)
                || p.is_ascii_digit() != c.is_ascii_digit();
            if boundary {
                break;
            }
            p = c;
            i += 1;
        }
        self.at = i;
        // Tokens are ASCII, so both ends are character boundaries.
        self.name.get(start..i)
    }
}

fn tokens(name: &str) -> Tokens<'_> {
    Tokens { name, at: 0 }
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn ends_with_ignore_case(hay: &str, suffix: &str) -> bool {
    hay.len()
        .checked_sub(suffix.len())
        .and_then(|start| hay.as_bytes().get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
}

/// Whether `name` names a credential (see the module docs for the rule).
pub fn is_credential_name(name: &str) -> bool {
    let is = |t: &[u8], words: &[&str]| words.iter().any(|w| t == w.as_bytes());
    // Tokens are compared lowercased in a buffer on the stack: the masker asks this for every
    // label and annotation key, env name and flag, so one pass per token, no allocation.
    let mut prev = [0u8; TOKEN_BUF];
    let mut prev_len = None;
    for t in tokens(name) {
        let mut buf = [0u8; TOKEN_BUF];
        let Some(lower) = buf.get_mut(..t.len()) else {
            // Longer than any word pair we compare: judged as it is, case folded per compare.
            if long_token_is_word(t) {
                return true;
            }
            prev_len = None;
            continue;
        };
        lower.copy_from_slice(t.as_bytes());
        lower.make_ascii_lowercase();
        let lower = &*lower;
        if is_word(lower)
            || prev_len
                .and_then(|n| prev.get(..n))
                .is_some_and(|p| is(p, &["connection", "conn"]) && is(lower, &["string", "str"]))
        {
            return true;
        }
        prev[..lower.len()].copy_from_slice(lower);
        prev_len = Some(lower.len());
    }
    false
}

/// Tokens up to this long are lowercased on the stack; longer ones take the slower path.
const TOKEN_BUF: usize = 48;

/// A lowercase token that names a credential on its own, holds an unambiguous word, or ends
/// with a short one. Written as matches the compiler turns into a length switch and a scan
/// of the token's bytes (asked for every key, env name and flag; the lists above stay the
/// definition, and a test checks this against them).
fn is_word(t: &[u8]) -> bool {
    let whole = matches!(
        t,
        b"pass"
            | b"passes"
            | b"passwd"
            | b"password"
            | b"passwords"
            | b"passphrase"
            | b"pwd"
            | b"pw"
            | b"secret"
            | b"secrets"
            | b"token"
            | b"tokens"
            | b"key"
            | b"keys"
            | b"apikey"
            | b"apikeys"
            | b"credential"
            | b"credentials"
            | b"cred"
            | b"creds"
            | b"auth"
            | b"authorization"
            | b"cert"
            | b"certs"
            | b"private"
            | b"privatekey"
            | b"session"
            | b"sessionid"
            | b"cookie"
            | b"cookies"
            | b"dsn"
            | b"connstr"
            | b"connectionstring"
            | b"signature"
            | b"salt"
            | b"otp"
            | b"pin"
    );
    let suffix = t.ends_with(b"pass")
        || t.ends_with(b"pwd")
        || t.ends_with(b"pw")
        || t.ends_with(b"key")
        || t.ends_with(b"auth");
    whole || suffix || (0..t.len()).any(|i| inside_at(&t[i..]))
}

/// Whether one of [`INSIDE`] starts `t`.
#[inline]
fn inside_at(t: &[u8]) -> bool {
    match t.first() {
        Some(b'p') => {
            t.starts_with(b"password") || t.starts_with(b"passwd") || t.starts_with(b"passphrase")
        }
        Some(b's') => t.starts_with(b"secret"),
        Some(b't') => t.starts_with(b"token"),
        Some(b'a') => t.starts_with(b"apikey"),
        Some(b'c') => t.starts_with(b"credential") || t.starts_with(b"cookie"),
        _ => false,
    }
}

/// [`is_word`] for a token too long for the stack buffer, ignoring ASCII case as it goes.
fn long_token_is_word(t: &str) -> bool {
    WORDS.iter().any(|w| t.eq_ignore_ascii_case(w))
        || INSIDE.iter().any(|w| contains_ignore_case(t, w))
        || SUFFIX.iter().any(|w| ends_with_ignore_case(t, w))
}

/// Last tokens that make a credential-looking key name a reference to a credential, not the
/// credential itself: `secretName`, `passwordSecretRef`, `tokenPath`, `DB_PASSWORD_FILE`.
const REFERENCES: &[&str] = &[
    "name",
    "names",
    "ref",
    "refs",
    "namespace",
    "kind",
    "type",
    "path",
    "paths",
    "file",
    "dir",
    "mount",
    "field",
];

/// Whether the key of a string value in a ConfigMap's `data` or an object of unknown kind names
/// a credential: [`is_credential_name`], unless its last word says the value only refers to
/// one (`secretName`, `tokenPath`).
pub fn is_credential_key(name: &str) -> bool {
    is_credential_name(name)
        && !tokens(name)
            .last()
            .is_some_and(|t| REFERENCES.iter().any(|r| t.eq_ignore_ascii_case(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower_tokens(name: &str) -> Vec<String> {
        tokens(name).map(str::to_ascii_lowercase).collect()
    }

    #[test]
    fn splits_on_separators_case_and_digits() {
        assert_eq!(lower_tokens("DB_PASS"), ["db", "pass"]);
        assert_eq!(lower_tokens("dbPassword"), ["db", "password"]);
        assert_eq!(lower_tokens("DBPassword"), ["db", "password"]);
        assert_eq!(lower_tokens("x-api.key"), ["x", "api", "key"]);
        assert_eq!(lower_tokens("PASSWORD2"), ["password", "2"]);
        assert_eq!(lower_tokens("--db-pass"), ["db", "pass"]);
        assert_eq!(lower_tokens(""), Vec::<String>::new());
    }

    #[test]
    fn credential_names() {
        for n in [
            "DB_PASS",
            "DB_PASSWORD",
            "PGPASS",
            "PGPASSWORD",
            "MYSQL_PWD",
            "MYSQL_ROOT_PWD",
            "ROOT_PW",
            "api-key",
            "X-API-Key",
            "apiKey",
            "GITHUB_TOKEN",
            "accessToken",
            "client_secret",
            "CLIENTSECRET",
            "AWS_SECRET_ACCESS_KEY",
            "Authorization",
            "Proxy-Authorization",
            "Cookie",
            "X-Auth-Token",
            "SESSION_ID",
            "DATABASE_DSN",
            "ConnectionString",
            "DB_CONNECTION_STRING",
            "DB_CONN_STR",
            "TLS_PRIVATE_KEY",
            "privkey",
            "credentials",
            "BASICAUTH",
            "db.pass",
            "jwtSigningKey",
        ] {
            assert!(is_credential_name(n), "{n}");
        }
        for n in [
            "MODE",
            "LOG_LEVEL",
            "Author",
            "HOSTNAME",
            "PORT",
            "DB_HOST",
            "DB_USER",
            "PATH",
            "KEYCLOAK_URL",
            "Content-Type",
            "User-Agent",
            "PASSAGE",
            "TOKENIZERS_PARALLELISM_DISABLED_X",
            "",
        ] {
            // TOKENIZERS contains "token": an accepted false positive, checked as such.
            let expected = n.starts_with("TOKENIZERS");
            assert_eq!(is_credential_name(n), expected, "{n}");
        }
    }

    /// The fast [`is_word`] says what the word lists say, on every token built from their words
    /// and on random ones.
    #[test]
    fn is_word_agrees_with_the_lists() {
        let listed = |t: &str| {
            WORDS.contains(&t)
                || INSIDE.iter().any(|w| t.contains(w))
                || SUFFIX.iter().any(|w| t.ends_with(w))
        };
        let mut tokens: Vec<String> = Vec::new();
        for w in WORDS.iter().chain(INSIDE).chain(SUFFIX) {
            for affix in ["", "x", "db", "s", "ing", "word", "pass"] {
                tokens.push(format!("{w}{affix}"));
                tokens.push(format!("{affix}{w}"));
                tokens.push(format!("{affix}{w}{affix}"));
                if w.len() > 1 {
                    tokens.push(w[..w.len() - 1].to_string());
                    tokens.push(w[1..].to_string());
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let len = (seed % 12) as usize;
            let t: String = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    b"pasworduthkeyincdtl"[(seed >> 33) as usize % 19] as char
                })
                .collect();
            tokens.push(t);
        }
        for t in &tokens {
            assert_eq!(is_word(t.as_bytes()), listed(t), "{t}");
        }
    }

    #[test]
    fn credential_keys_leave_references_alone() {
        for n in [
            "password",
            "DB_PASSWORD",
            "pass",
            "apiKey",
            "tls.key",
            "client_secret",
        ] {
            assert!(is_credential_key(n), "{n}");
        }
        for n in [
            "secretName",
            "passwordSecretRef",
            "tokenPath",
            "DB_PASSWORD_FILE",
            "host",
        ] {
            assert!(!is_credential_key(n), "{n}");
        }
    }
}
