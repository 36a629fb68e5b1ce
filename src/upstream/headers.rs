//! Header hygiene for both directions: hop-by-hop headers out, forwarding
//! headers and the request id in.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::audit::redact::Secrets;

/// The request id header, taken from the client when sane, else generated.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy and proxy-auth ones):
/// they describe one connection, never the message.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including every header named in `Connection`.
/// Runs before the gateway adds headers of its own, so a client cannot make
/// the gateway drop them by listing them in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present; most messages carry
    // none, and most of the rest only `Connection: keep-alive`.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    if present[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Hop-by-hop names are removed below anyway.
            .filter(|token| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(token))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Appends the client address to `X-Forwarded-For` (joining any values the
/// client already sent) and sets `X-Forwarded-Proto` to the listener's scheme.
/// `client_ip` is the address as a header value, made once per connection.
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue, proto: &'static str) {
    let value = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut joined = String::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(v) = v.to_str() {
                joined.push_str(v.trim());
                joined.push_str(", ");
            }
        }
        joined.push_str(client_ip.to_str().unwrap_or_default());
        HeaderValue::from_str(&joined).ok()
    } else {
        Some(client_ip.clone())
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
}

/// The client's `x-request-id` if it is 1–128 visible ASCII characters and
/// holds none of the request's secrets (a key pasted there would otherwise be
/// stored and logged), otherwise a fresh random one.
pub fn request_id(headers: &HeaderMap, secrets: Option<&Secrets>) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        let sane = !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic());
        let secret = || secrets.is_some_and(|s| v.to_str().map(|v| s.found_in(v)).unwrap_or(true));
        if sane && !secret() {
            return v.clone();
        }
    }
    let mut id = [0u8; 32];
    crate::digest::hex_into(&fastrand::u128(..).to_be_bytes(), &mut id);
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(text, format).ok()?;
    Some(SystemTime::from(t.assume_utc()))
}

/// This process's pseudonym in `Via` (RFC 9110 section 7.6.3): random, so
/// it names no host, and new with every start.
pub fn via_pseudonym() -> &'static str {
    static PSEUDONYM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PSEUDONYM.get_or_init(|| format!("safedelete-{:016x}", fastrand::u64(..)))
}

/// Adds this gateway to the request's `Via`, after the proxies before it.
pub fn add_via(headers: &mut HeaderMap) {
    // A static value, made once: cloning it per request copies a pointer,
    // where a shared one would bump a reference count every worker touches.
    static OURS: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    let ours = OURS.get_or_init(|| Box::leak(format!("1.1 {}", via_pseudonym()).into_boxed_str()));
    headers.append(header::VIA, HeaderValue::from_static(ours));
}

/// Whether the request has already passed through this gateway.
pub fn came_through_here(headers: &HeaderMap) -> bool {
    headers.get_all(header::VIA).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .filter_map(|hop| hop.split_whitespace().nth(1))
                .any(|by| by == via_pseudonym())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut h = http::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:47 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(10)));
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Foo , x-bar"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.append("x-keep", HeaderValue::from_static("a"));
        h.append("x-keep", HeaderValue::from_static("b"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
        assert_eq!(h.get_all("x-keep").iter().count(), 2);
    }

    #[test]
    fn each_hop_by_hop_header_goes_alone_and_others_stay() {
        for hop in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert(hop.clone(), HeaderValue::from_static("x-listed"));
            h.insert("x-listed", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            names.sort();
            // Only `Connection` names other headers.
            let want = if *hop == header::CONNECTION {
                vec!["content-type"]
            } else {
                vec!["content-type", "x-listed"]
            };
            assert_eq!(names, want, "{hop}");
        }
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("2"));
        h.insert("connection", HeaderValue::from_static("close, Upgrade"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["content-length"]
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "https");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_sane_request_id_is_kept_and_a_bad_one_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h, None), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        let id = request_id(&h, None);
        assert_eq!(id.len(), 32);
        assert_ne!(id, "has space");
    }

    #[test]
    fn a_request_id_holding_a_secret_is_replaced() {
        let mut secrets = Secrets::default();
        secrets.add("sl_secret_key");
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("sl_secret_key"));
        let id = request_id(&h, Some(&secrets));
        assert_eq!(id.len(), 32);
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h, Some(&secrets)), "abc-123");
    }

    #[test]
    fn only_this_gateways_own_via_counts_as_a_loop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::VIA,
            HeaderValue::from_static("1.1 nginx, 1.1 safedelete-0000000000000000"),
        );
        assert!(!came_through_here(&h), "another safedelete is not this one");
        add_via(&mut h);
        assert!(came_through_here(&h));
        let joined = format!("1.0 fred, 1.1 {} (safedelete)", via_pseudonym());
        let mut h = HeaderMap::new();
        h.insert(header::VIA, HeaderValue::from_str(&joined).unwrap());
        assert!(came_through_here(&h));
    }
}
