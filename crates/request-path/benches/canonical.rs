//! What the one reading costs per request: `cargo bench -p request-path --bench canonical`.
//! Nearly every request's path is already canonical (the borrowed fast path, one pass over
//! its bytes); a respelled one is rebuilt.

#![allow(clippy::unwrap_used, reason = "benchmark set-up")]
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use request_path::{RoutePrefix, canonical_path};

fn benches(c: &mut Criterion) {
    for (name, path) in [
        ("canonical_short", "/fl/update"),
        (
            "canonical_long",
            "/api/v1/nodes/123/models/round-42/weights/layer-7",
        ),
        ("respelled", "/%66l/./update//x/../"),
        ("escapes_kept", "/caf%c3%a9/a%20b/%3fq"),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| canonical_path(black_box(path)).unwrap())
        });
    }
    let prefixes = [
        RoutePrefix::new("/fl/").unwrap(),
        RoutePrefix::new("/trust/revoke").unwrap(),
    ];
    c.bench_function("two_prefixes_miss", |b| {
        b.iter(|| {
            prefixes
                .iter()
                .any(|p| p.covers(black_box("/trust/status")))
        })
    });
}

criterion_group!(canonical, benches);
criterion_main!(canonical);
