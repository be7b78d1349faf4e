//! One result row per configuration, its statistics, and the ratios to the baselines.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A figure that the system may not expose: the value, or `"n/a"` in the exports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Na<T>(pub Option<T>);

impl<T: Serialize> Serialize for Na<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(v) => v.serialize(s),
            None => s.serialize_str("n/a"),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Na<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Na(match v {
            serde_json::Value::String(s) if s == "n/a" => None,
            serde_json::Value::Null => None,
            v => Some(serde_json::from_value(v).map_err(serde::de::Error::custom)?),
        }))
    }
}

impl<T> From<Option<T>> for Na<T> {
    fn from(v: Option<T>) -> Self {
        Na(v)
    }
}

/// The engines other than clip-wgpu (what `ratio_vs_*` compares against).
pub const CLIP: &str = "clip-wgpu";

/// One configuration's figures. Field names are part of the JSON/CSV contract.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// `clip-wgpu`, `torch` or `ort`.
    pub engine: String,
    /// `cpu` or `gpu`.
    pub device: String,
    /// The GPU adapter's name, or the CPU model.
    pub adapter: String,
    /// `image`, `text`, or in end-to-end mode `e2e`, `decode+preprocess`, `encode`.
    pub tower: String,
    pub precision: String,
    pub batch: usize,
    /// Tokens per sequence (mean over the batch): 50 for images.
    pub tokens: f64,
    /// `patches` (images), `fixed` (`--text-tokens`), `captions` (the caption mix), `padded-77`
    /// (the baselines' texts, padded as their tokenizers do).
    pub token_mode: String,
    pub threads: usize,
    /// Items per timed run (the batch; the directory's image count in end-to-end mode).
    pub items: usize,
    pub runs: usize,
    pub min_s: f64,
    pub median_s: f64,
    pub max_s: f64,
    pub mean_s: f64,
    pub stddev_s: f64,
    /// `items / median_s`.
    pub items_per_s: f64,
    /// Peak resident set of the process that ran this configuration (one process each).
    pub peak_rss_bytes: Na<u64>,
    /// GPU memory held by the encoder's activation pools after the runs.
    pub gpu_pool_bytes: Na<u64>,
    /// GPU memory held by the uploaded weights.
    pub gpu_weight_bytes: Na<u64>,
    /// Process CPU time (user + system) over wall time during the timed runs (2.0: two
    /// cores busy).
    pub cpu_util: Na<f64>,
    /// Hottest hwmon CPU sensor during the timed runs, °C.
    pub cpu_temp_c: Na<f64>,
    /// CPU package power (RAPL) during the timed runs, W (whole package: other processes too).
    pub cpu_power_w: Na<f64>,
    /// GPU temperature (NVML), °C.
    pub gpu_temp_c: Na<f64>,
    /// GPU board power (NVML), W.
    pub gpu_power_w: Na<f64>,
    /// End-to-end rows: e2e rate ÷ min(decode+preprocess rate, encode rate).
    pub overlap_efficiency: Na<f64>,
    /// `ratio_vs_<baseline>`: this row's items/s ÷ the baseline's for the same tower and batch
    /// (clip-wgpu rows only).
    #[serde(flatten)]
    pub ratios: BTreeMap<String, Na<f64>>,
    pub times_s: Vec<f64>,
}

/// min, median, max, mean and sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
}

