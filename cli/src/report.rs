//! Per-input records and the set-level summary, and their JSON / CSV / table forms.

use std::io::Write;

use serde_json::{json, Map, Value};

/// Everything measured for one input.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub index: usize,
    pub label: usize,
    pub predicted: usize,
    pub logits: Vec<f32>,
    pub margin: f64,
    pub jacobian_fro: f64,
    pub prop3_bound: f64,
    pub cor2_estimate: f64,
    pub cor2_class: Option<usize>,
    pub runner_up: usize,
    pub curvature_proxy: f64,
    pub curvature_bound: f64,
    pub x_norm: f64,
    pub deepfool: Option<DeepFoolRec>,
    /// Still correct after FGSM, one per ε.
    pub fgsm: Option<Vec<bool>>,
    /// JSMA at each θ; the first is reported per input.
    pub jsma: Option<Vec<JsmaRec>>,
}

#[derive(Clone, Debug, Default)]
pub struct DeepFoolRec {
    pub distance: f64,
    pub iterations: usize,
    pub success: bool,
    pub jacobian_fro: f64,
}

#[derive(Clone, Debug, Default)]
pub struct JsmaRec {
    pub success: bool,
    pub still_correct: bool,
    pub pixels: usize,
    pub target: usize,
}

/// JSON number, or null for a non-finite value (JSON has no infinity).
pub fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// The key of an ε in JSON maps: its shortest decimal form.
pub fn eps_key(e: f64) -> String {
    format!("{e}")
}

impl Record {
    pub fn correct(&self) -> bool {
        self.predicted == self.label
    }

    pub fn to_json(&self, eps: &[f64]) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!("input"));
        m.insert("index".into(), json!(self.index));
        m.insert("label".into(), json!(self.label));
        m.insert("predicted".into(), json!(self.predicted));
        m.insert("correct".into(), json!(self.correct()));
        m.insert("logits".into(), Value::Array(self.logits.iter().map(|&v| num(v as f64)).collect()));
        m.insert("margin".into(), num(self.margin));
        m.insert("jacobian_fro".into(), num(self.jacobian_fro));
        m.insert("prop3_bound".into(), num(self.prop3_bound));
        m.insert("cor2_estimate".into(), num(self.cor2_estimate));
        m.insert("cor2_class".into(), json!(self.cor2_class));
        m.insert("runner_up".into(), json!(self.runner_up));
        m.insert("curvature_proxy".into(), num(self.curvature_proxy));
        m.insert("curvature_bound".into(), num(self.curvature_bound));
        m.insert("x_norm".into(), num(self.x_norm));
        let df = self.deepfool.as_ref();
        m.insert("deepfool_distance".into(), df.map_or(Value::Null, |d| num(d.distance)));
        m.insert("deepfool_iterations".into(), json!(df.map(|d| d.iterations)));
        m.insert("deepfool_success".into(), json!(df.map(|d| d.success)));
        m.insert("deepfool_jacobian_fro".into(), df.map_or(Value::Null, |d| num(d.jacobian_fro)));
        m.insert(
            "fgsm".into(),
            match &self.fgsm {
                Some(v) => Value::Object(eps.iter().zip(v).map(|(e, &ok)| (eps_key(*e), json!(ok))).collect()),
                None => Value::Null,
            },
        );
        let js = self.jsma.as_ref().and_then(|v| v.first());
        m.insert("jsma_success".into(), json!(js.map(|j| j.success)));
        m.insert("jsma_pixels".into(), json!(js.map(|j| j.pixels)));
        m.insert("jsma_target".into(), json!(js.map(|j| j.target)));
        Value::Object(m)
    }
}

/// Set-level figures.
#[derive(Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub accuracy: f64,
    pub rho_adv: Option<f64>,
    pub rho_adv_successful: Option<f64>,
    pub deepfool_success_rate: Option<f64>,
    pub mean_deepfool_distance: Option<f64>,
    pub median_deepfool_distance: Option<f64>,
    pub mean_jacobian_fro: f64,
    pub mean_jacobian_fro_deepfool: Option<f64>,
    pub mean_prop3_bound: f64,
    pub mean_cor2_estimate: f64,
    pub frac_deepfool_ge_prop3: Option<f64>,
    pub frac_curvature_within_bound: f64,
    pub fgsm_accuracy: Option<Vec<(f64, f64)>>,
    pub jsma_success_rate: Option<f64>,
    pub jsma_mean_pixels: Option<f64>,
    pub jsma_accuracy: Option<Vec<(f64, f64)>>,
    pub seconds: f64,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) })
}

