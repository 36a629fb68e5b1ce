//! Finding `"api_key": "..."` in a JSON request body as it streams through,
//! without holding the body: SmartLead accepts its key there for POST, PATCH
//! and PUT, so the gateway needs it to name the actor and to keep the value
//! out of everything it stores. The body is forwarded untouched.

use memchr::memmem;

const NEEDLE: &[u8] = b"\"api_key\"";
/// The longest key value looked for; a longer string is not a key.
const MAX_VALUE: usize = 1024;
/// How many keys one body may yield (the first names the actor).
const MAX_KEYS: usize = 4;

/// Scans body frames in order; [`BodyKeyScanner::feed`] returns keys as they
/// complete.
#[derive(Debug, Default)]
pub struct BodyKeyScanner {
    /// The end of the previous frames that may hold the start of a match.
    carry: Vec<u8>,
    found: usize,
}

impl BodyKeyScanner {
    /// Scans the next frame; returns the key values that ended in it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        if self.found >= MAX_KEYS {
            return Vec::new();
        }
        let joined;
        let buf: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            let mut j = std::mem::take(&mut self.carry);
            j.extend_from_slice(chunk);
            joined = j;
            &joined
        };
        let mut keys = Vec::new();
        let mut at = 0;
        let mut pending = None;
        while let Some(i) = memmem::find(&buf[at..], NEEDLE) {
            let start = at + i;
            match value_after(&buf[start + NEEDLE.len()..]) {
                Value::Complete(key, used) => {
                    if let Some(k) = key {
                        keys.push(k);
                        self.found += 1;
                        if self.found >= MAX_KEYS {
                            return keys;
                        }
                    }
                    at = start + NEEDLE.len() + used;
                }
                Value::NotAString => at = start + NEEDLE.len(),
                Value::Incomplete => {
                    pending = Some(start);
                    break;
                }
            }
        }
        let keep_from = match pending {
            Some(start) if buf.len() - start <= NEEDLE.len() + MAX_VALUE + 64 => start,
            // A match cut short at the end, or the last bytes that could
            // begin one.
            _ => buf.len().saturating_sub(NEEDLE.len() - 1).max(at),
        };
        self.carry = buf[keep_from..].to_vec();
        keys
    }
}

enum Value {
    /// A string value (its text if it could be a key) and the bytes used.
    Complete(Option<String>, usize),
    /// The key is followed by something else (not a key-value pair).
    NotAString,
    /// The buffer ends before the value does.
    Incomplete,
}

/// Parses `\s* : \s* "..."` at the start of `rest`.
fn value_after(rest: &[u8]) -> Value {
    let mut i = skip_ws(rest, 0);
    match rest.get(i) {
        None => return Value::Incomplete,
        Some(b':') => i += 1,
        Some(_) => return Value::NotAString,
    }
    i = skip_ws(rest, i);
    match rest.get(i) {
        None => return Value::Incomplete,
        Some(b'"') => {}
        Some(_) => return Value::NotAString,
    }
    let open = i;
    i += 1;
    while i < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'"' => {
                let text = &rest[open..=i];
                let key = if text.len() - 2 <= MAX_VALUE {
                    serde_json::from_slice::<String>(text)
                        .ok()
                        .filter(|k| !k.is_empty())
                } else {
                    None
                };
                return Value::Complete(key, i + 1);
            }
            _ => i += 1,
        }
        if i - open > MAX_VALUE * 6 + 2 {
            return Value::Complete(None, i);
        }
    }
    Value::Incomplete
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(body: &[u8], at: usize) -> Vec<String> {
        let mut s = BodyKeyScanner::default();
        let mut keys = s.feed(&body[..at]);
        keys.extend(s.feed(&body[at..]));
        keys
    }

    #[test]
    fn the_key_is_found_at_every_split_point() {
        let body = br#"{"campaign_id": 5, "api_key" :  "sl_abc\u0031_def", "leads": []}"#;
        for at in 0..=body.len() {
            assert_eq!(scan_split(body, at), vec!["sl_abc1_def"], "split at {at}");
        }
    }

    #[test]
    fn byte_by_byte_frames_find_every_key() {
        let body = br#"{"api_key":"k1k1","x":{"api_key":"k2k2"}}"#;
        let mut s = BodyKeyScanner::default();
        let keys: Vec<String> = body.iter().flat_map(|b| s.feed(&[*b])).collect();
        assert_eq!(keys, vec!["k1k1", "k2k2"]);
    }

    #[test]
    fn non_string_values_and_lookalikes_are_not_keys() {
        let body = br#"{"api_key": 12, "note": "the \"api_key\" field", "api_keys": "x"}"#;
        let mut s = BodyKeyScanner::default();
        assert!(s.feed(body).is_empty());
    }

    #[test]
    fn a_huge_body_keeps_the_carry_small() {
        let mut s = BodyKeyScanner::default();
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..10 {
            assert!(s.feed(&chunk).is_empty());
            assert!(s.carry.len() < NEEDLE.len());
        }
        let mut huge = br#"{"api_key":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', 10 * MAX_VALUE));
        huge.extend(br#""}"#);
        let mut s = BodyKeyScanner::default();
        for piece in huge.chunks(100) {
            assert!(s.feed(piece).is_empty());
            assert!(s.carry.len() <= NEEDLE.len() + MAX_VALUE * 7);
        }
    }
}
