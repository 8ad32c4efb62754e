//! The request id a client is known by.

use http::HeaderValue;

const MAX_REQUEST_ID: usize = 128;

/// The client's `x-request-id` when it is safe to repeat in logs and
/// headers (`[A-Za-z0-9._:-]{1,128}`), else a fresh random one.
pub(crate) fn request_id(client_value: Option<&[u8]>) -> String {
    match client_value {
        Some(v) if is_safe(v) => {
            // Checked ASCII above.
            String::from_utf8_lossy(v).into_owned()
        }
        _ => {
            let n: u128 = rand::random();
            format!("{n:032x}")
        }
    }
}

/// A request's id as one header value: sent upstream and back to the
/// client as it is, and read as text by the logs.
#[derive(Debug, Clone, Default)]
pub struct RequestId(Option<HeaderValue>);

impl RequestId {
    /// The client's `x-request-id` when it is a safe one, else a fresh
    /// random id — hex-encoded by hand, without the formatting machinery.
    pub fn of(client_value: Option<&HeaderValue>) -> Self {
        if let Some(v) = client_value.filter(|v| is_safe(v.as_bytes())) {
            return RequestId(Some(v.clone()));
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n: u128 = rand::random();
        let mut id = [0u8; 32];
        for (i, digit) in id.iter_mut().enumerate() {
            *digit = HEX[usize::try_from((n >> (124 - 4 * i)) & 0xf).unwrap_or(0)];
        }
        RequestId(HeaderValue::from_bytes(&id).ok())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The header value (empty before the request was read).
    pub fn header(&self) -> HeaderValue {
        self.0
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

fn is_safe(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_kept_or_generated() {
        assert_eq!(request_id(Some(b"abc-1.2:3_x")), "abc-1.2:3_x");
        assert_eq!(request_id(Some(b"bad id")).len(), 32);
        assert_eq!(request_id(Some(&[b'a'; 129])).len(), 32);
        assert_eq!(request_id(None).len(), 32);
    }

    #[test]
    fn request_id_value() {
        let kept = RequestId::of(Some(&HeaderValue::from_static("abc-1")));
        assert_eq!(kept.as_str(), "abc-1");
        let fresh = RequestId::of(Some(&HeaderValue::from_static("bad id")));
        assert_eq!(fresh.as_str().len(), 32);
        assert!(fresh.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(RequestId::of(None).as_str(), RequestId::of(None).as_str());
        assert_eq!(RequestId::default().as_str(), "");
    }
}
