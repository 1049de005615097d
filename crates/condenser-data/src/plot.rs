//! PNG pictures: shard histograms (`inspect --plot`) and training curves (`condenser curves`).
//!
//! plotters draws; text goes through ab_glyph with a TrueType font found on the system (DejaVu Sans on
//! Debian, or `$CONDENSER_FONT`), so no font library has to be linked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers a TrueType font as "sans-serif" once.
fn ensure_font() -> Result<()> {
    FONT.get_or_init(|| {
        let from_env = std::env::var("CONDENSER_FONT").ok();
        let path = from_env.iter().map(String::as_str).chain(FONT_PATHS.iter().copied()).find(|p| Path::new(p).exists());
        let Some(path) = path else {
            return Err(format!("no TrueType font found (looked in {FONT_PATHS:?}); set CONDENSER_FONT=/path/to/font.ttf or install fonts-dejavu-core"));
        };
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        // plotters keeps fonts for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path}: not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// One histogram: a bar per integer value, centred on its tick. `tail` (the last bar, holding every
/// value from `cap` up to `max`) is drawn in another colour and labelled with its range and count, so it
/// stays visible however few it holds.
fn draw_histogram(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    h: &BTreeMap<u64, u64>,
    tail: Option<(u64, u64)>,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let lo = h.keys().next().copied().unwrap_or(0).min(1);
    let hi = h.keys().next_back().copied().unwrap_or(1);
    let max_y = h.values().copied().max().unwrap_or(1);
    // Head room above the tallest bar for the tail's label.
    let top = max_y as f64 * 1.15 + 1.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(lo as f64 - 0.5..hi as f64 + 0.5, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        // Whole values only, each under the centre of its bar.
        .x_labels(((hi - lo + 1) as usize).min(25))
        .x_label_formatter(&|v| integer_label(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    // Every non-zero count gets at least 1% of the tallest bar (a few pixels): a value held by 3
    // documents beside a peak of 1,400 still shows as a bar, not as nothing.
    let floor = (max_y as f64 * 0.01).max(0.0);
    let bar = |x: u64, y: u64, color: RGBColor| {
        let y = if y > 0 { (y as f64).max(floor) } else { 0.0 };
        Rectangle::new(
            [(x as f64 - 0.45, 0.0), (x as f64 + 0.45, y)],
            color.mix(0.8).filled(),
        )
    };
    let tail_at = tail.map(|(cap, _)| cap);
    chart
        .draw_series(
            h.iter()
                .filter(|(x, _)| Some(**x) != tail_at)
                .map(|(&x, &y)| bar(x, y, BLUE)),
        )
        .map_err(|e| err(&e))?;
    if let Some((cap, max)) = tail {
        let n = h.get(&cap).copied().unwrap_or(0);
        chart
            .draw_series([bar(cap, n, ORANGE)])
            .map_err(|e| err(&e))?;
        let label = format!("{cap}-{max}: {n}");
        let style = TextStyle::from(("sans-serif", 14).into_font())
            .pos(Pos::new(HPos::Right, VPos::Bottom));
        let above = (n as f64).max(floor) + max_y as f64 * 0.02;
        chart
            .draw_series([Text::new(label, (cap as f64 + 0.45, above), style)])
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// A tick label for whole values; none between them.
fn integer_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

const ORANGE: RGBColor = RGBColor(230, 120, 0);

/// One histogram to draw: its title, axis labels, bars (value -> count) and the tail bar (the last,
/// holding every value from `cap` to `max`), if any. Plain data, so that this module draws and knows
/// nothing of where the numbers come from.
pub struct Histogram {
    pub title: String,
    pub axes: (&'static str, &'static str),
    pub bars: BTreeMap<u64, u64>,
    pub tail: Option<(u64, u64)>,
}

/// Two histograms, one above the other (`inspect --plot`).
pub fn histograms(png: &Path, top: &Histogram, bottom: &Histogram) -> Result<()> {
    ensure_font()?;
    let root = BitMapBackend::new(png, SIZE).into_drawing_area();
    draw_histograms(&root, top, bottom)?;
    root.present()
        .with_context(|| format!("{}: cannot write the PNG", png.display()))?;
    Ok(())
}

/// The picture size of both plots, in pixels.
const SIZE: (u32, u32) = (1200, 900);

fn draw_histograms(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    top: &Histogram,
    bottom: &Histogram,
) -> Result<()> {
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (upper, lower) = root.split_vertically(450);
    for (area, h) in [(&upper, top), (&lower, bottom)] {
        draw_histogram(area, &h.title, h.axes, &h.bars, h.tail)?;
    }
    Ok(())
}

/// How a curve is drawn: the head and late MLM losses often lie on top of each other, so the late
/// one is dashed with markers and the head one stays visible under it.
#[derive(Clone, Copy)]
struct Stroke {
    color: RGBColor,
    dashed: bool,
    markers: bool,
}

fn stroke(name: &str, color: RGBColor) -> Stroke {
    let late = name == "late MLM";
    Stroke {
        color,
        dashed: late,
        markers: late,
    }
}

/// One line of a chart: its name (the legend), colour and (x, y) points.
pub struct Curve {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Height of the dev-evaluation panel added below the curves when there are evaluations.
const EVAL_PANEL: u32 = 350;

/// Training curves: loss parts (top) and learning rate (below, `(step, lr)`) against the optimizer
/// step, legends to the right of the data; with `evals` (dev metrics of evaluation while
/// fine-tuning, in [0, 1]) a third panel below holds them, each evaluation marked.
pub fn curves(png: &Path, losses: &[Curve], lr: &[(u64, f64)], evals: &[Curve]) -> Result<()> {
    ensure_font()?;
    if lr.is_empty() {
        bail!("nothing to plot: no records");
    }
    let extra = if evals.is_empty() { 0 } else { EVAL_PANEL };
    let root = BitMapBackend::new(png, (SIZE.0, SIZE.1 + extra)).into_drawing_area();
    draw_all(&root, losses, lr, evals)?;
    root.present()
        .with_context(|| format!("{}: cannot write the PNG", png.display()))?;
    Ok(())
}

fn draw_all(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    losses: &[Curve],
    lr: &[(u64, f64)],
    evals: &[Curve],
) -> Result<()> {
    if evals.is_empty() {
        return draw_curves(root, losses, lr);
    }
    let (main, below) = root.split_vertically(SIZE.1);
    draw_curves(&main, losses, lr)?;
    let min_step = lr.iter().map(|r| r.0).min().unwrap_or(0);
    let max_step = lr.iter().map(|r| r.0).max().unwrap_or(1).max(min_step + 1);
    draw_evals(&below, evals, min_step..max_step + 1)
}

/// The dev metrics against the step, on [0, 1], every evaluation marked (they are few).
fn draw_evals(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    evals: &[Curve],
    steps: std::ops::Range<u64>,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    area.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot, legend_area) = area.split_horizontally(1000);
    let mut chart = ChartBuilder::on(&plot)
        .caption("dev evaluation", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(steps, 0.0..1.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("metric")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    let mut legend = Vec::new();
    for c in evals {
        let points: Vec<(u64, f64)> = c.points.iter().map(|&(x, y)| (x as u64, y)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.color.stroke_width(2)))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.color.filled())))
            .map_err(|e| err(&e))?;
        let st = Stroke {
            color: c.color,
            dashed: false,
            markers: true,
        };
        legend.push((c.name.to_string(), st));
    }
    draw_legend(&legend_area, &legend)
}

fn draw_curves(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    series: &[Curve],
    lrs: &[(u64, f64)],
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(600);
    let (top, top_legend) = top.split_horizontally(1000);
    let (bottom, bottom_legend) = bottom.split_horizontally(1000);
    // Integer steps on the axis: the x coordinate is the step itself.
    let min_step = lrs.iter().map(|r| r.0).min().unwrap_or(0);
    let max_step = lrs.iter().map(|r| r.0).max().unwrap_or(1).max(min_step + 1);
    let steps = min_step..max_step + 1;
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        * 1.05
        + 1e-9;
    let mut chart = ChartBuilder::on(&top)
        .caption("losses", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(steps.clone(), 0.0..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("loss (nats per prediction)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    let mut legend = Vec::new();
    for Curve {
        name,
        color,
        points,
    } in series
    {
        let (name, color) = (name.as_str(), *color);
        let st = stroke(name, color);
        let points: Vec<(u64, f64)> = points.iter().map(|&(x, y)| (x as u64, y)).collect();
        let line = color.stroke_width(2);
        if st.dashed {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 8, 5, line))
                .map_err(|e| err(&e))?;
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), line))
                .map_err(|e| err(&e))?;
        }
        if st.markers {
            // Every point up to ~60, then a thinned set, so the marks stay marks.
            let every = (points.len() / 60).max(1);
            chart
                .draw_series(
                    points
                        .iter()
                        .step_by(every)
                        .map(|&p| Circle::new(p, 3, color.stroke_width(1))),
                )
                .map_err(|e| err(&e))?;
        }
        legend.push((name.to_string(), st));
    }
    draw_legend(&top_legend, &legend)?;
    let max_lr = lrs.iter().map(|r| r.1).fold(0.0, f64::max) * 1.05 + 1e-12;
    let mut lr = ChartBuilder::on(&bottom)
        .caption("learning rate", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(steps, 0.0..max_lr)
        .map_err(|e| err(&e))?;
    lr.configure_mesh()
        .x_desc("optimizer step")
        .y_desc("learning rate (per step)")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    lr.draw_series(LineSeries::new(
        lrs.iter().copied(),
        MAGENTA.stroke_width(2),
    ))
    .map_err(|e| err(&e))?;
    let lr_stroke = Stroke {
        color: MAGENTA,
        dashed: false,
        markers: false,
    };
    draw_legend(&bottom_legend, &[("learning rate".to_string(), lr_stroke)])
}

/// A legend in its own strip beside the chart (so it never covers data): a sample of each stroke and
/// its name, top to bottom.
fn draw_legend(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    entries: &[(String, Stroke)],
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    for (i, (name, st)) in entries.iter().enumerate() {
        let y = 60 + 28 * i as i32;
        let (x0, x1) = (8, 48);
        let line = st.color.stroke_width(2);
        if st.dashed {
            area.draw(&DashedPathElement::new(vec![(x0, y), (x1, y)], 8, 5, line))
                .map_err(|e| err(&e))?;
        } else {
            area.draw(&PathElement::new(vec![(x0, y), (x1, y)], line))
                .map_err(|e| err(&e))?;
        }
        if st.markers {
            area.draw(&Circle::new(
                ((x0 + x1) / 2, y),
                3,
                st.color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        }
        let style =
            TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(name.clone(), (x1 + 8, y), style))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders with `draw` into memory and returns the RGB pixels.
    fn render(
        draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
    ) -> Vec<u8> {
        ensure_font().unwrap();
        let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
            draw(&root).unwrap();
            root.present().unwrap();
        }
        buf
    }

    /// Pixels of colour `c` (within 12 per channel) with x in `xs`.
    fn count(buf: &[u8], c: (u8, u8, u8), xs: std::ops::Range<u32>) -> usize {
        buf.chunks(3)
            .enumerate()
            .filter(|(i, p)| {
                let x = (*i as u32) % SIZE.0;
                let near = |a: u8, b: u8| (a as i32 - b as i32).abs() <= 12;
                xs.contains(&x) && near(p[0], c.0) && near(p[1], c.1) && near(p[2], c.2)
            })
            .count()
    }

    /// `c` mixed at `alpha` over white, as the bars are filled.
    fn over_white(c: RGBColor, alpha: f64) -> (u8, u8, u8) {
        let m = |v: u8| (v as f64 * alpha + 255.0 * (1.0 - alpha)).round() as u8;
        (m(c.0), m(c.1), m(c.2))
    }

    /// a tail of 2 documents beside a peak of 1,400 is drawn as a visible orange bar.
    #[test]
    fn the_tail_bar_is_visible() {
        let mut docs = BTreeMap::from([(1, 100), (2, 900), (3, 1400), (4, 700), (5, 50)]);
        docs.insert(40, 2);
        let spans = Histogram {
            title: "span length".into(),
            axes: ("span length", "spans"),
            bars: BTreeMap::from([(10, 3000), (20, 152)]),
            tail: None,
        };
        let per_doc = Histogram {
            title: "spans per document".into(),
            axes: ("spans per document", "documents"),
            bars: docs,
            tail: Some((40, 40)),
        };
        let buf = render(|root| draw_histograms(root, &spans, &per_doc));
        let orange = count(&buf, over_white(ORANGE, 0.8), 0..SIZE.0);
        assert!(orange >= 40, "tail bar: {orange} orange pixels");
    }

    /// the legend lies right of the data (x >= 1000), and the late MLM line, dashed
    /// on top of an equal head MLM line, leaves the head line visible between its dashes.
    #[test]
    fn legend_outside_and_overlapping_lines_distinguishable() {
        let line = |name, color| Curve {
            name,
            color,
            points: (1..=30).map(|s| (s as f64, 5.0)).collect(),
        };
        let losses = [
            line("head MLM".to_string(), BLUE),
            line("late MLM".to_string(), GREEN),
        ];
        let lrs: Vec<(u64, f64)> = (1..=30).map(|s| (s, 1e-4)).collect();
        let buf = render(|root| draw_curves(root, &losses, &lrs));
        let (blue, green) = ((0, 0, 255), (0, 255, 0));
        // The legend's samples, right of the plots.
        assert!(count(&buf, blue, 1000..SIZE.0) > 20 && count(&buf, green, 1000..SIZE.0) > 20);
        // In the data, both: the dashes' gaps show the head line beneath.
        assert!(count(&buf, blue, 80..990) > 300, "head MLM hidden");
        assert!(count(&buf, green, 80..990) > 300, "late MLM missing");
    }

    /// Dev metrics get a panel of their own below the learning rate, so they neither share the loss
    /// axis nor hide its lines.
    #[test]
    fn dev_evaluation_curves_get_a_panel_below_the_learning_rate() {
        ensure_font().unwrap();
        let (w, h) = (SIZE.0, SIZE.1 + EVAL_PANEL);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let teal = RGBColor(0, 128, 128);
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let losses = [Curve {
                name: "loss".to_string(),
                color: BLACK,
                points: (1..=20).map(|s| (s as f64, 2.0)).collect(),
            }];
            let lrs: Vec<(u64, f64)> = (1..=20).map(|s| (s, 1e-4)).collect();
            let evals = [Curve {
                name: "nDCG@10".to_string(),
                color: teal,
                points: vec![(5.0, 0.4), (10.0, 0.6), (20.0, 0.55)],
            }];
            draw_all(&root, &losses, &lrs, &evals).unwrap();
            root.present().unwrap();
        }
        let near = |p: &[u8]| {
            p.iter()
                .zip([0u8, 128, 128])
                .all(|(a, b)| (*a as i32 - b as i32).abs() <= 12)
        };
        let (mut above, mut below) = (0, 0);
        for (i, p) in buf.chunks(3).enumerate() {
            if near(p) {
                if (i as u32) / w >= SIZE.1 {
                    below += 1
                } else {
                    above += 1
                }
            }
        }
        assert!(below > 200, "{below} teal pixels in the evaluation panel");
        assert_eq!(
            above, 0,
            "the evaluation curve leaked into the loss or lr panels"
        );
    }

    #[test]
    fn tick_labels_are_whole_numbers_only() {
        assert_eq!(integer_label(5.0), "5");
        assert_eq!(integer_label(5.5), "");
        assert_eq!(integer_label(-0.0), "0");
    }
}
