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
    let word = |t: &str| {
        WORDS.iter().any(|w| t.eq_ignore_ascii_case(w))
            || INSIDE.iter().any(|w| contains_ignore_case(t, w))
            || SUFFIX.iter().any(|w| ends_with_ignore_case(t, w))
    };
    let is = |t: &str, words: &[&str]| words.iter().any(|w| t.eq_ignore_ascii_case(w));
    let mut prev: Option<&str> = None;
    for t in tokens(name) {
        if word(t)
            || prev.is_some_and(|p| is(p, &["connection", "conn"]) && is(t, &["string", "str"]))
        {
            return true;
        }
        prev = Some(t);
    }
    false
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
