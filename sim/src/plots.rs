//! SVG plots of a run (plotters): job response-time CDF per scheduler, state
//! dissemination over time, gossip bytes per node, fairness over time.
//!
//! Schedulers often draw the same curve (central and sparrow at low load),
//! so each series has its own line style as well as its colour: a wide
//! pale solid line, then dashes, dots and a thin solid line drawn over it.
//! Where curves coincide the dashes and dots show on top of the wide line,
//! and the legend shows each style.

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::Path;

type Series = (String, Vec<(f64, f64)>);

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

/// How a series' line is drawn.
#[derive(Clone, Copy)]
enum Line {
    /// Solid, this many pixels wide.
    Solid(u32),
    /// Dashes of this length and gap, this wide.
    Dashed(u32, u32, u32),
}

/// Series `i` is drawn in style `i % 4`: distinct even where curves overlap.
const LINE_STYLES: [Line; 4] = [
    Line::Solid(6),
    Line::Dashed(12, 6, 2),
    Line::Dashed(2, 5, 3),
    Line::Solid(1),
];

/// Draws one line chart with a series per entry.
///
/// # Errors
/// A message naming the file that could not be written.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if log_x {
        x0 = x0.max(1e-4);
        x1 = x1.max(x0 * 10.0);
    }
    if (x1 - x0).abs() < 1e-12 {
        x1 = x0 + 1.0;
    }
    y0 = y0.min(0.0);
    if (y1 - y0).abs() < 1e-12 {
        y1 = y0 + 1.0;
    }
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| err(&e))?;
            for (i, (name, data)) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts = data
                    .iter()
                    .map(|(x, y)| (if log_x { x.max(x0) } else { *x }, *y));
                let leg = vec![(0, 0), (24, 0)];
                match LINE_STYLES[i % LINE_STYLES.len()] {
                    Line::Solid(w) => {
                        let style = color.mix(if w > 2 { 0.45 } else { 1.0 }).stroke_width(w);
                        chart
                            .draw_series(LineSeries::new(pts, style))
                            .map_err(|e| err(&e))?
                            .label(name.clone())
                            .legend(move |(x, y)| {
                                PathElement::new(
                                    leg.iter().map(|(a, b)| (x + a, y + b)).collect::<Vec<_>>(),
                                    style,
                                )
                            });
                    }
                    Line::Dashed(size, gap, w) => {
                        let style = color.stroke_width(w);
                        chart
                            .draw_series(DashedLineSeries::new(pts, size, gap, style))
                            .map_err(|e| err(&e))?
                            .label(name.clone())
                            .legend(move |(x, y)| {
                                DashedPathElement::new(
                                    leg.iter().map(|(a, b)| (x + a, y + b)).collect::<Vec<_>>(),
                                    size,
                                    gap,
                                    style,
                                )
                            });
                    }
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    if log_x {
        draw!(
            b.build_cartesian_2d((x0..x1).log_scale(), y0..y1 * 1.05)
                .map_err(|e| err(&e))?
        );
    } else {
        draw!(
            b.build_cartesian_2d(x0..x1, y0..y1 * 1.05)
                .map_err(|e| err(&e))?
        );
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
