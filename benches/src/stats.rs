//! Figures: samples per figure (one per interleaved run), summarized as
//! median with min–max; the table and the JSON file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

#[derive(Default)]
pub struct Figures {
    order: Vec<String>,
    figures: HashMap<String, Figure>,
    /// Contenders skipped, with why.
    pub skipped: Vec<(String, String)>,
}

impl Figures {
    pub fn add(&mut self, name: &str, unit: &'static str, value: f64) {
        if !value.is_finite() {
            return;
        }
        let figure = self.figures.entry(name.to_string()).or_insert_with(|| {
            self.order.push(name.to_string());
            Figure { name: name.to_string(), unit, samples: Vec::new() }
        });
        figure.samples.push(value);
    }

    pub fn get(&self, name: &str) -> Option<&Figure> {
        self.figures.get(name)
    }

    pub fn median_of(&self, name: &str) -> Option<f64> {
        self.get(name).map(Figure::median)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Figure> {
        self.order.iter().map(|name| &self.figures[name])
    }

    /// One JSON object: figure name → {median, min, max, unit}.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n");
        let mut first = true;
        for f in self.iter() {
            if !first {
                out.push_str(",\n");
            }
            first = false;
            let _ = write!(
                out,
                "  \"{}\": {{\"median\": {}, \"min\": {}, \"max\": {}, \"unit\": \"{}\"}}",
                escape(&f.name),
                num(f.median()),
                num(f.min()),
                num(f.max()),
                escape(f.unit)
            );
        }
        out.push_str("\n}\n");
        out
    }
}

pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The `q` quantile (nearest rank) of durations, in microseconds.
pub fn quantile_us(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let at = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[at].as_secs_f64() * 1e6
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{}", (x * 1e4).round() / 1e4)
    } else {
        "null".into()
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A number with about four significant digits.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}
