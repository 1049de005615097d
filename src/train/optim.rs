//! AdamW (decoupled weight decay, bias-corrected, as torch.optim.AdamW and the reference's HF AdamW),
//! gradient-norm clipping, and the linear warm-up / linear decay schedule.
//!
//! Few large kernels instead of hundreds of small ones: every parameter and its gradient are views of
//! one flat fp32 buffer each (decayed parameters first, then biases and LayerNorm weights, spec 4.1), so
//! clipping is one norm and one scale, and the update is libtorch's fused AdamW kernel (what
//! `torch.optim.AdamW(fused=True)` runs, CPU and CUDA) called once per group through a small C++ shim
//! (csrc/fused_adamw.cpp: tch 0.24 binds no op over tensor lists). If that kernel refuses, the same
//! update runs as about ten in-place whole-buffer kernels (`Kernel::InPlace`).
//!
//! No host sync: a non-finite loss or gradient norm is found on the device. From then on a sticky
//! `healthy` flag zeroes every update, so the weights and moments stay those of the last good step; the
//! trainer reads the flag when it logs or saves (`AdamW::diverged`) and stops there. The moments are
//! named per parameter (views of the flat buffers) so checkpoints keep one tensor per parameter.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::config::OptimConfig;

/// The learning rate of optimizer step `step` (0-based) of `total`: HF's
/// `get_linear_schedule_with_warmup` with HF Trainer's `ceil(warmup_ratio x total)` warm-up steps,
/// value for value (`tests/schedule.rs` compares it with transformers' own scheduler): `lr x step /
/// warmup` during the warm-up, so the first step's rate is 0, then linear decay to 0 at `total`.
pub fn lr_at(step: usize, total: usize, cfg: &OptimConfig) -> f64 {
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
    if step < warmup {
        return cfg.lr * (step as f64 / warmup as f64);
    }
    let left = total.saturating_sub(step) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    cfg.lr * (left / span).max(0.0)
}

pub fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm.weight"))
}

pub struct AdamW {
    /// Parameters in flat-buffer order: (name, tensor, offset, element count).
    params: Vec<(String, Tensor, i64, i64)>,
    /// Elements of the decayed parameters (the buffers' first part).
    n_decay: i64,
    flat: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// 1.0 until a non-finite loss or gradient norm is seen, then 0.0 for good (a device scalar).
    healthy: Tensor,
    /// Updates applied, counted on the device (= `steps` while healthy): the fused kernel's step.
    applied: Tensor,
    /// Optimizer steps taken.
    pub steps: i64,
    pub kernel: Kernel,
}

/// How the update runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// libtorch's fused AdamW: one pass over parameters, gradients and moments.
    Fused,
    /// About ten in-place whole-buffer tch kernels (the fallback, and a check on the fused one).
    InPlace,
}

mod ffi {
    use std::ffi::{c_char, c_void};
    extern "C" {
        /// csrc/fused_adamw.cpp; tensors are tch handles (`at::Tensor*`).
        #[allow(clippy::too_many_arguments)]
        pub fn condenser_fused_adamw(
            param: *const c_void,
            grad: *const c_void,
            exp_avg: *const c_void,
            exp_avg_sq: *const c_void,
            step: *const c_void,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            found_inf: *const c_void,
        ) -> *mut c_char;
    }
}

