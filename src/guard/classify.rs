//! Classification: which requests are destructive. The guard must act on what
//! SmartLead will act on, and SmartLead's router is lenient (case-insensitive,
//! trailing slashes ignored, percent-decoding, and a CDN in front that resolves
//! dot segments and merges slashes; its id parsing may accept `0108` or
//! `108abc`). So the path is canonicalised the way such a stack might read it;
//! a DELETE that canonicalises onto a campaign is guarded only when it is
//! spelled exactly `/api/v1/campaigns/{id}`, and refused otherwise. Method
//! overrides are refused on every request.

use http::header::HeaderName;
use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

/// What a request is, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Forwarded as it is.
    Passthrough,
    /// `DELETE /api/v1/campaigns/{id}`: guarded.
    DeleteCampaign { campaign_id: u64 },
}

impl Operation {
    /// The name stored in `operations.kind` and `audit_events.operation`.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Passthrough => "passthrough",
            Operation::DeleteCampaign { .. } => "delete_campaign",
        }
    }
}

/// Why a request is refused before anything else happens (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("method overrides are not accepted ({0}); send the real method instead")]
    MethodOverride(&'static str),
    // The message never repeats the path: it could hold a pasted key.
    #[error(
        "this request could delete a campaign but is not spelled exactly \
         `DELETE /api/v1/campaigns/{{id}}`; send exactly that form so the guard can check it"
    )]
    AmbiguousDelete {
        /// The campaign it would reach, as far as it can be told (for the
        /// audit trail's per-campaign history).
        campaign_id: Option<i64>,
    },
    #[error("campaign id {0} is out of range; SmartLead's ids are at most 9223372036854775807")]
    IdOutOfRange(String),
    #[error(
        "form-encoded bodies are not accepted on a campaign's own route (a `_method` field \
         could turn them into a delete); SmartLead's API takes JSON"
    )]
    FormOnCampaign,
}

impl ClassifyError {
    /// Whether the refused request was a campaign delete (spelled another
    /// way), rather than some other request refused before classification.
    pub fn is_campaign_delete(&self) -> bool {
        matches!(
            self,
            ClassifyError::AmbiguousDelete { .. } | ClassifyError::IdOutOfRange(_)
        )
    }
}

static OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
];

/// Classifies a request by method, raw path, raw query and headers.
pub fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Operation, ClassifyError> {
    for name in &OVERRIDE_HEADERS {
        if headers.contains_key(name) {
            return Err(ClassifyError::MethodOverride(name.as_str()));
        }
    }
    if let Some(q) = query {
        if has_method_param(q) {
            return Err(ClassifyError::MethodOverride("_method query parameter"));
        }
    }
    if !method.as_str().eq_ignore_ascii_case("DELETE") {
        if is_form(headers) && is_campaign_item(&canonical_segments(path)) {
            return Err(ClassifyError::FormOnCampaign);
        }
        return Ok(Operation::Passthrough);
    }
    let segments = canonical_segments(path);
    if !is_campaign_item(&segments) {
        return Ok(Operation::Passthrough);
    }
    let id = &segments[3];
    let exact = *method == Method::DELETE
        && path.strip_prefix("/api/v1/campaigns/") == Some(id.as_str())
        && is_canonical_id(id);
    if !exact {
        return Err(ClassifyError::AmbiguousDelete {
            campaign_id: leading_id(id),
        });
    }
    // Ids are stored as SQLite integers: one past i64 would wrap negative.
    match id.parse::<i64>() {
        Ok(campaign_id) if campaign_id > 0 => Ok(Operation::DeleteCampaign {
            campaign_id: campaign_id as u64,
        }),
        _ => Err(ClassifyError::IdOutOfRange(id.clone())),
    }
}

/// The number a lenient id parser would read (`0108`, `108abc`), if it fits.
fn leading_id(id: &str) -> Option<i64> {
    let digits = id.len() - id.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    id[..digits].parse::<i64>().ok().filter(|v| *v > 0)
}

/// `/api/v1/campaigns/{one segment}`, after canonicalisation.
fn is_campaign_item(segments: &[String]) -> bool {
    segments.len() == 4 && segments[0] == "api" && segments[1] == "v1" && segments[2] == "campaigns"
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("application/x-www-form-urlencoded")
                || v.starts_with("multipart/form-data")
        })
        .unwrap_or(false)
}

/// A decimal id without leading zeros (what SmartLead issues).
fn is_canonical_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 19
        && id.bytes().all(|b| b.is_ascii_digit())
        && !(id.len() > 1 && id.starts_with('0'))
}

/// The path as a lenient stack might read it: backslashes as slashes, matrix
/// parameters dropped, percent-decoding repeated (double encoding), empty and
/// `.` segments dropped, `..` resolved, lower case.
pub fn canonical_segments(path: &str) -> Vec<String> {
    let mut decoded = path.to_string();
    for _ in 0..3 {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let mut out: Vec<String> = Vec::new();
    for raw in decoded.split(['/', '\\']) {
        let segment = raw.split(';').next().unwrap_or("").trim();
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_ascii_lowercase()),
        }
    }
    out
}

