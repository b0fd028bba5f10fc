//! PNG line charts of a run's curves (loss, reward, accuracy, ...) for the run report, drawn
//! and encoded here so the trainer needs no image or plotting crate.

mod canvas;
mod font;
mod png;

use std::path::Path;

use canvas::{text_height, text_width, Canvas};

/// One chart: a title and one or more named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Drawn above the panel.
    pub title: String,
    /// Drawn in palette order; named in a legend when there is more than one.
    pub series: Vec<Series>,
}

/// One named curve; points with a non-finite coordinate are skipped.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (x, y) points, joined in the order given.
    pub points: Vec<(f64, f64)>,
}

/// Size of one chart panel in pixels.
const PANEL_W: usize = 420;
const PANEL_H: usize = 260;
/// Panels per row.
const COLUMNS: usize = 2;

const WHITE: u8 = 0;
const BLACK: u8 = 1;
const GRID: u8 = 2;
/// Palette indices of the series colours, used in turn.
const SERIES: [u8; 4] = [3, 4, 5, 6];
const PALETTE: [[u8; 3]; 7] = [
    [255, 255, 255],
    [0, 0, 0],
    [222, 222, 222],
    [31, 119, 180], // blue
    [230, 110, 0],  // orange
    [44, 160, 44],  // green
    [200, 30, 40],  // red
];

/// Draws the charts in a grid (2 columns) into one PNG file.
pub fn write_png(path: &Path, charts: &[Chart]) -> std::io::Result<()> {
    std::fs::write(path, render_png(charts)?)
}

/// The PNG bytes of `charts` in a grid; no charts gives one empty panel.
fn render_png(charts: &[Chart]) -> std::io::Result<Vec<u8>> {
    let canvas = render(charts);
    png::encode(canvas.width, canvas.height, &PALETTE, &canvas.pixels)
}

fn render(charts: &[Chart]) -> Canvas {
    let empty = [Chart {
        title: String::new(),
        series: Vec::new(),
    }];
    let charts = if charts.is_empty() {
        &empty[..]
    } else {
        charts
    };
    let cols = charts.len().min(COLUMNS);
    let rows = charts.len().div_ceil(cols);
    let mut canvas = Canvas::new(cols * PANEL_W, rows * PANEL_H, WHITE);
    for (i, chart) in charts.iter().enumerate() {
        let origin = (((i % cols) * PANEL_W) as i64, ((i / cols) * PANEL_H) as i64);
        draw_panel(&mut canvas, origin, chart);
    }
    canvas
}

