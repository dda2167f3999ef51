//! The `X-Hub-Signature: sha256=<hex>` header: HMAC-SHA256 of the raw body.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Bitbucket puts the signature in.
pub const HEADER: &str = "X-Hub-Signature";

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the delivery carries no X-Hub-Signature header")]
    Missing,
    #[error("the X-Hub-Signature header is not of the form sha256=<hex>")]
    Malformed,
    #[error("the X-Hub-Signature does not match the body and secret")]
    Mismatch,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// The header value for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a received header value in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_secret_and_body() {
        let header = sign(b"s3cret", b"{}");
        assert_eq!(verify(b"s3cret", b"{}", Some(&header)), Ok(()));
        assert_eq!(
            verify(b"other", b"{}", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", b"{ }", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"s3cret", b"{}", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s3cret", b"{}", Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", b"{}", Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }
}
