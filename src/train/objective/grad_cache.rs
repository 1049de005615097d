//! The gradient cache (Gao et al., 2021; spec 2.5): a loss over the vectors of a batch too large for
//! one graph. Pass 1 encodes the rows chunk by chunk without a graph; the loss over all the vectors
//! (gathered from every rank, as leaves) gives G = dL/dV; pass 2 replays each chunk under the same
//! dropout seed and back-propagates <G_chunk, V_chunk> (plus the chunk's own loss terms, if the
//! objective has any), which leaves in .grad exactly the gradient of the whole batch's loss.
//!
//! coCondenser's span loss and fine-tuning's retrieval loss both go through it. Dropout is keyed by a
//! chunk's place in the global batch (`Chunk::part`), so the masks do not depend on the chunking of
//! another rank, and a resumed step draws the masks the uninterrupted one drew.

use tch::{Kind, Tensor};

use super::seed_dropout;

/// A chunk of a rank's rows and the dropout part its forwards are seeded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub start: i64,
    pub len: i64,
    pub part: u64,
}

/// Chunk boundaries of `n` rows in chunks of `chunk` (0 = one chunk).
pub fn chunks(n: i64, chunk: usize) -> Vec<(i64, i64)> {
    let c = if chunk == 0 { n } else { chunk as i64 };
    (0..n)
        .step_by(c as usize)
        .map(|s| (s, c.min(n - s)))
        .collect()
}

/// `n` rows in chunks of `chunk` (0 = one chunk), chunk i of k seeded as `part(i, k)`.
pub fn split(n: i64, chunk: usize, part: impl Fn(usize, usize) -> u64) -> Vec<Chunk> {
    let spans = chunks(n, chunk);
    let k = spans.len();
    spans
        .into_iter()
        .enumerate()
        .map(|(i, (start, len))| Chunk {
            start,
            len,
            part: part(i, k),
        })
        .collect()
}

/// Pass 1: every chunk's vectors, without a graph, each forward under its chunk's dropout seed;
/// concatenated in row order.
pub fn encode_without_graph(
    chunks: &[Chunk],
    (seed, step): (u64, u64),
    mut encode: impl FnMut(&Chunk) -> Tensor,
) -> Tensor {
    tch::no_grad(|| {
        let reps: Vec<Tensor> = chunks
            .iter()
            .map(|c| {
                seed_dropout(seed, step, c.part);
                encode(c)
            })
            .collect();
        Tensor::cat(&reps, 0)
    })
}

/// The vectors as a leaf of the loss's graph (detached from the encoder's), so that the loss's
/// gradient stops at them.
pub fn leaf(v: &Tensor) -> Tensor {
    v.detach().set_requires_grad(true)
}

/// The gradients of the scalar `objective` with respect to `leaves`, in their order.
pub fn gradients(objective: &Tensor, leaves: &[&Tensor]) -> Vec<Tensor> {
    Tensor::run_backward(&[objective], leaves, false, false)
}

/// <G, V>: back-propagated, it sends the cached gradient G through the graph of V.
pub fn surrogate(g: &Tensor, v: &Tensor) -> Tensor {
    (g * v).sum(Kind::Float)
}

/// Pass 2: replays each chunk under its dropout seed and back-propagates what `forward` builds for it
/// (its `surrogate` with the chunk's rows of G, plus its own loss terms).
pub fn replay(
    chunks: &[Chunk],
    (seed, step): (u64, u64),
    mut forward: impl FnMut(&Chunk) -> Tensor,
) {
    for c in chunks {
        seed_dropout(seed, step, c.part);
        forward(c).backward();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking() {
        assert_eq!(chunks(10, 4), [(0, 4), (4, 4), (8, 2)]);
        assert_eq!(chunks(6, 0), [(0, 6)]);
        let parts: Vec<u64> = split(5, 2, |i, k| 10 * k as u64 + i as u64)
            .iter()
            .map(|c| c.part)
            .collect();
        assert_eq!(parts, [30, 31, 32]);
    }

    #[test]
    fn the_cached_gradient_equals_the_gradient_of_the_loss_in_one_graph() {
        // V = W x for two chunks of rows; the loss is a function of all of V at once.
        let x = Tensor::from_slice2(&[[1.0f32, 2.0], [0.5, -1.0], [3.0, 0.0]]);
        let loss_of = |v: &Tensor| (v.matmul(&v.tr())).square().sum(Kind::Float);
        let w_one = Tensor::from_slice2(&[[0.3f32, -0.2], [0.1, 0.4]]).set_requires_grad(true);
        loss_of(&x.matmul(&w_one)).backward();
        let want = w_one.grad();

        let w = Tensor::from_slice2(&[[0.3f32, -0.2], [0.1, 0.4]]).set_requires_grad(true);
        let parts = split(3, 2, |i, _| i as u64);
        let v = encode_without_graph(&parts, (0, 0), |c| x.narrow(0, c.start, c.len).matmul(&w));
        let v = leaf(&v);
        let g = gradients(&loss_of(&v), &[&v]).remove(0);
        replay(&parts, (0, 0), |c| {
            let vc = x.narrow(0, c.start, c.len).matmul(&w);
            surrogate(&g.narrow(0, c.start, c.len), &vc)
        });
        let d = (w.grad() - &want).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }
}
