//! AdamW (decoupled weight decay, bias-corrected, as torch.optim.AdamW and the reference's HF AdamW),
//! gradient-norm clipping, and the linear warm-up / linear decay schedule.
//!
//! Moments live in named tensors so a checkpoint can store them and a resumed run continues exactly.
//! Weight decay applies to every parameter except biases and LayerNorm weights (spec 4.1).

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use super::config::OptimConfig;

/// The learning rate at `step` (0-based) of `total`: linear warm-up over warmup_ratio x total steps,
/// then linear decay to 0 (HF's get_linear_schedule_with_warmup).
pub fn lr_at(step: usize, total: usize, cfg: &OptimConfig) -> f64 {
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let left = total.saturating_sub(step) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    cfg.lr * (left / span).max(0.0)
}

pub fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm.weight"))
}

pub struct AdamW {
    pub params: Vec<(String, Tensor)>,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    /// Optimizer steps taken (for bias correction).
    pub steps: i64,
}

impl AdamW {
    pub fn new(vars: BTreeMap<String, Tensor>) -> Self {
        let params: Vec<(String, Tensor)> = vars.into_iter().collect();
        let zeros = |p: &Tensor| p.zeros_like().to_kind(Kind::Float);
        let exp_avg = params.iter().map(|(_, p)| zeros(p)).collect();
        let exp_avg_sq = params.iter().map(|(_, p)| zeros(p)).collect();
        AdamW {
            params,
            exp_avg,
            exp_avg_sq,
            steps: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Total gradient L2 norm (a device scalar: no host sync) and in-place clipping to `max_norm`.
    pub fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .collect();
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.norm().to_kind(Kind::Float))
            .collect();
        let total = Tensor::stack(&norms, 0).norm();
        if max_norm > 0.0 {
            // coef = min(1, max_norm / (norm + 1e-6)), applied without reading the norm on the host.
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_(&coef);
            }
        }
        total
    }

    pub fn step(&mut self, lr: f64, cfg: &OptimConfig) {
        self.steps += 1;
        let t = self.steps as f64;
        let bc1 = 1.0 - cfg.beta1.powf(t);
        let bc2 = 1.0 - cfg.beta2.powf(t);
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                if cfg.weight_decay > 0.0 && decays(name) {
                    let _ = p.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
                }
                let m = &mut self.exp_avg[i];
                let v = &mut self.exp_avg_sq[i];
                let _ = m.g_mul_scalar_(cfg.beta1);
                let _ = m.g_add_(&(&g * (1.0 - cfg.beta1)));
                let _ = v.g_mul_scalar_(cfg.beta2);
                let _ = v.g_add_(&(&g * &g * (1.0 - cfg.beta2)));
                let denom = (v.shallow_clone() / bc2).sqrt() + cfg.eps;
                let update = (m.shallow_clone() / bc1) / denom * lr;
                let _ = p.g_sub_(&update);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let cfg = OptimConfig {
            lr: 1.0,
            warmup_ratio: 0.1,
            ..crate::train::config::TrainConfig::default().optim
        };
        assert!((lr_at(0, 100, &cfg) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, &cfg) - 1.0).abs() < 1e-12);
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
        let cfg = OptimConfig {
            weight_decay: 0.01,
            ..crate::train::config::TrainConfig::default().optim
        };
        opt.step(0.1, &cfg);
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
}
