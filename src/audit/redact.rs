//! Redaction of secrets before anything about a request is logged, stored or
//! measured. The SmartLead key travels in the query string (and, for POST,
//! PATCH and PUT, may travel in the JSON body), and people paste it into
//! other places too, so redaction works two ways:
//!
//! - **by name**: a query parameter whose name, normalised (percent-decoded,
//!   everything but letters and digits stripped, lower-cased), is a secret's
//!   name has its value replaced by [`MARKER`]. A value that decodes to
//!   another query holding a secret (`x=1%26api_key=...`) is replaced whole.
//! - **by value**: every secret value found that way (and every `api_key`
//!   found in the body, see [`body_key`](super::body_key)) is replaced
//!   wherever else it appears: path, user agent, request id, error text.

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use std::borrow::Cow;

/// What replaces a secret value.
pub const MARKER: &str = "[REDACTED]";

/// Normalised names that are always secret, whatever the config says.
const SECRET_NAMES: &[&str] = &["apikey", "key", "token", "secret", "password"];
/// Normalised suffixes that make a name secret (`access_token`, `x-api-key`).
const SECRET_SUFFIXES: &[&str] = &["apikey", "token", "secret", "password"];

/// A secret value shorter than this is not scrubbed from other text: a
/// `key=1` would otherwise blank every `1` in the path.
const MIN_SCRUB_LEN: usize = 4;

/// How many times a name or value is percent-decoded (double and triple
/// encoding are decoded by some stacks in front of an API).
const DECODE_ROUNDS: usize = 3;

/// Which query parameters are secret: the built-in names plus the
/// configured `audit.redact_params`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Configured names, normalised.
    extra: Vec<String>,
}

/// A query string with its secrets replaced, and the key it carried.
#[derive(Debug, PartialEq, Eq)]
pub struct RedactedQuery {
    /// The query with every secret replaced by [`MARKER`].
    pub query: String,
    /// The first `api_key` value, percent-decoded (to fingerprint it).
    pub api_key: Option<String>,
    /// The same value exactly as sent (for the guard's own reads).
    pub api_key_raw: Option<String>,
    /// Every secret value seen, in the forms it may appear elsewhere.
    pub secrets: Secrets,
}

/// Secret values to scrub from other text, each in the spellings it was
/// seen in (as sent, decoded, and encoded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Adds a value as sent, with its decoded and fully encoded forms.
    pub fn add(&mut self, raw: &str) {
        let decoded = decode(raw);
        // A plain key has no other encoded spelling.
        let encoded = (!decoded.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| {
            let mut encoded = String::with_capacity(decoded.len() * 3);
            encoded.extend(utf8_percent_encode(&decoded, NON_ALPHANUMERIC));
            Cow::Owned(encoded)
        });
        self.0.reserve(3);
        let forms = [Some(Cow::Borrowed(raw)), Some(decoded), encoded];
        for form in forms.into_iter().flatten() {
            if form.len() >= MIN_SCRUB_LEN && !self.0.iter().any(|s| *s == *form) {
                self.0.push(form.into_owned());
            }
        }
        // Longest first, so a value is never half-replaced by a shorter form
        // of itself.
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn extend(&mut self, other: &Secrets) {
        for s in &other.0 {
            if !self.0.iter().any(|o| o == s) {
                self.0.push(s.clone());
            }
        }
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `text` holds any of the secrets.
    pub fn found_in(&self, text: &str) -> bool {
        self.0.iter().any(|s| text.contains(s.as_str()))
    }

    /// `text` with every occurrence of a secret replaced by [`MARKER`];
    /// borrowed when there is none (the common case).
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.found_in(text) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MARKER);
            }
        }
        Cow::Owned(out)
    }
}

impl Redactor {
    /// A redactor for the built-in names plus `configured` ones (compared
    /// after the same normalisation).
    pub fn new(configured: &[String]) -> Redactor {
        let mut extra: Vec<String> = Vec::new();
        for name in configured {
            let n = normalize_name(name);
            if !n.is_empty() && !extra.contains(&n) {
                extra.push(n);
            }
        }
        Redactor { extra }
    }

