//! CVSS v3.0 and v3.1 base scores from a vector (`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`),
//! with the weights and formulas of FIRST's specification (section 7), and the
//! qualitative rating of a score. Temporal and environmental metrics are ignored: OSV
//! carries base vectors.

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
    /// The rating of a CVSS v3 score (0.0 is "none", shown as low).
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

/// The metric weights of the specification.
fn weight(metric: &str, value: &str, changed: bool) -> Option<f64> {
    Some(match (metric, value) {
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
        ("C" | "I" | "A", "N") => 0.0,
        _ => return None,
    })
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

/// The base score of a CVSS v3.0 or v3.1 vector; None when it is not one (a v2 or v4
/// vector, a missing or unknown base metric).
pub fn base_score(vector: &str) -> Option<f64> {
    let mut parts = vector.trim().split('/');
    let v31 = match parts.next()? {
        "CVSS:3.1" => true,
        "CVSS:3.0" => false,
        _ => return None,
    };
    let mut m: [Option<&str>; 8] = [None; 8];
    const NAMES: [&str; 8] = ["AV", "AC", "PR", "UI", "S", "C", "I", "A"];
    for p in parts {
        let (k, v) = p.split_once(':')?;
        if let Some(i) = NAMES.iter().position(|n| *n == k) {
            if m[i].is_some() {
                return None;
            }
            m[i] = Some(v);
        }
    }
    let changed = match m[4]? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let w = |i: usize| weight(NAMES[i], m[i]?, changed);
    let (av, ac, pr, ui, c, i, a) = (w(0)?, w(1)?, w(2)?, w(3)?, w(5)?, w(6)?, w(7)?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Some(0.0);
    }
    let raw = if changed { (1.08 * (impact + exploitability)).min(10.0) } else { (impact + exploitability).min(10.0) };
    Some(if v31 { roundup31(raw) } else { roundup30(raw) })
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
