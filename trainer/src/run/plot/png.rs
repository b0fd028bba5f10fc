//! A minimal PNG encoder (indexed colour, stored deflate blocks), so run charts need no image
//! crate: the files are larger than a compressing encoder's but every viewer reads them.

/// PNG file signature.
pub(super) const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Largest payload of one stored deflate block.
const STORED_MAX: usize = 65_535;

/// Encodes a `width` x `height` image of palette indices (row-major, one byte per pixel) as a
/// PNG with colour type 3, bit depth 8.
pub(super) fn encode(
    width: usize,
    height: usize,
    palette: &[[u8; 3]],
    pixels: &[u8],
) -> std::io::Result<Vec<u8>> {
    let invalid = |msg: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg.to_owned());
    let w = u32::try_from(width).map_err(|_| invalid("png: width too large"))?;
    let h = u32::try_from(height).map_err(|_| invalid("png: height too large"))?;
    if w == 0 || h == 0 {
        return Err(invalid("png: empty image"));
    }
    if width.checked_mul(height) != Some(pixels.len()) {
        return Err(invalid("png: pixel count does not match width x height"));
    }
    if palette.is_empty() || palette.len() > 256 {
        return Err(invalid("png: palette must hold 1 to 256 colours"));
    }
    if pixels.iter().any(|&p| usize::from(p) >= palette.len()) {
        return Err(invalid("png: pixel index outside the palette"));
    }

    // Scanlines: filter byte 0 (none), then the row.
    let mut raw = Vec::with_capacity(pixels.len() + height);
    for row in pixels.chunks(width) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let idat = zlib_stored(&raw);
    if u32::try_from(idat.len()).map_or(true, |n| n > 0x7fff_ffff) {
        return Err(invalid("png: image too large"));
    }

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    // Bit depth 8, colour type 3 (indexed), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    let plte: Vec<u8> = palette.iter().flatten().copied().collect();

    let mut out = Vec::with_capacity(SIGNATURE.len() + idat.len() + plte.len() + 64);
    out.extend_from_slice(&SIGNATURE);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", &plte);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// Appends one chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Callers keep data under 2^31 bytes (checked in `encode`).
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks with the Adler-32 trailer.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(STORED_MAX).max(1);
    let mut out = Vec::with_capacity(2 + data.len() + 5 * blocks + 4);
    // CMF 0x78 (deflate, 32K window), FLG 0x01 (no dictionary, check bits).
    out.extend_from_slice(&[0x78, 0x01]);
    let mut pieces = data.chunks(STORED_MAX).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        out.push(u8::from(last)); // BFINAL, BTYPE 00 (stored)
        let len = u16::try_from(piece.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// Adler-32 checksum (RFC 1950).
pub(super) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // 5552 bytes is the most that can be summed before `b` could overflow a u32.
    let (mut a, mut b) = (1u32, 0u32);
    for block in data.chunks(5552) {
        for &byte in block {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// What the test decoder reads back from a PNG.
    #[derive(Debug)]
    pub struct Decoded {
        pub width: usize,
        pub height: usize,
        pub colour_type: u8,
        pub palette: Vec<[u8; 3]>,
        /// Palette indices, row-major, filter bytes removed.
        pub pixels: Vec<u8>,
    }

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Decodes a PNG made of stored deflate blocks, checking every CRC, the zlib header, the
    /// block lengths, the Adler-32 and the filter bytes.
    pub fn decode(bytes: &[u8]) -> Decoded {
        assert_eq!(&bytes[..8], &SIGNATURE, "signature");
        let mut pos = 8;
        let (mut width, mut height, mut colour_type) = (0, 0, 0);
        let mut palette = Vec::new();
        let mut idat = Vec::new();
        let mut seen_end = false;
        while pos < bytes.len() {
            let len = be32(&bytes[pos..]) as usize;
            let kind = &bytes[pos + 4..pos + 8];
            let data = &bytes[pos + 8..pos + 8 + len];
            let crc = be32(&bytes[pos + 8 + len..]);
            assert_eq!(
                crc32fast::hash(&bytes[pos + 4..pos + 8 + len]),
                crc,
                "crc of {kind:?}"
            );
            match kind {
                b"IHDR" => {
                    assert_eq!(len, 13);
                    width = be32(data) as usize;
                    height = be32(&data[4..]) as usize;
                    assert_eq!(data[8], 8, "bit depth");
                    colour_type = data[9];
                    assert_eq!(&data[10..], &[0, 0, 0]);
                }
                b"PLTE" => {
                    assert_eq!(len % 3, 0);
                    palette = data.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
                }
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => seen_end = true,
                other => panic!("unexpected chunk {other:?}"),
            }
            pos += 12 + len;
        }
        assert!(seen_end, "IEND");
        assert_eq!(pos, bytes.len());

        // zlib header, then stored blocks until BFINAL.
        assert_eq!(
            ((u32::from(idat[0]) << 8) | u32::from(idat[1])) % 31,
            0,
            "zlib FCHECK"
        );
        assert_eq!(idat[0] & 0x0f, 8, "deflate");
        let mut p = 2;
        let mut raw = Vec::new();
        loop {
            let header = idat[p];
            assert_eq!(header & 0b110, 0, "stored block");
            let len = u16::from_le_bytes([idat[p + 1], idat[p + 2]]);
            let nlen = u16::from_le_bytes([idat[p + 3], idat[p + 4]]);
            assert_eq!(len, !nlen, "NLEN");
            raw.extend_from_slice(&idat[p + 5..p + 5 + len as usize]);
            p += 5 + len as usize;
            if header & 1 == 1 {
                break;
            }
        }
        assert_eq!(be32(&idat[p..]), adler32(&raw), "adler-32");
        assert_eq!(p + 4, idat.len(), "trailing bytes after zlib stream");

        assert_eq!(raw.len(), width * height + height, "scanline bytes");
        let mut pixels = Vec::with_capacity(width * height);
        for row in raw.chunks(width + 1) {
            assert_eq!(row[0], 0, "filter byte");
            pixels.extend_from_slice(&row[1..]);
        }
        Decoded {
            width,
            height,
            colour_type,
            palette,
            pixels,
        }
    }

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // Long input: exercises the modulo between blocks.
        let long = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &long {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(adler32(&long), ((b << 16) | a) as u32);
    }

    #[test]
    fn encode_round_trips_through_several_stored_blocks() {
        let (w, h) = (300, 500); // 150_500 raw bytes: three stored blocks
        let pixels: Vec<u8> = (0..w * h).map(|i| (i % 3) as u8).collect();
        let palette = [[255, 255, 255], [0, 0, 0], [200, 0, 0]];
        let png = encode(w, h, &palette, &pixels).unwrap();
        let d = decode(&png);
        assert_eq!((d.width, d.height, d.colour_type), (w, h, 3));
        assert_eq!(d.palette, palette);
        assert_eq!(d.pixels, pixels);
    }

    #[test]
    fn encode_rejects_bad_input() {
        assert!(encode(0, 1, &[[0, 0, 0]], &[]).is_err());
        assert!(encode(2, 2, &[[0, 0, 0]], &[0; 3]).is_err());
        assert!(encode(1, 1, &[], &[0]).is_err());
        assert!(encode(1, 1, &[[0, 0, 0]], &[1]).is_err());
    }
}
