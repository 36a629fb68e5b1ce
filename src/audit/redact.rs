//! Redaction of secrets in request targets. The SmartLead key travels in the
//! query string, so this runs before anything about a request is logged,
//! stored or measured.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// What replaces a secret value.
pub const MARKER: &str = "[REDACTED]";

/// A query string with its secrets replaced, and the key it carried.
#[derive(Debug, PartialEq, Eq)]
pub struct RedactedQuery {
    /// The query with every secret parameter's value replaced by [`MARKER`].
    pub query: String,
    /// The first `api_key` value, percent-decoded (to fingerprint it).
    pub api_key: Option<String>,
    /// The same value exactly as sent (for the guard's own reads).
    pub api_key_raw: Option<String>,
    /// Raw and decoded forms of every secret value seen, to scrub elsewhere.
    pub secrets: Vec<String>,
}

/// Redacts every parameter whose (percent-decoded, case-insensitive) name is
/// in `params`. Parameter order, separators and other values are kept as sent.
pub fn redact_query(query: &str, params: &[String]) -> RedactedQuery {
    let mut out = String::with_capacity(query.len());
    let mut api_key = None;
    let mut api_key_raw = None;
    let mut secrets = Vec::new();
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        let decoded_name = decode(name);
        // `api_key[]=` and `api_key[0]=` are the same parameter to many frameworks.
        let base_name = match decoded_name.find('[') {
            Some(i) => &decoded_name[..i],
            None => &decoded_name,
        };
        let secret = params.iter().any(|p| p.eq_ignore_ascii_case(base_name));
        match value {
            Some(v) if secret => {
                out.push_str(name);
                out.push('=');
                out.push_str(MARKER);
                let decoded = decode(v);
                if api_key.is_none() && base_name.eq_ignore_ascii_case("api_key") {
                    api_key = Some(decoded.to_string());
                    api_key_raw = Some(v.to_string());
                }
                if !v.is_empty() {
                    secrets.push(v.to_string());
                }
                if !decoded.is_empty() && decoded != v {
                    secrets.push(decoded.into_owned());
                }
            }
            _ => out.push_str(pair),
        }
    }
    RedactedQuery {
        query: out,
        api_key,
        api_key_raw,
        secrets,
    }
}

/// Replaces any occurrence of a secret in `text` (a path or a user agent,
/// where a key has no business being, but might be pasted).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), MARKER);
        }
    }
    text
}

/// The full SHA-256 of a key, lower-case hex (how `[[actors]]` name keys).
pub fn key_sha256(api_key: &str) -> String {
    super::chain::hex(ring::digest::digest(&ring::digest::SHA256, api_key.as_bytes()).as_ref())
}

/// The actor fingerprint of a key: the first 16 hex characters of its SHA-256.
pub fn fingerprint(api_key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, api_key.as_bytes());
    super::chain::hex(&digest.as_ref()[..8])
}

/// Form-decodes a name or value; borrows when there is nothing to decode
/// (the common case, and the hot path of every request).
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let plus_as_space = s.replace('+', " ");
    Cow::Owned(
        percent_decode_str(&plus_as_space)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<String> {
        vec!["api_key".into(), "token".into()]
    }

    #[test]
    fn the_key_is_replaced_and_everything_else_kept() {
        let r = redact_query("offset=0&api_key=s3cr3t-key&limit=100", &params());
        assert_eq!(r.query, "offset=0&api_key=[REDACTED]&limit=100");
        assert_eq!(r.api_key.as_deref(), Some("s3cr3t-key"));
    }

    #[test]
    fn every_copy_and_spelling_of_a_secret_is_redacted() {
        let r = redact_query("API_KEY=a1&api%5Fkey=b2&token=c3&api_key=d4", &params());
        assert_eq!(
            r.query,
            "API_KEY=[REDACTED]&api%5Fkey=[REDACTED]&token=[REDACTED]&api_key=[REDACTED]"
        );
        assert_eq!(r.api_key.as_deref(), Some("a1"));
    }

    #[test]
    fn array_spellings_are_redacted() {
        let r = redact_query("api_key[]=a1&api_key%5B0%5D=b2&api_keys=c3", &params());
        assert_eq!(
            r.query,
            "api_key[]=[REDACTED]&api_key%5B0%5D=[REDACTED]&api_keys=c3"
        );
    }

    #[test]
    fn encoded_values_are_decoded_for_the_fingerprint() {
        let r = redact_query("api_key=ab%2Bc+d", &params());
        assert_eq!(r.api_key.as_deref(), Some("ab+c d"));
        assert!(r.secrets.contains(&"ab%2Bc+d".to_string()));
        assert!(r.secrets.contains(&"ab+c d".to_string()));
    }

    #[test]
    fn odd_queries_do_not_panic() {
        for q in ["", "&&", "=", "api_key", "api_key=", "%zz=1", "a=%ff%fe"] {
            let r = redact_query(q, &params());
            assert!(!r.query.is_empty() || q.is_empty());
        }
        assert_eq!(
            redact_query("api_key=", &params()).query,
            "api_key=[REDACTED]"
        );
    }

    #[test]
    fn scrub_removes_a_pasted_key() {
        let s = scrub("/api/v1/x/s3cr3t-key", &["s3cr3t-key".into()]);
        assert_eq!(s, "/api/v1/x/[REDACTED]");
    }

    #[test]
    fn fingerprint_is_sixteen_hex_chars_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea");
    }
}
