//! Gradients for editing and attribution beyond edges: of a loss with respect to a delta written at any hook
//! point (ROME's value vector), and with respect to one layer's MLP output projection (fine-tuning one matrix).
//! Both run the model differentiably ([`crate::model::Hooks::differentiable`]); weight matmuls backpropagate to
//! their inputs only, except a weight that is a `Var`, which gets its own gradient.
use candle_core::{Tensor, Var};

use crate::model::hooks::{AddAt, Differentiable, HookPoint};
use crate::model::{Batch, Logits, Model};
use crate::Result;

/// The value of `loss` and its gradient with respect to `delta`, a tensor added (broadcast) at `point` of a run
/// of `batch`. `loss` maps the run's output (`[B, V]`, `[B, T, V]` or `[B, D]`, as `which` says) to a scalar.
/// The gradient has `delta`'s shape.
pub fn delta_gradient(
    model: &Model,
    batch: &Batch,
    point: HookPoint,
    delta: &Tensor,
    which: Logits,
    loss: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(f64, Tensor)> {
    let var = Var::from_tensor(delta)?;
    let hooks = AddAt { point, delta: var.as_tensor().clone(), differentiable: true };
    let out = model.run(batch, &hooks, which)?.1;
    backward(&loss(&out)?, &var)
}

/// The value of `loss` and its gradient with respect to layer `layer`'s MLP output projection (`[d_mlp, D]`,
/// see [`Model::mlp_out_weight`]), at the model's current weights.
pub fn mlp_out_gradient(
    model: &Model,
    batch: &Batch,
    layer: usize,
    which: Logits,
    loss: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(f64, Tensor)> {
    let var = Var::from_tensor(model.mlp_out_weight(layer))?;
    let tracked = model.with_mlp_out_weight(layer, var.as_tensor().clone())?;
    let out = tracked.run(batch, &Differentiable, which)?.1;
    backward(&loss(&out)?, &var)
}

/// `loss`'s value and its gradient with respect to `var` (zeros when the loss does not depend on it).
fn backward(loss: &Tensor, var: &Var) -> Result<(f64, Tensor)> {
    let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let grads = loss.backward()?;
    let g = match grads.get(var.as_tensor()) {
        Some(g) => g.clone(),
        None => var.as_tensor().zeros_like()?,
    };
    Ok((value, g))
}