/// The plot area of a panel, inclusive pixel bounds.
#[derive(Debug, Clone, Copy)]
struct Area {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

/// Inset of the curves from the frame, so they do not hide under it.
const INSET: i64 = 3;

fn draw_panel(c: &mut Canvas, (ox, oy): (i64, i64), chart: &Chart) {
    let (pw, ph) = (PANEL_W as i64, PANEL_H as i64);
    c.rect((ox, oy), (ox + pw - 1, oy + ph - 1), GRID);

    // Title: large when it fits, else small and cut to the panel.
    let room = pw - 16;
    let scale = if text_width(&chart.title, 2) <= room {
        2
    } else {
        1
    };
    c.text(
        ox + 8,
        oy + 6,
        &fit(&chart.title, room, scale),
        BLACK,
        scale,
    );

    let mut area = Area {
        left: ox + 58,
        top: oy + 28,
        right: ox + pw - 14,
        bottom: oy + ph - 22,
    };
    if chart.series.len() > 1 {
        draw_legend(c, area.left, area.right, oy + 26, &chart.series);
        area.top += 12;
    }

    let finite: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = || finite.iter().flatten();
    let bounds = all().fold(None, |acc: Option<(f64, f64, f64, f64)>, &(x, y)| {
        Some(match acc {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        })
    });

    draw_grid(c, area);
    match bounds {
        None => {
            let msg = "no data";
            let x = (area.left + area.right - text_width(msg, 2)) / 2;
            let y = (area.top + area.bottom - text_height(2)) / 2;
            c.text(x, y, msg, BLACK, 2);
        }
        Some((x0, x1, y0, y1)) => {
            let (x0, x1) = padded(x0, x1);
            let (y0, y1) = padded(y0, y1);
            let to_px = |(x, y): (f64, f64)| {
                let w = (area.right - area.left - 2 * INSET) as f64;
                let h = (area.bottom - area.top - 2 * INSET) as f64;
                let px = area.left + INSET + (unit(x, x0, x1) * w).round() as i64;
                let py = area.bottom - INSET - (unit(y, y0, y1) * h).round() as i64;
                (px, py)
            };
            for (i, points) in finite.iter().enumerate() {
                let colour = SERIES[i % SERIES.len()];
                match points.as_slice() {
                    [] => {}
                    [only] => {
                        let (x, y) = to_px(*only);
                        c.fill_rect((x - 2, y - 2), (x + 2, y + 2), colour);
                    }
                    _ => {
                        for pair in points.windows(2) {
                            c.line(to_px(pair[0]), to_px(pair[1]), colour);
                        }
                    }
                }
            }
            draw_labels(c, area, (x0, x1), (y0, y1));
        }
    }
    c.rect((area.left, area.top), (area.right, area.bottom), BLACK);
}

/// Light grid lines, four divisions each way.
fn draw_grid(c: &mut Canvas, a: Area) {
    for i in 1..4 {
        let x = a.left + (a.right - a.left) * i / 4;
        let y = a.top + (a.bottom - a.top) * i / 4;
        c.line((x, a.top), (x, a.bottom), GRID);
        c.line((a.left, y), (a.right, y), GRID);
    }
}

/// Min and max labels on both axes.
fn draw_labels(c: &mut Canvas, a: Area, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) {
    let (y_max, y_min) = (fmt_num(y1), fmt_num(y0));
    c.text(a.left - 4 - text_width(&y_max, 1), a.top, &y_max, BLACK, 1);
    c.text(
        a.left - 4 - text_width(&y_min, 1),
        a.bottom - text_height(1) + 1,
        &y_min,
        BLACK,
        1,
    );
    let (x_min, x_max) = (fmt_num(x0), fmt_num(x1));
    c.text(a.left, a.bottom + 5, &x_min, BLACK, 1);
    c.text(
        a.right - text_width(&x_max, 1) + 1,
        a.bottom + 5,
        &x_max,
        BLACK,
        1,
    );
}

/// Series names, each after a swatch of its colour, left to right while they fit.
fn draw_legend(c: &mut Canvas, left: i64, right: i64, y: i64, series: &[Series]) {
    let mut x = left;
    for (i, s) in series.iter().enumerate() {
        let name = fit(&s.name, 20 * canvas::advance(1), 1);
        let width = 14 + text_width(&name, 1);
        if x + width > right {
            break;
        }
        c.fill_rect((x, y + 1), (x + 9, y + 5), SERIES[i % SERIES.len()]);
        c.text(x + 14, y, &name, BLACK, 1);
        x += width + 12;
    }
}

/// `text` cut (with a trailing `..`) to fit `room` pixels at `scale`.
fn fit(text: &str, room: i64, scale: usize) -> String {
    if text_width(text, scale) <= room {
        return text.to_owned();
    }
    let keep = (room / canvas::advance(scale) - 2).max(0) as usize;
    text.chars().take(keep).chain("..".chars()).collect()
}

/// Where `v` lies between `lo` and `hi` (0 to 1), halved first so no difference overflows.
fn unit(v: f64, lo: f64, hi: f64) -> f64 {
    let t = (v * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5);
    if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    }
}