    /// Whether a parameter with this name (as sent) carries a secret.
    pub fn is_secret_name(&self, name: &str) -> bool {
        let judge = |n: &str| is_secret_normalized(n) || self.extra.iter().any(|e| e == n);
        // Most names are short and plain (`api_key`, `offset`): normalised
        // on the stack, as `normalize_name` would.
        let mut buf = [0u8; 64];
        let plain = name.len() <= buf.len()
            && name
                .bytes()
                .all(|b| b.is_ascii() && !matches!(b, b'%' | b'+' | b'['));
        if !plain {
            return judge(&normalize_name(name));
        }
        let mut len = 0;
        for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
            buf[len] = b.to_ascii_lowercase();
            len += 1;
        }
        judge(std::str::from_utf8(&buf[..len]).expect("ASCII is UTF-8"))
    }

    /// Redacts every secret in a query string. Parameter order, separators
    /// and other values are kept as sent.
    pub fn redact_query(&self, query: &str) -> RedactedQuery {
        let mut out = RedactedQuery {
            query: String::with_capacity(query.len()),
            api_key: None,
            api_key_raw: None,
            secrets: Secrets::default(),
        };
        let mut rest = query;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let (pair, tail) = rest.split_at(end);
            self.redact_pair(pair, &mut out);
            match tail.chars().next() {
                Some(sep) => {
                    out.query.push(sep);
                    rest = &tail[1..];
                }
                None => break,
            }
        }
        // A key value repeated under an innocent name is still the key.
        if !out.secrets.is_empty() && out.secrets.found_in(&out.query) {
            out.query = out.secrets.scrub(&out.query).into_owned();
        }
        out
    }

    fn redact_pair(&self, pair: &str, out: &mut RedactedQuery) {
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if self.is_secret_name(name) {
            out.query.push_str(name);
            if let Some(v) = value {
                out.query.push('=');
                out.query.push_str(MARKER);
                if out.api_key_raw.is_none() && is_api_key_param(name) {
                    out.api_key = Some(decode(v).into_owned());
                    out.api_key_raw = Some(v.to_string());
                }
                out.secrets.add(v);
            }
            return;
        }
        // `x=1%26api_key=KEY` or `api_key%3DKEY`: a pair that decodes to
        // more pairs, one of them secret.
        let decoded = decode(pair);
        if decoded != pair {
            let hidden = self.hidden_secrets(&decoded);
            if !hidden.is_empty() {
                out.secrets.extend(&hidden);
                match value {
                    Some(_) if !self.hidden_in_name(name) => {
                        out.query.push_str(name);
                        out.query.push('=');
                    }
                    _ => {}
                }
                out.query.push_str(MARKER);
                return;
            }
        }
        out.query.push_str(pair);
    }

    /// Secrets of the pairs inside already-decoded text.
    fn hidden_secrets(&self, decoded: &str) -> Secrets {
        let mut secrets = Secrets::default();
        for inner in decoded.split(['&', ';', '?']) {
            if let Some((n, v)) = inner.split_once('=') {
                if self.is_secret_name(n) {
                    secrets.add(v);
                }
            }
        }
        secrets
    }

    fn hidden_in_name(&self, name: &str) -> bool {
        let decoded = decode(name);
        decoded.contains(['=', '&', ';'])
    }
}

/// The name as compared: percent-decoded (repeatedly), anything from a `[`
/// on dropped (`api_key[]`), everything but letters and digits stripped,
/// lower case.
pub fn normalize_name(name: &str) -> String {
    let decoded = decode(name);
    let base = match decoded.find('[') {
        Some(i) if i > 0 => &decoded[..i],
        _ => &decoded,
    };
    base.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_secret_normalized(n: &str) -> bool {
    !n.is_empty()
        && (SECRET_NAMES.contains(&n)
            || n.starts_with("auth")
            || SECRET_SUFFIXES.iter().any(|s| n.ends_with(s)))
}

/// The parameter SmartLead reads its key from, in any case or encoding.
fn is_api_key_param(name: &str) -> bool {
    let decoded = decode(name);
    let base = match decoded.find('[') {
        Some(i) => &decoded[..i],
        None => &decoded,
    };
    base.eq_ignore_ascii_case("api_key")
}

/// The full SHA-256 of a key, lower-case hex (how `[[actors]]` name keys).
pub fn key_sha256(api_key: &str) -> String {
    crate::digest::sha256_hex(api_key.as_bytes())
}

/// The actor fingerprint of a key: the first 16 hex characters of its SHA-256.
pub fn fingerprint(api_key: &str) -> String {
    crate::digest::hex(&crate::digest::sha256(api_key.as_bytes())[..8])
}

/// Form-decodes a name or value, repeatedly; borrows when there is nothing
/// to decode (the common case, and the hot path of every request).
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let mut text = s.replace('+', " ");
    for _ in 0..DECODE_ROUNDS {
        let next = percent_decode_str(&text).decode_utf8_lossy().into_owned();
        if next == text {
            break;
        }
        text = next;
    }
    Cow::Owned(text)
}

