//! CVSS v4.0 scores (`CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N`),
//! as FIRST's CVSS v4.0 specification (section 8) computes them: the vector falls in a
//! macrovector (its six equivalence classes EQ1-EQ6), whose score comes from the
//! specification's table; the score is then lowered by the vector's severity distance
//! from the macrovector's highest vectors, in proportion to the gap to each next lower
//! macrovector. Threat (`E`) and environmental metrics take part as the specification
//! says (an unset `E` counts as `A`, unset requirements as `H`, an unset modified metric
//! as its base metric); supplemental metrics are checked but do not score.

use super::{Metric, parse_metrics};

const X: &str = "X";

/// The metrics of a v4.0 vector: the eleven base ones (mandatory), then threat,
/// environmental and supplemental ones.
const METRICS: [Metric; 32] = [
    Metric::base("AV", &["N", "A", "L", "P"]),
    Metric::base("AC", &["L", "H"]),
    Metric::base("AT", &["N", "P"]),
    Metric::base("PR", &["N", "L", "H"]),
    Metric::base("UI", &["N", "P", "A"]),
    Metric::base("VC", &["H", "L", "N"]),
    Metric::base("VI", &["H", "L", "N"]),
    Metric::base("VA", &["H", "L", "N"]),
    Metric::base("SC", &["H", "L", "N"]),
    Metric::base("SI", &["H", "L", "N"]),
    Metric::base("SA", &["H", "L", "N"]),
    Metric::optional("E", &[X, "A", "P", "U"]),
    Metric::optional("CR", &[X, "H", "M", "L"]),
    Metric::optional("IR", &[X, "H", "M", "L"]),
    Metric::optional("AR", &[X, "H", "M", "L"]),
    Metric::optional("MAV", &[X, "N", "A", "L", "P"]),
    Metric::optional("MAC", &[X, "L", "H"]),
    Metric::optional("MAT", &[X, "N", "P"]),
    Metric::optional("MPR", &[X, "N", "L", "H"]),
    Metric::optional("MUI", &[X, "N", "P", "A"]),
    Metric::optional("MVC", &[X, "H", "L", "N"]),
    Metric::optional("MVI", &[X, "H", "L", "N"]),
    Metric::optional("MVA", &[X, "H", "L", "N"]),
    Metric::optional("MSC", &[X, "H", "L", "N"]),
    Metric::optional("MSI", &[X, "S", "H", "L", "N"]),
    Metric::optional("MSA", &[X, "S", "H", "L", "N"]),
    Metric::optional("S", &[X, "N", "P"]),
    Metric::optional("AU", &[X, "N", "Y"]),
    Metric::optional("R", &[X, "A", "U", "I"]),
    Metric::optional("V", &[X, "D", "C"]),
    Metric::optional("RE", &[X, "L", "M", "H"]),
    Metric::optional("U", &[X, "Clear", "Green", "Amber", "Red"]),
];

