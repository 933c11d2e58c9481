//! Untrusted strings shown to people: quoted for the shell a person pastes them into, and escaped
//! for the terminal that prints them.
//!
//! Everything kubeleash prints for a person (the `kubectl` line of an approval prompt or a replay,
//! an identity from an OIDC claim, a reason, a target) may carry bytes the agent chose. A word
//! printed into a shell command is quoted so that pasting it runs exactly that word; a string
//! printed to a terminal has its control characters escaped so that it cannot move the cursor,
//! rewrite what was printed before it, or set the window title.
//!
//! ```
//! use kubeleash_core::display::{printable, shell_word};
//!
//! assert_eq!(shell_word("web-1"), "web-1");
//! assert_eq!(shell_word("x$(touch${IFS}PWNED)"), "'x$(touch${IFS}PWNED)'");
//! assert_eq!(shell_word("it's"), r"'it'\''s'");
//! assert_eq!(printable("agent\u{1b}]0;owned\u{7}"), r"agent\u{1b}]0;owned\u{7}");
//! ```

use std::borrow::Cow;

/// Bytes that need no quoting in a POSIX shell word, wherever the word stands.
fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b)
}

/// `word` as one POSIX shell word: as it is when every byte is plain, otherwise in single quotes
/// (inside which the shell expands nothing) with each `'` written as `'\''`. Control characters
/// are also escaped (see [`printable`]), so the quoted word is safe to print to a terminal too;
/// a word that had any no longer round-trips through the shell, which is the point: it is shown,
/// not run as it was.
pub fn shell_word(word: &str) -> Cow<'_, str> {
    if !word.is_empty() && word.bytes().all(plain_byte) {
        return Cow::Borrowed(word);
    }
    let shown = printable(word);
    let mut out = String::with_capacity(shown.len() + 2);
    out.push('\'');
    for c in shown.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Whether a character must not reach a terminal as it is: C0 and C1 controls (ESC starts every
/// terminal escape sequence; CSI is also a C1 control), DEL, and the Unicode format and
/// separator characters that reorder or hide text (bidirectional overrides, zero-width, line and
/// paragraph separators).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}')
}

/// `text` with every character that could act on a terminal written as a `\u{..}` escape (and
/// `\` itself doubled when anything was escaped, so that an escape in the output is never
/// ambiguous with one the input spelled out). Text without such characters is returned as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unprintable(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_plain() {
        for w in [
            "kubectl",
            "get",
            "-n",
            "dev",
            "--dry-run=server",
            "a.b/c:d@e%f+g,h",
        ] {
            assert_eq!(shell_word(w), w);
        }
    }

    #[test]
    fn everything_else_is_single_quoted() {
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("`id`"), "'`id`'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word("a'b"), r"'a'\''b'");
        assert_eq!(shell_word("*"), "'*'");
        assert_eq!(shell_word("~"), "'~'");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain \\ text"), "plain \\ text");
        assert_eq!(printable("a\nb"), r"a\u{a}b");
        assert_eq!(printable("\\\u{1b}[2J"), r"\\\u{1b}[2J");
        assert_eq!(printable("\u{9b}31m"), r"\u{9b}31m");
        assert_eq!(printable("abc\u{202e}fed"), r"abc\u{202e}fed");
        assert_eq!(shell_word("a\rb"), r"'a\u{d}b'");
    }

    #[test]
    fn no_output_carries_a_control_character() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let s = format!("x{c}y");
            assert!(!printable(&s).chars().any(unprintable), "{c:?}");
            assert!(!shell_word(&s).chars().any(unprintable), "{c:?}");
        }
    }
}
