//! CVSS v3.0 and v3.1 base scores of every base vector (2592 each) against Red Hat's
//! `cvss` Python library (PyPI `cvss`, installed by scripts/setup.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_vulns::cvss::base_score;
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
    let script = "import sys\nfrom cvss import CVSS3\nfor l in sys.stdin:\n    print(CVSS3(l.strip()).scores()[0])\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
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
    let bad: Vec<String> = vectors
        .iter()
        .zip(&want)
        .filter(|(v, w)| base_score(v) != Some(**w))
        .map(|(v, w)| format!("{v}: reference {w}, ours {:?}", base_score(v)))
        .collect();
    assert!(bad.is_empty(), "{} of {} differ:\n{}", bad.len(), vectors.len(), bad[..bad.len().min(20)].join("\n"));
}