/// The specification's score of each macrovector (EQ1..EQ6 as six digits), in tenths.
/// Macrovectors not listed do not exist.
#[rustfmt::skip]
const MACROVECTOR_SCORES: [(&str, u8); 270] = [
    ("000000", 100), ("000001", 99), ("000010", 98), ("000011", 95), ("000020", 95), ("000021", 92), ("000100", 100), ("000101", 96),
    ("000110", 93), ("000111", 87), ("000120", 91), ("000121", 81), ("000200", 93), ("000201", 90), ("000210", 89), ("000211", 80),
    ("000220", 81), ("000221", 68), ("001000", 98), ("001001", 95), ("001010", 95), ("001011", 92), ("001020", 90), ("001021", 84),
    ("001100", 93), ("001101", 92), ("001110", 89), ("001111", 81), ("001120", 81), ("001121", 65), ("001200", 88), ("001201", 80),
    ("001210", 78), ("001211", 70), ("001220", 69), ("001221", 48), ("002001", 92), ("002011", 82), ("002021", 72), ("002101", 79),
    ("002111", 69), ("002121", 50), ("002201", 69), ("002211", 55), ("002221", 27), ("010000", 99), ("010001", 97), ("010010", 95),
    ("010011", 92), ("010020", 92), ("010021", 85), ("010100", 95), ("010101", 91), ("010110", 90), ("010111", 83), ("010120", 84),
    ("010121", 71), ("010200", 92), ("010201", 81), ("010210", 82), ("010211", 71), ("010220", 72), ("010221", 53), ("011000", 95),
    ("011001", 93), ("011010", 92), ("011011", 85), ("011020", 85), ("011021", 73), ("011100", 92), ("011101", 82), ("011110", 80),
    ("011111", 72), ("011120", 70), ("011121", 59), ("011200", 84), ("011201", 70), ("011210", 71), ("011211", 52), ("011220", 50),
    ("011221", 30), ("012001", 86), ("012011", 75), ("012021", 52), ("012101", 71), ("012111", 52), ("012121", 29), ("012201", 63),
    ("012211", 29), ("012221", 17), ("100000", 98), ("100001", 95), ("100010", 94), ("100011", 87), ("100020", 91), ("100021", 81),
    ("100100", 94), ("100101", 89), ("100110", 86), ("100111", 74), ("100120", 77), ("100121", 64), ("100200", 87), ("100201", 75),
    ("100210", 74), ("100211", 63), ("100220", 63), ("100221", 49), ("101000", 94), ("101001", 89), ("101010", 88), ("101011", 77),
    ("101020", 76), ("101021", 67), ("101100", 86), ("101101", 76), ("101110", 74), ("101111", 58), ("101120", 59), ("101121", 50),
    ("101200", 72), ("101201", 57), ("101210", 57), ("101211", 52), ("101220", 52), ("101221", 25), ("102001", 83), ("102011", 70),
    ("102021", 54), ("102101", 65), ("102111", 58), ("102121", 26), ("102201", 53), ("102211", 21), ("102221", 13), ("110000", 95),
    ("110001", 90), ("110010", 88), ("110011", 76), ("110020", 76), ("110021", 70), ("110100", 90), ("110101", 77), ("110110", 75),
    ("110111", 62), ("110120", 61), ("110121", 53), ("110200", 77), ("110201", 66), ("110210", 68), ("110211", 59), ("110220", 52),
    ("110221", 30), ("111000", 89), ("111001", 78), ("111010", 76), ("111011", 67), ("111020", 62), ("111021", 58), ("111100", 74),
    ("111101", 59), ("111110", 57), ("111111", 57), ("111120", 47), ("111121", 23), ("111200", 61), ("111201", 52), ("111210", 57),
    ("111211", 29), ("111220", 24), ("111221", 16), ("112001", 71), ("112011", 59), ("112021", 30), ("112101", 58), ("112111", 26),
    ("112121", 15), ("112201", 23), ("112211", 13), ("112221", 6), ("200000", 93), ("200001", 87), ("200010", 86), ("200011", 72),
    ("200020", 75), ("200021", 58), ("200100", 86), ("200101", 74), ("200110", 74), ("200111", 61), ("200120", 56), ("200121", 34),
    ("200200", 70), ("200201", 54), ("200210", 52), ("200211", 40), ("200220", 40), ("200221", 22), ("201000", 85), ("201001", 75),
    ("201010", 74), ("201011", 55), ("201020", 62), ("201021", 51), ("201100", 72), ("201101", 57), ("201110", 55), ("201111", 41),
    ("201120", 46), ("201121", 19), ("201200", 53), ("201201", 36), ("201210", 34), ("201211", 19), ("201220", 19), ("201221", 8),
    ("202001", 64), ("202011", 51), ("202021", 20), ("202101", 47), ("202111", 21), ("202121", 11), ("202201", 24), ("202211", 9),
    ("202221", 4), ("210000", 88), ("210001", 75), ("210010", 73), ("210011", 53), ("210020", 60), ("210021", 50), ("210100", 73),
    ("210101", 55), ("210110", 59), ("210111", 40), ("210120", 41), ("210121", 20), ("210200", 54), ("210201", 43), ("210210", 45),
    ("210211", 22), ("210220", 20), ("210221", 11), ("211000", 75), ("211001", 55), ("211010", 58), ("211011", 45), ("211020", 40),
    ("211021", 21), ("211100", 61), ("211101", 51), ("211110", 48), ("211111", 18), ("211120", 20), ("211121", 9), ("211200", 46),
    ("211201", 18), ("211210", 17), ("211211", 7), ("211220", 8), ("211221", 2), ("212001", 53), ("212011", 24), ("212021", 14),
    ("212101", 24), ("212111", 12), ("212121", 5), ("212201", 10), ("212211", 3), ("212221", 1),
];

