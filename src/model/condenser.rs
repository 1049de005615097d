//! The Condenser pre-training model (spec section 2): a BERT backbone, one MLM head shared by the late
//! and the head loss, and `n_head_layers` fresh BERT layers (the head) fed with the last layer's [CLS]
//! and layer `skip_from`'s token outputs.

use tch::{nn, Kind, Tensor};

use super::bert::{BertLayer, BertLmHead, BertModel, Ctx, Mask};
use super::config::BertConfig;

/// Condenser settings (stored in `condenser_head.safetensors` metadata, like the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeadConfig {
    /// The early layer whose token outputs feed the head (HF indexing: 0 = embeddings).
    pub skip_from: usize,
    pub n_head_layers: usize,
    /// Add the last layer's own MLM loss to the head's.
    pub late_mlm: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            skip_from: 6,
            n_head_layers: 2,
            late_mlm: true,
        }
    }
}

/// MLM labels as flat positions into (B x T) and their target ids, built on the host from the collated
/// batch so that selecting the labelled positions needs no device-to-host sync.
pub struct Labels {
    pub positions: Tensor,
    pub targets: Tensor,
}

impl Labels {
    /// From row-major (B, T) host labels, -100 = unlabelled.
    pub fn from_host(labels: &[i64], device: tch::Device) -> Self {
        let (positions, targets): (Vec<i64>, Vec<i64>) = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l != -100)
            .map(|(i, &l)| (i as i64, l))
            .unzip();
        Labels {
            positions: crate::device::upload(Tensor::from_slice(&positions), device),
            targets: crate::device::upload(Tensor::from_slice(&targets), device),
        }
    }

    /// From a (B, T) label tensor (a host sync on a device).
    pub fn detect(labels: &Tensor) -> Self {
        let flat = labels.view([-1]);
        let positions = flat.ne(-100).nonzero().squeeze_dim(1);
        Labels {
            targets: flat.index_select(0, &positions),
            positions,
        }
    }
}

/// What a training forward returns.
pub struct CondenserOutput {
    /// head_loss + late_loss (late_mlm) or head_loss, fp32 scalar.
    pub loss: Tensor,
    pub head_loss: Tensor,
    pub late_loss: Tensor,
    /// Last-layer [CLS] vectors (B, H), the span representations.
    pub cls: Tensor,
}

#[derive(Debug)]
pub struct Condenser {
    pub config: BertConfig,
    pub head_config: HeadConfig,
    pub bert: BertModel,
    pub lm_head: BertLmHead,
    pub c_head: Vec<BertLayer>,
}

/// The head must read an early layer: `skip_from` in [1, layers - 1].
pub fn check_skip_from(skip_from: usize, layers: i64) -> anyhow::Result<()> {
    if skip_from < 1 || skip_from as i64 >= layers {
        anyhow::bail!(
            "model.skip_from {skip_from} must be in [1, {}] for a model of {layers} layers: the head must read an early layer (skip_from = the layer count would feed it the last layer, which defeats the Condenser design); leave it unset for half the layers",
            layers - 1
        );
    }
    Ok(())
}

impl Condenser {
    /// Builds every variable under `root` with HF names: `bert.*`, `cls.predictions.*`, `c_head.{i}.*`.
    pub fn new(
        root: &nn::Path,
        config: BertConfig,
        head_config: HeadConfig,
    ) -> anyhow::Result<Self> {
        check_skip_from(head_config.skip_from, config.num_hidden_layers)?;
        let bert = BertModel::new(root / "bert", &config);
        let lm_head = BertLmHead::new(root / "cls" / "predictions", &config);
        let heads = root / "c_head";
        let c_head = (0..head_config.n_head_layers)
            .map(|i| BertLayer::new(&heads / i, &config))
            .collect();
        Ok(Condenser {
            config,
            head_config,
            bert,
            lm_head,
            c_head,
        })
    }

    /// Last-layer [CLS] (B, H): the representation, backbone only. A compact copy, not a view: a view
    /// would keep the whole (B, T, H) last layer alive while the caller holds it, and the gradient
    /// cache holds every chunk's until the last (memory would grow with 2B instead of the chunk).
    pub fn cls(&self, input_ids: &Tensor, mask: &Mask, ctx: Ctx) -> Tensor {
        mask.cls_rows(&self.bert.last_hidden(input_ids, mask, ctx))
            .contiguous()
    }

    /// MLM cross-entropy (mean over labelled positions) of `hidden` (B, T, H). Logits are computed only
    /// at labelled positions: the vocabulary projection over every token would be about a fifth of
    /// BERT-base's FLOPs for nothing.
    pub fn mlm_loss(&self, hidden: &Tensor, labels: &Labels, ctx: Ctx) -> Tensor {
        let h = hidden.size()[2];
        let picked = hidden.reshape([-1, h]).index_select(0, &labels.positions); // (M, H)
        let logits = self
            .lm_head
            .forward(&picked, &self.bert.embeddings.word_embeddings, ctx); // (M, V)
        logits.cross_entropy_loss::<Tensor>(&labels.targets, None, tch::Reduction::Mean, -100, 0.0)
    }

    /// Backbone and head without losses: (last layer (B, T, H), head output (B, T, H)); (1, T, H) each
    /// when packed.
    pub fn states(&self, input_ids: &Tensor, mask: &Mask, ctx: Ctx) -> (Tensor, Tensor) {
        let last_layer = self.bert.layers.len();
        let mut hs = self.bert.forward(
            input_ids,
            mask,
            &[self.head_config.skip_from, last_layer],
            ctx,
        );
        let last = hs.pop().expect("last layer kept").1; // (B, T, H)
        let early = hs
            .pop()
            .map(|(_, t)| t)
            .unwrap_or_else(|| last.shallow_clone()); // skip_from == last
                                                      // Head input: the late [CLS] followed by the early layer's positions 1..T (same length T);
                                                      // packed, each sequence's first token is its late [CLS].
        let mut x = match mask {
            Mask::Dense(_) => {
                let t = last.size()[1];
                Tensor::cat(&[last.narrow(1, 0, 1), early.narrow(1, 1, t - 1)], 1)
            }
            Mask::Packed(p) => early.index_copy(1, &p.starts, &last.index_select(1, &p.starts)),
        };
        for layer in &self.c_head {
            x = layer.forward(&x, mask, ctx);
        }
        (last, x)
    }

    /// The Condenser forward: late MLM on the last layer, head MLM on [late CLS ; early tokens].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        mask: &Mask,
        labels: &Labels,
        ctx: Ctx,
    ) -> CondenserOutput {
        let (last, head) = self.states(input_ids, mask, ctx);
        let late_loss = self.mlm_loss(&last, labels, ctx);
        let head_loss = self.mlm_loss(&head, labels, ctx);
        let loss = if self.head_config.late_mlm {
            &head_loss + &late_loss
        } else {
            head_loss.shallow_clone()
        };
        CondenserOutput {
            loss,
            head_loss,
            late_loss,
            cls: mask.cls_rows(&last).to_kind(Kind::Float),
        }
    }
}
