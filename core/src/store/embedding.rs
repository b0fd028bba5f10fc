//! Embeddings as stored (a BLOB of little-endian `f32`) and the cosine similarity merging uses,
//! computed straight from the stored bytes so scanning pending cases allocates nothing.

use super::StoreError;

/// The BLOB form of an embedding.
pub(super) fn encode(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An embedding back from its BLOB.
pub(super) fn decode(blob: &[u8]) -> Result<Vec<f32>, StoreError> {
    if blob.len() % 4 != 0 {
        return Err(StoreError::corrupt(format!(
            "an embedding of {} bytes is not a whole number of f32",
            blob.len()
        )));
    }
    Ok(floats(blob).collect())
}

fn floats(blob: &[u8]) -> impl Iterator<Item = f32> + '_ {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks an embedding can be stored and compared: non-empty and finite.
pub(super) fn validate(embedding: &[f32]) -> Result<(), StoreError> {
    if embedding.is_empty() {
        return Err(StoreError::Invalid("the case embedding is empty".into()));
    }
    if embedding.iter().any(|x| !x.is_finite()) {
        return Err(StoreError::Invalid(
            "the case embedding has a non-finite value".into(),
        ));
    }
    Ok(())
}

/// Cosine similarity of `query` and a stored embedding. Embeddings of another dimension or with
/// zero norm compare as 0 (never merged).
pub(super) fn cosine(query: &[f32], blob: &[u8]) -> f32 {
    if blob.len() != query.len() * 4 {
        return 0.0;
    }
    let (mut dot, mut qq, mut bb) = (0f64, 0f64, 0f64);
    for (q, b) in query.iter().zip(floats(blob)) {
        let (q, b) = (f64::from(*q), f64::from(b));
        dot += q * b;
        qq += q * q;
        bb += b * b;
    }
    if qq == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (dot / (qq.sqrt() * bb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trips_little_endian() {
        let e = vec![1.0f32, -0.5, 0.25, f32::MIN_POSITIVE];
        let blob = encode(&e);
        assert_eq!(&blob[..4], &1.0f32.to_le_bytes());
        assert_eq!(decode(&blob).unwrap(), e);
        assert_eq!(decode(&[]).unwrap(), Vec::<f32>::new());
        assert_eq!(decode(&[0, 0, 0]).unwrap_err().code(), "store_corrupt");
    }

    #[test]
    fn cosine_ignores_scale_and_mismatched_dimensions() {
        let a = [3.0f32, 4.0];
        assert!((cosine(&a, &encode(&[6.0, 8.0])) - 1.0).abs() < 1e-6);
        assert!(cosine(&a, &encode(&[4.0, -3.0])).abs() < 1e-6);
        assert!((cosine(&a, &encode(&[-3.0, -4.0])) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&a, &encode(&[1.0, 0.0, 0.0])), 0.0);
        assert_eq!(cosine(&a, &[]), 0.0);
        assert_eq!(cosine(&a, &encode(&[0.0, 0.0])), 0.0);
    }

    #[test]
    fn validation_rejects_empty_and_non_finite() {
        assert!(validate(&[0.1, 0.2]).is_ok());
        assert_eq!(validate(&[]).unwrap_err().code(), "invalid_input");
        assert_eq!(validate(&[f32::NAN]).unwrap_err().code(), "invalid_input");
    }
}
