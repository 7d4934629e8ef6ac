//! A picture of a timeline's layer map as SVG (`GET .../layer_map.svg`): keys across, LSNs up, one rectangle
//! per layer file (image layers green, L1 deltas blue, L0 deltas orange), and horizontal marks for the GC
//! cutoff, the PITR horizon (the cutoff GC may apply next), branch points and the last record.
//!
//! Both axes are rank-compressed, as Neon's `pagectl draw-timeline` does: every distinct key (and LSN)
//! boundary of a layer or mark gets one step, so that a map of a thousand layers whose keys are sparse in a
//! 144-bit space, and whose L0 layers are thin slices of LSN, stays readable. Hovering a layer shows its name
//! and size (`<title>`).

use std::fmt::Write;
use std::ops::Range;

use crate::pg::Lsn;
use crate::repository::Key;

/// One layer file to draw.
#[derive(Debug, Clone)]
pub struct DrawLayer {
    pub name: String,
    pub keys: Range<Key>,
    pub lsns: Range<Lsn>,
    pub image: bool,
    pub l0: bool,
    pub size: u64,
}

/// A horizontal mark at an LSN; `class` is its CSS class (`gc-cutoff`, `pitr-horizon`, `branch-point`,
/// `last-record`).
#[derive(Debug, Clone)]
pub struct Mark {
    pub class: &'static str,
    pub label: String,
    pub lsn: Lsn,
}

const MARGIN_LEFT: f64 = 20.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_RIGHT: f64 = 440.0;
const MARGIN_BOTTOM: f64 = 20.0;
/// The drawing area aims at about this size; a step is at least 1 px, and at most `MAX_STEP_X` across and
/// `MAX_STEP_Y` up.
const TARGET_WIDTH: f64 = 1400.0;
const TARGET_HEIGHT: f64 = 900.0;
const MAX_STEP_X: f64 = 200.0;
const MAX_STEP_Y: f64 = 60.0;
/// Labels of marks closer than this are moved apart.
const LABEL_GAP: f64 = 14.0;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Sorted distinct values and the rank of each.
struct Ranks<T: Ord + Copy>(Vec<T>);

impl<T: Ord + Copy> Ranks<T> {
    fn new(mut values: Vec<T>) -> Ranks<T> {
        values.sort_unstable();
        values.dedup();
        Ranks(values)
    }

    fn rank(&self, v: T) -> usize {
        self.0.partition_point(|x| *x < v)
    }

    fn steps(&self) -> usize {
        self.0.len().saturating_sub(1).max(1)
    }
}

fn step(target: f64, steps: usize, max: f64) -> f64 {
    (target / steps as f64).clamp(1.0, max)
}

