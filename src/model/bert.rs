//! The BERT encoder in tch, one struct per block, built through Hugging Face names
//! (`p / "attention" / "self" / "query"`), so `model.safetensors` keys fall out of the tree.
//! Forward code follows `transformers/models/bert/modeling_bert.py`: post-LayerNorm residual blocks,
//! exact (erf) GELU, attention through `scaled_dot_product_attention` with the padding mask.
//!
//! Precision: parameters are fp32 (the master weights). Matrix work runs in `Ctx::kind` (fp32 on CPU,
//! bf16 on CUDA): weights and inputs are cast explicitly at use, since tch has no autocast; LayerNorm and
//! losses stay in fp32, and so does the residual stream unless `Ctx::residual` says bf16.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use super::config::BertConfig;

/// What one forward pass runs with.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub train: bool,
    /// The kind matrix work runs in.
    pub kind: Kind,
    /// The kind of the residual stream: LayerNorm outputs and the additions into them. fp32 is what
    /// the reference's autocast does (LayerNorm autocasts to fp32, and bf16 + fp32 adds in fp32);
    /// bf16 halves that traffic (`run.residual = "bf16"`).
    pub residual: Kind,
}

impl Ctx {
    /// Training in `kind` with the reference's fp32 residual stream.
    pub fn train(kind: Kind) -> Self {
        Ctx {
            train: true,
            kind,
            residual: Kind::Float,
        }
    }

    /// Inference in `kind` with the reference's fp32 residual stream.
    pub fn eval(kind: Kind) -> Self {
        Ctx {
            train: false,
            kind,
            residual: Kind::Float,
        }
    }

    pub fn with_residual(self, residual: Kind) -> Self {
        Ctx { residual, ..self }
    }
}

fn normal(cfg: &BertConfig) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: cfg.initializer_range,
    }
}

/// `nn::Linear` with HF initialisation (N(0, initializer_range), zero bias), run in the context's kind.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: nn::Path, cfg: &BertConfig, input: i64, output: i64) -> Self {
        Linear {
            weight: p.var("weight", &[output, input], normal(cfg)),
            bias: p.var("bias", &[output], Init::Const(0.0)),
        }
    }

    pub fn forward(&self, x: &Tensor, ctx: Ctx) -> Tensor {
        x.to_kind(ctx.kind).linear(
            &self.weight.to_kind(ctx.kind),
            Some(self.bias.to_kind(ctx.kind)),
        )
    }
}

/// LayerNorm computed in fp32 and returned in the context's residual kind.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
    size: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, size: i64, eps: f64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[size], Init::Const(1.0)),
            bias: p.var("bias", &[size], Init::Const(0.0)),
            eps,
            size,
        }
    }

    pub fn forward(&self, x: &Tensor, ctx: Ctx) -> Tensor {
        x.to_kind(Kind::Float)
            .layer_norm(
                [self.size],
                Some(&self.weight),
                Some(&self.bias),
                self.eps,
                true,
            )
            .to_kind(ctx.residual)
    }
}

#[derive(Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    pub fn new(p: nn::Path, cfg: &BertConfig) -> Self {
        let emb =
            |name: &str, n: i64| (&p / name).var("weight", &[n, cfg.hidden_size], normal(cfg));
        let word_embeddings = emb("word_embeddings", cfg.vocab_size);
        // HF zeroes the padding row at initialisation.
        if (0..cfg.vocab_size).contains(&cfg.pad_token_id) {
            tch::no_grad(|| {
                let _ = word_embeddings.get(cfg.pad_token_id).zero_();
            });
        }
        BertEmbeddings {
            word_embeddings,
            position_embeddings: emb("position_embeddings", cfg.max_position_embeddings),
            token_type_embeddings: emb("token_type_embeddings", cfg.type_vocab_size),
            layer_norm: LayerNorm::new(&p / "LayerNorm", cfg.hidden_size, cfg.layer_norm_eps),
            dropout: cfg.hidden_dropout_prob,
        }
    }

    /// input_ids: (B, T). No token type ids are passed (the reference uses zeros); positions 0..T-1,
    /// or each token's own position in its sequence when packed.
    pub fn forward(&self, input_ids: &Tensor, mask: &Mask, ctx: Ctx) -> Tensor {
        let (_b, t) = input_ids.size2().expect("input_ids is (B, T)");
        let words = Tensor::embedding(&self.word_embeddings, input_ids, -1, false, false); // (B, T, H)
        let positions = match mask {
            Mask::Packed(p) => self
                .position_embeddings
                .index_select(0, &p.positions)
                .unsqueeze(0), // (1, T, H)
            Mask::Dense(_) => self.position_embeddings.narrow(0, 0, t), // (T, H)
        };
        let types = self.token_type_embeddings.get(0); // (H)
        let x = words + positions + types;
        self.layer_norm
            .forward(&x, ctx)
            .dropout(self.dropout, ctx.train)
    }
}

