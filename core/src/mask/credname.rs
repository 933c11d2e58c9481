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

/// Split a name into lowercase tokens (see the module docs).
pub(crate) fn tokens(name: &str) -> Vec<String> {
    let b = name.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in b.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some(&p) = i.checked_sub(1).and_then(|j| b.get(j)) {
            let next_lower = b.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            let boundary = (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                || (p.is_ascii_uppercase() && c.is_ascii_uppercase() && next_lower)
                || (p.is_ascii_digit() != c.is_ascii_digit() && p.is_ascii_alphanumeric());
            if boundary && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.push(char::from(c.to_ascii_lowercase()));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether `name` names a credential (see the module docs for the rule).
pub fn is_credential_name(name: &str) -> bool {
    let toks = tokens(name);
    let word = |t: &str| {
        WORDS.contains(&t)
            || INSIDE.iter().any(|w| t.contains(w))
            || SUFFIX.iter().any(|w| t.ends_with(w))
    };
    toks.iter().any(|t| word(t))
        || toks.windows(2).any(|w| {
            matches!(
                (w[0].as_str(), w[1].as_str()),
                ("connection" | "conn", "string" | "str")
            )
        })
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
            .is_some_and(|t| REFERENCES.contains(&t.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_separators_case_and_digits() {
        assert_eq!(tokens("DB_PASS"), ["db", "pass"]);
        assert_eq!(tokens("dbPassword"), ["db", "password"]);
        assert_eq!(tokens("DBPassword"), ["db", "password"]);
        assert_eq!(tokens("x-api.key"), ["x", "api", "key"]);
        assert_eq!(tokens("PASSWORD2"), ["password", "2"]);
        assert_eq!(tokens("--db-pass"), ["db", "pass"]);
        assert_eq!(tokens(""), Vec::<String>::new());
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
