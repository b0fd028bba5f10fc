//! The adapter check on the committed release adapter and the real base model, and on files
//! made bad from it: truncated, a flipped byte, a string length pointing past the end, a zero
//! alignment, a foreign architecture, shapes for another model, a base model that is not it.

use std::path::{Path, PathBuf};

use cada_core::adapter_check::{check_adapter, AdapterRejected, Base, Expected};
use cada_core::gguf_header::{DataCheck, GgufHeader};
use cada_core::Registry;
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn release() -> (PathBuf, String) {
    let registry = Registry::load(&root().join("models/registry.toml")).expect("registry");
    let (_, file) = registry
        .release_adapter("smollm2-135m-instruct")
        .expect("a release adapter");
    (file.path, file.sha256.expect("pinned"))
}

fn base_path() -> PathBuf {
    root().join("models/smollm2-135m-instruct-q4_1.gguf")
}

fn check(path: &Path, sha256: Option<&str>) -> Result<(), AdapterRejected> {
    let base = base_path();
    check_adapter(
        path,
        Base {
            id: "smollm2-135m-instruct",
            path: &base,
        },
        Expected {
            sha256,
            base_model: Some("smollm2-135m-instruct"),
        },
    )
    .map(|_| ())
}

/// A copy of the release adapter with `edit` applied to its bytes.
fn edited(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(release().0).expect("read");
    edit(&mut bytes);
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

/// Byte offset of the value of string key `key` (after its type and length).
fn string_value_at(bytes: &[u8], key: &str) -> usize {
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("key present");
    at + key.len() + 4 + 8
}

#[test]
fn the_release_adapter_is_accepted_for_its_base() {
    let (path, sha) = release();
    let accepted = check_adapter(
        &path,
        Base {
            id: "smollm2-135m-instruct",
            path: &base_path(),
        },
        Expected {
            sha256: Some(&sha),
            base_model: Some("smollm2-135m-instruct"),
        },
    )
    .expect("accepted");
    assert_eq!(accepted.sha256, sha);
    assert!(accepted.rank > 0 && accepted.targets > 0, "{accepted:?}");
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    let (path, sha) = release();
    let (_d, flipped) = edited("flipped.gguf", |b| {
        let last = b.len() - 1;
        b[last] ^= 0xff;
    });
    assert!(matches!(
        check(&flipped, Some(&sha)),
        Err(AdapterRejected::Digest { .. })
    ));

    let len = std::fs::metadata(&path).expect("test setup").len() as usize;
    let (_d, truncated) = edited("truncated.gguf", |b| b.truncate(len / 2));
    let e = check(&truncated, None).expect_err("refused");
    assert!(
        matches!(&e, AdapterRejected::Header(m) if m.contains("past the end")),
        "{e}"
    );
    let (_d, stub) = edited("stub.gguf", |b| b.truncate(10));
    assert!(matches!(
        check(&stub, None),
        Err(AdapterRejected::Header(_))
    ));

    // A string length of 2^60: candle's reader would try to allocate it.
    let (_d, huge) = edited("huge.gguf", |b| {
        let at = string_value_at(b, "general.architecture") - 8;
        b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    });
    let e = check(&huge, None).expect_err("refused");
    assert!(
        matches!(&e, AdapterRejected::Header(m) if m.contains("bytes left")),
        "{e}"
    );

    // Same length, another architecture.
    let (_d, foreign) = edited("foreign.gguf", |b| {
        let at = string_value_at(b, "general.architecture");
        assert_eq!(&b[at..at + 5], b"llama");
        b[at..at + 5].copy_from_slice(b"gemma");
    });
    assert!(matches!(
        check(&foreign, None),
        Err(AdapterRejected::Architecture { .. })
    ));

    let base = base_path();
    let other_base = check_adapter(
        &path,
        Base {
            id: "smollm2-135m-instruct",
            path: &base,
        },
        Expected {
            sha256: None,
            base_model: Some("qwen2.5-0.5b-instruct"),
        },
    );
    assert!(matches!(other_base, Err(AdapterRejected::BaseModel { .. })));

    // The base model is not an adapter.
    assert!(matches!(
        check(&base, None),
        Err(AdapterRejected::NotLora(_))
    ));
}

/// Writes a GGUF with candle's writer: `metadata` plus one lora pair for `stem`.
fn write_gguf(
    path: &Path,
    metadata: &[(&str, Value)],
    stem: &str,
    a: (usize, usize),
    b: (usize, usize),
) {
    let dev = Device::Cpu;
    let qa = QTensor::quantize(
        &Tensor::zeros(a, candle_core::DType::F32, &dev).expect("test setup"),
        candle_core::quantized::GgmlDType::F16,
    )
    .expect("test setup");
    let qb = QTensor::quantize(
        &Tensor::zeros(b, candle_core::DType::F32, &dev).expect("test setup"),
        candle_core::quantized::GgmlDType::F16,
    )
    .expect("test setup");
    let names = [format!("{stem}.lora_a"), format!("{stem}.lora_b")];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors = vec![(names[0].as_str(), &qa), (names[1].as_str(), &qb)];
    let mut f = std::fs::File::create(path).expect("test setup");
    gguf_file::write(&mut f, &md, &tensors).expect("test setup");
}

fn lora_metadata() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.type", Value::String("adapter".into())),
        ("adapter.type", Value::String("lora".into())),
        ("adapter.lora.alpha", Value::F32(16.0)),
    ]
}

#[test]
fn shapes_and_alignment_are_checked() {
    let dir = tempfile::tempdir().expect("test setup");
    // The base's attention query weight, to read its shape.
    let base = GgufHeader::read(&base_path(), DataCheck::ShapesOnly).expect("base header");
    let q = base
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .expect("attn_q");
    let (n_in, n_out) = (q.dims[0] as usize, q.dims[1] as usize);

    // candle shapes are (rank, in) and (out, rank).
    let fits = dir.path().join("fits.gguf");
    write_gguf(
        &fits,
        &lora_metadata(),
        "blk.0.attn_q.weight",
        (8, n_in),
        (n_out, 8),
    );
    check(&fits, None).expect("a pair that fits is accepted");

    let wrong = dir.path().join("wrong.gguf");
    write_gguf(
        &wrong,
        &lora_metadata(),
        "blk.0.attn_q.weight",
        (8, n_in + 32),
        (n_out, 8),
    );
    assert!(matches!(
        check(&wrong, None),
        Err(AdapterRejected::Shapes(_))
    ));

    let missing = dir.path().join("missing.gguf");
    write_gguf(
        &missing,
        &lora_metadata(),
        "blk.99.attn_q.weight",
        (8, n_in),
        (n_out, 8),
    );
    assert!(matches!(
        check(&missing, None),
        Err(AdapterRejected::Shapes(_))
    ));

    // `general.alignment = 0` makes candle's reader divide by zero.
    let mut md = lora_metadata();
    md.push(("general.alignment", Value::U32(0)));
    let zero = dir.path().join("zero.gguf");
    write_gguf(&zero, &md, "blk.0.attn_q.weight", (8, n_in), (n_out, 8));
    let e = check(&zero, None).expect_err("refused");
    assert!(
        matches!(&e, AdapterRejected::Header(m) if m.contains("alignment")),
        "{e}"
    );
    // What the check protects from: candle's own reader on the same file.
    let parsed = std::panic::catch_unwind(|| {
        let mut f = std::fs::File::open(&zero).expect("test setup");
        Content::read(&mut f).map(|_| ())
    });
    assert!(parsed.is_err(), "candle divides by zero on this file");
}
