//! The key swap in `gateway_keys` mode: the caller's gateway key out, the
//! account's SmartLead key in, wherever SmartLead reads one (the `api_key`
//! query parameter, `api_key` in a JSON body); and the SmartLead key masked
//! out of whatever SmartLead sends back.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use crate::audit::body_key::BodyKeyScanner;

/// What is percent-encoded in a query value: everything but unreserved characters.
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The query with every `api_key` value replaced by `account_key_query`
/// (already encoded); every other byte as it was.
pub fn swap_query(query: &str, account_key_query: &str) -> String {
    let mut out = String::with_capacity(query.len() + account_key_query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if name == "api_key" => {
                out.push_str(name);
                out.push('=');
                out.push_str(account_key_query);
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// The body could not be made free of the gateway key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("safedelete: the JSON body carries the gateway key in a form the gateway cannot replace (escaped characters); send it as plain \"api_key\": \"sdg_...\" or in the query")]
pub struct BodySwapError;

/// The body with every occurrence of `gateway_key` replaced by the
/// account's key (as a JSON string's contents); refused if a key is still
/// there afterwards that is not the account's (one written with escapes).
pub fn swap_body(
    body: &Bytes,
    gateway_key: &str,
    account_key: &str,
) -> Result<Bytes, BodySwapError> {
    let finder = memmem::Finder::new(gateway_key.as_bytes());
    let swapped: Bytes = if finder.find(body).is_none() {
        body.clone()
    } else {
        // A JSON string's contents: the key is printable ASCII, but escape
        // the two characters JSON insists on all the same.
        let escaped = serde_json::to_string(account_key).expect("a string serialises");
        let replacement = &escaped.as_bytes()[1..escaped.len() - 1];
        let mut out = BytesMut::with_capacity(body.len() + 64);
        let mut at = 0;
        for found in finder.find_iter(body) {
            out.extend_from_slice(&body[at..found]);
            out.extend_from_slice(replacement);
            at = found + gateway_key.len();
        }
        out.extend_from_slice(&body[at..]);
        out.freeze()
    };
    let mut scanner = BodyKeyScanner::default();
    if scanner.feed(&swapped).iter().any(|k| k != account_key) {
        return Err(BodySwapError);
    }
    Ok(swapped)
}

/// Replaces a SmartLead key (as written, and percent-encoded) with as many
/// `*` as it has bytes, so lengths and framing stay as SmartLead sent them.
#[derive(Debug, Clone)]
pub struct Mask {
    needles: Vec<Vec<u8>>,
    longest: usize,
}

impl Mask {
    pub fn new(secret: &str) -> Mask {
        let mut needles = vec![secret.as_bytes().to_vec()];
        let encoded = percent_encoding::utf8_percent_encode(secret, QUERY_VALUE).to_string();
        if encoded != secret {
            needles.push(encoded.into_bytes());
        }
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Mask { needles, longest }
    }

    /// `data` with every whole occurrence masked.
    pub fn apply<'a>(&self, data: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Cow<'a, [u8]> = Cow::Borrowed(data);
        for needle in &self.needles {
            if needle.is_empty() || memmem::find(&out, needle).is_none() {
                continue;
            }
            let mut owned = out.into_owned();
            let mut from = 0;
            while let Some(p) = memmem::find(&owned[from..], needle) {
                let start = from + p;
                owned[start..start + needle.len()].fill(b'*');
                from = start + needle.len();
            }
            out = Cow::Owned(owned);
        }
        out
    }

    /// A masker for one streamed body.
    pub fn stream(&self) -> MaskStream {
        MaskStream {
            mask: self.clone(),
            held: BytesMut::new(),
        }
    }
}

/// Masks a body frame by frame. The last `longest - 1` bytes of each frame
/// are held back until the next (or the end), so a key cut by a frame
/// boundary is masked too.
#[derive(Debug)]
pub struct MaskStream {
    mask: Mask,
    held: BytesMut,
}

impl MaskStream {
    /// The bytes of `frame` (after what was held) that can go now.
    pub fn feed(&mut self, frame: &[u8]) -> Bytes {
        self.held.extend_from_slice(frame);
        let masked = match self.mask.apply(&self.held) {
            Cow::Borrowed(_) => None,
            Cow::Owned(m) => Some(m),
        };
        if let Some(m) = masked {
            self.held = BytesMut::from(&m[..]);
        }
        let keep = self.mask.longest.saturating_sub(1).min(self.held.len());
        let ready = self.held.len() - keep;
        self.held.split_to(ready).freeze()
    }

    /// Whether bytes are held back for the next frame.
    pub fn holds_bytes(&self) -> bool {
        !self.held.is_empty()
    }

    /// What was held back, at the end of the body.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.held).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_api_key_values_change_in_the_query() {
        assert_eq!(
            swap_query("offset=0&api_key=sdg_abc&limit=10", "real%2Bkey"),
            "offset=0&api_key=real%2Bkey&limit=10"
        );
        assert_eq!(
            swap_query("api_key=a&api_key=b", "k"),
            "api_key=k&api_key=k"
        );
        assert_eq!(swap_query("x=%20&y", "k"), "x=%20&y");
    }

    #[test]
    fn the_body_key_is_replaced_wherever_it_appears() {
        let body = Bytes::from_static(br#"{"api_key":"sdg_abc","lead_list":[{"email":"a@b.c"}]}"#);
        let out = swap_body(&body, "sdg_abc", "real-key").unwrap();
        assert_eq!(
            &out[..],
            br#"{"api_key":"real-key","lead_list":[{"email":"a@b.c"}]}"#
        );
        let untouched = Bytes::from_static(br#"{"name":"x"}"#);
        assert_eq!(swap_body(&untouched, "sdg_abc", "k").unwrap(), untouched);
    }

    #[test]
    fn a_key_written_with_escapes_is_refused_rather_than_forwarded() {
        let body = Bytes::from_static(br#"{"api_key":"\u0073dg_abc"}"#);
        assert_eq!(swap_body(&body, "sdg_abc", "real-key"), Err(BodySwapError));
    }

    #[test]
    fn a_key_split_across_frames_is_masked_and_lengths_stay() {
        let mask = Mask::new("secret-key-123");
        let text = b"error: GET /api/v1/campaigns?api_key=secret-key-123 failed; secret-key-123";
        for cut in 0..text.len() {
            let mut s = mask.stream();
            let mut out = Vec::new();
            out.extend_from_slice(&s.feed(&text[..cut]));
            out.extend_from_slice(&s.feed(&text[cut..]));
            out.extend_from_slice(&s.finish());
            assert_eq!(out.len(), text.len());
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("secret-key-123"), "{cut}: {out}");
            assert!(out.contains("api_key=**************"), "{out}");
        }
    }

    #[test]
    fn the_percent_encoded_spelling_is_masked_too() {
        let mask = Mask::new("a+b/c");
        let out = mask.apply(b"key a%2Bb%2Fc and a+b/c");
        assert_eq!(&out[..], b"key ********* and *****");
    }
}
