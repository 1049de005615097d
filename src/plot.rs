//! PNG pictures: shard histograms (`inspect --plot`), later training curves.
//!
//! plotters draws; text goes through ab_glyph with a TrueType font found on the system (DejaVu Sans on
//! Debian, or `$CONDENSER_FONT`), so no font library has to be linked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

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

fn draw_histogram(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    h: &BTreeMap<u64, u64>,
) -> Result<()> {
    let max_x = h.keys().next_back().copied().unwrap_or(1) + 1;
    let max_y = h.values().copied().max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0u64..max_x, 0u64..(max_y + max_y / 10 + 1))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("count")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(
            h.iter()
                .map(|(&x, &y)| Rectangle::new([(x, 0), (x + 1, y)], BLUE.mix(0.7).filled())),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The span-length and spans-per-document histograms of an inspect report, one above the other.
pub fn histograms(png: &Path, report: &crate::inspect::Report) -> Result<()> {
    ensure_font()?;
    if report.spans == 0 {
        bail!("nothing to plot: no spans");
    }
    let root = BitMapBackend::new(png, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(450);
    let (spans, docs) = (&report.span_length, &report.spans_per_document);
    use crate::inspect::{capped, display_cap};
    let tail = |d: &crate::inspect::Distribution| {
        let cap = display_cap(d);
        if cap < d.max {
            format!(", the last bar holds {cap} to {}", d.max)
        } else {
            String::new()
        }
    };
    draw_histogram(
        &top,
        &format!(
            "span length ({} spans, mean {:.1}{})",
            report.spans,
            spans.mean,
            tail(spans)
        ),
        "tokens per span",
        &capped(&spans.histogram, display_cap(spans)),
    )?;
    draw_histogram(
        &bottom,
        &format!(
            "spans per document ({} documents, mean {:.2}{})",
            report.documents,
            docs.mean,
            tail(docs)
        ),
        "spans",
        &capped(&docs.histogram, display_cap(docs)),
    )?;
    root.present()
        .with_context(|| format!("{}: cannot write the PNG", png.display()))?;
    Ok(())
}

/// Training curves: loss parts (top) and learning rate (bottom) against the step.
pub fn curves(png: &Path, recs: &[crate::train::metrics::Record]) -> Result<()> {
    ensure_font()?;
    let root = BitMapBackend::new(png, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(600);
    let series = crate::train::metrics::series(recs);
    let max_step = recs.iter().map(|r| r.step).max().unwrap_or(1) as f64;
    let min_step = recs.iter().map(|r| r.step).min().unwrap_or(0) as f64;
    let max_y = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        * 1.05
        + 1e-9;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let mut chart = ChartBuilder::on(&top)
        .caption("losses", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(min_step..max_step.max(min_step + 1.0), 0.0..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    let max_lr = recs.iter().map(|r| r.lr).fold(0.0, f64::max) * 1.05 + 1e-12;
    let mut lr = ChartBuilder::on(&bottom)
        .caption("learning rate", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(min_step..max_step.max(min_step + 1.0), 0.0..max_lr)
        .map_err(|e| err(&e))?;
    lr.configure_mesh()
        .x_desc("step")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    lr.draw_series(LineSeries::new(
        recs.iter().map(|r| (r.step as f64, r.lr)),
        MAGENTA.stroke_width(2),
    ))
    .map_err(|e| err(&e))?;
    root.present()
        .with_context(|| format!("{}: cannot write the PNG", png.display()))?;
    Ok(())
}
