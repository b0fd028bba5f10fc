//! The candle model on the tiny random llama: padding, adapters and gradients.

use candle_core::{Device, Tensor};

use super::*;
use crate::loss;
use crate::optim::{AdamW, AdamWConfig};

fn ids(rows: &[&[u32]]) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

/// Every adapter value, A then B per projection.
fn lora_values(lora: &Lora) -> Vec<f32> {
    lora.vars()
        .iter()
        .flat_map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn plain() -> AdapterCtx<'static> {
    AdapterCtx {
        lora: None,
        dropout_seed: None,
    }
}

#[test]
fn right_padding_does_not_change_real_positions() {
    let m = tiny::model(1, &Device::Cpu).unwrap();
    let alone = m.hidden(&ids(&[&[3, 9, 27]]), plain()).unwrap();
    let padded = m
        .hidden(&ids(&[&[3, 9, 27, 0, 0], &[5, 5, 5, 5, 5]]), plain())
        .unwrap();
    let diff = (alone.squeeze(0).unwrap() - padded.get(0).unwrap().narrow(0, 0, 3).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn a_fresh_adapter_changes_nothing() {
    let m = tiny::model(2, &Device::Cpu).unwrap();
    let lora = m.new_lora(LoraConfig::default(), 1).unwrap();
    assert_eq!(lora.pairs.len(), 7 * m.config.n_layers);
    let x = ids(&[&[1, 2, 3, 4]]);
    let base = m.hidden(&x, plain()).unwrap();
    let adapted = m
        .hidden(
            &x,
            AdapterCtx {
                lora: Some(&lora),
                dropout_seed: None,
            },
        )
        .unwrap();
    let diff = (base - adapted).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}

/// The known trap: a fused op without backward silently stops gradients. With B = 0 only the
/// B matrices can get a gradient at first; after one update every A and B must.
#[test]
fn every_lora_parameter_receives_a_gradient() {
    let m = tiny::model(3, &Device::Cpu).unwrap();
    let lora = m
        .new_lora(
            LoraConfig {
                dropout: 0.1,
                ..LoraConfig::default()
            },
            1,
        )
        .unwrap();
    let mut opt = AdamW::new(lora.vars(), AdamWConfig::default()).unwrap();
    let x = ids(&[&[1, 2, 3, 4, 5, 6], &[7, 8, 9, 10, 11, 12]]);
    let ctx = AdapterCtx {
        lora: Some(&lora),
        dropout_seed: Some(11),
    };
    let positions = vec![vec![1, 2, 3, 4], vec![2, 3, 4]];
    let targets = vec![vec![3, 4, 5, 6], vec![10, 11, 12]];
    let grad_norms = |m: &Llama| {
        let logp = m.token_logprobs(&x, &positions, &targets, ctx).unwrap();
        let grads = loss::sft(&logp).unwrap().backward().unwrap();
        let norms: Vec<(String, f32, f32)> = lora
            .pairs
            .iter()
            .map(|(name, p)| {
                let n = |v: &candle_core::Var| {
                    grads.get(v).map_or(0.0, |g| {
                        g.sqr()
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap()
                    })
                };
                (name.clone(), n(&p.a), n(&p.b))
            })
            .collect();
        (grads, norms)
    };
    let (grads, first) = grad_norms(&m);
    for (name, _, b) in &first {
        assert!(*b > 0.0, "no gradient reached {name}.lora_b");
    }
    opt.accumulate(&grads).unwrap();
    opt.update().unwrap();
    let (_, second) = grad_norms(&m);
    for (name, a, b) in &second {
        assert!(*a > 0.0 && *b > 0.0, "{name}: |dA|^2 = {a}, |dB|^2 = {b}");
    }
}

#[test]
fn loss_decreases_on_a_tiny_fixed_batch() {
    let m = tiny::model(4, &Device::Cpu).unwrap();
    let lora = m.new_lora(LoraConfig::default(), 1).unwrap();
    let mut opt = AdamW::new(
        lora.vars(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let x = ids(&[&[1, 2, 3, 4, 5, 6]]);
    let positions = vec![vec![0, 1, 2, 3, 4]];
    let targets = vec![vec![2, 3, 4, 5, 6]];
    let ctx = AdapterCtx {
        lora: Some(&lora),
        dropout_seed: Some(11),
    };
    let mut losses = Vec::new();
    for _ in 0..30 {
        let l = loss::sft(&m.token_logprobs(&x, &positions, &targets, ctx).unwrap()).unwrap();
        losses.push(l.to_scalar::<f32>().unwrap());
        opt.accumulate(&l.backward().unwrap()).unwrap();
        opt.update().unwrap();
    }
    assert!(
        losses[29] < 0.5 * losses[0],
        "loss went from {} to {}",
        losses[0],
        losses[29]
    );
}

/// Accumulating the same micro-batch twice and averaging is one step on it, and clipping caps
/// the norm the update sees.
#[test]
fn accumulation_averages_and_clipping_reports_the_norm() {
    let m = tiny::model(5, &Device::Cpu).unwrap();
    let run = |micro: usize| {
        let lora = m.new_lora(LoraConfig::default(), 1).unwrap();
        // Same start for both runs.
        for (i, v) in lora.vars().iter().enumerate() {
            let t = Tensor::ones(v.shape(), candle_core::DType::F32, &Device::Cpu).unwrap();
            v.set(&(t * (0.01 * (i % 5) as f64)).unwrap()).unwrap();
        }
        let mut opt = AdamW::new(
            lora.vars(),
            AdamWConfig {
                max_grad_norm: 1e-3,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        let x = ids(&[&[1, 2, 3, 4]]);
        let ctx = AdapterCtx {
            lora: Some(&lora),
            dropout_seed: None,
        };
        for _ in 0..micro {
            let logp = m
                .token_logprobs(&x, &[vec![0, 1, 2]], &[vec![2, 3, 4]], ctx)
                .unwrap();
            opt.accumulate(&loss::sft(&logp).unwrap().backward().unwrap())
                .unwrap();
        }
        let info = opt.update().unwrap().unwrap();
        (info, lora_values(&lora))
    };
    let (one, a) = run(1);
    let (two, b) = run(2);
    assert!(one.clipped && two.clipped);
    assert!((one.grad_norm - two.grad_norm).abs() < 1e-6 * one.grad_norm.max(1.0));
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-6, "{max_diff}");
}

#[test]
fn adapters_round_trip_through_gguf() {
    let m = tiny::model(6, &Device::Cpu).unwrap();
    let lora = m
        .new_lora(
            LoraConfig {
                rank: 4,
                alpha: 8.0,
                targets: vec![Target::AttnQ, Target::FfnDown],
                ..LoraConfig::default()
            },
            1,
        )
        .unwrap();
    for p in lora.pairs.values() {
        p.b.set(&tiny::seeded_normal(p.b.dims(), 0.1, 9, &Device::Cpu).unwrap())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.gguf");
    let meta = crate::adapter::AdapterMeta {
        version: "v1".into(),
        parent: Some("v0".into()),
        data_hash: "abc".into(),
        policy_version: "def".into(),
        refuse_log_odds: Some(6.5),
        probe: Some(cada_core::policy::ProbeBand {
            serve_below: -3.0,
            refuse_from: 4.0,
        }),
    };
    crate::adapter::write(&lora, &m.config, &meta, &path).unwrap();
    let (back, back_meta) = crate::adapter::read(&path, &m).unwrap();
    assert_eq!(back_meta, meta);
    // The gateway reads the same threshold without loading the tensors.
    let rule = cada_core::policy::VerdictRule::from_adapter(&path).unwrap();
    assert_eq!(rule.refuse_log_odds, Some(6.5));
    assert_eq!(rule.probe, meta.probe);
    assert_eq!(back.config.rank, 4);
    assert_eq!(back.config.alpha, 8.0);
    assert_eq!(back.config.targets, vec![Target::AttnQ, Target::FfnDown]);
    for (name, p) in &lora.pairs {
        let q = &back.pairs[name];
        for (x, y) in [(&p.a, &q.a), (&p.b, &q.b)] {
            // Stored as f16: within its rounding (2^-11 relative), not bit-equal.
            let d = (x.as_tensor() - y.as_tensor()).unwrap().abs().unwrap();
            let d = d.max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = x.as_tensor().abs().unwrap().max_all().unwrap();
            let scale = scale.to_scalar::<f32>().unwrap();
            assert!(
                scale > 0.0 && d <= scale / 1024.0,
                "{name}: off by {d} of {scale}"
            );
        }
    }
}

/// A run's `seed` fixes the adapter's initial `A` and every dropout mask: two trainings with one
/// seed end with identical weights (candle's own generator cannot be seeded, and made them
/// differ), and another dropout seed trains differently.
#[test]
fn one_seed_trains_the_same_adapter_twice() {
    let m = tiny::model(5, &Device::Cpu).unwrap();
    let x = ids(&[&[1, 2, 3, 4, 5, 6], &[7, 8, 9, 10, 11, 12]]);
    let positions = vec![vec![1, 2, 3, 4], vec![2, 3, 4]];
    let targets = vec![vec![3, 4, 5, 6], vec![10, 11, 12]];
    let train = |init_seed: u64, dropout_seeds: [u64; 3]| -> Vec<f32> {
        let lora = m
            .new_lora(
                LoraConfig {
                    dropout: 0.3,
                    ..LoraConfig::default()
                },
                init_seed,
            )
            .unwrap();
        let mut opt = AdamW::new(lora.vars(), AdamWConfig::default()).unwrap();
        for seed in dropout_seeds {
            let ctx = AdapterCtx {
                lora: Some(&lora),
                dropout_seed: Some(seed),
            };
            let l = loss::sft(&m.token_logprobs(&x, &positions, &targets, ctx).unwrap()).unwrap();
            opt.accumulate(&l.backward().unwrap()).unwrap();
            opt.update().unwrap();
        }
        lora_values(&lora)
    };
    let first = train(7, [1, 2, 3]);
    assert_eq!(
        first,
        train(7, [1, 2, 3]),
        "one seed, two different adapters"
    );
    assert_ne!(
        first,
        train(7, [1, 2, 4]),
        "the dropout seed changed nothing"
    );
    assert_ne!(
        first,
        train(8, [1, 2, 3]),
        "the initial seed changed nothing"
    );
}