fn has_method_param(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        let name = percent_decode_str(name).decode_utf8_lossy();
        // `_method`, and framework spellings such as `_method[]`.
        name.trim()
            .as_bytes()
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"_method"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(path: &str) -> Result<Operation, ClassifyError> {
        classify(&Method::DELETE, path, None, &HeaderMap::new())
    }

    #[test]
    fn the_exact_spelling_is_guarded() {
        assert_eq!(
            delete("/api/v1/campaigns/108"),
            Ok(Operation::DeleteCampaign { campaign_id: 108 })
        );
    }

    #[test]
    fn ids_beyond_i64_are_refused_not_wrapped() {
        assert_eq!(
            delete("/api/v1/campaigns/9223372036854775807"),
            Ok(Operation::DeleteCampaign {
                campaign_id: i64::MAX as u64
            })
        );
        for id in ["9223372036854775808", "9999999999999999999"] {
            assert_eq!(
                delete(&format!("/api/v1/campaigns/{id}")),
                Err(ClassifyError::IdOutOfRange(id.to_string()))
            );
        }
    }

    #[test]
    fn a_refused_spelling_names_the_campaign_it_would_reach() {
        for (path, id) in [
            ("/api/v1/campaigns/108/", Some(108)),
            ("/api/v1/campaigns/%31%30%38", Some(108)),
            ("/api/v1/campaigns/0108", Some(108)),
            ("/api/v1/campaigns/108abc", Some(108)),
            ("/api/v1/campaigns/abc", None),
            ("/api/v1/campaigns/99999999999999999999999/", None),
        ] {
            assert_eq!(
                delete(path),
                Err(ClassifyError::AmbiguousDelete { campaign_id: id }),
                "{path}"
            );
        }
    }

    #[test]
    fn every_other_spelling_of_a_campaign_delete_is_refused() {
        for path in [
            "/api/v1/campaigns/108/",
            "/API/v1/campaigns/108",
            "/api/v1/Campaigns/108",
            "/api/v1/campaigns/%31%30%38",
            "/api/v1/campaigns/%2531%2530%2538",
            "/api/v1//campaigns/108",
            "//api/v1/campaigns/108",
            "/api/v1/x/../campaigns/108",
            "/api/v1/./campaigns/108",
            "/api/v1/campaigns/0108",
            "/api/v1/campaigns/108;x=1",
            "/api/v1/campaigns/108abc",
            "/api/v1/campaigns/%20108",
            "/api/v1/campaigns%2F108",
            "/api/v1\\campaigns\\108",
            "/api/v1/campaigns/99999999999999999999999",
            "/api/v1/campaigns/abc",
            "/api/v1/campaigns/9223372036854775808/",
        ] {
            let result = delete(path);
            assert!(
                matches!(result, Err(ClassifyError::AmbiguousDelete { .. })),
                "{path}: {result:?}"
            );
        }
    }

    #[test]
    fn a_lowercase_delete_method_is_refused_on_a_campaign() {
        let m = Method::from_bytes(b"delete").unwrap();
        assert!(classify(&m, "/api/v1/campaigns/108", None, &HeaderMap::new()).is_err());
    }

    #[test]
    fn other_deletes_and_other_methods_pass_through() {
        assert_eq!(
            delete("/api/v1/campaigns/108/webhooks"),
            Ok(Operation::Passthrough)
        );
        assert_eq!(delete("/api/v1/campaigns"), Ok(Operation::Passthrough));
        assert_eq!(
            delete("/api/v1/campaigns/108/.."),
            Ok(Operation::Passthrough)
        );
        let get = classify(
            &Method::GET,
            "/api/v1/campaigns/108/",
            None,
            &HeaderMap::new(),
        );
        assert_eq!(get, Ok(Operation::Passthrough));
    }

    #[test]
    fn method_overrides_are_refused_on_any_request() {
        for name in [
            "X-HTTP-Method-Override",
            "x-method-override",
            "X-HTTP-Method",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("DELETE"),
            );
            let r = classify(&Method::POST, "/api/v1/campaigns/108", None, &h);
            assert!(matches!(r, Err(ClassifyError::MethodOverride(_))), "{name}");
        }
        for q in [
            "_method=DELETE",
            "api_key=x&_METHOD=delete",
            "%5Fmethod=DELETE",
        ] {
            let r = classify(
                &Method::POST,
                "/api/v1/campaigns/108",
                Some(q),
                &HeaderMap::new(),
            );
            assert!(matches!(r, Err(ClassifyError::MethodOverride(_))), "{q}");
        }
        let ok = classify(&Method::GET, "/x", Some("my_method=1"), &HeaderMap::new());
        assert_eq!(ok, Ok(Operation::Passthrough));
    }

    #[test]
    fn form_bodies_on_a_campaign_route_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        for path in ["/api/v1/campaigns/101", "/API/v1/campaigns/101/"] {
            let r = classify(&Method::POST, path, None, &h);
            assert_eq!(r, Err(ClassifyError::FormOnCampaign), "{path}");
        }
        let leads = classify(&Method::POST, "/api/v1/campaigns/101/leads", None, &h);
        assert_eq!(leads, Ok(Operation::Passthrough));
    }
}