/// The axis range for data spanning `lo..=hi`; a single value is widened around itself.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        return (lo, hi);
    }
    let pad = lo.abs() * 0.1;
    let (a, b) = ((lo - pad).max(f64::MIN), (lo + pad).min(f64::MAX));
    if b > a {
        (a, b)
    } else {
        (lo - 1.0, lo + 1.0)
    }
}

/// A short label for an axis value: `0.125`, `-3.2`, `1.2e4`, `3e-5`.
fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e4).contains(&a) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let decimals = (3 - a.log10().floor() as i64).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }

    fn chart(title: &str, series: Vec<Series>) -> Chart {
        Chart {
            title: title.into(),
            series,
        }
    }

    fn six_charts() -> Vec<Chart> {
        let loss: Vec<(f64, f64)> = (0..200)
            .map(|i| (i as f64, 2.0 / (1.0 + i as f64 * 0.05)))
            .collect();
        let reward: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64, (i as f64 * 0.3).sin()))
            .collect();
        let acc: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, i as f64 / 50.0)).collect();
        let mut nan = loss.clone();
        nan[10].1 = f64::NAN;
        nan[20].0 = f64::INFINITY;
        nan[30].1 = f64::NEG_INFINITY;
        vec![
            chart("GRPO loss", vec![series("loss", loss)]),
            chart(
                "Reward and accuracy (%)",
                vec![series("reward", reward), series("accuracy", acc)],
            ),
            chart("empty", vec![]),
            chart(
                "with nan",
                vec![
                    series("loss", nan),
                    series("all nan", vec![(f64::NAN, 1.0)]),
                ],
            ),
            chart(
                "constant",
                vec![series("kl", vec![(0.0, 0.5), (1.0, 0.5), (2.0, 0.5)])],
            ),
            chart("single point", vec![series("x", vec![(3.0, -7.0)])]),
        ]
    }

    /// Counts pixels of `colours` in the panel at grid position `i` of a two-column image.
    fn count_in_panel(d: &png::tests::Decoded, i: usize, colours: &[u8]) -> usize {
        let (x0, y0) = ((i % COLUMNS) * PANEL_W, (i / COLUMNS) * PANEL_H);
        (y0..y0 + PANEL_H)
            .flat_map(|y| (x0..x0 + PANEL_W).map(move |x| (x, y)))
            .filter(|&(x, y)| colours.contains(&d.pixels[y * d.width + x]))
            .count()
    }

    #[test]
    fn six_panel_png_decodes_and_shows_the_curves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        write_png(&path, &six_charts()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        println!("six-panel PNG: {} bytes", bytes.len());
        if let Ok(copy) = std::env::var("CADA_PLOT_TEST_COPY") {
            std::fs::copy(&path, copy).unwrap();
        }

        let d = png::tests::decode(&bytes);
        assert_eq!(
            (d.width, d.height, d.colour_type),
            (2 * PANEL_W, 3 * PANEL_H, 3)
        );
        assert_eq!(d.palette, PALETTE);
        assert!(d.pixels.iter().all(|&p| usize::from(p) < PALETTE.len()));

        // Size is fixed by the layout: stored blocks do not depend on the pixels.
        let raw = d.width * d.height + d.height;
        let idat = 2 + raw + 5 * raw.div_ceil(65_535) + 4;
        let expected = 8 + (12 + 13) + (12 + 3 * PALETTE.len()) + (12 + idat) + 12;
        assert_eq!(bytes.len(), expected);

        assert!(count_in_panel(&d, 0, &[SERIES[0]]) > 200, "loss line drawn");
        assert!(
            count_in_panel(&d, 1, &[SERIES[0]]) > 50,
            "first series of two"
        );
        assert!(
            count_in_panel(&d, 1, &[SERIES[1]]) > 50,
            "second series of two"
        );
        assert_eq!(
            count_in_panel(&d, 2, &SERIES),
            0,
            "empty chart has no curve"
        );
        assert!(
            count_in_panel(&d, 2, &[BLACK]) > 0,
            "empty chart still framed and labelled"
        );
        assert!(
            count_in_panel(&d, 3, &[SERIES[0]]) > 200,
            "nan series drawn"
        );
        assert!(
            count_in_panel(&d, 4, &[SERIES[0]]) > 100,
            "constant series drawn"
        );
        assert_eq!(
            count_in_panel(&d, 5, &[SERIES[0]]),
            25,
            "single point is a 5x5 square"
        );
    }

    #[test]
    fn constant_series_sits_mid_panel() {
        let c = render(&[chart("c", vec![series("s", vec![(0.0, 2.0), (5.0, 2.0)])])]);
        let rows: Vec<usize> = (0..c.height)
            .filter(|&y| (0..c.width).any(|x| c.pixels[y * c.width + x] == SERIES[0]))
            .collect();
        assert_eq!(rows.len(), 1, "a flat line");
        let mid = (28 + PANEL_H - 22) / 2;
        assert!(
            rows[0].abs_diff(mid) <= 2,
            "row {} vs middle {mid}",
            rows[0]
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let huge = vec![
            (0.0, f64::MAX),
            (1.0, -f64::MAX),
            (f64::MAX, 0.0),
            (-f64::MAX, 1.0),
        ];
        let charts = vec![
            chart("huge", vec![series("h", huge)]),
            chart(
                "max constant",
                vec![series(
                    "m",
                    vec![(f64::MAX, f64::MAX), (f64::MAX, f64::MAX)],
                )],
            ),
            chart(
                "tiny",
                vec![series("t", vec![(0.0, 5e-324), (0.0, 5e-324)])],
            ),
            chart(
                &"a very long title with unknown chars ~~ é ".repeat(5),
                vec![
                    series(&"long legend name ".repeat(4), vec![(0.0, 0.0), (1.0, 1.0)]),
                    series("b", vec![]),
                    series("c", vec![]),
                    series("d", vec![]),
                    series("e reuses blue", vec![(0.5, 0.5)]),
                ],
            ),
            chart("", vec![series("", vec![])]),
        ];
        png::tests::decode(&render_png(&charts).unwrap());
        let none = png::tests::decode(&render_png(&[]).unwrap());
        assert_eq!((none.width, none.height), (PANEL_W, PANEL_H));
        let one = png::tests::decode(&render_png(&charts[..1]).unwrap());
        assert_eq!((one.width, one.height), (PANEL_W, PANEL_H));
        let three = png::tests::decode(&render_png(&charts[..3]).unwrap());
        assert_eq!((three.width, three.height), (2 * PANEL_W, 2 * PANEL_H));
        assert!(write_png(Path::new("/nonexistent-dir/x.png"), &charts).is_err());
    }

    #[test]
    fn numbers_format_compactly() {
        let cases = [
            (0.125, "0.125"),
            (-3.2, "-3.2"),
            (12_345.0, "1.2e4"),
            (0.0, "0"),
            (1.0, "1"),
            (100.0, "100"),
            (9999.0, "9999"),
            (0.001, "0.001"),
            (0.000_03, "3e-5"),
            (-1.0e10, "-1e10"),
            (2.0 / 3.0, "0.6667"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (v, want) in cases {
            assert_eq!(fmt_num(v), want, "{v}");
        }
    }

    #[test]
    fn ranges_pad_single_values() {
        assert_eq!(padded(1.0, 2.0), (1.0, 2.0));
        let (lo, hi) = padded(5.0, 5.0);
        assert!(lo < 5.0 && hi > 5.0);
        let (lo, hi) = padded(0.0, 0.0);
        assert_eq!((lo, hi), (-1.0, 1.0));
        let (lo, hi) = padded(f64::MAX, f64::MAX);
        assert!(lo < hi && hi.is_finite());
        assert_eq!(unit(f64::MAX, -f64::MAX, f64::MAX), 1.0);
        assert_eq!(unit(0.0, -f64::MAX, f64::MAX), 0.5);
    }
}
