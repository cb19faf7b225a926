//! CVSS v2 base scores (`AV:N/AC:L/Au:N/C:P/I:P/A:P`) with the weights and equations of
//! FIRST's "A Complete Guide to the Common Vulnerability Scoring System Version 2.0"
//! (section 3.2.1). The arithmetic is done on integers scaled by 10^15 (every weight has
//! at most three decimals), so the guide's round-to-one-decimal is exact, half up.
//! Temporal and environmental metrics are checked but not scored: OSV carries base vectors.

use super::{Metric, parse_metrics};

/// The metrics of a v2 vector: the six base ones (mandatory), then the temporal and
/// environmental ones.
const METRICS: [Metric; 14] = [
    Metric::base("AV", &["L", "A", "N"]),
    Metric::base("AC", &["H", "M", "L"]),
    Metric::base("Au", &["M", "S", "N"]),
    Metric::base("C", &["N", "P", "C"]),
    Metric::base("I", &["N", "P", "C"]),
    Metric::base("A", &["N", "P", "C"]),
    Metric::optional("E", &["U", "POC", "F", "H", "ND"]),
    Metric::optional("RL", &["OF", "TF", "W", "U", "ND"]),
    Metric::optional("RC", &["UC", "UR", "C", "ND"]),
    Metric::optional("CDP", &["N", "L", "LM", "MH", "H", "ND"]),
    Metric::optional("TD", &["N", "L", "M", "H", "ND"]),
    Metric::optional("CR", &["L", "M", "H", "ND"]),
    Metric::optional("IR", &["L", "M", "H", "ND"]),
    Metric::optional("AR", &["L", "M", "H", "ND"]),
];

/// The guide's weights in thousandths, in the order of each metric's values above.
const AV: [i128; 3] = [395, 646, 1000];
const AC: [i128; 3] = [350, 610, 710];
const AU: [i128; 3] = [450, 560, 704];
const IMPACT: [i128; 3] = [0, 275, 660];

/// The base score of a CVSS v2 vector, in tenths (75 for 7.5). NVD writes some vectors
/// in parentheses; those are taken too.
pub fn base_score_tenths(vector: &str) -> Result<u32, String> {
    let v = vector.trim();
    let v = v.strip_prefix('(').and_then(|v| v.strip_suffix(')')).unwrap_or(v);
    let m = parse_metrics("v2", v, &METRICS)?;
    let w = |table: &[i128; 3], i: usize| -> i128 { m[i].and_then(|k| table.get(k).copied()).unwrap_or(0) };
    let (c, i, a) = (w(&IMPACT, 3), w(&IMPACT, 4), w(&IMPACT, 5));
    // Impact = 10.41 * (1 - (1-C)(1-I)(1-A)): the product is in 10^-9, 10.41 in 10^-2.
    let unaffected = (1000 - c) * (1000 - i) * (1000 - a);
    let impact = 1041 * (1_000_000_000 - unaffected); // 10^-11
    // Exploitability = 20 * AV * AC * Au, in 10^-9.
    let exploitability = 20 * w(&AV, 0) * w(&AC, 1) * w(&AU, 2);
    if impact == 0 {
        return Ok(0);
    }
    // (0.6 * Impact) + (0.4 * Exploitability) - 1.5, in 10^-12; times 1.176, in 10^-15.
    let sum = 6 * impact + 4 * exploitability * 100 - 1_500_000_000_000;
    let raw = sum * 1176;
    // Half up to one decimal: tenths are 10^14 units.
    let unit: i128 = 100_000_000_000_000;
    let tenths = (raw + unit / 2).div_euclid(unit).max(0);
    u32::try_from(tenths).map_err(|_| format!("CVSS v2 vector {vector:?}: score out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's examples (section 3.3) and NVD entries.
    #[test]
    fn guide_examples() {
        assert_eq!(base_score_tenths("AV:N/AC:L/Au:N/C:N/I:N/A:C"), Ok(78)); // CVE-2002-0392
        assert_eq!(base_score_tenths("AV:N/AC:L/Au:N/C:C/I:C/A:C"), Ok(100)); // CVE-2003-0818
        assert_eq!(base_score_tenths("AV:L/AC:H/Au:N/C:C/I:C/A:C"), Ok(62)); // CVE-2003-0062
        assert_eq!(base_score_tenths("(AV:N/AC:L/Au:N/C:P/I:P/A:P)"), Ok(75));
        assert_eq!(base_score_tenths("AV:N/AC:L/Au:N/C:N/I:N/A:N"), Ok(0));
        assert_eq!(base_score_tenths("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:F/RL:OF/RC:C"), Ok(75));
        let err = base_score_tenths("AV:N/AC:L/Au:N/C:P/I:P").unwrap_err();
        assert!(err.contains("A missing"), "{err}");
        let err = base_score_tenths("AV:X/AC:L/Au:N/C:P/I:P/A:P").unwrap_err();
        assert!(err.contains("AV") && err.contains("\"X\""), "{err}");
    }
}
