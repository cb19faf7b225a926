//! CVSS scores against Red Hat's `cvss` Python library (PyPI `cvss`, installed by
//! scripts/setup.sh): v3.0 and v3.1 base scores of every base vector (2592 each), v2 base
//! scores of every base vector (729), and v4.0 scores of every combination of the
//! exploitability and vulnerable-system metrics (3888, subsequent-system ones drawn) and
//! of 20000 vectors with threat, environmental and supplemental metrics drawn, all with a
//! fixed seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_vulns::cvss::{Method, base_score, score};
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn every_base_vector_scores_as_the_reference_library() {
    let mut vectors = Vec::new();
    for ver in ["3.0", "3.1"] {
        for av in ["N", "A", "L", "P"] {
            for ac in ["L", "H"] {
                for pr in ["N", "L", "H"] {
                    for ui in ["N", "R"] {
                        for sc in ["U", "C"] {
                            for c in ["H", "L", "N"] {
                                for i in ["H", "L", "N"] {
                                    for a in ["H", "L", "N"] {
                                        vectors.push(format!(
                                            "CVSS:{ver}/AV:{av}/AC:{ac}/PR:{pr}/UI:{ui}/S:{sc}/C:{c}/I:{i}/A:{a}"
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let want = reference("CVSS3", &vectors);
    let bad: Vec<String> = vectors
        .iter()
        .zip(&want)
        .filter(|(v, w)| base_score(v) != Some(**w))
        .map(|(v, w)| format!("{v}: reference {w}, ours {:?}", base_score(v)))
        .collect();
    assert!(bad.is_empty(), "{} of {} differ:\n{}", bad.len(), vectors.len(), bad[..bad.len().min(20)].join("\n"));
}

/// The scores the reference library gives `vectors`, with its class `class` (`CVSS2`...).
fn reference(class: &str, vectors: &[String]) -> Vec<f64> {
    let script = format!(
        "import sys\nfrom cvss import {class}\nfor l in sys.stdin:\n    print({class}(l.strip()).scores()[0])\n"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = vectors.iter().map(|v| format!("{v}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "python cvss failed (pip install cvss: scripts/setup.sh)");
    let want: Vec<f64> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(want.len(), vectors.len());
    want
}

/// Compares our scores of `vectors` (OSV type `kind`) with `want`.
fn compare(kind: &str, method: Method, vectors: &[String], want: &[f64]) {
    let bad: Vec<String> = vectors
        .iter()
        .zip(want)
        .filter(|(v, w)| score(kind, v).map(|r| r.ok()) != Some(Some((method, **w))))
        .map(|(v, w)| format!("{v}: reference {w}, ours {:?}", score(kind, v)))
        .collect();
    assert!(bad.is_empty(), "{} of {} differ:\n{}", bad.len(), vectors.len(), bad[..bad.len().min(20)].join("\n"));
}

/// Every combination of one value of each metric.
fn every(prefix: &str, metrics: &[(&str, &[&str])]) -> Vec<String> {
    let mut out = vec![prefix.to_string()];
    for (i, (name, values)) in metrics.iter().enumerate() {
        let sep = if i == 0 { "" } else { "/" };
        out = out.iter().flat_map(|v| values.iter().map(move |x| format!("{v}{sep}{name}:{x}"))).collect();
    }
    out
}

#[test]
fn every_v2_base_vector_scores_as_the_reference_library() {
    let vectors = every(
        "",
        &[
            ("AV", &["L", "A", "N"]),
            ("AC", &["H", "M", "L"]),
            ("Au", &["M", "S", "N"]),
            ("C", &["N", "P", "C"]),
            ("I", &["N", "P", "C"]),
            ("A", &["N", "P", "C"]),
        ],
    );
    assert_eq!(vectors.len(), 729);
    compare("CVSS_V2", Method::V2, &vectors, &reference("CVSS2", &vectors));
}

const V4_BASE: [(&str, &[&str]); 11] = [
    ("AV", &["N", "A", "L", "P"]),
    ("AC", &["L", "H"]),
    ("AT", &["N", "P"]),
    ("PR", &["N", "L", "H"]),
    ("UI", &["N", "P", "A"]),
    ("VC", &["H", "L", "N"]),
    ("VI", &["H", "L", "N"]),
    ("VA", &["H", "L", "N"]),
    ("SC", &["H", "L", "N"]),
    ("SI", &["H", "L", "N"]),
    ("SA", &["H", "L", "N"]),
];

#[test]
fn v4_vectors_score_as_the_reference_library() {
    // Every base vector has 4*2*2*3*3*3^6 = 157464 combinations: too many for a fast
    // test; every combination of the exploitability metrics and VC/VI/VA with SC/SI/SA
    // drawn, then random vectors with every optional metric.
    let mut seed: u64 = 0x5eed_cafe_f00d_0001;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % u64::try_from(n).unwrap()).unwrap()
    };
    let mut vectors = Vec::new();
    for v in every("CVSS:4.0/", &V4_BASE[..8]) {
        let tail: Vec<String> =
            V4_BASE[8..].iter().map(|(n, vals)| format!("{n}:{}", vals[next(vals.len())])).collect();
        vectors.push(format!("{v}/{}", tail.join("/")));
    }
    assert_eq!(vectors.len(), 3888);
    let optional: [(&str, &[&str]); 21] = [
        ("E", &["X", "A", "P", "U"]),
        ("CR", &["X", "H", "M", "L"]),
        ("IR", &["X", "H", "M", "L"]),
        ("AR", &["X", "H", "M", "L"]),
        ("MAV", &["X", "N", "A", "L", "P"]),
        ("MAC", &["X", "L", "H"]),
        ("MAT", &["X", "N", "P"]),
        ("MPR", &["X", "N", "L", "H"]),
        ("MUI", &["X", "N", "P", "A"]),
        ("MVC", &["X", "H", "L", "N"]),
        ("MVI", &["X", "H", "L", "N"]),
        ("MVA", &["X", "H", "L", "N"]),
        ("MSC", &["X", "H", "L", "N"]),
        ("MSI", &["X", "S", "H", "L", "N"]),
        ("MSA", &["X", "S", "H", "L", "N"]),
        ("S", &["X", "N", "P"]),
        ("AU", &["X", "N", "Y"]),
        ("R", &["X", "A", "U", "I"]),
        ("V", &["X", "D", "C"]),
        ("RE", &["X", "L", "M", "H"]),
        ("U", &["X", "Clear", "Green", "Amber", "Red"]),
    ];
    for _ in 0..20_000 {
        let mut fields: Vec<String> =
            V4_BASE.iter().map(|(n, vals)| format!("{n}:{}", vals[next(vals.len())])).collect();
        for (n, vals) in optional {
            // Each optional metric in about half the vectors.
            if next(2) == 0 {
                fields.push(format!("{n}:{}", vals[next(vals.len())]));
            }
        }
        vectors.push(format!("CVSS:4.0/{}", fields.join("/")));
    }
    let want = reference("CVSS4", &vectors);
    // The vectors span the scale.
    assert!(want.contains(&0.0) && want.iter().any(|w| *w >= 9.0));
    compare("CVSS_V4", Method::V40, &vectors, &want);
}
