//! The path part of a request target: the canonical-path rules (`docs/kubernetes-semantics.md`,
//! "Canonical request targets") and the split into segments that `RequestInfoFactory` reads
//! ("Request classification", step 2).

use super::NonCanonical;

/// How many leading segments [`Segments`] keeps. `RequestInfoFactory` never looks past the
/// ninth (`apis`, group, version, special verb, `namespaces`, namespace, resource, name,
/// subresource), and all its length checks are "at least k more" checks that a longer path
/// passes just as well, so keeping ten is exact and avoids allocating for long proxy subpaths.
const MAX_SEGMENTS: usize = 10;

/// The leading segments of a canonical path, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segments<'a> {
    buf: [&'a str; MAX_SEGMENTS],
    len: usize,
}

impl<'a> Segments<'a> {
    /// The kept segments, in order.
    pub(super) fn as_slice(&self) -> &[&'a str] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// Check `path` against the canonical rules and split it into segments.
///
/// `path` must start with `/` and be visible ASCII without `#`, `\` or `?` (the caller checks
/// the whole target first). Refuses an empty segment (a leading `//`, an internal `//`, or more
/// than one trailing slash), a `.` or `..` segment raw or percent-encoded, any percent-escape,
/// and `;`. A single trailing slash is allowed: Go and go-restful both ignore it.
pub(super) fn parse(path: &str) -> Result<Segments<'_>, NonCanonical> {
    let body = path.strip_prefix('/').unwrap_or(path);
    if body.starts_with('/') {
        return Err(NonCanonical::EmptySegment { path: path.into() });
    }
    let body = body.strip_suffix('/').unwrap_or(body);

    let mut segments = Segments {
        buf: [""; MAX_SEGMENTS],
        len: 0,
    };
    if body.is_empty() {
        // `/`: no segments at all, as Go's `splitPath` gives for it.
        return Ok(segments);
    }
    for segment in body.split('/') {
        check_segment(path, segment)?;
        if let Some(slot) = segments.buf.get_mut(segments.len) {
            *slot = segment;
            segments.len += 1;
        }
    }
    Ok(segments)
}

/// Check one segment; `path` is only for the error.
fn check_segment(path: &str, segment: &str) -> Result<(), NonCanonical> {
    if segment.is_empty() {
        return Err(NonCanonical::EmptySegment { path: path.into() });
    }
    // Dot segments first, so `%2e%2e` is reported as the `..` it decodes to.
    if is_dot_segment(segment) {
        return Err(NonCanonical::DotSegment { path: path.into() });
    }
    if segment.contains('%') {
        return Err(NonCanonical::PercentEscapeInPath { path: path.into() });
    }
    if segment.contains(';') {
        return Err(NonCanonical::SemicolonInPath { path: path.into() });
    }
    Ok(())
}

/// Whether `segment` decodes to `.` or `..` (each dot raw or as `%2e`/`%2E`).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    matches!(dots, 1 | 2)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Result<Vec<&str>, &'static str> {
        parse(path)
            .map(|s| s.as_slice().to_vec())
            .map_err(|e| e.code())
    }

    #[test]
    fn splits_and_allows_one_trailing_slash() {
        assert_eq!(segments("/"), Ok(vec![]));
        assert_eq!(segments("/api"), Ok(vec!["api"]));
        assert_eq!(segments("/api/v1/pods/"), Ok(vec!["api", "v1", "pods"]));
        assert_eq!(
            segments("/api/v1/namespaces/default/pods/web-1/proxy/"),
            Ok(vec![
                "api",
                "v1",
                "namespaces",
                "default",
                "pods",
                "web-1",
                "proxy"
            ])
        );
    }

    #[test]
    fn keeps_only_the_segments_request_info_reads() {
        let long = "/apis/g/v1/watch/namespaces/ns/pods/p/proxy/a/b/c/d/e";
        let got = segments(long);
        assert_eq!(got.map(|s| s.len()), Ok(MAX_SEGMENTS));
    }

    #[test]
    fn refuses_empty_segments() {
        for path in [
            "//",
            "//api/v1/pods",
            "/api//v1",
            "/api/v1/namespaces//pods",
            "/api/v1/pods//",
        ] {
            assert_eq!(segments(path), Err("empty-segment"), "{path}");
        }
    }

    #[test]
    fn refuses_dot_segments_raw_and_encoded() {
        for path in [
            "/.",
            "/api/v1/pods/..",
            "/api/v1/pods/../secrets",
            "/api/v1/pods/./x",
            "/api/v1/secrets/%2e%2e",
            "/api/v1/secrets/%2E.",
            "/api/v1/secrets/.%2e/",
            "/a/%2e",
        ] {
            assert_eq!(segments(path), Err("dot-segment"), "{path}");
        }
        // Three dots and dotted names are ordinary segments.
        assert!(segments("/api/v1/x/...").is_ok());
        assert!(segments("/api/v1/x/.hidden").is_ok());
    }

    #[test]
    fn refuses_percent_escapes_and_semicolons() {
        for path in [
            "/api/v1/namespaces/default/%73ecrets",
            "/api/v1/secrets%2Fdb",
            "/api/v1/x%5Cy",
            "/api/v1/x%",
            "/api/v1/pods%3Fwatch=1",
            "/api/v1/%2e%2e%2e",
        ] {
            assert_eq!(segments(path), Err("percent-escape-in-path"), "{path}");
        }
        assert_eq!(segments("/api/v1/pods;x=1"), Err("semicolon-in-path"));
    }
}
