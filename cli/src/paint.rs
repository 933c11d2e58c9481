//! Colour for people, plain text for everything else: colour only when standard output is a
//! terminal, `TERM` is not `dumb`, `NO_COLOR` is unset or empty (<https://no-color.org>), and
//! the command was not given `--no-color`. Pipes, files and CI logs get no escape codes.

use std::io::IsTerminal;

/// Whether to colour what goes to standard output, and the styles used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paint(pub(crate) bool);

impl Paint {
    /// The choice for standard output, with the command's `--no-color` flag (if it has one).
    pub(crate) fn stdout(no_color_flag: bool) -> Paint {
        Paint(colour_wanted(
            no_color_flag,
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
            std::io::stdout().is_terminal(),
        ))
    }

    fn c(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    /// Allowed, passed, intact.
    pub(crate) fn ok(self, s: &str) -> String {
        self.c("32", s)
    }
    /// Denied, failed, broken.
    pub(crate) fn no(self, s: &str) -> String {
        self.c("31;1", s)
    }
    /// Held for a person.
    pub(crate) fn hold(self, s: &str) -> String {
        self.c("33", s)
    }
    /// Detail a reader may skip.
    pub(crate) fn dim(self, s: &str) -> String {
        self.c("2", s)
    }
    /// What to read first.
    pub(crate) fn bold(self, s: &str) -> String {
        self.c("1", s)
    }
}

fn colour_wanted(
    flag: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
    terminal: bool,
) -> bool {
    !flag && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb") && terminal
}

#[cfg(test)]
mod tests {
    use super::colour_wanted;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let tty = Some(OsStr::new("xterm-256color"));
        assert!(colour_wanted(false, None, tty, true));
        assert!(colour_wanted(false, Some(OsStr::new("")), tty, true));
        assert!(!colour_wanted(false, None, tty, false), "piped");
        assert!(
            !colour_wanted(false, Some(OsStr::new("1")), tty, true),
            "NO_COLOR"
        );
        assert!(!colour_wanted(true, None, tty, true), "--no-color");
        assert!(
            !colour_wanted(false, None, Some(OsStr::new("dumb")), true),
            "TERM=dumb"
        );
    }
}
