//! Findings as CycloneDX 1.6 `vulnerabilities`: one per advisory, its `affects` pointing
//! at the components (by `bom-ref`) of the same document.

use crate::cvss::Severity;
use crate::matcher::Finding;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Where an id comes from: CVEs from NVD, GHSAs from GitHub, the rest from OSV.
fn source(id: &str) -> Value {
    if id.starts_with("CVE-") {
        json!({"name": "NVD", "url": format!("https://nvd.nist.gov/vuln/detail/{id}")})
    } else if id.starts_with("GHSA-") {
        json!({"name": "GitHub", "url": format!("https://github.com/advisories/{id}")})
    } else {
        json!({"name": "OSV", "url": format!("https://osv.dev/vulnerability/{id}")})
    }
}

/// The `vulnerabilities` array of a CycloneDX 1.6 document; `component_ref(i)` is the
/// `bom-ref` of the inventory's `i`th package.
pub fn cyclonedx(findings: &[Finding], component_ref: impl Fn(usize) -> String) -> Vec<Value> {
    let mut by_id: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        by_id.entry(f.id.as_str()).or_default().push(f);
    }
    by_id
        .into_iter()
        .enumerate()
        .map(|(n, (id, fs))| {
            // The most severe rating of the entries matched.
            let worst = fs.iter().max_by(|a, b| a.severity.cmp(&b.severity).then(a.score.partial_cmp(&b.score).unwrap_or(std::cmp::Ordering::Equal)));
            let rating = match worst {
                Some(f) if f.score.is_some() && f.method.is_some() => {
                    let method = f.method.map(|m| m.name());
                    json!({"severity": f.severity.name(), "score": f.score, "method": method, "vector": f.vector})
                }
                Some(f) if f.severity != Severity::Unknown => json!({"severity": f.severity.name(), "method": "other"}),
                _ => json!({"severity": "unknown"}),
            };
            let affects: Vec<Value> = fs
                .iter()
                .map(|f| json!({"ref": component_ref(f.component), "versions": [{"version": f.installed, "status": "affected"}]}))
                .collect();
            let mut v = json!({
                "bom-ref": format!("vuln-{n}"),
                "id": id,
                "source": source(id),
                "ratings": [rating],
                "affects": affects,
            });
            let first = fs[0];
            if !first.aliases.is_empty() {
                v["references"] = Value::Array(first.aliases.iter().map(|a| json!({"id": a, "source": source(a)})).collect());
            }
            if !first.summary.is_empty() {
                v["description"] = json!(first.summary);
            }
            let fixed: Vec<String> = fs.iter().filter_map(|f| f.fixed.as_ref().map(|x| format!("{} {x}", f.package))).collect();
            if !fixed.is_empty() {
                v["recommendation"] = json!(format!("Upgrade to {}", fixed.join(", ")));
            }
            v
        })
        .collect()
}
