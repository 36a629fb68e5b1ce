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

/// The most bytes kept from one match that spans frames: the key, the
/// separator and a value escaped at most six bytes a character.
const MAX_PENDING: usize = NEEDLE.len() + 6 * MAX_VALUE + 64;

/// Scans body frames in order; [`BodyKeyScanner::feed`] returns keys as they
/// complete. Frames are searched where they lie: only a match cut by a frame
/// boundary is copied, so an upload is not copied again.
#[derive(Debug, Default)]
pub struct BodyKeyScanner {
    /// A match whose value has not ended yet, from its opening quote.
    pending: Vec<u8>,
    /// The last bytes of the previous frame, which may begin the needle.
    tail: Vec<u8>,
    found: usize,
}

impl BodyKeyScanner {
    /// Scans the next frame; returns the key values that ended in it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut keys = Vec::new();
        if self.found >= MAX_KEYS {
            return keys;
        }
        // A needle cut by the boundary: look across the seam only.
        let previous = std::mem::take(&mut self.tail);
        if self.pending.is_empty() && !previous.is_empty() {
            let mut seam = previous.clone();
            seam.extend_from_slice(&chunk[..chunk.len().min(NEEDLE.len())]);
            if let Some(p) = memmem::find(&seam, NEEDLE).filter(|p| *p < previous.len()) {
                self.pending = previous[p..].to_vec();
            }
        }
        let mut at = 0;
        if !self.pending.is_empty() {
            let before = self.pending.len();
            let room = MAX_PENDING.saturating_sub(before);
            self.pending
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            match value_after(&self.pending[NEEDLE.len()..]) {
                Value::Incomplete if self.pending.len() < MAX_PENDING => return keys,
                Value::Complete(key, used) => {
                    self.push(key, &mut keys);
                    at = (NEEDLE.len() + used).saturating_sub(before);
                }
                // Not a key after all (or too long to be one).
                Value::Incomplete | Value::NotAString => {}
            }
            self.pending.clear();
        }
        while self.found < MAX_KEYS {
            let Some(i) = memmem::find(&chunk[at.min(chunk.len())..], NEEDLE) else {
                break;
            };
            let start = at + i;
            match value_after(&chunk[start + NEEDLE.len()..]) {
                Value::Complete(key, used) => {
                    self.push(key, &mut keys);
                    at = start + NEEDLE.len() + used;
                }
                Value::NotAString => at = start + NEEDLE.len(),
                Value::Incomplete => {
                    if chunk.len() - start < MAX_PENDING {
                        self.pending = chunk[start..].to_vec();
                        return keys;
                    }
                    at = start + NEEDLE.len();
                }
            }
        }
        // The last bytes seen that could begin the needle, across frames
        // shorter than it.
        let keep = NEEDLE.len() - 1;
        let rest = &chunk[at.min(chunk.len())..];
        let mut tail = if at == 0 { previous } else { Vec::new() };
        tail.extend_from_slice(&rest[rest.len().saturating_sub(keep)..]);
        let cut = tail.len().saturating_sub(keep);
        tail.drain(..cut);
        self.tail = tail;
        keys
    }

    fn push(&mut self, key: Option<String>, keys: &mut Vec<String>) {
        if let Some(k) = key {
            keys.push(k);
            self.found += 1;
        }
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
            // An escape may have stepped past the end.
            return Value::Complete(None, i.min(rest.len()));
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
    fn random_frames_find_what_the_whole_body_holds() {
        let body = br#"{"a":"api_key","api_key": 5,"api_key" :"k1\"k1", "x":[{"api_key":"k2k2"}],"api_key":"k3k3"}"#;
        let whole = BodyKeyScanner::default().feed(body);
        assert_eq!(whole, vec!["k1\"k1", "k2k2", "k3k3"]);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..2_000 {
            let mut s = BodyKeyScanner::default();
            let mut keys = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(12));
                keys.extend(s.feed(&rest[..n]));
                rest = &rest[n..];
            }
            assert_eq!(keys, whole);
        }
    }

    #[test]
    fn non_string_values_and_lookalikes_are_not_keys() {
        let body = br#"{"api_key": 12, "note": "the \"api_key\" field", "api_keys": "x"}"#;
        let mut s = BodyKeyScanner::default();
        assert!(s.feed(body).is_empty());
    }

    #[test]
    fn a_huge_body_keeps_what_it_holds_small() {
        let mut s = BodyKeyScanner::default();
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..10 {
            assert!(s.feed(&chunk).is_empty());
            assert!(s.tail.len() < NEEDLE.len() && s.pending.is_empty());
        }
        let mut huge = br#"{"api_key":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', 10 * MAX_VALUE));
        huge.extend(br#"", "api_key": "k9k9"}"#);
        for size in [1, 100, 4096, huge.len()] {
            let mut s = BodyKeyScanner::default();
            let mut keys = Vec::new();
            for piece in huge.chunks(size) {
                keys.extend(s.feed(piece));
                assert!(s.pending.len() <= MAX_PENDING);
            }
            assert_eq!(keys, vec!["k9k9"], "frames of {size}");
        }
    }

    #[test]
    fn a_value_cut_by_an_escape_at_the_cap_does_not_panic() {
        let mut body = br#"{"api_key":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', 6 * MAX_VALUE));
        body.push(b'\\');
        for size in [1, 7, 4096, body.len()] {
            let mut s = BodyKeyScanner::default();
            for piece in body.chunks(size) {
                assert!(s.feed(piece).is_empty());
            }
        }
        let mut rest = Vec::new();
        for tail in [&b"\\"[..], b"\\\\", b"\\\"x"] {
            rest.clear();
            rest.extend_from_slice(br#": ""#);
            rest.extend(std::iter::repeat_n(b'y', 6 * MAX_VALUE + 1));
            rest.extend_from_slice(tail);
            if let Value::Complete(_, used) = value_after(&rest) {
                assert!(used <= rest.len());
            }
        }
    }
}