/// Which tokens attend to which. `Dense`: (B, T) rows, with the mask in the form SDPA takes: none
/// when nothing is padded (so the fused kernels can be chosen), else a boolean (B, 1, 1, T) mask, true
/// where a key may be attended to. `Packed`: the batch's real tokens in one row (1, T), no padding at
/// all; each sequence attends within itself (`run.unpad`).
pub enum Mask {
    Dense(Option<Tensor>),
    Packed(Packing),
}

/// Where the sequences of a packed row lie.
pub struct Packing {
    /// Sequence boundaries in the row, [0, l0, l0 + l1, ...] (on the host: no sync to cut by them).
    pub cu_seqlens: Vec<i64>,
    /// Each token's position in its own sequence, (T) int64 on the device.
    pub positions: Tensor,
    /// Where each sequence starts (its [CLS]), (B) int64 on the device.
    pub starts: Tensor,
    /// `cu_seqlens` as int32 on the device, and the longest sequence: what the varlen kernel takes.
    cu_seqlens_device: Tensor,
    max_len: i64,
}

impl Packing {
    /// The packing of sequences of these lengths (`device`: where the index tensors go).
    pub fn of_lengths(lens: &[usize], device: tch::Device) -> Self {
        let mut cu = Vec::with_capacity(lens.len() + 1);
        cu.push(0i64);
        let mut positions = Vec::with_capacity(lens.iter().sum());
        for &l in lens {
            cu.push(cu.last().expect("starts with 0") + l as i64);
            positions.extend(0..l as i64);
        }
        let starts = cu[..lens.len()].to_vec();
        let cu32: Vec<i32> = cu.iter().map(|&c| c as i32).collect();
        Packing {
            positions: crate::device::upload(Tensor::from_slice(&positions), device),
            starts: crate::device::upload(Tensor::from_slice(&starts), device),
            cu_seqlens_device: crate::device::upload(Tensor::from_slice(&cu32), device),
            max_len: lens.iter().copied().max().unwrap_or(0) as i64,
            cu_seqlens: cu,
        }
    }
}

impl Mask {
    /// Nothing padded: every token of every row attends to its whole row.
    pub fn none() -> Self {
        Mask::Dense(None)
    }

    /// From a (B, T) 0/1 mask whose padding the caller knows from the host batch: no device sync.
    pub fn known(attention_mask: &Tensor, padded: bool) -> Self {
        Mask::Dense(padded.then(|| attention_mask.ne(0).unsqueeze(1).unsqueeze(1)))
    }

    /// From a (B, T) mask alone: asks the device whether anything is padded (a host sync).
    pub fn detect(attention_mask: &Tensor) -> Self {
        let padded = attention_mask.eq(0).any().int64_value(&[]) != 0;
        Self::known(attention_mask, padded)
    }

    /// Each sequence's [CLS] vector of `hidden` (B, T, H) or packed (1, T, H): (B, H), a view when
    /// dense.
    pub fn cls_rows(&self, hidden: &Tensor) -> Tensor {
        match self {
            Mask::Dense(_) => hidden.select(1, 0),
            Mask::Packed(p) => hidden.select(0, 0).index_select(0, &p.starts),
        }
    }
}