/// The highest vectors of each equivalence class (the specification's "max composed"
/// vectors): the metric values, as `METRIC:VALUE/` runs, with which a macrovector's
/// score is reached. EQ3 and EQ6 are taken together, by EQ3 then EQ6.
const MAX_EQ1: [&[&str]; 3] = [
    &["AV:N/PR:N/UI:N/"],
    &["AV:A/PR:N/UI:N/", "AV:N/PR:L/UI:N/", "AV:N/PR:N/UI:P/"],
    &["AV:P/PR:N/UI:N/", "AV:A/PR:L/UI:P/"],
];
const MAX_EQ2: [&[&str]; 2] = [&["AC:L/AT:N/"], &["AC:H/AT:N/", "AC:L/AT:P/"]];
const MAX_EQ3_EQ6: [[&[&str]; 2]; 3] = [
    [&["VC:H/VI:H/VA:H/CR:H/IR:H/AR:H/"], &["VC:H/VI:H/VA:L/CR:M/IR:M/AR:H/", "VC:H/VI:H/VA:H/CR:M/IR:M/AR:M/"]],
    [
        &["VC:L/VI:H/VA:H/CR:H/IR:H/AR:H/", "VC:H/VI:L/VA:H/CR:H/IR:H/AR:H/"],
        &[
            "VC:L/VI:H/VA:L/CR:H/IR:M/AR:H/",
            "VC:L/VI:H/VA:H/CR:H/IR:M/AR:M/",
            "VC:H/VI:L/VA:H/CR:M/IR:H/AR:M/",
            "VC:H/VI:L/VA:L/CR:M/IR:H/AR:H/",
            "VC:L/VI:L/VA:H/CR:H/IR:H/AR:M/",
        ],
    ],
    [&[], &["VC:L/VI:L/VA:L/CR:H/IR:H/AR:H/"]],
];
const MAX_EQ4: [&[&str]; 3] = [&["SC:H/SI:S/SA:S/"], &["SC:H/SI:H/SA:H/"], &["SC:L/SI:L/SA:L/"]];
const MAX_EQ5: [&str; 3] = ["E:A/", "E:P/", "E:U/"];

/// The specification's largest severity distance within each class, in tenths.
const MAX_SEVERITY_EQ1: [u8; 3] = [1, 4, 5];
const MAX_SEVERITY_EQ2: [u8; 2] = [1, 2];
const MAX_SEVERITY_EQ3_EQ6: [[u8; 2]; 3] = [[7, 6], [8, 8], [0, 10]];
const MAX_SEVERITY_EQ4: [u8; 3] = [6, 5, 4];

/// The metrics whose severity distances are measured, and each value's level in tenths
/// (the specification's distances: a higher level is less severe).
const LEVELS: [(&str, &[(&str, u8)]); 14] = [
    ("AV", &[("N", 0), ("A", 1), ("L", 2), ("P", 3)]),
    ("PR", &[("N", 0), ("L", 1), ("H", 2)]),
    ("UI", &[("N", 0), ("P", 1), ("A", 2)]),
    ("AC", &[("L", 0), ("H", 1)]),
    ("AT", &[("N", 0), ("P", 1)]),
    ("VC", &[("H", 0), ("L", 1), ("N", 2)]),
    ("VI", &[("H", 0), ("L", 1), ("N", 2)]),
    ("VA", &[("H", 0), ("L", 1), ("N", 2)]),
    ("SC", &[("H", 1), ("L", 2), ("N", 3)]),
    ("SI", &[("S", 0), ("H", 1), ("L", 2), ("N", 3)]),
    ("SA", &[("S", 0), ("H", 1), ("L", 2), ("N", 3)]),
    ("CR", &[("H", 0), ("M", 1), ("L", 2)]),
    ("IR", &[("H", 0), ("M", 1), ("L", 2)]),
    ("AR", &[("H", 0), ("M", 1), ("L", 2)]),
];

/// A parsed vector: the value of each of [`METRICS`], `X` where not given.
struct Vector<'a>(Vec<&'a str>);