/// The SVG document of `layers` with `marks`, titled `title`.
pub fn layer_map_svg(title: &str, layers: &[DrawLayer], marks: &[Mark]) -> String {
    let keys = Ranks::new(
        layers
            .iter()
            .flat_map(|l| [l.keys.start, l.keys.end])
            .collect(),
    );
    let lsns = Ranks::new(
        (layers.iter())
            .flat_map(|l| [l.lsns.start, l.lsns.end])
            .chain(marks.iter().map(|m| m.lsn))
            .collect(),
    );
    let (dx, dy) = (
        step(TARGET_WIDTH, keys.steps(), MAX_STEP_X),
        step(TARGET_HEIGHT, lsns.steps(), MAX_STEP_Y),
    );
    let width = (MARGIN_LEFT + dx * keys.steps() as f64 + MARGIN_RIGHT).max(900.0);
    let height =
        MARGIN_TOP + dy * lsns.steps() as f64 + MARGIN_BOTTOM + LABEL_GAP * marks.len() as f64;
    let x = |k: Key| MARGIN_LEFT + dx * keys.rank(k) as f64;
    // Newest LSN at the top.
    let y = |l: Lsn| MARGIN_TOP + dy * (lsns.steps() - lsns.rank(l).min(lsns.steps())) as f64;
    let plot_right = MARGIN_LEFT + dx * keys.steps() as f64;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        "<style>.image{{fill:#4caf50}}.delta{{fill:#2196f3}}.l0{{fill:#ff9800}}\
         .layer{{stroke:#222;stroke-width:0.5;fill-opacity:0.8}}\
         .mark{{stroke-width:1.5;stroke-dasharray:6 3}}.gc-cutoff{{stroke:#d32f2f}}\
         .pitr-horizon{{stroke:#7b1fa2}}.branch-point{{stroke:#00838f}}.last-record{{stroke:#333}}</style>"
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{MARGIN_LEFT}" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{MARGIN_LEFT}\" y=\"38\">{} layers: image <tspan fill=\"#4caf50\">■</tspan>  L1 delta \
         <tspan fill=\"#2196f3\">■</tspan>  L0 delta <tspan fill=\"#ff9800\">■</tspan>   keys → (ranked), \
         LSN ↑ (ranked)</text>",
        layers.len()
    );
    // Big ones first, so that small ones stay visible on top.
    let mut order: Vec<&DrawLayer> = layers.iter().collect();
    order.sort_by_key(|l| {
        std::cmp::Reverse((keys.rank(l.keys.end) - keys.rank(l.keys.start)) as u64)
    });
    for l in order {
        let class = match (l.image, l.l0) {
            (true, _) => "image",
            (false, true) => "l0",
            (false, false) => "delta",
        };
        let (x0, x1) = (x(l.keys.start), x(l.keys.end));
        let (y_top, y_bottom) = (y(l.lsns.end), y(l.lsns.start));
        let _ = writeln!(
            svg,
            r#"<rect class="layer {class}" x="{x0:.1}" y="{y_top:.1}" width="{:.1}" height="{:.1}"><title>{} ({} bytes)</title></rect>"#,
            (x1 - x0).max(1.0),
            (y_bottom - y_top).max(1.0),
            escape(&l.name),
            l.size
        );
    }
    // Labels top to bottom, each at least LABEL_GAP below the previous one.
    let mut sorted: Vec<&Mark> = marks.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.lsn));
    let mut next_free = f64::MIN;
    for m in sorted {
        let my = y(m.lsn);
        let label_y = (my + 4.0).max(next_free);
        next_free = label_y + LABEL_GAP;
        let _ = writeln!(
            svg,
            r#"<line class="mark {}" x1="{MARGIN_LEFT}" y1="{my:.1}" x2="{plot_right:.1}" y2="{my:.1}"/><text class="mark-label {}" x="{:.1}" y="{:.1}">{} {}</text>"#,
            m.class,
            m.class,
            plot_right + 6.0,
            label_y,
            escape(&m.label),
            m.lsn
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[derive(Debug, thiserror::Error)]
pub enum DrawError {
    #[error(transparent)]
    Metadata(#[from] crate::repository::metadata::MetadataError),
    #[error("{}: not a timeline directory (<workdir>/tenants/<tenant>/timelines/<timeline>)", .0.display())]
    NotATimeline(std::path::PathBuf),
    #[error("layer {name:?} named in the metadata: {msg}")]
    LayerName { name: String, msg: String },
}

/// The layer map of a timeline directory of a workdir, offline (`pageserver layers draw`): the layers its
/// metadata names (sizes from the metadata, else from the files), marks for disk_consistent_lsn, the GC cutoff,
/// its own branch point and its children's (sibling timelines whose ancestor it is).
pub fn draw_timeline_dir(dir: &std::path::Path) -> Result<String, DrawError> {
    use crate::repository::layers::LayerName;
    use crate::repository::metadata::TimelineMetadata;
    let not_timeline = || DrawError::NotATimeline(dir.to_path_buf());
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(not_timeline)?;
    let tenant = (dir.parent().and_then(|p| p.parent()))
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(not_timeline)?;
    let meta = TimelineMetadata::load(dir)?;
    let mut layers = Vec::new();
    for name in &meta.layers {
        let parsed: LayerName = name.parse().map_err(|e| DrawError::LayerName {
            name: name.clone(),
            msg: format!("{e}"),
        })?;
        let size = match meta.layer_meta.get(name) {
            Some(m) => m.file_size,
            None => std::fs::metadata(dir.join(name)).map_or(0, |m| m.len()),
        };
        layers.push(DrawLayer {
            name: name.clone(),
            keys: parsed.key_range().clone(),
            lsns: parsed.lsn_range(),
            image: !parsed.is_delta(),
            l0: crate::repository::tasks::plan::is_l0(&parsed),
            size,
        });
    }
    let mut marks = vec![
        Mark {
            class: "last-record",
            label: "disk consistent".into(),
            lsn: meta.disk_consistent_lsn,
        },
        Mark {
            class: "gc-cutoff",
            label: "GC cutoff".into(),
            lsn: meta.latest_gc_cutoff_lsn,
        },
    ];
    if let Some(parent) = meta.ancestor_timeline {
        marks.push(Mark {
            class: "branch-point",
            label: format!("branched from {parent}"),
            lsn: meta.ancestor_lsn,
        });
    }
    let siblings =
        std::fs::read_dir(dir.parent().ok_or_else(not_timeline)?).map_err(|_| not_timeline())?;
    for entry in siblings.flatten() {
        let Ok(child) = TimelineMetadata::load(&entry.path()) else {
            continue;
        };
        if child.ancestor_timeline.is_some_and(|a| a.to_string() == id) {
            marks.push(Mark {
                class: "branch-point",
                label: format!("branch {}", entry.file_name().to_string_lossy()),
                lsn: child.ancestor_lsn,
            });
        }
    }
    Ok(layer_map_svg(
        &format!("tenant {tenant} timeline {id} (from the workdir)"),
        &layers,
        &marks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::layers::tests::small_key as key;

    #[test]
    fn one_shape_per_layer_and_every_mark() {
        let layers = vec![
            DrawLayer {
                name: "image".into(),
                keys: key(0)..key(100),
                lsns: Lsn(0x100)..Lsn(0x101),
                image: true,
                l0: false,
                size: 10,
            },
            DrawLayer {
                name: "l1".into(),
                keys: key(0)..key(50),
                lsns: Lsn(0x100)..Lsn(0x200),
                image: false,
                l0: false,
                size: 20,
            },
            DrawLayer {
                name: "l0 <&>".into(),
                keys: Key::MIN..Key::MAX,
                lsns: Lsn(0x200)..Lsn(0x300),
                image: false,
                l0: true,
                size: 30,
            },
        ];
        let marks = vec![
            Mark {
                class: "gc-cutoff",
                label: "GC cutoff".into(),
                lsn: Lsn(0x150),
            },
            Mark {
                class: "branch-point",
                label: "branch".into(),
                lsn: Lsn(0x180),
            },
        ];
        let svg = layer_map_svg("t/tl", &layers, &marks);
        assert_eq!(svg.matches("<rect class=\"layer ").count(), 3, "{svg}");
        for class in ["layer image", "layer delta", "layer l0"] {
            assert_eq!(
                svg.matches(&format!("class=\"{class}\"")).count(),
                1,
                "{class}"
            );
        }
        assert!(
            svg.contains(r#"class="mark gc-cutoff""#)
                && svg.contains(r#"class="mark branch-point""#)
        );
        assert!(svg.contains("l0 &lt;&amp;&gt;") && !svg.contains("l0 <&>"));
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        // The L0 layer spans every key: the widest shape.
        let l0_line = svg.lines().find(|l| l.contains("layer l0")).unwrap();
        let image_line = svg.lines().find(|l| l.contains("layer image")).unwrap();
        let width = |line: &str| -> f64 {
            let at = line.find("width=\"").unwrap() + 7;
            line[at..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(width(l0_line) > width(image_line));
    }

    /// A thousand layers as a long-lived timeline has them (L0 slices across every key, L1 deltas over key
    /// ranges in LSN bands, images of sparse key ranges): every layer gets its own rectangle of at least
    /// 1 x 1 px, layers whose key and LSN ranges are disjoint never overlap on the picture, every L0 spans
    /// the whole width, and the picture stays within a screen-like size in both directions.
    #[test]
    fn a_thousand_layers_stay_apart_and_bounded() {
        let mut layers = Vec::new();
        let lsn = |i: u64| Lsn(0x1000_0000 + i * 0x10_0000);
        for band in 0..30u64 {
            for part in 0..20u32 {
                layers.push(DrawLayer {
                    name: format!("l1-{band}-{part}"),
                    keys: key(part * 1000)..key(part * 1000 + 1000),
                    lsns: lsn(band * 10)..lsn(band * 10 + 10),
                    image: false,
                    l0: false,
                    size: 1,
                });
            }
        }
        for i in 0..200u64 {
            layers.push(DrawLayer {
                name: format!("l0-{i}"),
                keys: Key::MIN..Key::MAX,
                lsns: lsn(300 + i)..lsn(301 + i),
                image: false,
                l0: true,
                size: 1,
            });
        }
        for i in 0..200u32 {
            let at = lsn(u64::from(i % 10) * 30 + 5);
            layers.push(DrawLayer {
                name: format!("image-{i}"),
                keys: key(i * 100)..key(i * 100 + 37),
                lsns: at..Lsn(at.0 + 1),
                image: true,
                l0: false,
                size: 1,
            });
        }
        assert_eq!(layers.len(), 1000);
        let svg = layer_map_svg("thousand", &layers, &[]);
        let attr = |line: &str, name: &str| -> f64 {
            let at = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            line[at..].split('"').next().unwrap().parse().unwrap()
        };
        let header = svg.lines().next().unwrap();
        let (width, height) = (attr(header, "width"), attr(header, "height"));
        assert!(width <= 3000.0 && height <= 3000.0, "{width} x {height}");
        let mut rects = std::collections::HashMap::new();
        for line in svg
            .lines()
            .filter(|l| l.starts_with("<rect class=\"layer "))
        {
            let name = line
                .split("<title>")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            let r = (
                attr(line, "x"),
                attr(line, "y"),
                attr(line, "width"),
                attr(line, "height"),
            );
            assert!(r.2 >= 1.0 && r.3 >= 1.0, "{name}: {r:?}");
            assert!(
                rects.insert(name.to_string(), r).is_none(),
                "{name} drawn twice"
            );
        }
        assert_eq!(rects.len(), 1000);
        let l0_width = rects["l0-0"].2;
        for l in layers.iter().filter(|l| l.l0) {
            assert_eq!(rects[&l.name].2, l0_width);
        }
        for (i, a) in layers.iter().enumerate() {
            for b in &layers[i + 1..] {
                let apart = a.keys.end <= b.keys.start
                    || b.keys.end <= a.keys.start
                    || a.lsns.end <= b.lsns.start
                    || b.lsns.end <= a.lsns.start;
                if !apart {
                    continue;
                }
                // Coordinates are printed to 0.1 px: neighbours may share up to 0.1 px of edge.
                let (ra, rb) = (rects[&a.name], rects[&b.name]);
                let overlap_x = ra.0 < rb.0 + rb.2 - 0.11 && rb.0 < ra.0 + ra.2 - 0.11;
                let overlap_y = ra.1 < rb.1 + rb.3 - 0.11 && rb.1 < ra.1 + ra.3 - 0.11;
                assert!(
                    !(overlap_x && overlap_y),
                    "{} and {} overlap: {ra:?} {rb:?}",
                    a.name,
                    b.name
                );
            }
        }
    }
}
