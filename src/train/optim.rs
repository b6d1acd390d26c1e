//! Adam over exactly the trainable parameters, with weight decay applied as PyTorch's
//! `torch.optim.Adam(weight_decay=...)` does (L2 added to the gradient), the paper's optimiser
//! with the decay it meant to use.

use super::densenet::DenseNet;
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
        for (_, t) in net.trainable_params() {
            opt.add_parameters(&t, 0)?;
        }
        Ok(Adam { opt })
    }

    /// zero_grad, backward, step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        self.opt.zero_grad()?;
        loss.f_backward()?;
        self.opt.step()?;
        Ok(())
    }
}
