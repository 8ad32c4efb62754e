//! The local rate-limit store's hot path: one hot key (a shard read lock
//! and a compare-and-swap), and 1,000,000 distinct keys cycled through,
//! live (lookups) or going idle (inserts and sweeps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::protect::ratelimit::local::LocalStore;
use portcullis::protect::ratelimit::Limit;

const DISTINCT: u32 = 1_000_000;

fn bench(c: &mut Criterion) {
    let limit = Limit {
        requests: 100,
        window: Duration::from_secs(60),
        burst: 100,
    };

    let store = LocalStore::new(1_000_000);
    c.bench_function("ratelimit_local_hot_key", |b| {
        b.iter(|| black_box(store.check(black_box(b"orders|consumer:acme"), &limit)))
    });

    let keys: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|i| {
            format!(
                "orders|client_ip:10.{}.{}.{}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
            .into_bytes()
        })
        .collect();

    // Keys stay live (one token comes back every 36 s) in a table with room
    // for all of them: lookups in a 1M-entry table.
    let live = Limit {
        window: Duration::from_secs(3600),
        ..limit.clone()
    };
    let store = LocalStore::new(2_000_000);
    for key in &keys {
        store.check(key, &live);
    }
    let mut next = 0usize;
    c.bench_function("ratelimit_local_1m_live_keys", |b| {
        b.iter(|| {
            let key = &keys[next % keys.len()];
            next = next.wrapping_add(1);
            black_box(store.check(key, &live))
        })
    });

    // Keys go idle before they come round again, in a table capped at 1M:
    // mostly first-seen inserts, with the sweeps they cause (run inline
    // here, as there is no Tokio runtime to take them).
    let store = LocalStore::new(1_000_000);
    let mut next = 0usize;
    c.bench_function("ratelimit_local_1m_churning_keys", |b| {
        b.iter(|| {
            let key = &keys[next % keys.len()];
            next = next.wrapping_add(1);
            black_box(store.check(key, &limit))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
