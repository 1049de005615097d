//! The gradient cache with dropout on equals full-batch gradients. In a test binary of its own: the
//! dropout masks come from libtorch's global generator, which other tests of the same process (running
//! on other threads) would reseed in the middle of the comparison.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use condenser::model::{hf, Ctx, HeadConfig};
use condenser::train::config::LossConfig;
use condenser::train::objective::cocondenser::{cocondenser_one_graph, cocondenser_step};
use condenser::train::objective::DeviceBatch;
use tch::{Device, Kind, Tensor};

/// Gradient cache with dropout on: the gradients equal those of the whole batch's objective computed in
/// one graph with the same dropout masks (fp32, |difference| <= 1e-6 + 1e-4 |reference|), for padded
/// batches and for packed ones (`run.unpad`), whose chunks replay their dropout the same way. One test
/// for both layouts: two tests would run on two threads and reseed each other's generator.
#[test]
fn gradient_cache_equals_full_batch_gradients() {
    for unpad in [false, true] {
        gradient_cache_equals_full_batch_gradients_in(unpad);
    }
}

fn gradient_cache_equals_full_batch_gradients_in(unpad: bool) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-condenser/model");
    let load = || hf::load(&fixture, Device::Cpu, HeadConfig::default(), 0).unwrap();
    let ctx = Ctx::train(Kind::Float);
    // 2B = 10 rows (5 documents), length 12, rows 3 and 4 padded, about 30% of positions labelled.
    let (rows, len) = (10usize, 12usize);
    let b = masked_batch(rows, len, &[12, 12, 12, 9, 9, 12, 12, 12, 12, 12], true, 3);
    let batch = DeviceBatch::with_layout(&b, Device::Cpu, unpad);
    let w = LossConfig {
        head_weight: 1.0,
        late_weight: 1.0,
        co_weight: 1.0,
        cache_chunk_size: 3,
        mlm_weight: 1.0,
        temperature: 1.0,
        negatives_across_ranks: true,
        similarity: Default::default(),
        cos_scale: 20.0,
    };
    let grads = |m: &hf::Loaded| -> BTreeMap<String, Tensor> {
        m.vs.variables()
            .into_iter()
            .map(|(k, v)| (k, v.grad().copy()))
            .collect()
    };

    // Gradient cache, chunks of 3 (3 + 3 + 3 + 1 rows).
    let gc = load();
    let out = cocondenser_step(
        &gc.model,
        &batch,
        &w,
        ctx,
        11,
        5,
        &condenser::dist::Dist::single(),
    )
    .unwrap();
    let g_cache = grads(&gc);

    // Reference: the same objective in one graph, each chunk's forward under the same dropout seed.
    let full_batch = |seed: u64| {
        let m = load();
        let total = cocondenser_one_graph(&m.model, &batch, &w, ctx, seed, 5);
        (grads(&m), total.double_value(&[]))
    };
    let (g_full, total) = full_batch(11);
    assert!(
        (out.total.double_value(&[]) - total).abs() < 1e-5,
        "loss {} vs {}",
        out.total.double_value(&[]),
        total
    );
    let mut worst = 0f64;
    for (k, g) in &g_full {
        let d = (&g_cache[k] - g).abs();
        worst = worst.max(d.max().double_value(&[]));
        let bound = g.abs() * 1e-4 + 1e-6;
        let excess = (d - bound).max().double_value(&[]);
        assert!(
            excess <= 0.0,
            "{k}: gradient-cache gradient differs beyond tolerance by {excess:e} (unpad {unpad})"
        );
    }
    // Dropout is really on: other masks give clearly other gradients.
    let (g_other, _) = full_batch(12);
    let moved = g_other
        .iter()
        .map(|(k, g)| (g - &g_full[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "dropout had no effect ({moved:e}); the test would prove nothing"
    );
    eprintln!("unpad {unpad}: gradient cache vs full batch: within tolerance (largest absolute difference {worst:e}); other masks move grads by {moved:e}");
}