impl AdamW {
    /// Moves every parameter (and its gradient) into the flat buffers; all must be fp32 on one device.
    /// Every parameter is updated every step: both objectives use all of them, so no gradient is absent.
    pub fn new(vars: BTreeMap<String, Tensor>) -> Self {
        let mut named: Vec<(String, Tensor)> = vars.into_iter().collect();
        // Stable: decayed first, each group in name order.
        named.sort_by_key(|(name, _)| !decays(name));
        let device = named.first().map_or(Device::Cpu, |(_, p)| p.device());
        let mut params = Vec::with_capacity(named.len());
        let (mut offset, mut n_decay) = (0i64, 0i64);
        for (name, p) in named {
            assert_eq!(
                p.kind(),
                Kind::Float,
                "{name}: fp32 master weights expected"
            );
            let n = p.numel() as i64;
            if decays(&name) {
                n_decay += n;
            }
            params.push((name, p, offset, n));
            offset += n;
        }
        let opts = (Kind::Float, device);
        let flat = Tensor::zeros([offset], opts);
        let grad = Tensor::zeros([offset], opts);
        tch::no_grad(|| {
            for (_, p, at, n) in &mut params {
                let size = p.size();
                let slot = flat.narrow(0, *at, *n).view(size.as_slice());
                let mut s = slot.shallow_clone();
                s.copy_(p);
                p.set_data(&slot);
            }
        });
        // Give every parameter a gradient (a zero backward), then point it into the flat gradient
        // buffer: autograd accumulates into a defined .grad in place, so later backwards land there.
        for (_, p, _, _) in &params {
            if !p.grad().defined() {
                (p.sum(Kind::Float) * 0.0).backward();
            }
        }
        tch::no_grad(|| {
            for (_, p, at, n) in &params {
                let mut g = p.grad();
                let mut slot = grad.narrow(0, *at, *n).view(p.size().as_slice());
                slot.copy_(&g); // a gradient computed before the optimizer existed is kept
                let _ = g.set_source_tensor_(&slot);
            }
        });
        AdamW {
            params,
            n_decay,
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            flat,
            grad,
            healthy: Tensor::ones([], opts),
            applied: Tensor::zeros([], opts),
            steps: 0,
            kernel: Kernel::Fused,
        }
    }

