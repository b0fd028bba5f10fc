//! Loss values against hand-computed examples.

use candle_core::{Device, Tensor};

use super::*;

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f32 {
    x.to_scalar::<f32>().unwrap()
}

#[test]
fn sft_is_the_negative_mean_log_likelihood() {
    assert!((scalar(&sft(&t(&[-1.0, -3.0])).unwrap()) - 2.0).abs() < 1e-6);
}

#[test]
fn weighted_sft_weighs_tokens() {
    let l = weighted_sft(&t(&[-1.0, -3.0]), &t(&[1.0, 3.0])).unwrap();
    assert!((scalar(&l) - 2.5).abs() < 1e-6);
    assert!(weighted_sft(&t(&[-1.0]), &t(&[0.0])).is_err());
}

#[test]
fn advantages_are_group_normalised() {
    let a = group_advantages(&[1.0, 0.0, 0.0, 1.0]);
    let expected = 0.5 / 0.5001;
    for (x, e) in a.iter().zip([expected, -expected, -expected, expected]) {
        assert!((x - e).abs() < 1e-5, "{a:?}");
    }
    assert_eq!(group_advantages(&[0.3, 0.3, 0.3]), vec![0.0; 3]);
}

/// Token 0: ratio e^0.2 = 1.2214 is clipped to 1.2 (A = 1); token 1: ratio 1, k3 = e^0.5 - 1.5;
/// token 2: ratio e^-0.4 = 0.6703, A = -1, so min(-0.6703, -0.8) = -0.8 (the clipped side).
#[test]
fn grpo_matches_the_hand_computed_example() {
    let new = t(&[-1.0, -2.0, -0.5]);
    let old = t(&[-1.2, -2.0, -0.1]);
    let reference = t(&[-1.0, -1.5, -0.5]);
    let segments = Segments::new(vec![2, 1]).unwrap();
    let k3 = 0.5f32.exp() - 1.5;
    let per_token = [-1.2, 0.1 * k3 - 1.0, 0.8];
    let mut config = GrpoConfig {
        beta: 0.1,
        epsilon: 0.2,
        aggregation: Aggregation::Token,
    };
    let out = grpo(&new, &old, &reference, &[1.0, -1.0], &segments, &config).unwrap();
    let token_mean = per_token.iter().sum::<f32>() / 3.0;
    assert!((scalar(&out.loss) - token_mean).abs() < 1e-5);
    assert!((out.kl - k3 / 3.0).abs() < 1e-5);
    assert!((out.clip_fraction - 2.0 / 3.0).abs() < 1e-6);

    config.aggregation = Aggregation::Sequence;
    let out = grpo(&new, &old, &reference, &[1.0, -1.0], &segments, &config).unwrap();
    let seq_mean = ((per_token[0] + per_token[1]) / 2.0 + per_token[2]) / 2.0;
    assert!((scalar(&out.loss) - seq_mean).abs() < 1e-5);
}

/// The clipped side of the surrogate is constant: no gradient flows through token 0 or 2.
#[test]
fn grpo_gradient_stops_at_the_clip() {
    let new = candle_core::Var::from_tensor(&t(&[-1.0, -2.0, -0.5])).unwrap();
    let old = t(&[-1.2, -2.0, -0.1]);
    let segments = Segments::new(vec![2, 1]).unwrap();
    let config = GrpoConfig {
        beta: 0.0,
        ..GrpoConfig::default()
    };
    let out = grpo(
        new.as_tensor(),
        &old,
        &old,
        &[1.0, -1.0],
        &segments,
        &config,
    )
    .unwrap();
    let grads = out.loss.backward().unwrap();
    let g = grads.get(&new).unwrap().to_vec1::<f32>().unwrap();
    assert!(g[0].abs() < 1e-7 && g[2].abs() < 1e-7, "{g:?}");
    // Token 1: d/dnew of -(ratio * A)/3 at ratio 1 and A 1 is -1/3.
    assert!((g[1] + 1.0 / 3.0).abs() < 1e-5, "{g:?}");
}

/// Pair 1: margin (-10 + 11) - (-12 + 11) = 2, x = 1, loss ln(1 + e^-1);
/// pair 2: margin 0 - 1 = -1, x = -0.5, loss ln(1 + e^0.5).
#[test]
fn dpo_matches_the_hand_computed_example() {
    let loss = dpo(
        &t(&[-10.0, -5.0]),
        &t(&[-12.0, -4.0]),
        &t(&[-11.0, -5.0]),
        &t(&[-11.0, -5.0]),
        0.5,
    )
    .unwrap();
    let expected = ((1.0 + (-1f32).exp()).ln() + (1.0 + 0.5f32.exp()).ln()) / 2.0;
    assert!((scalar(&loss) - expected).abs() < 1e-5);
}

#[test]
fn segments_sum_and_spread() {
    let s = Segments::new(vec![2, 1]).unwrap();
    let x = t(&[1.0, 2.0, 5.0]);
    assert_eq!(
        s.sums(&x).unwrap().to_vec1::<f32>().unwrap(),
        vec![3.0, 5.0]
    );
    assert_eq!(
        s.means(&x).unwrap().to_vec1::<f32>().unwrap(),
        vec![1.5, 5.0]
    );
    let spread = s.spread(&[7.0, 9.0], &Device::Cpu).unwrap();
    assert_eq!(spread.to_vec1::<f32>().unwrap(), vec![7.0, 7.0, 9.0]);
    assert!(Segments::new(vec![2, 0]).is_err());
}
