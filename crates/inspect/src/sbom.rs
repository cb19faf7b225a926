//! SPDX 2.3 JSON and CycloneDX 1.6 JSON documents of an [`Inventory`]. With
//! `SOURCE_DATE_EPOCH` set the document is reproducible: its time is that epoch and its
//! SPDX namespace and CycloneDX serial number are derived from the content (a SHA-256 of
//! the source name and the package list), never random.

use crate::inventory::Inventory;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// When and by what the document is made.
#[derive(Debug, Clone)]
pub struct Made {
    /// Seconds since 1970.
    pub time: u64,
    /// True when `time` is `SOURCE_DATE_EPOCH`: identifiers are then derived, not random.
    pub reproducible: bool,
    /// `diskcast VERSION`.
    pub tool_version: String,
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86400).unwrap_or(i64::MAX);
    let (y, m, d) = diskcast_tree::civil_from_days(days);
    let rem = secs % 86400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A UUID: from the content (version 5's layout over a SHA-256) when reproducible, else
/// random.
fn uuid(source: &str, inv: &Inventory, made: &Made) -> String {
    if !made.reproducible {
        return uuid::Uuid::new_v4().to_string();
    }
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(made.time.to_le_bytes());
    for p in &inv.packages {
        for f in [&p.purl, &p.found_in] {
            h.update(f.as_bytes());
            h.update([0]);
        }
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

/// The CycloneDX `bom-ref` of the `i`th package of the inventory (what a vulnerability's
/// `affects` points at).
pub fn component_ref(i: usize) -> String {
    format!("pkg-{i}")
}

/// SPDX 2.3 JSON: a package for the source, which CONTAINS one package per component
/// (purl as its external reference, the file it was found in as its source info).
pub fn spdx(source: &str, inv: &Inventory, made: &Made) -> Value {
    let mut packages = vec![json!({
        "name": source,
        "SPDXID": "SPDXRef-Source",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "SOURCE",
        "comment": inv.os.clone().map(|o| format!("OS: {o}")).unwrap_or_else(|| "OS: unknown".into()),
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Source",
    })];
    for (i, p) in inv.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{i}");
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": if matches!(p.kind.as_str(), "deb" | "apk" | "rpm") { "OPERATING-SYSTEM" } else { "LIBRARY" },
            "sourceInfo": match &p.layer {
                Some(l) => format!("found in {} (layer {l})", p.found_in),
                None => format!("found in {}", p.found_in),
            },
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        });
        if !p.version.is_empty() {
            pkg["versionInfo"] = json!(p.version);
        }
        // Licenses as packages declare them are free text, often not SPDX expressions:
        // kept as a comment, so the document stays valid.
        if let Some(l) = &p.license {
            pkg["licenseComments"] = json!(format!("declared: {l}"));
        }
        if let Some(s) = &p.source {
            pkg["comment"] = json!(format!("source package: {s}"));
        }
        packages.push(pkg);
        rels.push(json!({
            "spdxElementId": "SPDXRef-Source",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let name: String =
        source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": source,
        "documentNamespace": format!("https://diskcast.invalid/spdx/{name}-{}", uuid(source, inv, made)),
        "creationInfo": {
            "created": rfc3339(made.time),
            "creators": [format!("Tool: diskcast-{}", made.tool_version)],
        },
        "packages": packages,
        "relationships": rels,
    })
}

/// CycloneDX 1.6 JSON: the source as the metadata component, one library or
/// operating-system component per package.
pub fn cyclonedx(source: &str, inv: &Inventory, made: &Made) -> Value {
    let components: Vec<Value> = inv
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = json!({
                "type": "library",
                "bom-ref": component_ref(i),
                "name": p.name,
                "purl": p.purl,
                "properties": [{"name": "diskcast:found_in", "value": p.found_in}],
            });
            if !p.version.is_empty() {
                c["version"] = json!(p.version);
            }
            if let Some(l) = &p.license {
                c["licenses"] = json!([{"license": {"name": l}}]);
            }
            let props = c["properties"].as_array_mut();
            if let Some(props) = props {
                if let Some(a) = &p.architecture {
                    props.push(json!({"name": "diskcast:architecture", "value": a}));
                }
                if let Some(s) = &p.source {
                    props.push(json!({"name": "diskcast:source_package", "value": s}));
                }
                if let Some(l) = &p.layer {
                    props.push(json!({"name": "diskcast:layer", "value": l}));
                }
            }
            c
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid(source, inv, made)),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(made.time),
            "tools": {"components": [{"type": "application", "name": "diskcast", "version": made.tool_version}]},
            "component": {"type": "file", "bom-ref": "source", "name": source},
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_derived_ids() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        let made = Made { time: 5, reproducible: true, tool_version: "0".into() };
        let inv = Inventory::default();
        let a = uuid("x", &inv, &made);
        assert_eq!(a, uuid("x", &inv, &made));
        assert_ne!(a, uuid("y", &inv, &made));
        assert_eq!(&a[14..15], "5");
    }
}