    /// The moments as `exp_avg.NAME` / `exp_avg_sq.NAME` views (for checkpoints: write them, or copy
    /// into them).
    pub fn moments(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (name, p, at, n) in &self.params {
            for (prefix, buf) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
                out.push((
                    format!("{prefix}.{name}"),
                    buf.narrow(0, *at, *n).view(p.size().as_slice()),
                ));
            }
        }
        out
    }

    /// The flat gradient buffer every parameter's .grad is a view of (one all-reduce per step).
    pub fn grad_buffer(&self) -> &Tensor {
        &self.grad
    }

    /// The flat weights and both moments: what every rank must hold identically at the start.
    pub fn state_buffers(&self) -> [&Tensor; 3] {
        [&self.flat, &self.exp_avg, &self.exp_avg_sq]
    }

    /// After restoring a checkpoint's moments: `steps` updates were applied.
    pub fn set_steps(&mut self, steps: i64) {
        self.steps = steps;
        let _ = self.applied.fill_(steps);
    }

    pub fn zero_grad(&mut self) {
        let _ = self.grad.zero_();
    }

    /// The total gradient L2 norm (a device scalar: no host sync), in-place clipping to `max_norm`
    /// (0 = off), and the health check of this step: a non-finite `loss` or norm zeroes the gradient
    /// and marks the optimizer unhealthy, so no later update applies.
    pub fn clip_grad_norm(&mut self, max_norm: f64, loss: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let total = self.grad.norm();
            let finite = total.isfinite().logical_and(&loss.detach().isfinite());
            self.healthy = &self.healthy * finite.to_kind(Kind::Float);
            let coef = if max_norm > 0.0 {
                // min(1, max_norm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_.
                (max_norm / (&total + 1e-6)).clamp_max(1.0)
            } else {
                Tensor::ones([], (Kind::Float, total.device()))
            };
            let _ = self.grad.g_mul_(&coef);
            total
        })
    }

    /// One AdamW update at learning rate `lr`, applied only while healthy. It consumes the gradients:
    /// they are 0 afterwards.
    pub fn step(&mut self, lr: f64, cfg: &OptimConfig) {
        self.steps += 1;
        tch::no_grad(|| {
            self.applied += &self.healthy;
            if self.kernel == Kernel::Fused {
                match self.fused_step(lr, cfg) {
                    Ok(()) => {
                        let _ = self.grad.zero_();
                        return;
                    }
                    Err(e) => {
                        log::warn!(
                            "libtorch's fused AdamW failed ({e}); using the in-place kernels"
                        );
                        self.kernel = Kernel::InPlace;
                    }
                }
            }
            self.in_place_step(lr, cfg);
        });
    }

    /// The fused kernel once per weight-decay group; `found_inf` = 1 - healthy skips it on the device.
    fn fused_step(&mut self, lr: f64, cfg: &OptimConfig) -> Result<(), String> {
        let skip: Tensor = 1.0 - &self.healthy;
        let total = self.flat.size()[0];
        for (start, len, decay) in [
            (0, self.n_decay, cfg.weight_decay),
            (self.n_decay, total - self.n_decay, 0.0),
        ] {
            if len == 0 {
                continue;
            }
            let part = |t: &Tensor| t.narrow(0, start, len);
            let (p, g, m, v) = (
                part(&self.flat),
                part(&self.grad),
                part(&self.exp_avg),
                part(&self.exp_avg_sq),
            );
            // SAFETY: every pointer is a live tch tensor handle (`at::Tensor*`) for the whole call; the
            // shim catches C++ exceptions and returns them as a malloc'd message, freed here.
            let err = unsafe {
                ffi::condenser_fused_adamw(
                    p.as_ptr().cast(),
                    g.as_ptr().cast(),
                    m.as_ptr().cast(),
                    v.as_ptr().cast(),
                    self.applied.as_ptr().cast(),
                    lr,
                    cfg.beta1,
                    cfg.beta2,
                    decay,
                    cfg.eps,
                    skip.as_ptr().cast(),
                )
            };
            crate::ffi::check(err)?;
        }
        Ok(())
    }

    /// The same update as about ten in-place kernels over whole buffers (no temporaries: on the CPU each
    /// would be a fresh, page-faulting allocation); the gradient buffer is the scratch space.
    fn in_place_step(&mut self, lr: f64, cfg: &OptimConfig) {
        let t = self.steps as f64;
        let bc1 = 1.0 - cfg.beta1.powf(t);
        let bc2 = 1.0 - cfg.beta2.powf(t);
        let on = &self.healthy;
        let mut g = self.grad.shallow_clone();
        // Non-finite gradients become 0 so that the zero-weight update of a skipped step stays finite.
        let _ = g.nan_to_num_(0.0, 0.0, 0.0);
        // m = b1 m + (1 - b1) g and v = b2 v + (1 - b2) g^2, as lerps whose weight is 0 when off.
        let _ = self.exp_avg.lerp_tensor_(&g, &(on * (1.0 - cfg.beta1)));
        let _ = g.square_();
        let _ = self.exp_avg_sq.lerp_tensor_(&g, &(on * (1.0 - cfg.beta2)));
        let lr_on = on * lr;
        if cfg.weight_decay > 0.0 && self.n_decay > 0 {
            let mut decayed = self.flat.narrow(0, 0, self.n_decay);
            let _ = decayed.g_mul_(&(1.0 - &lr_on * cfg.weight_decay));
        }
        // p -= lr (m / bc1) / (sqrt(v / bc2) + eps), written as p += m / d with
        // d = -(bc1 / (lr sqrt(bc2))) (sqrt(v) + eps sqrt(bc2)): lr = 0 (or off) makes d infinite
        // and the update 0.
        let _ = self.exp_avg_sq.sqrt_out(&g);
        let _ = g.g_add_scalar_(cfg.eps * bc2.sqrt());
        let _ = g.g_mul_(&(-bc1 / (&lr_on * bc2.sqrt())));
        let _ = self.flat.addcdiv_(&self.exp_avg, &g);
        let _ = g.zero_();
    }

    /// None while every step so far was finite; else the updates applied before the first non-finite
    /// step (the weights and moments are still those). Reads two scalars: a host sync.
    pub fn diverged(&self) -> Option<i64> {
        (self.healthy.double_value(&[]) == 0.0).then(|| self.applied.double_value(&[]) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(weight_decay: f64) -> OptimConfig {
        OptimConfig {
            weight_decay,
            ..crate::train::config::TrainConfig::default().optim
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let cfg = OptimConfig {
            lr: 1.0,
            warmup_ratio: 0.1,
            ..crate::train::config::TrainConfig::default().optim
        };
        assert_eq!(lr_at(0, 100, &cfg), 0.0);
        assert!((lr_at(1, 100, &cfg) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, &cfg) - 0.9).abs() < 1e-12);
        assert!((lr_at(10, 100, &cfg) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, &cfg) - 0.5).abs() < 1e-12);
        assert!(lr_at(99, 100, &cfg) > 0.0 && lr_at(100, 100, &cfg) == 0.0);
    }

    #[test]
    fn decay_groups() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("bert.encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
        assert!(!decays("cls.predictions.bias"));
    }

    /// One step against the closed form of torch.optim.AdamW.
    #[test]
    fn matches_torch_adamw_on_one_parameter() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * &p).sum(Kind::Float);
        loss.backward();
        let mut opt = AdamW::new(BTreeMap::from([(
            "w.weight".to_string(),
            p.shallow_clone(),
        )]));
        opt.step(0.1, &cfg(0.01));
        // g = 2p; m_hat = g, v_hat = g^2 -> update = lr * g / (|g| + eps) ~ lr * sign(g); decay first.
        let got = Vec::<f32>::try_from(&p.detach()).unwrap();
        let want = [
            1.0 * (1.0 - 0.1 * 0.01) - 0.1,
            -2.0 * (1.0 - 0.1 * 0.01) + 0.1,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// Deterministic values without the global generator (tests run in parallel and reseed it).
    fn wavy(shape: &[i64], phase: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 1.7 + phase)
            .sin()
            .view(shape)
    }

    /// Parameters of both groups and several shapes.
    fn params() -> BTreeMap<String, Tensor> {
        [
            ("a.weight", vec![3, 4]),
            ("a.bias", vec![4]),
            ("b.LayerNorm.weight", vec![4]),
            ("c.weight", vec![4, 2]),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let t = wavy(&s, i as f64).set_requires_grad(true);
            (n.to_string(), t)
        })
        .collect()
    }

    /// An optimizer over `ps` (shared with the caller) running `kernel`.
    fn optimizer(ps: &BTreeMap<String, Tensor>, kernel: Kernel) -> AdamW {
        let mut opt = AdamW::new(
            ps.iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        );
        opt.kernel = kernel;
        opt
    }

    fn loss_of(p: &BTreeMap<String, Tensor>, x: &Tensor) -> Tensor {
        let h = (x.matmul(&p["a.weight"]) + &p["a.bias"]).tanh() * &p["b.LayerNorm.weight"];
        h.matmul(&p["c.weight"]).square().sum(Kind::Float)
    }

    /// The flat-buffer optimizer, with each kernel, against torch.optim.AdamW's per-parameter loop
    /// written out plainly (clip_grad_norm_, then decay, moments, bias-corrected update), over three
    /// steps with clipping.
    #[test]
    fn flat_buffers_match_the_per_parameter_update() {
        for kernel in [Kernel::Fused, Kernel::InPlace] {
            matches_the_per_parameter_update(kernel);
        }
    }

    fn matches_the_per_parameter_update(kernel: Kernel) {
        let c = cfg(0.1);
        let ours = params();
        let mut opt = optimizer(&ours, kernel);
        let theirs = params();
        let mut m: BTreeMap<_, _> = theirs
            .iter()
            .map(|(n, t)| (n.clone(), t.zeros_like()))
            .collect();
        let mut v = m
            .iter()
            .map(|(n, t)| (n.clone(), t.zeros_like()))
            .collect::<BTreeMap<_, _>>();
        let x = wavy(&[5, 3], 0.3);
        for step in 1..=3 {
            let lr = 0.05 * step as f64;
            let l = loss_of(&ours, &x);
            l.backward();
            let norm = opt.clip_grad_norm(0.5, &l).double_value(&[]);
            opt.step(lr, &c);
            opt.zero_grad();

            loss_of(&theirs, &x).backward();
            tch::no_grad(|| {
                let total = theirs
                    .values()
                    .map(|p| p.grad().square().sum(Kind::Float).double_value(&[]))
                    .sum::<f64>()
                    .sqrt();
                assert!((total - norm).abs() < 1e-4 * total, "{total} vs {norm}");
                let coef = (0.5 / (total + 1e-6)).min(1.0);
                let (bc1, bc2) = (1.0 - c.beta1.powi(step), 1.0 - c.beta2.powi(step));
                for (name, p) in &theirs {
                    let g = p.grad() * coef;
                    let mut p = p.shallow_clone();
                    if decays(name) {
                        let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                    }
                    let mi = m.get_mut(name).unwrap();
                    *mi = &*mi * c.beta1 + &g * (1.0 - c.beta1);
                    let vi = v.get_mut(name).unwrap();
                    *vi = &*vi * c.beta2 + &g * &g * (1.0 - c.beta2);
                    let update = (&*mi / bc1) / ((&*vi / bc2).sqrt() + c.eps) * lr;
                    let _ = p.g_sub_(&update);
                    let _ = p.grad().zero_();
                }
            });
        }
        assert_eq!(opt.kernel, kernel, "no fallback");
        for (name, p) in &ours {
            let diff = (p - &theirs[name]).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{kernel:?}: {name}: max abs diff {diff}");
        }
        for (key, t) in opt.moments() {
            let (prefix, name) = key.split_once('.').unwrap();
            let want = if prefix == "exp_avg" {
                &m[name]
            } else {
                &v[name]
            };
            let diff = (&t - want).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{kernel:?}: {key}: max abs diff {diff}");
        }
        assert_eq!(opt.diverged(), None);
    }

    /// A NaN loss is caught on the device: this and every later update is skipped.
    #[test]
    fn a_non_finite_step_leaves_weights_and_moments_alone() {
        for kernel in [Kernel::Fused, Kernel::InPlace] {
            skips_non_finite_steps(kernel);
        }
    }

    fn skips_non_finite_steps(kernel: Kernel) {
        let ours = params();
        let mut opt = optimizer(&ours, kernel);
        let x = wavy(&[5, 3], 0.3);
        let good = loss_of(&ours, &x);
        good.backward();
        let _ = opt.clip_grad_norm(1.0, &good);
        opt.step(0.1, &cfg(0.01));
        opt.zero_grad();
        let snapshot = |opt: &AdamW| -> Vec<Tensor> {
            ours.values()
                .map(|t| t.detach().copy())
                .chain(opt.moments().into_iter().map(|(_, t)| t.copy()))
                .collect()
        };
        let before = snapshot(&opt);
        for bad in [f64::NAN, 1.0] {
            // A NaN loss, then a finite one: both updates are skipped (the flag is sticky).
            let l = loss_of(&ours, &x) * bad;
            l.backward();
            let _ = ours["a.bias"].grad().fill_(f64::INFINITY);
            let _ = opt.clip_grad_norm(1.0, &l);
            opt.step(0.1, &cfg(0.01));
            opt.zero_grad();
        }
        for (a, b) in before.iter().zip(snapshot(&opt)) {
            assert!(a.equal(&b));
        }
        assert_eq!(opt.diverged(), Some(1));
        assert_eq!(opt.steps, 3);
        assert_eq!(opt.kernel, kernel, "no fallback");
        let g = ours["a.bias"].grad();
        assert!(
            g.abs().max().double_value(&[]) == 0.0,
            "the gradients are consumed"
        );
    }
}