/// Replaces, anywhere in a JSON document SmartLead returned, the values of
/// fields whose names say they are secrets (`api_key`, `token`, `password`,
/// `secret`, ... by the same rules as query parameters), so a captured
/// listing of client keys never stores a key.
pub fn redact_json_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                if is_secret_normalized(&normalize_name(name)) && !v.is_null() {
                    *v = serde_json::Value::String(MARKER.to_string());
                } else {
                    redact_json_secrets(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&["api_key".into(), "my-custom".into()])
    }

    fn redact(q: &str) -> RedactedQuery {
        redactor().redact_query(q)
    }

    #[test]
    fn the_key_is_replaced_and_everything_else_kept() {
        let r = redact("offset=0&api_key=s3cr3t-key&limit=100");
        assert_eq!(r.query, "offset=0&api_key=[REDACTED]&limit=100");
        assert_eq!(r.api_key.as_deref(), Some("s3cr3t-key"));
    }

    #[test]
    fn every_copy_and_spelling_of_a_secret_is_redacted() {
        let r = redact("API_KEY=a1a1&api%5Fkey=b2b2&token=c3c3&api_key=d4d4");
        assert_eq!(
            r.query,
            "API_KEY=[REDACTED]&api%5Fkey=[REDACTED]&token=[REDACTED]&api_key=[REDACTED]"
        );
        assert_eq!(r.api_key.as_deref(), Some("a1a1"));
    }

    #[test]
    fn names_are_compared_after_normalising() {
        for name in [
            "apiKey",
            "api-key",
            "api_key%00",
            "%20api_key",
            "?api_key",
            "api%255Fkey",
            "Api+Key",
            "x-api-key",
            "key",
            "access_token",
            "client_secret",
            "password",
            "auth",
            "authorization",
            "Auth-Token",
            "my_custom",
            "MY%2DCUSTOM",
        ] {
            let r = redact(&format!("a=1&{name}=VALUE123"));
            assert_eq!(r.query, format!("a=1&{name}=[REDACTED]"), "{name}");
        }
        for name in ["limit", "offset", "monkey", "keys", "email", "api"] {
            let q = format!("{name}=VALUE123");
            assert_eq!(redact(&q).query, q, "{name}");
        }
    }

    #[test]
    fn semicolons_separate_parameters_too() {
        let r = redact("a=1;api_key=VALUE123");
        assert_eq!(r.query, "a=1;api_key=[REDACTED]");
        let r = redact(";api_key=VALUE123");
        assert_eq!(r.query, ";api_key=[REDACTED]");
    }

    #[test]
    fn a_value_hiding_a_secret_parameter_is_replaced_whole() {
        let r = redact("x=1%26api_key=VALUE123&y=2");
        assert_eq!(r.query, "x=[REDACTED]&y=2");
        assert!(r.secrets.found_in("VALUE123"));
        let r = redact("api_key%3DVALUE123");
        assert_eq!(r.query, "[REDACTED]");
        let r = redact("x=%3Fapi_key%3DVALUE123");
        assert_eq!(r.query, "x=[REDACTED]");
    }

    #[test]
    fn a_secret_value_under_another_name_is_scrubbed_too() {
        let r = redact("api_key=VALUE123&note=VALUE123");
        assert_eq!(r.query, "api_key=[REDACTED]&note=[REDACTED]");
    }

    #[test]
    fn array_spellings_are_redacted() {
        let r = redact("api_key[]=a1a1&api_key%5B0%5D=b2b2&api_keys=c3c3");
        assert_eq!(
            r.query,
            "api_key[]=[REDACTED]&api_key%5B0%5D=[REDACTED]&api_keys=c3c3"
        );
    }

    #[test]
    fn encoded_values_are_decoded_for_the_fingerprint() {
        let r = redact("api_key=ab%2Bc+d");
        assert_eq!(r.api_key.as_deref(), Some("ab+c d"));
        assert!(r.secrets.found_in("ab%2Bc+d"));
        assert!(r.secrets.found_in("ab+c d"));
    }

    #[test]
    fn odd_queries_do_not_panic() {
        for q in [
            "", "&&", "=", "api_key", "api_key=", "%zz=1", "a=%ff%fe", ";;", "%", "=&=;",
        ] {
            let r = redact(q);
            assert!(!r.query.is_empty() || q.is_empty());
        }
        assert_eq!(redact("api_key=").query, "api_key=[REDACTED]");
    }

    #[test]
    fn scrub_removes_every_form_of_a_pasted_key() {
        let mut s = Secrets::default();
        s.add("s3cr3t_key");
        assert_eq!(s.scrub("/api/v1/x/s3cr3t_key"), "/api/v1/x/[REDACTED]");
        assert_eq!(s.scrub("/api/v1/x/s3cr3t%5Fkey"), "/api/v1/x/[REDACTED]");
        assert!(matches!(s.scrub("/api/v1/x"), Cow::Borrowed(_)));
        let mut short = Secrets::default();
        short.add("1");
        assert_eq!(short.scrub("/api/v1/campaigns/1"), "/api/v1/campaigns/1");
    }

    #[test]
    fn fingerprint_is_sixteen_hex_chars_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea");
    }
}
