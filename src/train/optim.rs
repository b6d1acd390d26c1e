//! Adam over exactly the trainable parameters, with weight decay applied as PyTorch's
//! `torch.optim.Adam(weight_decay=...)` does (L2 added to the gradient), the paper's optimiser
//! with the decay it meant to use.

use super::densenet::DenseNet;
use super::precision::GradScaler;
use crate::error::Result;
use tch::{COptimizer, Tensor};

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The paper's values.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-4,
            eps: 1e-8,
        }
    }
}

pub struct Adam {
    opt: COptimizer,
    /// The same parameters, for the gradient scaler's unscale.
    params: Vec<Tensor>,
}

impl Adam {
    /// An optimiser over `net`'s trainable parameters (call `set_trainable` first).
    pub fn new(net: &DenseNet, cfg: AdamConfig) -> Result<Self> {
        let mut opt = COptimizer::adam(
            cfg.lr,
            cfg.beta1,
            cfg.beta2,
            cfg.weight_decay,
            cfg.eps,
            false,
        )?;
        let mut params = Vec::new();
        for (_, t) in net.trainable_params() {
            opt.add_parameters(&t, 0)?;
            params.push(t);
        }
        Ok(Adam { opt, params })
    }

    /// zero_grad, backward, step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        self.opt.zero_grad()?;
        loss.f_backward()?;
        self.opt.step()?;
        Ok(())
    }

    /// The fp16 step: backward on the scaled loss, unscale, then step unless a gradient is
    /// inf/NaN (the step is skipped, as torch.amp.GradScaler does); the scale is updated either
    /// way. Returns whether the step was taken.
    pub fn backward_step_scaled(&mut self, loss: &Tensor, scaler: &mut GradScaler) -> Result<bool> {
        self.opt.zero_grad()?;
        scaler.scale(loss).f_backward()?;
        let found_inf = scaler.unscale(&self.params)?;
        if !found_inf {
            self.opt.step()?;
        }
        scaler.update(found_inf)?;
        Ok(!found_inf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::densenet::{DenseNetConfig, Unfreeze};
    use tch::{Device, Kind};

    /// With a zero loss gradient only the decay moves the weights: on with the default config,
    /// off with weight_decay 0. (The paper's code forgot to pass it.)
    #[test]
    fn weight_decay_is_applied() {
        for (wd, should_move) in [(1e-4, true), (0.0, false)] {
            tch::manual_seed(0);
            let mut net = DenseNet::new(
                DenseNetConfig::parse("densenet:4,1-1,8,2", 2).unwrap(),
                Device::Cpu,
            );
            net.set_trainable(&Unfreeze::None).unwrap();
            let before = net.state_dict();
            let mut opt = Adam::new(
                &net,
                AdamConfig {
                    weight_decay: wd,
                    ..AdamConfig::default()
                },
            )
            .unwrap();
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
            let loss = net.forward_t(&x, true).sum(Kind::Float) * 0.0;
            opt.backward_step(&loss).unwrap();
            let after = net.state_dict();
            let w = |sd: &[(String, Tensor)]| {
                sd.iter()
                    .find(|(n, _)| n == "classifier.weight")
                    .unwrap()
                    .1
                    .copy()
            };
            let moved = !w(&before).equal(&w(&after));
            assert_eq!(moved, should_move, "weight decay {wd}");
            // Frozen tensors never move.
            let f = |sd: &[(String, Tensor)]| {
                sd.iter()
                    .find(|(n, _)| n == "features.conv0.weight")
                    .unwrap()
                    .1
                    .copy()
            };
            assert!(f(&before).equal(&f(&after)));
        }
    }
}
