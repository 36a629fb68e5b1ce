//! The one digest helper: SHA-256 (from `ring`) and lower-case hex, for the
//! audit chain, snapshot parts, key fingerprints, the policy revision and
//! the admin token check. `sha2` appears only in tests, as the independent
//! reference these are checked against.

pub use ring::digest::Context;

/// A streaming SHA-256, for bodies hashed as they pass.
pub fn sha256_stream() -> Context {
    Context::new(&ring::digest::SHA256)
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of `bytes` as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Lower-case hex of `bytes` written into `out`, which is twice as long
/// (for hex that need not be allocated).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_agrees_with_the_reference_implementation() {
        for input in [&b""[..], b"abc", &[0u8; 1000], "é ☃".as_bytes()] {
            let reference = Sha256::digest(input);
            assert_eq!(sha256(input), reference.as_slice());
            let reference_hex: String = reference.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(sha256_hex(input), reference_hex);
            let mut stream = sha256_stream();
            for piece in input.chunks(7) {
                stream.update(piece);
            }
            assert_eq!(stream.finish().as_ref(), reference.as_slice());
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }
}
