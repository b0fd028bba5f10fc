//! A raster of palette indices with the few drawing operations charts need: pixels, lines,
//! rectangles and bitmap text. Everything outside the raster is clipped, never a panic.

use super::font::{self, GLYPH_H, GLYPH_W};

/// A `width` x `height` image of palette indices, row-major.
#[derive(Debug, Clone)]
pub(super) struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with colour `background`.
    pub fn new(width: usize, height: usize, background: u8) -> Self {
        Self {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        let x = usize::try_from(x).ok().filter(|x| *x < self.width)?;
        let y = usize::try_from(y).ok().filter(|y| *y < self.height)?;
        Some(y * self.width + x)
    }

    /// Sets one pixel; coordinates outside the canvas are ignored.
    pub fn set(&mut self, x: i64, y: i64, colour: u8) {
        if let Some(i) = self.index(x, y) {
            self.pixels[i] = colour;
        }
    }

    /// The pixel at (x, y), `None` outside the canvas.
    #[cfg(test)]
    pub fn get(&self, x: i64, y: i64) -> Option<u8> {
        self.index(x, y).map(|i| self.pixels[i])
    }

    /// A one-pixel line from (x0, y0) to (x1, y1), both ends included (Bresenham).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: u8) {
        // Far-off endpoints would only make the loop long: clamp to a margin around the canvas.
        let lim = |v: i64, n: usize| v.clamp(-4096, n as i64 + 4096);
        let (mut x, mut y) = (lim(x0, self.width), lim(y0, self.height));
        let (x1, y1) = (lim(x1, self.width), lim(y1, self.height));
        let dx = (x1 - x).abs();
        let dy = -(y1 - y).abs();
        let sx = if x < x1 { 1 } else { -1 };
        let sy = if y < y1 { 1 } else { -1 };
        let mut err = dx + dy;
        loop {
            self.set(x, y, colour);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// The outline of the rectangle with corners (x0, y0) and (x1, y1), inclusive.
    pub fn rect(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: u8) {
        self.line((x0, y0), (x1, y0), colour);
        self.line((x1, y0), (x1, y1), colour);
        self.line((x1, y1), (x0, y1), colour);
        self.line((x0, y1), (x0, y0), colour);
    }

    /// The filled rectangle with corners (x0, y0) and (x1, y1), inclusive.
    pub fn fill_rect(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: u8) {
        let xs = x0.min(x1).max(0)..=x0.max(x1).min(self.width as i64 - 1);
        for y in y0.min(y1).max(0)..=y0.max(y1).min(self.height as i64 - 1) {
            for x in xs.clone() {
                self.set(x, y, colour);
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels square.
    /// Returns the width drawn.
    pub fn text(&mut self, x: i64, y: i64, text: &str, colour: u8, scale: usize) -> i64 {
        let scale = scale.clamp(1, 8) as i64;
        let mut cx = x;
        for c in text.chars() {
            let g = font::glyph_or_box(c);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        let px = cx + col as i64 * scale;
                        let py = y + row as i64 * scale;
                        self.fill_rect((px, py), (px + scale - 1, py + scale - 1), colour);
                    }
                }
            }
            cx += advance(scale as usize);
        }
        cx - x
    }
}

/// Horizontal advance of one character at `scale` (glyph plus one column of spacing).
pub(super) fn advance(scale: usize) -> i64 {
    ((GLYPH_W + 1) * scale.clamp(1, 8)) as i64
}

/// Width of `text` at `scale`, the trailing spacing column left out.
pub(super) fn text_width(text: &str, scale: usize) -> i64 {
    let n = text.chars().count() as i64;
    if n == 0 {
        0
    } else {
        n * advance(scale) - scale.clamp(1, 8) as i64
    }
}

/// Height of a line of text at `scale`.
pub(super) fn text_height(scale: usize) -> i64 {
    (GLYPH_H * scale.clamp(1, 8)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cover_both_ends_and_clip() {
        let mut c = Canvas::new(10, 10, 0);
        c.line((1, 1), (8, 5), 1);
        assert_eq!(c.get(1, 1), Some(1));
        assert_eq!(c.get(8, 5), Some(1));
        assert_eq!(c.pixels.iter().filter(|p| **p == 1).count(), 8);
        c.line((-100, -100), (i64::MAX, i64::MIN), 2);
        c.line((3, 3), (3, 3), 3);
        assert_eq!(c.get(3, 3), Some(3));
        assert_eq!(c.get(10, 0), None);
    }

    #[test]
    fn rectangles_and_text() {
        let mut c = Canvas::new(20, 20, 0);
        c.rect((2, 2), (6, 5), 1);
        assert_eq!(c.get(2, 5), Some(1));
        assert_eq!(c.get(4, 4), Some(0));
        c.fill_rect((18, 18), (30, 30), 2);
        assert_eq!(c.get(19, 19), Some(2));
        let mut t = Canvas::new(40, 20, 0);
        assert_eq!(t.text(0, 0, "ab", 1, 2), 24);
        assert_eq!(text_width("ab", 2), 22);
        assert_eq!(text_height(2), 14);
        // 'a' at scale 2: the top row starts at column 1, i.e. pixels 2..4.
        assert_eq!(t.get(0, 0), Some(0));
        assert_eq!(t.get(2, 0), Some(1));
        assert_eq!(t.get(3, 1), Some(1));
        t.text(-50, -50, "~x", 1, 1);
    }
}
