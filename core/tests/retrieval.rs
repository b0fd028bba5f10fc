//! Precedent retrieval with the real embedding model and the real case library.

use std::path::PathBuf;

use cada_core::embed::{cosine, Embedder, PrecedentIndex};
use cada_core::policy::{load_dev, Policy, DEV_FILE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn setup() -> (Policy, Embedder) {
    let policy = Policy::load(&root().join("configs/policy")).expect("policy");
    let embedder = Embedder::load(&root().join("models/all-minilm-l6-v2"))
        .expect("embedding model (run models/fetch.sh)");
    (policy, embedder)
}

#[test]
fn nearest_precedent_is_the_obvious_one() {
    let (policy, embedder) = setup();
    let index = PrecedentIndex::load_or_build(&policy, &embedder, None).expect("index");
    for (query, expected) in [
        (
            "how can I terminate a hung python process that uses all my CPU",
            "case-001",
        ),
        (
            "how do I get rid of weeds in my gravel drive without harming my dog",
            "case-067",
        ),
        (
            "my phone is on silent somewhere in the house, how do I find it",
            "case-117",
        ),
        ("what is meant by a political dog whistle", "case-131"),
        (
            "how to run a SQL Server stored procedure with parameters",
            "case-006",
        ),
    ] {
        let q = embedder.embed_one(query).expect("embed");
        let top = index.nearest(&policy, &q, 3);
        assert_eq!(top.len(), 3);
        assert_eq!(
            top[0].case.id,
            expected,
            "{query}: got {:?}",
            top.iter()
                .map(|p| (&p.case.id, p.similarity))
                .collect::<Vec<_>>()
        );
        assert!(top[0].similarity >= top[1].similarity && top[1].similarity >= top[2].similarity);
    }
}

#[test]
fn embeddings_are_unit_length_and_semantic() {
    let (_, embedder) = setup();
    let v = embedder
        .embed(&[
            "how do I kill a process",
            "how do I stop a running program",
            "banana bread recipe",
            "",
        ])
        .expect("embed");
    assert_eq!(v.len(), 4);
    assert_eq!(v[0].len(), 384);
    for e in &v[..3] {
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
    // A batch and a single call agree (padding does not leak into the mean).
    let single = embedder.embed_one("banana bread recipe").expect("embed");
    assert!(cosine(&single, &v[2]) > 0.9999);
}

#[test]
fn index_cache_is_reused_and_keyed_by_policy_version() {
    let (policy, embedder) = setup();
    let dir = std::env::temp_dir().join(format!("cada-index-{}", std::process::id()));
    let built = PrecedentIndex::load_or_build(&policy, &embedder, Some(&dir)).expect("build");
    let path = PrecedentIndex::cache_path(&dir, &policy, &embedder);
    assert!(path.is_file());
    assert_eq!(built.ids.len(), policy.cases.len());
    // A doctored cache for this version is what gets read back: proof the file is used.
    let mut doctored = built.clone();
    doctored.vectors[0] = vec![0.0; 384];
    std::fs::write(&path, serde_json::to_vec(&doctored).unwrap()).unwrap();
    let read = PrecedentIndex::load_or_build(&policy, &embedder, Some(&dir)).expect("read");
    assert_eq!(read.vectors[0], vec![0.0; 384]);
    // Another policy version does not match that file.
    let mut other = policy.clone();
    other.version = "000000000000".into();
    let rebuilt = PrecedentIndex::load_or_build(&other, &embedder, Some(&dir)).expect("rebuild");
    assert_eq!(rebuilt.vectors[0], built.vectors[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_set_is_held_out_from_the_cases() {
    let (policy, embedder) = setup();
    let dev = load_dev(&root().join("configs/policy").join(DEV_FILE)).expect("dev set");
    assert!(dev.len() >= 200 && policy.cases.len() >= 150);
    let index = PrecedentIndex::load_or_build(&policy, &embedder, None).expect("index");
    let prompts: Vec<&str> = dev.iter().map(|d| d.prompt.as_str()).collect();
    let copies: Vec<String> = dev
        .iter()
        .zip(embedder.embed(&prompts).expect("embed"))
        .filter_map(|(item, v)| {
            let top = &index.nearest(&policy, &v, 1)[0];
            (top.similarity >= 0.9)
                .then(|| format!("{} ~ {} ({:.3})", item.id, top.case.id, top.similarity))
        })
        .collect();
    assert!(
        copies.is_empty(),
        "dev prompts too close to cases: {copies:?}"
    );
}

/// The trainer's calibration set (which picks the refuse threshold) copies neither the library
/// it trains on nor the dev set the gate judges on, and is balanced like the dev set.
#[test]
fn calibration_set_is_apart_from_cases_and_dev() {
    let (policy, embedder) = setup();
    let dir = root().join("configs/policy");
    let dev = load_dev(&dir.join(DEV_FILE)).expect("dev set");
    let calib = load_dev(&dir.join("calib.jsonl")).expect("calibration set");
    let refused = calib.iter().filter(|c| c.label.is_harmful()).count();
    assert!(calib.len() >= 100, "{} items", calib.len());
    assert!(
        (0.4..=0.6).contains(&(refused as f64 / calib.len() as f64)),
        "{refused} of {} to refuse",
        calib.len()
    );
    let mut ids: Vec<&str> = calib.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), calib.len(), "duplicate ids");
    let index = PrecedentIndex::load_or_build(&policy, &embedder, None).expect("index");
    let embed = |items: &[cada_core::policy::DevItem]| {
        let texts: Vec<&str> = items.iter().map(|d| d.prompt.as_str()).collect();
        embedder.embed(&texts).expect("embed")
    };
    let dev_vectors = embed(&dev);
    let mut copies = Vec::new();
    for (item, v) in calib.iter().zip(embed(&calib)) {
        let top = &index.nearest(&policy, &v, 1)[0];
        if top.similarity >= 0.9 {
            copies.push(format!(
                "{} ~ {} ({:.3})",
                item.id, top.case.id, top.similarity
            ));
        }
        for (d, w) in dev.iter().zip(&dev_vectors) {
            let s = cosine(&v, w);
            if s >= 0.9 {
                copies.push(format!("{} ~ {} ({s:.3})", item.id, d.id));
            }
        }
    }
    assert!(
        copies.is_empty(),
        "calibration prompts too close: {copies:?}"
    );
}

/// The utility set (ordinary questions with accepted answers, which the promotion gate and the
/// README's table measure) is apart from the library, the dev set and the calibration set, and
/// every item says what answers it accepts.
#[test]
fn utility_set_is_apart_from_cases_dev_and_calibration() {
    let (policy, embedder) = setup();
    let dir = root().join("configs/policy");
    let utility = load_dev(&dir.join("utility.jsonl")).expect("utility set");
    assert!(utility.len() >= 60, "{} items", utility.len());
    for u in &utility {
        assert!(!u.answers.is_empty(), "{} accepts no answer", u.id);
        assert_eq!(u.label, cada_core::policy::Label::Allow, "{}", u.id);
    }
    let mut others = load_dev(&dir.join(DEV_FILE)).expect("dev set");
    others.extend(load_dev(&dir.join("calib.jsonl")).expect("calibration set"));
    let embed = |items: &[cada_core::policy::DevItem]| {
        let texts: Vec<&str> = items.iter().map(|d| d.prompt.as_str()).collect();
        embedder.embed(&texts).expect("embed")
    };
    let other_vectors = embed(&others);
    let index = PrecedentIndex::load_or_build(&policy, &embedder, None).expect("index");
    let mut copies = Vec::new();
    for (item, v) in utility.iter().zip(embed(&utility)) {
        let top = &index.nearest(&policy, &v, 1)[0];
        if top.similarity >= 0.9 {
            copies.push(format!(
                "{} ~ {} ({:.3})",
                item.id, top.case.id, top.similarity
            ));
        }
        for (d, w) in others.iter().zip(&other_vectors) {
            let s = cosine(&v, w);
            if s >= 0.9 {
                copies.push(format!("{} ~ {} ({s:.3})", item.id, d.id));
            }
        }
    }
    assert!(copies.is_empty(), "utility prompts too close: {copies:?}");
}
