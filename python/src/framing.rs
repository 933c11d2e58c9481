//! The request's framing is kubeleash's, never the caller's: the body that was decided and
//! recorded is the body the upstream gets, because the length, the transfer coding and the host
//! are recomputed by the hyper client from the body and the kubeconfig's server. So every header
//! that frames the message or belongs to the hop to kubeleash is dropped before the request
//! reaches the layer (which recomputes them too: defense in depth).

use http::HeaderMap;
use http::header::{CONNECTION, UPGRADE};

/// Headers that frame the message or belong to one hop, dropped whatever their value.
const DROPPED: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

/// Why a request cannot be carried.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It asks to switch protocols (exec, attach, port-forward, or any other upgrade).
    Upgrade,
}

/// Drop the framing and hop-by-hop headers, and the headers `Connection` names as hop-by-hop.
/// A request that asks for an upgrade is refused: the in-process client carries no upgraded
/// connection, and dropping the header would change what the request is.
pub(crate) fn strip(headers: &mut HeaderMap) -> Result<(), Refused> {
    if headers.contains_key(UPGRADE) {
        return Err(Refused::Upgrade);
    }
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if named.iter().any(|t| t == "upgrade") {
        return Err(Refused::Upgrade);
    }
    for name in named {
        headers.remove(name.as_str());
    }
    for name in DROPPED {
        headers.remove(name);
    }
    Ok(())
}