/// Scaled dot-product attention of q, k, v (B, nh, T, d) under `mask`. Packed: on CUDA in bf16/fp16
/// through FlashAttention's variable-length kernel (`flash_varlen`); elsewhere, and should that kernel
/// refuse, each sequence's slice of the row attends within itself (`per_sequence`).
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, dropout: f64) -> Tensor {
    match mask {
        Mask::Dense(m) => Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            m.as_ref(),
            dropout,
            false,
            None::<f64>,
            false,
        ),
        Mask::Packed(p)
            if q.device().is_cuda()
                && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
                && !FLASH_REFUSED.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            flash_varlen(q, k, v, p, dropout).unwrap_or_else(|e| {
                // Once refused, not asked again: a C++ exception per layer and step would cost more
                // than the attention.
                if !FLASH_REFUSED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    log::warn!("packed attention: the varlen flash kernel refused ({e}); attending sequence by sequence from now on");
                }
                per_sequence(q, k, v, p, dropout)
            })
        }
        Mask::Packed(p) => per_sequence(q, k, v, p, dropout),
    }
}

/// Set when the varlen flash kernel refused once in this process.
static FLASH_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Packed attention one sequence at a time: exact, and the CPU's path.
fn per_sequence(q: &Tensor, k: &Tensor, v: &Tensor, p: &Packing, dropout: f64) -> Tensor {
    let parts: Vec<Tensor> = p
        .cu_seqlens
        .windows(2)
        .map(|w| {
            let (s, n) = (w[0], w[1] - w[0]);
            let (q, k, v) = (q.narrow(2, s, n), k.narrow(2, s, n), v.narrow(2, s, n));
            Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                dropout,
                false,
                None::<f64>,
                false,
            )
        })
        .collect();
    Tensor::cat(&parts, 2)
}

/// Packed attention through csrc/attention.cpp's `condenser_flash_varlen` (FlashAttention's varlen
/// forward and backward as one autograd node). Not yet run on a GPU: issue 27's GPU part checks it
/// against `per_sequence` before it may be called faster.
fn flash_varlen(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &Packing,
    dropout: f64,
) -> Result<Tensor, String> {
    extern "C" {
        fn condenser_flash_varlen(
            q: *const std::ffi::c_void,
            k: *const std::ffi::c_void,
            v: *const std::ffi::c_void,
            cu_seqlens: *const std::ffi::c_void,
            max_len: i64,
            dropout: f64,
            out: *mut *mut std::ffi::c_void,
        ) -> *mut std::ffi::c_char;
    }
    // (1, nh, T, d) -> (T, nh, d), the kernel's layout.
    let packed = |t: &Tensor| t.select(0, 0).transpose(0, 1).contiguous();
    let (q, k, v) = (packed(q), packed(k), packed(v));
    let mut out: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: the shim reads the four tch handles, which outlive the call, and on success stores a
    // new `at::Tensor*` in `out`, whose ownership passes to the returned Tensor; it catches every C++
    // exception and returns it as a message (`ffi::check` frees it).
    let err = unsafe {
        condenser_flash_varlen(
            q.as_ptr().cast(),
            k.as_ptr().cast(),
            v.as_ptr().cast(),
            p.cu_seqlens_device.as_ptr().cast(),
            p.max_len,
            dropout,
            &mut out,
        )
    };
    crate::ffi::check(err)?;
    // SAFETY: a non-null handle the shim allocated for us (see above).
    let y = unsafe { Tensor::from_ptr(out.cast()) };
    Ok(y.transpose(0, 1).unsqueeze(0)) // (1, nh, T, d)
}

#[derive(Debug)]
pub struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: i64,
    dropout: f64,
}

#[derive(Debug)]
pub struct BertLayer {
    attention: BertSelfAttention,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    hidden_dropout: f64,
}

impl BertLayer {
    pub fn new(p: nn::Path, cfg: &BertConfig) -> Self {
        let h = cfg.hidden_size;
        let att = &p / "attention";
        let slf = &att / "self";
        BertLayer {
            attention: BertSelfAttention {
                query: Linear::new(&slf / "query", cfg, h, h),
                key: Linear::new(&slf / "key", cfg, h, h),
                value: Linear::new(&slf / "value", cfg, h, h),
                heads: cfg.num_attention_heads,
                dropout: cfg.attention_probs_dropout_prob,
            },
            attention_output: Linear::new(&att / "output" / "dense", cfg, h, h),
            attention_norm: LayerNorm::new(&att / "output" / "LayerNorm", h, cfg.layer_norm_eps),
            intermediate: Linear::new(&p / "intermediate" / "dense", cfg, h, cfg.intermediate_size),
            output: Linear::new(&p / "output" / "dense", cfg, cfg.intermediate_size, h),
            output_norm: LayerNorm::new(&p / "output" / "LayerNorm", h, cfg.layer_norm_eps),
            hidden_dropout: cfg.hidden_dropout_prob,
        }
    }

