//! [`RecordedRequest`]: what the fake saw of one request, kept raw so tests can
//! assert on exactly what the gateway forwarded.

use std::time::Instant;

use bytes::Bytes;

/// One request as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, e.g. `"DELETE"`.
    pub method: String,
    /// The request target as sent, e.g. `"/api/v1/campaigns?api_key=x&a=%20b"`
    /// (for HTTP/2, the `:path` pseudo-header).
    pub target: String,
    /// Header fields with lower-case names, duplicates kept. Values of one name
    /// stay in arrival order; names appear in order of first arrival (hyper
    /// groups repeated names together).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request body, or as much of it as arrived.
    pub body: Bytes,
    /// `false` if the body was cut short (the client went away mid-body).
    pub body_complete: bool,
    /// When the request head arrived (before its body was read).
    pub received_at: Instant,
    /// The key it carried (percent-decoded; from the query, or from the top of
    /// a JSON body on POST, PATCH and PUT when the query had none), accepted
    /// or not.
    pub api_key: Option<String>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}
