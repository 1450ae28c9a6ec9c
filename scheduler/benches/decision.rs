//! Criterion benchmarks of one scheduling decision (body parsing included) and its parts.

mod workload;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scheduler::request::{parse, ApiKind};
use scheduler::{RequestContext, Scheduler};
use workload::*;

fn seed_like(c: &mut Criterion) {
    let addresses = addresses(16);
    let metrics = metrics(16);
    let pods = views(&addresses, &metrics);
    let scheduler =
        Scheduler::from_json(r#"{"prefix_index": {"capacity_per_pod": 62500}}"#).unwrap();
    let bodies = bodies(64, 4, 8_000, 2_000);
    warm(&scheduler, &pods, 1_000_000, &bodies);

    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("10KB prompt, 16 pods, 1M-block index", |b| {
        b.iter(|| {
            i += 1;
            decide(&scheduler, &bodies[i % bodies.len()], &pods)
        })
    });
    group.bench_function("decide only (parsed), 10KB", |b| {
        let request = parse(&bodies[0], ApiKind::Completions).unwrap();
        b.iter(|| {
            scheduler
                .decide(&request, &pods, &RequestContext::default())
                .unwrap()
                .pod
        })
    });
    group.bench_function("parse only, 10KB", |b| {
        b.iter(|| parse(&bodies[0], ApiKind::Completions).unwrap().model.len())
    });
    let long = workload::bodies(4, 2, 200_000, 20_000);
    group.bench_function("parse only, 220KB", |b| {
        b.iter(|| parse(&long[0], ApiKind::Completions).unwrap().model.len())
    });
    group.bench_function("220KB prompt, 16 pods", |b| {
        b.iter(|| decide(&scheduler, &long[0], &pods))
    });
    group.finish();
}

criterion_group!(benches, seed_like);
criterion_main!(benches);
