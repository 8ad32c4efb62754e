//! HTTP/1 request heads as the gateway reads them before Pingora does.
//!
//! Input: one byte choosing where the head is split in two reads, then the
//! bytes the client sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::front::head::{check, request_id, HeadScanner};

fuzz_target!(|data: &[u8]| {
    let Some((&split, buf)) = data.split_first() else {
        return;
    };

    let whole = HeadScanner::default().find_end(buf);
    if let Some(end) = whole {
        assert!(end >= 1 && end <= buf.len(), "end {end} of {}", buf.len());
        assert_eq!(buf[end - 1], b'\n');
    }

    // The same bytes arriving in two reads are found at the same place.
    let split = usize::from(split) % (buf.len() + 1);
    let mut scanner = HeadScanner::default();
    let two = scanner
        .find_end(&buf[..split])
        .or_else(|| scanner.find_end(buf));
    assert_eq!(two, whole, "split at {split}");

    // And a byte at a time (a trickling client).
    let mut scanner = HeadScanner::default();
    let trickled = (1..=buf.len()).find_map(|n| scanner.find_end(&buf[..n]));
    assert_eq!(trickled, whole, "one byte at a time");

    // The check refuses with 400 or 431 only, whole or cut at the end found.
    for head in [Some(buf), whole.map(|end| &buf[..end])].into_iter().flatten() {
        if let Err(reject) = check(head) {
            assert!(
                matches!(reject.status(), 400 | 431),
                "status {}",
                reject.status()
            );
        }
    }

    let id = request_id(buf);
    assert!(
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')),
        "request id {id:?}"
    );
});
