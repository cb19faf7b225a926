//! CVSS scores computed from vectors: v3.0 and v3.1 base scores
//! (`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`) with the weights and formulas of
//! FIRST's specification (section 7), v2 base scores ([`v2`]) and v4.0 scores ([`v4`]),
//! and the qualitative rating of a score (v3's bands, used for every version).
//! v2 and v3 temporal and environmental metrics are checked but not scored: OSV carries
//! base vectors.

pub mod v2;
pub mod v4;

/// A severity rating, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// No rating given, or one not understood.
    Unknown,
    /// 0.1-3.9 (also Debian's "negligible", Ubuntu's "low").
    Low,
    /// 4.0-6.9 (GitHub's "moderate").
    Medium,
    /// 7.0-8.9 (Red Hat's "important").
    High,
    /// 9.0-10.0.
    Critical,
}

impl Severity {
    /// The rating of a CVSS score by v3's bands, for every version (0.0 is "none",
    /// shown as low; a v2 score of 9.0 or more is critical).
    pub fn of_score(score: f64) -> Severity {
        if score >= 9.0 {
            Severity::Critical
        } else if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }

    /// A rating named in words, as advisories write it (`HIGH`, `Moderate`, `important`).
    pub fn from_word(s: &str) -> Option<Severity> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" | "important" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" | "negligible" | "unimportant" | "none" => Severity::Low,
            _ => return None,
        })
    }

    /// Lower case name (`high`).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Longest vector read: v4.0's 32 metrics with their longest values are under 200
/// bytes; anything longer is not a vector.
pub const MAX_VECTOR_BYTES: usize = 512;

/// One metric of a vector: its abbreviation, the values it takes, and whether the base
/// score needs it.
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) values: &'static [&'static str],
    mandatory: bool,
}

