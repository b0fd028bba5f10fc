//! Seeded random tensors. candle's CPU generator cannot be seeded, so LoRA's initial `A` and its
//! dropout masks are drawn here: two runs with one `seed` then train alike.

use candle_core::{Device, Tensor};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A seed for one named stream (a projection's `A`, its dropout mask) of a run's `seed`.
pub fn stream(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed.
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Uniform values in `[lo, hi)`, f32.
pub fn uniform(
    shape: (usize, usize),
    lo: f32,
    hi: f32,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.random_range(lo..hi))
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// `x` with each element zeroed with probability `p` and the others scaled by `1 / (1 - p)`; the
/// mask is a constant, so the gradient flows through the kept elements.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> candle_core::Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability {p} is not in [0, 1)")
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn one_seed_gives_one_mask_and_another_seed_another() {
        let x = Tensor::ones((8, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let a = values(&dropout(&x, 0.25, 1).unwrap());
        assert_eq!(a, values(&dropout(&x, 0.25, 1).unwrap()));
        assert_ne!(a, values(&dropout(&x, 0.25, 2).unwrap()));
        let dropped = a.iter().filter(|v| **v == 0.0).count();
        // 512 draws at p = 0.25: 128 expected; 5 standard deviations either side.
        assert!((78..=178).contains(&dropped), "{dropped} of 512 dropped");
        assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn streams_differ_by_name_and_by_seed() {
        assert_ne!(
            stream(7, "blk.0.attn_q.weight"),
            stream(7, "blk.0.attn_k.weight")
        );
        assert_ne!(
            stream(7, "blk.0.attn_q.weight"),
            stream(8, "blk.0.attn_q.weight")
        );
        let u = values(&uniform((4, 16), -0.5, 0.5, stream(7, "x"), &Device::Cpu).unwrap());
        assert!(u.iter().all(|v| (-0.5..0.5).contains(v)));
        assert_eq!(
            u,
            values(&uniform((4, 16), -0.5, 0.5, stream(7, "x"), &Device::Cpu).unwrap())
        );
    }

    #[test]
    fn a_bad_probability_is_an_error() {
        let x = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(dropout(&x, 1.0, 0).is_err());
    }
}