pub fn stats(times: &[f64]) -> Stats {
    if times.is_empty() {
        return Stats { min: f64::NAN, median: f64::NAN, max: f64::NAN, mean: f64::NAN, stddev: f64::NAN };
    }
    let mut t = times.to_vec();
    t.sort_by(|a, b| a.total_cmp(b));
    let n = t.len();
    let median = if n % 2 == 1 { t[n / 2] } else { (t[n / 2 - 1] + t[n / 2]) / 2.0 };
    let mean = t.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { t.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    Stats { min: t[0], median, max: t[n - 1], mean, stddev: var.sqrt() }
}

impl Row {
    /// Fills the timing fields from the runs' times.
    pub fn set_times(&mut self, items: usize, times: Vec<f64>) {
        let s = stats(&times);
        self.items = items;
        self.runs = times.len();
        self.min_s = s.min;
        self.median_s = s.median;
        self.max_s = s.max;
        self.mean_s = s.mean;
        self.stddev_s = s.stddev;
        self.items_per_s = if s.median > 0.0 { items as f64 / s.median } else { f64::NAN };
        self.times_s = times;
    }

    /// `engine device precision` (plus the adapter for GPUs): one plot series.
    pub fn series(&self) -> String {
        if self.device == "gpu" {
            let short = self.adapter.split(" (").next().unwrap_or(&self.adapter);
            format!("{} gpu {} ({short})", self.engine, self.precision)
        } else {
            format!("{} cpu {}", self.engine, self.precision)
        }
    }
}

/// The baseline engines present, in order of appearance.
pub fn baselines(rows: &[Row]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in rows {
        if r.engine != CLIP && !v.contains(&r.engine) {
            v.push(r.engine.clone());
        }
    }
    v
}

/// Sets `ratio_vs_<b>` on every row for every baseline `b` present: clip-wgpu's items/s over
/// the baseline's at the same tower and batch (any device and precision of clip-wgpu against
/// the baseline's f32 CPU); `n/a` where there is no such baseline row, and on baseline rows.
pub fn add_ratios(rows: &mut [Row]) {
    let bs = baselines(rows);
    let rates: Vec<(String, String, usize, f64)> =
        rows.iter().map(|r| (r.engine.clone(), r.tower.clone(), r.batch, r.items_per_s)).collect();
    for r in rows.iter_mut() {
        for b in &bs {
            let v = if r.engine == CLIP {
                rates
                    .iter()
                    .find(|(e, t, n, _)| e == b && *t == r.tower && *n == r.batch)
                    .and_then(|&(_, _, _, base)| (base > 0.0).then(|| r.items_per_s / base))
            } else {
                None
            };
            r.ratios.insert(format!("ratio_vs_{b}"), Na(v));
        }
    }
}

/// Sets `overlap_efficiency` on the `e2e` rows: e2e ÷ min(decode+preprocess, encode) for the
/// same engine, device, precision and batch.
pub fn add_overlap(rows: &mut [Row]) {
    let rates: Vec<(String, String, String, usize, f64)> =
        rows.iter().map(|r| (r.series(), r.tower.clone(), r.precision.clone(), r.batch, r.items_per_s)).collect();
    for r in rows.iter_mut().filter(|r| r.tower == "e2e") {
        let find = |tower: &str| {
            rates.iter().find(|(s, t, _, n, _)| *s == r.series() && t == tower && *n == r.batch).map(|x| x.4)
        };
        if let (Some(p), Some(e)) = (find("decode+preprocess"), find("encode")) {
            let m = p.min(e);
            r.overlap_efficiency = Na((m > 0.0).then(|| r.items_per_s / m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(engine: &str, device: &str, tower: &str, batch: usize, median: f64) -> Row {
        let mut r = Row {
            engine: engine.into(),
            device: device.into(),
            tower: tower.into(),
            batch,
            precision: "f32".into(),
            ..Default::default()
        };
        r.set_times(batch, vec![median * 1.1, median, median * 0.9]);
        r
    }

    #[test]
    fn statistics() {
        let s = stats(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max, s.mean), (1.0, 2.0, 3.0, 2.0));
        assert!((s.stddev - 1.0).abs() < 1e-12);
        let s = stats(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
        let s = stats(&[5.0]);
        assert_eq!((s.median, s.stddev), (5.0, 0.0));
        assert!(stats(&[]).median.is_nan());
        let r = row("clip-wgpu", "cpu", "image", 8, 0.5);
        assert_eq!(r.runs, 3);
        assert!((r.items_per_s - 16.0).abs() < 1e-9);
    }

    #[test]
    fn ratios_match_tower_and_batch() {
        let mut rows = vec![
            row("clip-wgpu", "cpu", "image", 1, 0.1),
            row("clip-wgpu", "gpu", "image", 1, 0.4),
            row("torch", "cpu", "image", 1, 0.2),
            row("ort", "cpu", "image", 1, 0.05),
            row("clip-wgpu", "cpu", "image", 8, 1.0),
            row("torch", "cpu", "image", 8, 1.5),
            row("clip-wgpu", "cpu", "text", 8, 0.1),
        ];
        add_ratios(&mut rows);
        let get = |i: usize, b: &str| rows[i].ratios[&format!("ratio_vs_{b}")].0;
        assert!((get(0, "torch").unwrap() - 2.0).abs() < 1e-9);
        assert!((get(0, "ort").unwrap() - 0.5).abs() < 1e-9);
        assert!((get(1, "torch").unwrap() - 0.5).abs() < 1e-9);
        assert!((get(4, "torch").unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(get(4, "ort"), None); // no ort row at batch 8
        assert_eq!(get(6, "torch"), None); // no text baseline
        assert_eq!(get(2, "torch"), None); // baselines get no ratio
        assert_eq!(rows[0].ratios.len(), 2);
        let v = serde_json::to_value(&rows[4]).unwrap();
        assert_eq!(v["ratio_vs_ort"], "n/a");
        assert!(v["ratio_vs_torch"].as_f64().is_some());
        for k in ["engine", "device", "adapter", "tower", "precision", "batch", "runs", "min_s", "median_s", "max_s"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["peak_rss_bytes"], "n/a");
        // and back (`xtask report` re-reads results.json)
        let back: Row = serde_json::from_value(v).unwrap();
        assert_eq!(back.ratios, rows[4].ratios);
        assert_eq!(back.peak_rss_bytes, Na(None));
        assert_eq!(back.times_s, rows[4].times_s);
    }

    #[test]
    fn overlap() {
        let mut rows = vec![
            row("clip-wgpu", "cpu", "e2e", 8, 1.0),
            row("clip-wgpu", "cpu", "decode+preprocess", 8, 0.5),
            row("clip-wgpu", "cpu", "encode", 8, 0.8),
        ];
        add_overlap(&mut rows);
        // rates 8, 16, 10 → 8 / 10
        assert!((rows[0].overlap_efficiency.0.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(rows[1].overlap_efficiency.0, None);
    }
}