impl Vector<'_> {
    fn given(&self, name: &str) -> &str {
        METRICS.iter().position(|m| m.name == name).and_then(|i| self.0.get(i).copied()).unwrap_or(X)
    }

    /// The value that scores: the modified metric when set, `E` unset as `A`, `CR`/`IR`/
    /// `AR` unset as `H`, otherwise the base metric.
    fn m(&self, name: &str) -> &str {
        let v = self.given(name);
        match (name, v) {
            ("E", X) => "A",
            ("CR" | "IR" | "AR", X) => "H",
            _ => {
                let modified = self.given(&format!("M{name}"));
                if modified != X { modified } else { v }
            }
        }
    }
}

fn lookup(mv: [usize; 6]) -> Option<f64> {
    let key: String = mv.iter().map(|d| char::from(b'0'.saturating_add(u8::try_from(*d).unwrap_or(9)))).collect();
    MACROVECTOR_SCORES.iter().find(|(k, _)| *k == key).map(|(_, s)| f64::from(*s) / 10.0)
}

/// The level of `value` of `metric` (0 when not a measured one).
fn level(metric: &str, value: &str) -> f64 {
    LEVELS
        .iter()
        .find(|(m, _)| *m == metric)
        .and_then(|(_, l)| l.iter().find(|(v, _)| *v == value))
        .map_or(0.0, |(_, n)| f64::from(*n) / 10.0)
}

/// The value of `metric` in a max-composed vector (`AV:N/PR:N/UI:N/`).
fn value_in<'a>(composed: &'a str, metric: &str) -> &'a str {
    composed.split('/').filter_map(|p| p.split_once(':')).find(|(k, _)| *k == metric).map_or("", |(_, v)| v)
}