impl Metric {
    pub(crate) const fn base(name: &'static str, values: &'static [&'static str]) -> Metric {
        Metric { name, values, mandatory: true }
    }
    pub(crate) const fn optional(name: &'static str, values: &'static [&'static str]) -> Metric {
        Metric { name, values, mandatory: false }
    }
}

/// The `NAME:VALUE` fields of `body` (a vector after its `CVSS:x.y/` prefix) checked
/// against `metrics`: the index of each metric's value among its values, None where not
/// given. Unknown, repeated or empty fields, unknown values and missing base metrics are
/// refused, naming the field.
pub(crate) fn parse_metrics(version: &str, body: &str, metrics: &[Metric]) -> Result<Vec<Option<usize>>, String> {
    let bad = |what: String| format!("CVSS {version} vector {body:?}: {what}");
    if body.len() > MAX_VECTOR_BYTES {
        return Err(bad(format!("longer than the MAX_VECTOR_BYTES cap ({MAX_VECTOR_BYTES})")));
    }
    let mut got: Vec<Option<usize>> = vec![None; metrics.len()];
    for field in body.split('/') {
        let (k, v) = field.split_once(':').ok_or_else(|| bad(format!("field {field:?} is not METRIC:VALUE")))?;
        let i = metrics.iter().position(|m| m.name == k).ok_or_else(|| bad(format!("unknown metric {k:?}")))?;
        let m = &metrics[i];
        let value = m
            .values
            .iter()
            .position(|x| *x == v)
            .ok_or_else(|| bad(format!("metric {k}: value {v:?} is not one of {}", m.values.join(", "))))?;
        if got[i].replace(value).is_some() {
            return Err(bad(format!("metric {k} given twice")));
        }
    }
    if let Some(m) = metrics.iter().zip(&got).find(|(m, g)| m.mandatory && g.is_none()).map(|(m, _)| m) {
        return Err(bad(format!("base metric {} missing", m.name)));
    }
    Ok(got)
}

/// The metrics of a v3.0/v3.1 vector: the eight base ones, then the temporal and
/// environmental ones.
const V3_METRICS: [Metric; 22] = [
    Metric::base("AV", &["N", "A", "L", "P"]),
    Metric::base("AC", &["L", "H"]),
    Metric::base("PR", &["N", "L", "H"]),
    Metric::base("UI", &["N", "R"]),
    Metric::base("S", &["U", "C"]),
    Metric::base("C", &["H", "L", "N"]),
    Metric::base("I", &["H", "L", "N"]),
    Metric::base("A", &["H", "L", "N"]),
    Metric::optional("E", &["X", "U", "P", "F", "H"]),
    Metric::optional("RL", &["X", "O", "T", "W", "U"]),
    Metric::optional("RC", &["X", "U", "R", "C"]),
    Metric::optional("CR", &["X", "L", "M", "H"]),
    Metric::optional("IR", &["X", "L", "M", "H"]),
    Metric::optional("AR", &["X", "L", "M", "H"]),
    Metric::optional("MAV", &["X", "N", "A", "L", "P"]),
    Metric::optional("MAC", &["X", "L", "H"]),
    Metric::optional("MPR", &["X", "N", "L", "H"]),
    Metric::optional("MUI", &["X", "N", "R"]),
    Metric::optional("MS", &["X", "U", "C"]),
    Metric::optional("MC", &["X", "N", "L", "H"]),
    Metric::optional("MI", &["X", "N", "L", "H"]),
    Metric::optional("MA", &["X", "N", "L", "H"]),
];

/// The metric weights of the v3 specification.
fn weight(metric: &str, value: &str, changed: bool) -> f64 {
    match (metric, value) {
        ("AV", "N") => 0.85,
        ("AV", "A") => 0.62,
        ("AV", "L") => 0.55,
        ("AV", "P") => 0.2,
        ("AC", "L") => 0.77,
        ("AC", "H") => 0.44,
        ("PR", "N") => 0.85,
        ("PR", "L") => {
            if changed {
                0.68
            } else {
                0.62
            }
        }
        ("PR", "H") => {
            if changed {
                0.5
            } else {
                0.27
            }
        }
        ("UI", "N") => 0.85,
        ("UI", "R") => 0.62,
        ("C" | "I" | "A", "H") => 0.56,
        ("C" | "I" | "A", "L") => 0.22,
        _ => 0.0,
    }
}

/// v3.1's Roundup: the smallest one-decimal number at or above `x`, computed on
/// integers so that 4.000000001 stays 4.0 (Appendix A).
fn roundup31(x: f64) -> f64 {
    let scaled = (x * 100_000.0).round();
    if scaled % 10_000.0 == 0.0 { scaled / 100_000.0 } else { ((scaled / 10_000.0).floor() + 1.0) / 10.0 }
}

/// v3.0's round up to one decimal.
fn roundup30(x: f64) -> f64 {
    (x * 10.0).ceil() / 10.0
}

/// The base score of a CVSS v3.0 or v3.1 vector; a vector that is not one (a v2 or v4
/// vector, a missing, repeated or unknown metric or value) is refused naming the field.
pub fn v3_base_score(vector: &str) -> Result<f64, String> {
    let v = vector.trim();
    let (v31, body) = if let Some(b) = v.strip_prefix("CVSS:3.1/") {
        (true, b)
    } else if let Some(b) = v.strip_prefix("CVSS:3.0/") {
        (false, b)
    } else {
        return Err(format!("CVSS v3 vector {vector:?}: does not start with \"CVSS:3.1/\" or \"CVSS:3.0/\""));
    };
    let m = parse_metrics(if v31 { "v3.1" } else { "v3.0" }, body, &V3_METRICS)?;
    let value = |i: usize| m[i].and_then(|k| V3_METRICS[i].values.get(k).copied()).unwrap_or("");
    let changed = value(4) == "C";
    let w = |i: usize| weight(V3_METRICS[i].name, value(i), changed);
    let (av, ac, pr, ui, c, i, a) = (w(0), w(1), w(2), w(3), w(5), w(6), w(7));
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Ok(0.0);
    }
    let raw = if changed { (1.08 * (impact + exploitability)).min(10.0) } else { (impact + exploitability).min(10.0) };
    Ok(if v31 { roundup31(raw) } else { roundup30(raw) })
}

/// The base score of a CVSS v3.0 or v3.1 vector; None when it is not one.
pub fn base_score(vector: &str) -> Option<f64> {
    v3_base_score(vector).ok()
}

/// Which CVSS a score was computed with, by CycloneDX 1.6's `ratings[].method` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    /// CVSS v2 base score.
    #[serde(rename = "CVSSv2")]
    V2,
    /// CVSS v3.0 base score.
    #[serde(rename = "CVSSv3")]
    V30,
    /// CVSS v3.1 base score.
    #[serde(rename = "CVSSv31")]
    V31,
    /// CVSS v4.0 score.
    #[serde(rename = "CVSSv4")]
    V40,
}

impl Method {
    /// CycloneDX's name (`CVSSv31`).
    pub fn name(self) -> &'static str {
        match self {
            Method::V2 => "CVSSv2",
            Method::V30 => "CVSSv3",
            Method::V31 => "CVSSv31",
            Method::V40 => "CVSSv4",
        }
    }
}

/// Tenths to a score (75 to 7.5).
fn from_tenths(t: u32) -> f64 {
    f64::from(t) / 10.0
}

/// The score of an OSV `severity[]` entry of type `CVSS_V2`, `CVSS_V3` or `CVSS_V4`:
/// None for other types, an error naming the field for a malformed vector.
pub fn score(kind: &str, vector: &str) -> Option<Result<(Method, f64), String>> {
    Some(match kind {
        "CVSS_V2" => v2::base_score_tenths(vector).map(|t| (Method::V2, from_tenths(t))),
        "CVSS_V3" => v3_base_score(vector)
            .map(|s| (if vector.trim().starts_with("CVSS:3.1/") { Method::V31 } else { Method::V30 }, s)),
        "CVSS_V4" => v4::score_tenths(vector).map(|t| (Method::V40, from_tenths(t))),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of FIRST's v3.1 specification examples and NVD entries.
    #[test]
    fn known_scores() {
        let cases = [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ];
        for (v, s) in cases {
            assert_eq!(base_score(v), Some(s), "{v}");
        }
        assert_eq!(base_score("AV:N/AC:L/Au:N/C:P/I:P/A:P"), None);
        assert_eq!(base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:X/C:H/I:H/A:H"), None);
        assert_eq!(Severity::of_score(9.8), Severity::Critical);
        assert_eq!(Severity::from_word("MODERATE"), Some(Severity::Medium));
    }
}