impl Summary {
    pub fn from_records(recs: &[Record], eps: &[f64], jsma_eps: &[f64], seconds: f64) -> Self {
        let n = recs.len();
        let finite = |v: f64| v.is_finite().then_some(v);
        let dfs: Vec<(&Record, &DeepFoolRec)> =
            recs.iter().filter_map(|r| r.deepfool.as_ref().map(|d| (r, d))).collect();
        let has_df = !dfs.is_empty();
        let fgsm = recs.first().and_then(|r| r.fgsm.as_ref()).map(|_| {
            eps.iter()
                .enumerate()
                .map(|(i, &e)| {
                    let ok = recs.iter().filter(|r| r.fgsm.as_ref().is_some_and(|f| f[i])).count();
                    (e, ok as f64 / n as f64)
                })
                .collect()
        });
        let has_jsma = recs.first().is_some_and(|r| r.jsma.is_some());
        let first_js = || recs.iter().filter_map(|r| r.jsma.as_ref().and_then(|v| v.first()));
        Summary {
            n,
            accuracy: recs.iter().filter(|r| r.correct()).count() as f64 / n.max(1) as f64,
            rho_adv: if has_df { mean(dfs.iter().map(|(r, d)| d.distance / r.x_norm)) } else { None },
            rho_adv_successful: mean(dfs.iter().filter(|(_, d)| d.success).map(|(r, d)| d.distance / r.x_norm)),
            deepfool_success_rate: has_df
                .then(|| dfs.iter().filter(|(_, d)| d.success).count() as f64 / dfs.len() as f64),
            mean_deepfool_distance: mean(dfs.iter().map(|(_, d)| d.distance)),
            median_deepfool_distance: median(dfs.iter().map(|(_, d)| d.distance).collect()),
            mean_jacobian_fro: mean(recs.iter().map(|r| r.jacobian_fro)).unwrap_or(f64::NAN),
            mean_jacobian_fro_deepfool: mean(dfs.iter().map(|(_, d)| d.jacobian_fro)),
            mean_prop3_bound: mean(recs.iter().filter_map(|r| finite(r.prop3_bound))).unwrap_or(f64::NAN),
            mean_cor2_estimate: mean(recs.iter().filter_map(|r| finite(r.cor2_estimate))).unwrap_or(f64::NAN),
            frac_deepfool_ge_prop3: {
                let ok: Vec<_> = dfs.iter().filter(|(_, d)| d.success).collect();
                (!ok.is_empty())
                    .then(|| ok.iter().filter(|(r, d)| d.distance >= r.prop3_bound).count() as f64 / ok.len() as f64)
            },
            frac_curvature_within_bound: recs.iter().filter(|r| r.curvature_proxy <= r.curvature_bound).count() as f64
                / n.max(1) as f64,
            fgsm_accuracy: fgsm,
            jsma_success_rate: has_jsma.then(|| first_js().filter(|j| j.success).count() as f64 / n as f64),
            jsma_mean_pixels: if has_jsma { mean(first_js().map(|j| j.pixels as f64)) } else { None },
            jsma_accuracy: has_jsma.then(|| {
                jsma_eps
                    .iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        let ok = recs.iter().filter(|r| r.jsma.as_ref().is_some_and(|v| v[i].still_correct)).count();
                        (e, ok as f64 / n as f64)
                    })
                    .collect()
            }),
            seconds,
        }
    }

    pub fn to_json(&self) -> Value {
        let opt = |v: Option<f64>| v.map_or(Value::Null, num);
        let map = |v: &Option<Vec<(f64, f64)>>| match v {
            Some(v) => Value::Object(v.iter().map(|(e, a)| (eps_key(*e), num(*a))).collect()),
            None => Value::Null,
        };
        json!({
            "type": "summary",
            "n": self.n,
            "accuracy": num(self.accuracy),
            "rho_adv": opt(self.rho_adv),
            "rho_adv_successful": opt(self.rho_adv_successful),
            "deepfool_success_rate": opt(self.deepfool_success_rate),
            "mean_deepfool_distance": opt(self.mean_deepfool_distance),
            "median_deepfool_distance": opt(self.median_deepfool_distance),
            "mean_jacobian_fro": num(self.mean_jacobian_fro),
            "mean_jacobian_fro_deepfool": opt(self.mean_jacobian_fro_deepfool),
            "mean_prop3_bound": num(self.mean_prop3_bound),
            "mean_cor2_estimate": num(self.mean_cor2_estimate),
            "frac_deepfool_ge_prop3": opt(self.frac_deepfool_ge_prop3),
            "frac_curvature_within_bound": num(self.frac_curvature_within_bound),
            "fgsm_accuracy": map(&self.fgsm_accuracy),
            "jsma_success_rate": opt(self.jsma_success_rate),
            "jsma_mean_pixels": opt(self.jsma_mean_pixels),
            "jsma_accuracy": map(&self.jsma_accuracy),
            "seconds": num(self.seconds),
        })
    }

    /// The human-readable table.
    pub fn write_table(&self, w: &mut dyn Write, model: &str) -> std::io::Result<()> {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        writeln!(w, "certify: {model}, {} inputs, {:.1} s", self.n, self.seconds)?;
        writeln!(w, "  accuracy                              {:.2}%", 100.0 * self.accuracy)?;
        writeln!(w, "  mean ‖J‖_F (clean)                    {:.4}", self.mean_jacobian_fro)?;
        writeln!(w, "  mean Prop. 3 estimate (first order)   {:.4}", self.mean_prop3_bound)?;
        writeln!(w, "  mean Cor. 2 estimate (first order)    {:.4}", self.mean_cor2_estimate)?;
        writeln!(w, "  curvature proxy ≤ ‖J‖²‖x‖²            {:.1}%", 100.0 * self.frac_curvature_within_bound)?;
        if self.rho_adv.is_some() {
            writeln!(w, "  DeepFool ρ̂_adv = mean ‖r‖/‖x‖         {}", f(self.rho_adv))?;
            writeln!(
                w,
                "  DeepFool success rate (%)             {}",
                f(self.deepfool_success_rate.map(|v| 100.0 * v))
            )?;
            writeln!(
                w,
                "  DeepFool distance mean / median       {} / {}",
                f(self.mean_deepfool_distance),
                f(self.median_deepfool_distance)
            )?;
            writeln!(w, "  mean ‖J‖_F at the DeepFool point      {}", f(self.mean_jacobian_fro_deepfool))?;
            writeln!(
                w,
                "  DeepFool distance ≥ Prop. 3 (%)       {}",
                f(self.frac_deepfool_ge_prop3.map(|v| 100.0 * v))
            )?;
        }
        if let Some(v) = &self.fgsm_accuracy {
            for (e, a) in v {
                writeln!(w, "  FGSM accuracy at ε = {e:<16} {:.2}%", 100.0 * a)?;
            }
        }
        if let Some(v) = &self.jsma_accuracy {
            for (e, a) in v {
                writeln!(w, "  JSMA accuracy at θ = {e:<16} {:.2}%", 100.0 * a)?;
            }
            writeln!(
                w,
                "  JSMA success rate (%) / mean pixels   {} / {}",
                f(self.jsma_success_rate.map(|v| 100.0 * v)),
                f(self.jsma_mean_pixels)
            )?;
        }
        Ok(())
    }
}

