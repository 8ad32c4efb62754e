//! The request id a client is known by.

const MAX_REQUEST_ID: usize = 128;

/// The client's `x-request-id` when it is safe to repeat in logs and
/// headers (`[A-Za-z0-9._:-]{1,128}`), else a fresh random one.
pub fn request_id(client_value: Option<&[u8]>) -> String {
    match client_value {
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.iter().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            // Checked ASCII above.
            String::from_utf8_lossy(v).into_owned()
        }
        _ => {
            let n: u128 = rand::random();
            format!("{n:032x}")
        }
    }
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
}