/// The score of a CVSS v4.0 vector, in tenths (93 for 9.3).
pub fn score_tenths(vector: &str) -> Result<u32, String> {
    let body = vector
        .trim()
        .strip_prefix("CVSS:4.0/")
        .ok_or_else(|| format!("CVSS v4.0 vector {vector:?}: does not start with \"CVSS:4.0/\""))?;
    let given = parse_metrics("v4.0", body, &METRICS)?;
    let v = Vector(
        METRICS.iter().zip(&given).map(|(m, g)| g.and_then(|i| m.values.get(i).copied()).unwrap_or(X)).collect(),
    );
    let m = |k: &str| v.m(k);
    if ["VC", "VI", "VA", "SC", "SI", "SA"].iter().all(|k| m(k) == "N") {
        return Ok(0);
    }
    let (av, pr, ui) = (m("AV"), m("PR"), m("UI"));
    let eq1 = if av == "N" && pr == "N" && ui == "N" {
        0
    } else if (av == "N" || pr == "N" || ui == "N") && av != "P" {
        1
    } else {
        2
    };
    let eq2 = usize::from(!(m("AC") == "L" && m("AT") == "N"));
    let (vc, vi, va) = (m("VC"), m("VI"), m("VA"));
    let eq3 = if vc == "H" && vi == "H" {
        0
    } else if vc == "H" || vi == "H" || va == "H" {
        1
    } else {
        2
    };
    let eq4 = if m("MSI") == "S" || m("MSA") == "S" {
        0
    } else if m("SC") == "H" || m("SI") == "H" || m("SA") == "H" {
        1
    } else {
        2
    };
    let eq5 = match m("E") {
        "A" => 0,
        "P" => 1,
        _ => 2,
    };
    let eq6 =
        usize::from(!((m("CR") == "H" && vc == "H") || (m("IR") == "H" && vi == "H") || (m("AR") == "H" && va == "H")));
    let mv = [eq1, eq2, eq3, eq4, eq5, eq6];
    let value = lookup(mv).ok_or_else(|| format!("CVSS v4.0 vector {vector:?}: macrovector {mv:?} has no score"))?;

    // The next lower macrovector of each class, and the score gap to it (None: none).
    let lower = |f: &dyn Fn(&mut [usize; 6])| {
        let mut n = mv;
        f(&mut n);
        lookup(n).map(|s| value - s)
    };
    let gap_eq1 = lower(&|n| n[0] += 1);
    let gap_eq2 = lower(&|n| n[1] += 1);
    let gap_eq4 = lower(&|n| n[3] += 1);
    let gap_eq5 = lower(&|n| n[4] += 1);
    let gap_eq3_eq6 = match (eq3, eq6) {
        (0, 0) => {
            // 00 goes to 01 or 10, whichever scores higher.
            let left = lookup([eq1, eq2, eq3, eq4, eq5, eq6 + 1]);
            let right = lookup([eq1, eq2, eq3 + 1, eq4, eq5, eq6]);
            match (left, right) {
                (Some(l), Some(r)) => Some(value - l.max(r)),
                (_, r) => r.map(|s| value - s),
            }
        }
        (1, 0) => lower(&|n| n[5] += 1),
        (0 | 1, 1) => lower(&|n| n[2] += 1),
        _ => lower(&|n| {
            n[2] += 1;
            n[5] += 1
        }),
    };

    // The first highest vector of the macrovector that the vector does not exceed.
    let eq3_eq6_max = MAX_EQ3_EQ6.get(eq3).and_then(|r| r.get(eq6)).copied().unwrap_or(&[]);
    let mut distances: Option<[f64; 14]> = None;
    'search: for a in MAX_EQ1.get(eq1).copied().unwrap_or(&[]) {
        for b in MAX_EQ2.get(eq2).copied().unwrap_or(&[]) {
            for c in eq3_eq6_max {
                for d in MAX_EQ4.get(eq4).copied().unwrap_or(&[]) {
                    let e = MAX_EQ5.get(eq5).copied().unwrap_or("");
                    let max = format!("{a}{b}{c}{d}{e}");
                    let mut dist = [0.0; 14];
                    for (k, (metric, _)) in LEVELS.iter().enumerate() {
                        dist[k] = level(metric, m(metric)) - level(metric, value_in(&max, metric));
                    }
                    distances = Some(dist);
                    if dist.iter().all(|d| *d >= 0.0) {
                        break 'search;
                    }
                }
            }
        }
    }
    let d =
        distances.ok_or_else(|| format!("CVSS v4.0 vector {vector:?}: macrovector {mv:?} has no highest vector"))?;
    let current_eq1 = d[0] + d[1] + d[2];
    let current_eq2 = d[3] + d[4];
    let current_eq3_eq6 = d[5] + d[6] + d[7] + d[11] + d[12] + d[13];
    let current_eq4 = d[8] + d[9] + d[10];
    let step = |x: u8| f64::from(x) / 10.0;
    let max_eq1 = step(MAX_SEVERITY_EQ1.get(eq1).copied().unwrap_or(1));
    let max_eq2 = step(MAX_SEVERITY_EQ2.get(eq2).copied().unwrap_or(1));
    let max_eq3_eq6 = step(MAX_SEVERITY_EQ3_EQ6.get(eq3).and_then(|r| r.get(eq6)).copied().unwrap_or(1));
    let max_eq4 = step(MAX_SEVERITY_EQ4.get(eq4).copied().unwrap_or(1));

    // Each class with a lower macrovector moves the score down by its share of the gap.
    let mut n = 0u32;
    let mut sum = 0.0;
    for (gap, current, max) in [
        (gap_eq1, current_eq1, max_eq1),
        (gap_eq2, current_eq2, max_eq2),
        (gap_eq3_eq6, current_eq3_eq6, max_eq3_eq6),
        (gap_eq4, current_eq4, max_eq4),
        // Within EQ5 every vector is its highest: no distance.
        (gap_eq5, 0.0, 1.0),
    ] {
        if let Some(gap) = gap {
            n += 1;
            sum += gap * (current / max);
        }
    }
    let mean = if n == 0 { 0.0 } else { sum / f64::from(n) };
    let score = (value - mean).clamp(0.0, 10.0);
    // Half up to one decimal; the small addend keeps 4.45 computed as 4.4499999 at 4.5.
    let tenths = ((score + 1e-6) * 10.0 + 0.5).floor();
    // In 0..=100 after the clamp.
    Ok((0..=100u32).find(|t| f64::from(*t) == tenths).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores FIRST's calculator gives.
    #[test]
    fn known_scores() {
        assert_eq!(score_tenths("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"), Ok(93));
        assert_eq!(score_tenths("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H"), Ok(100));
        assert_eq!(score_tenths("CVSS:4.0/AV:L/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N"), Ok(0));
        let err = score_tenths("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N").unwrap_err();
        assert!(err.contains("SA missing"), "{err}");
        let err = score_tenths("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap_err();
        assert!(err.contains("CVSS:4.0/"), "{err}");
    }
}