    /// x: (B, T, H), or (1, T, H) packed; mask from [`Mask`].
    pub fn forward(&self, x: &Tensor, mask: &Mask, ctx: Ctx) -> Tensor {
        let (b, t, h) = x.size3().expect("hidden states are (B, T, H)");
        let a = &self.attention;
        let d = h / a.heads;
        let split = |y: Tensor| y.view([b, t, a.heads, d]).transpose(1, 2); // (B, nh, T, d)
        let q = split(a.query.forward(x, ctx));
        let k = split(a.key.forward(x, ctx));
        let v = split(a.value.forward(x, ctx));
        let dropout = if ctx.train { a.dropout } else { 0.0 };
        let y = attention(&q, &k, &v, mask, dropout);
        let y = y.transpose(1, 2).contiguous().view([b, t, h]); // (B, T, H)
        let y = self
            .attention_output
            .forward(&y, ctx)
            .dropout(self.hidden_dropout, ctx.train);
        let x = self.attention_norm.forward(&(y + x), ctx);
        let ff = self.intermediate.forward(&x, ctx).gelu("none");
        let ff = self
            .output
            .forward(&ff, ctx)
            .dropout(self.hidden_dropout, ctx.train);
        self.output_norm.forward(&(ff + x), ctx)
    }
}

/// `bert.*` without a pooler (as in `BertForMaskedLM`).
#[derive(Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
}

impl BertModel {
    pub fn new(p: nn::Path, cfg: &BertConfig) -> Self {
        let enc = &p / "encoder" / "layer";
        BertModel {
            embeddings: BertEmbeddings::new(&p / "embeddings", cfg),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| BertLayer::new(&enc / i, cfg))
                .collect(),
        }
    }

    /// Hidden states in HF order: [embeddings, layer 1, ..., layer L], each (B, T, H).
    /// `keep` bounds which are returned (others are dropped as soon as the next layer ran).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        mask: &Mask,
        keep: &[usize],
        ctx: Ctx,
    ) -> Vec<(usize, Tensor)> {
        let mut x = self.embeddings.forward(input_ids, mask, ctx);
        let mut kept = Vec::new();
        if keep.contains(&0) {
            kept.push((0, x.shallow_clone()));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, mask, ctx);
            if keep.contains(&(i + 1)) {
                kept.push((i + 1, x.shallow_clone()));
            }
        }
        kept
    }

    /// The last layer's output (B, T, H).
    pub fn last_hidden(&self, input_ids: &Tensor, mask: &Mask, ctx: Ctx) -> Tensor {
        let n = self.layers.len();
        self.forward(input_ids, mask, &[n], ctx)
            .pop()
            .expect("the last layer is kept")
            .1
    }
}

/// `cls.predictions`: dense + GELU + LayerNorm, then the decoder tied to the word embeddings + bias.
#[derive(Debug)]
pub struct BertLmHead {
    dense: Linear,
    norm: LayerNorm,
    pub bias: Tensor,
}

impl BertLmHead {
    pub fn new(p: nn::Path, cfg: &BertConfig) -> Self {
        BertLmHead {
            dense: Linear::new(
                &p / "transform" / "dense",
                cfg,
                cfg.hidden_size,
                cfg.hidden_size,
            ),
            norm: LayerNorm::new(
                &p / "transform" / "LayerNorm",
                cfg.hidden_size,
                cfg.layer_norm_eps,
            ),
            bias: p.var("bias", &[cfg.vocab_size], Init::Const(0.0)),
        }
    }

    /// h: (..., H) -> fp32 logits (..., V).
    pub fn forward(&self, h: &Tensor, word_embeddings: &Tensor, ctx: Ctx) -> Tensor {
        let x = self
            .norm
            .forward(&self.dense.forward(h, ctx).gelu("none"), ctx);
        x.to_kind(ctx.kind)
            .linear(
                &word_embeddings.to_kind(ctx.kind),
                Some(self.bias.to_kind(ctx.kind)),
            )
            .to_kind(Kind::Float)
    }
}
