//! API key lookups: a valid key among 10 keys and among 100,000 keys. The
//! lookup is by id in a hash map plus one SHA-256 and a constant-time
//! compare, so the two should cost the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::auth::api_key::ApiKeyAuthenticator;
use portcullis::auth::{Authenticator, Credentials};
use portcullis::config::{ApiKey, ApiKeyProvider, AuthKind, AuthProvider};
use sha2::{Digest, Sha256};

fn key(i: usize) -> String {
    format!("pc_k{i}_{i:0>40}")
}

fn authenticator(count: usize) -> ApiKeyAuthenticator {
    let keys: Vec<ApiKey> = (0..count)
        .map(|i| ApiKey {
            id: format!("k{i}"),
            consumer: format!("consumer-{i}"),
            hash: Sha256::digest(key(i).as_bytes()).into(),
            scopes: vec!["orders:read".into()],
            roles: vec!["partner".into()],
            expires_at: None,
            disabled: false,
            opaque: false,
        })
        .collect();
    let config = ApiKeyProvider {
        keys_file: "bench-keys.toml".into(),
        keys: Arc::new(keys),
        header: http::HeaderName::from_static("x-api-key"),
        query_param: None,
        forward_credentials: false,
    };
    let provider = AuthProvider {
        name: "bench".into(),
        kind: AuthKind::ApiKey(config.clone()),
    };
    ApiKeyAuthenticator::new(provider, config)
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("api_key_lookup");
    for count in [10, 100_000] {
        let auth = authenticator(count);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", key(count / 2).parse().expect("header"));
        let request = Credentials::of_headers(&headers);
        futures::executor::block_on(auth.authenticate(&request)).expect("bench key is valid");
        group.bench_function(format!("{count}_keys"), |b| {
            b.iter(|| futures::executor::block_on(auth.authenticate(black_box(&request))))
        });
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