/// CSV header for the per-input table.
pub fn csv_header(k: usize, eps: &[f64]) -> String {
    let mut cols: Vec<String> = ["index", "label", "predicted", "correct"].iter().map(|s| s.to_string()).collect();
    cols.extend((0..k).map(|i| format!("logit_{i}")));
    cols.extend(
        [
            "margin",
            "jacobian_fro",
            "prop3_bound",
            "cor2_estimate",
            "cor2_class",
            "runner_up",
            "curvature_proxy",
            "curvature_bound",
            "x_norm",
            "deepfool_distance",
            "deepfool_iterations",
            "deepfool_success",
            "deepfool_jacobian_fro",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    cols.extend(eps.iter().map(|e| format!("fgsm_{}", eps_key(*e))));
    cols.extend(["jsma_success", "jsma_pixels"].iter().map(|s| s.to_string()));
    cols.join(",")
}

/// One CSV row; empty cells for figures not computed, `inf` for infinite estimates.
pub fn csv_row(r: &Record, eps_count: usize) -> String {
    let f = |v: f64| format!("{v}");
    let mut c: Vec<String> =
        vec![r.index.to_string(), r.label.to_string(), r.predicted.to_string(), r.correct().to_string()];
    c.extend(r.logits.iter().map(|&v| f(v as f64)));
    c.extend([
        f(r.margin),
        f(r.jacobian_fro),
        f(r.prop3_bound),
        f(r.cor2_estimate),
        r.cor2_class.map_or(String::new(), |k| k.to_string()),
        r.runner_up.to_string(),
        f(r.curvature_proxy),
        f(r.curvature_bound),
        f(r.x_norm),
    ]);
    match &r.deepfool {
        Some(d) => c.extend([f(d.distance), d.iterations.to_string(), d.success.to_string(), f(d.jacobian_fro)]),
        None => c.extend(std::iter::repeat_n(String::new(), 4)),
    }
    match &r.fgsm {
        Some(v) => c.extend(v.iter().map(|b| b.to_string())),
        None => c.extend(std::iter::repeat_n(String::new(), eps_count)),
    }
    match r.jsma.as_ref().and_then(|v| v.first()) {
        Some(j) => c.extend([j.success.to_string(), j.pixels.to_string()]),
        None => c.extend([String::new(), String::new()]),
    }
    c.join(",")
}
