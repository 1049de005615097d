//! Packed batches (`run.unpad`: a batch's real tokens in one row, no padding, each sequence attending
//! within itself) train the same model as padded ones: the losses and every gradient agree within 1e-5
//! (fp32, dropout off, so the layout is the only difference) for the Condenser stage, coCondenser with
//! and without the gradient cache, and fine-tuning with and without it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use condenser::dist::Dist;
use condenser::model::{hf, Ctx, HeadConfig};
use condenser::train::config::{LossConfig, TrainConfig};
use condenser::train::objective::cocondenser::CocondenserObjective;
use condenser::train::objective::condenser::CondenserObjective;
use condenser::train::objective::finetune::FinetuneObjective;
use condenser::train::objective::{Losses, Objective};
use condenser::train::pairs::PairBatch;
use tch::{Device, Kind, Tensor};

fn load() -> hf::Loaded {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-condenser/model");
    hf::load(&fixture, Device::Cpu, HeadConfig::default(), 0).unwrap()
}

fn loss_config(cache: usize) -> LossConfig {
    LossConfig {
        cache_chunk_size: cache,
        ..TrainConfig::default().loss
    }
}

/// The step's losses (total, then each part) and the gradients it left.
fn run<O: Objective>(mut objective: O, batch: &O::Batch) -> (Vec<f64>, BTreeMap<String, Tensor>) {
    let m = load();
    let l: Losses = objective
        .step(&m.model, std::slice::from_ref(batch), 3, &Dist::single())
        .unwrap();
    let mut losses = vec![l.total.double_value(&[])];
    losses.extend(l.parts.iter().map(|p| p.value.double_value(&[])));
    let grads =
        m.vs.variables()
            .into_iter()
            .map(|(k, v)| {
                // Fine-tuning leaves the MLM and Condenser heads without a gradient.
                let g = v.grad();
                (
                    k,
                    if g.defined() {
                        g.copy()
                    } else {
                        v.zeros_like()
                    },
                )
            })
            .collect();
    (losses, grads)
}

/// Every loss and gradient element within 1e-5 (absolute, or relative to the padded value).
fn assert_same(
    what: &str,
    padded: &(Vec<f64>, BTreeMap<String, Tensor>),
    packed: &(Vec<f64>, BTreeMap<String, Tensor>),
) {
    assert_eq!(padded.0.len(), packed.0.len(), "{what}: loss parts");
    for (a, b) in padded.0.iter().zip(&packed.0) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{what}: loss {a} padded, {b} packed"
        );
    }
    let mut nonzero = 0;
    for (k, g) in &padded.1 {
        let h = &packed.1[k];
        let worst = (g - h).abs().max().double_value(&[]);
        let scale = g.abs().max().double_value(&[]).max(1.0);
        assert!(
            worst <= 1e-5 * scale,
            "{what}: {k}: gradients differ by {worst}"
        );
        nonzero += (g.abs().max().double_value(&[]) > 0.0) as usize;
    }
    assert!(
        nonzero > padded.1.len() / 3,
        "{what}: most gradients are zero ({nonzero} of {})",
        padded.1.len()
    );
}

#[test]
fn the_condenser_stage_packed_equals_padded() {
    let b = common::masked_batch(6, 14, &[14, 9, 5, 12], true, 1);
    let objective = |unpad| CondenserObjective {
        loss: loss_config(0),
        ctx: Ctx::eval(Kind::Float),
        seed: 7,
        grad_accum: 1,
        device: Device::Cpu,
        unpad,
    };
    assert_same(
        "condenser",
        &run(objective(false), &b),
        &run(objective(true), &b),
    );
}

#[test]
fn the_cocondenser_stage_packed_equals_padded_with_and_without_the_cache() {
    // 5 documents x 2 spans; chunks of 3 cut through a document and leave a short last chunk.
    let b = common::masked_batch(10, 12, &[12, 7, 9, 12, 4], true, 2);
    for cache in [0, 3] {
        let objective = |unpad| CocondenserObjective {
            loss: loss_config(cache),
            ctx: Ctx::eval(Kind::Float),
            seed: 7,
            device: Device::Cpu,
            unpad,
        };
        let (padded, packed) = (run(objective(false), &b), run(objective(true), &b));
        assert_eq!(padded.0.len(), 4, "total, head, late, co");
        assert_same(&format!("cocondenser, cache {cache}"), &padded, &packed);
    }
}

#[test]
fn fine_tuning_packed_equals_padded_with_and_without_the_cache() {
    // 4 queries, 3 passages each (a positive and two negatives).
    let pairs = PairBatch {
        queries: common::masked_batch(4, 8, &[6, 8, 3, 5], false, 3),
        passages: common::masked_batch(12, 16, &[16, 11, 7, 14, 9, 16, 5], false, 4),
        n_passages: 3,
    };
    for cache in [0, 5] {
        let objective = |unpad| FinetuneObjective {
            loss: loss_config(cache),
            ctx: Ctx::eval(Kind::Float),
            seed: 7,
            device: Device::Cpu,
            unpad,
        };
        assert_same(
            &format!("finetune, cache {cache}"),
            &run(objective(false), &pairs),
            &run(objective(true), &pairs),
        );
    }
}
