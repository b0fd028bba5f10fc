//! `x W^T` for a frozen weight, as one custom op whose backward returns only the input's
//! gradient. candle's matmul backward always computes the gradient of both operands, so with
//! plain matmuls every step computed (and, through `broadcast_matmul`, materialised per batch
//! row) gradients of all 135M frozen base weights: about a third of the step's arithmetic
//! and most of its memory, for gradients nobody reads.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// The op, holding the out x in weight.
struct FrozenMatmul {
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // The caller passes a contiguous 2-D input; view it as a tensor and multiply.
        let data = storage.as_slice::<f32>()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul needs a contiguous input");
        };
        let x = Tensor::from_slice(&data[start..end], layout.shape(), &candle_core::Device::Cpu)?;
        let y = x.matmul(&self.weight.t()?)?;
        let shape = y.shape().clone();
        let (storage, _) = y.storage_and_layout();
        match &*storage {
            Storage::Cpu(cpu) => Ok((cpu.clone(), shape)),
            _ => candle_core::bail!("frozen-matmul runs on the CPU"),
        }
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

/// `x W^T` over the last dimension of `x` (any leading shape); gradients reach `x` only.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (out, inp) = weight.dims2()?;
    let mut lead = x.dims().to_vec();
    let last = lead.pop().unwrap_or(0);
    if last != inp {
        candle_core::bail!("frozen-matmul: input width {last}, weight expects {inp}");
    }
    if !x.device().is_cpu() {
        // Other devices use the plain op (and pay for the unused weight gradients).
        return x.broadcast_matmul(&weight.t()?);
    }
    let rows: usize = lead.iter().product();
    let x2 = x.reshape((rows, inp))?.contiguous()?;
    let y = x2.apply_op1(FrozenMatmul {
        weight: weight.clone(),
    })?;
    lead.push(out);
    y.reshape(lead)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Same values and input gradients as the plain matmul, and no gradient for the weight.
    #[test]
    fn matches_matmul_and_leaves_the_weight_alone() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2., 3.], [0.5, -1., 0.25]], &dev).unwrap();
        let x = Var::new(&[[[1f32, 0., -1.], [2., 1., 0.]]], &dev).unwrap();
        let y = frozen_matmul(x.as_tensor(), &w).unwrap();
        let plain = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        assert_eq!(y.to_vec3::<f32>().unwrap(), plain.to_vec3::<f32>().unwrap());
        let g1 = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = plain.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g1.get(&x).unwrap().to_vec3::<f32>().unwrap(),
            g2.get(&x).unwrap().to_vec3::<f32>().unwrap()
        );
        assert!(g1.get(&w).is_none());
    }
}
