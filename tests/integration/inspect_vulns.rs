//! `diskcast inspect --vuln-db`: a root whose dpkg database real dpkg wrote (packages
//! built by dpkg-deb, installed with `dpkg --root`, one a binNMU with `Source: NAME
//! (VERSION)`) and a Python package pip installed, matched against OSV advisories the
//! test writes with tricky ranges (epochs, tildes, pre/post/dev releases, last_affected,
//! several introduced, events out of order, explicit version lists, another release,
//! binary instead of source names, GIT ranges, withdrawn, broken files). The findings
//! expected are computed here with the reference tools: `dpkg-query`'s
//! `${source:Package}`/`${source:Version}` for the source each binary belongs to,
//! `dpkg --compare-versions` and Python's `packaging.version` for every range. The
//! CycloneDX document is judged by cyclonedx-python-lib's JsonStrictValidator; the zip
//! form of the database is made by Python's zipfile.

use crate::inspect::{CYCLONEDX_CHECK, assert_python_accepts};
use crate::oci_common::run;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

/// One `introduced` .. `fixed`/`last_affected` interval of a range.
#[derive(Clone, Copy)]
struct Span {
    introduced: &'static str,
    fixed: Option<&'static str>,
    last_affected: Option<&'static str>,
}

const fn span(introduced: &'static str, fixed: Option<&'static str>, last_affected: Option<&'static str>) -> Span {
    Span { introduced, fixed, last_affected }
}

struct Adv {
    id: &'static str,
    ecosystem: &'static str,
    name: &'static str,
    spans: &'static [Span],
    versions: &'static [&'static str],
    /// Extra top-level fields (severity, withdrawn...).
    extra: fn() -> Value,
}

fn none() -> Value {
    json!({})
}
fn critical() -> Value {
    json!({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]})
}
fn high() -> Value {
    json!({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"}]})
}
fn moderate() -> Value {
    json!({"database_specific": {"severity": "MODERATE"}})
}
fn withdrawn() -> Value {
    json!({"withdrawn": "2024-01-01T00:00:00Z"})
}

const DEB: &[Adv] = &[
    Adv {
        id: "DSA-T-1",
        ecosystem: "Debian:12",
        name: "foo",
        spans: &[span("0", Some("1:2.0-1"), None)],
        versions: &[],
        extra: critical,
    },
    // No epoch: 2.1-1 is below 1:2.0~rc1-1.
    Adv {
        id: "DSA-T-2",
        ecosystem: "Debian:12",
        name: "foo",
        spans: &[span("0", Some("2.1-1"), None)],
        versions: &[],
        extra: critical,
    },
    Adv {
        id: "DSA-T-3",
        ecosystem: "Debian:12",
        name: "foo",
        spans: &[span("1:2.0~rc1-1", Some("1:2.0~rc1-1+deb12u1"), None)],
        versions: &[],
        extra: moderate,
    },
    // Two introduced/fixed pairs (written out of order below).
    Adv {
        id: "DSA-T-4",
        ecosystem: "Debian:12",
        name: "bar",
        spans: &[span("1.0", Some("1.2"), None), span("1.4-1", Some("1.4-3"), None)],
        versions: &[],
        extra: none,
    },
    Adv {
        id: "DSA-T-5",
        ecosystem: "Debian:12",
        name: "baz",
        spans: &[span("0", None, Some("2.0-1"))],
        versions: &[],
        extra: high,
    },
    Adv {
        id: "DSA-T-6",
        ecosystem: "Debian:12",
        name: "baz",
        spans: &[span("0", Some("2.0-1~deb12u1"), None)],
        versions: &[],
        extra: high,
    },
    // Another release of Debian.
    Adv {
        id: "DSA-T-7",
        ecosystem: "Debian:11",
        name: "foo",
        spans: &[span("0", Some("1:3.0-1"), None)],
        versions: &[],
        extra: critical,
    },
    // A binary package's name: Debian's advisories name sources.
    Adv {
        id: "DSA-T-8",
        ecosystem: "Debian:12",
        name: "libfoo1",
        spans: &[span("0", Some("1:3.0-1"), None)],
        versions: &[],
        extra: critical,
    },
    Adv { id: "DSA-T-9", ecosystem: "Debian:12", name: "bar", spans: &[], versions: &["1.4-2"], extra: none },
    Adv {
        id: "DSA-T-10",
        ecosystem: "Debian:12",
        name: "foo",
        spans: &[span("0", None, None)],
        versions: &[],
        extra: withdrawn,
    },
    // Fixed between the source version and the binNMU's binary version: only matching
    // by the source version finds libfoo1.
    Adv {
        id: "DSA-T-12",
        ecosystem: "Debian:12",
        name: "foo",
        spans: &[span("0", Some("1:2.0~rc1-1+a1"), None)],
        versions: &[],
        extra: none,
    },
    Adv {
        id: "DSA-T-11",
        ecosystem: "Debian",
        name: "qux",
        spans: &[span("0.9~beta1-1", Some("0.9+dfsg-3"), None)],
        versions: &[],
        extra: none,
    },
];

const PYPI: &[Adv] = &[
    Adv {
        id: "PYSEC-T-1",
        ecosystem: "PyPI",
        name: "six",
        spans: &[span("1.16.0.dev0", Some("1.16.0.post1"), None)],
        versions: &[],
        extra: high,
    },
    Adv {
        id: "PYSEC-T-2",
        ecosystem: "PyPI",
        name: "six",
        spans: &[span("0", Some("1.16.0rc1"), None)],
        versions: &[],
        extra: high,
    },
    Adv {
        id: "PYSEC-T-3",
        ecosystem: "PyPI",
        name: "Six",
        spans: &[span("1.16.0rc2", None, Some("1.16"))],
        versions: &[],
        extra: moderate,
    },
    Adv {
        id: "PYSEC-T-4",
        ecosystem: "PyPI",
        name: "SIX",
        spans: &[span("1!0", None, None)],
        versions: &[],
        extra: critical,
    },
];

/// The advisory's OSV JSON: the events of all spans in one range, in reverse order.
fn osv(a: &Adv) -> Value {
    let mut events = Vec::new();
    for s in a.spans {
        events.push(json!({"introduced": s.introduced}));
        if let Some(f) = s.fixed {
            events.push(json!({"fixed": f}));
        }
        if let Some(l) = s.last_affected {
            events.push(json!({"last_affected": l}));
        }
    }
    events.reverse();
    let mut affected = json!({"package": {"ecosystem": a.ecosystem, "name": a.name}, "versions": a.versions});
    if !events.is_empty() {
        affected["ranges"] = json!([{"type": "ECOSYSTEM", "events": events}]);
    }
    let mut v = json!({"id": a.id, "aliases": [format!("CVE-2099-{}", a.id.len())], "summary": format!("test advisory {}", a.id), "affected": [affected]});
    for (k, x) in (a.extra)().as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Builds a .deb with dpkg-deb.
fn deb(dir: &Path, name: &str, version: &str, source: Option<&str>) -> String {
    let d = dir.join(name);
    std::fs::create_dir_all(d.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(d.join(format!("usr/share/doc/{name}"))).unwrap();
    write_file(&d.join(format!("usr/share/doc/{name}/README")), name.as_bytes());
    let src = source.map(|s| format!("Source: {s}\n")).unwrap_or_default();
    write_file(
        &d.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n{src}Description: test\n").as_bytes(),
    );
    let out = s(&dir.join(format!("{name}.deb")));
    run("dpkg-deb", &["--build", &s(&d), &out]);
    out
}

/// A root with packages installed by dpkg and pip; returns dpkg-query's view of it:
/// (binary, source, source version).
fn make_root(t: &Path) -> (std::path::PathBuf, Vec<(String, String, String)>) {
    let root = t.join("root");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::create_dir_all(admin.join("info")).unwrap();
    write_file(&admin.join("status"), b"");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    write_file(&root.join("etc/os-release"), b"PRETTY_NAME=\"Test 12\"\nID=debian\nVERSION_ID=\"12\"\n");
    let debs = t.join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    let files = [
        deb(&debs, "libfoo1", "1:2.0~rc1-1+b1", Some("foo (1:2.0~rc1-1)")),
        deb(&debs, "foo-utils", "1:2.0~rc1-1", Some("foo")),
        deb(&debs, "bar", "1.4-2", None),
        deb(&debs, "baz", "2.0-1~deb12u1", None),
        deb(&debs, "qux", "0.9~rc1-1", None),
    ];
    let mut args = vec![format!("--root={}", s(&root)), "--force-script-chrootless".into(), "-i".into()];
    args.extend(files);
    run("dpkg", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let site = root.join("usr/lib/python3/dist-packages");
    run("/usr/bin/python3", &["-m", "pip", "install", "--quiet", "--no-deps", "--target", &s(&site), "six==1.16.0"]);
    let admindir = format!("--admindir={}", s(&admin));
    let q = run("dpkg-query", &[&admindir, "-W", "-f", "${Package}\t${source:Package}\t${source:Version}\n"]);
    let pkgs = q.lines().map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (f[0].to_string(), f[1].to_string(), f[2].to_string())
    });
    (root, pkgs.collect())
}

/// `dpkg --compare-versions A OP B`.
fn dpkg_cmp(a: &str, op: &str, b: &str) -> bool {
    std::process::Command::new("dpkg").args(["--compare-versions", a, op, b]).status().unwrap().success()
}

/// `packaging.version`: `A OP B` for each triple.
fn py_cmp(triples: &[(String, &str, String)]) -> Vec<bool> {
    let input: String = triples.iter().map(|(a, op, b)| format!("{a} {op} {b}\n")).collect();
    let script = "import sys, operator\nfrom packaging.version import Version\nops = {'lt': operator.lt, 'le': operator.le, 'ge': operator.ge}\n\
                  for l in sys.stdin:\n    a, op, b = l.split()\n    print(ops[op](Version(a), Version(b)))\n";
    let dir = tmp();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, input).unwrap();
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &format!("import sys; sys.stdin = open({:?}); exec({script:?})", s(&f))])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l == "True").collect()
}

/// Whether `spans`/`versions` affect `v`, and the fix, by the reference comparator.
fn expect(a: &Adv, v: &str, cmp: &dyn Fn(&str, &str, &str) -> bool) -> Option<Option<String>> {
    if a.versions.contains(&v) {
        return Some(None);
    }
    for sp in a.spans {
        let from = sp.introduced == "0" || cmp(v, "ge", sp.introduced);
        let to = match (sp.fixed, sp.last_affected) {
            (Some(f), _) => cmp(v, "lt", f),
            (None, Some(l)) => cmp(v, "le", l),
            (None, None) => true,
        };
        if from && to {
            return Some(sp.fixed.map(str::to_string));
        }
    }
    None
}

/// The findings expected: (package, advisory, fixed).
fn expected(pkgs: &[(String, String, String)]) -> BTreeSet<(String, String, Option<String>)> {
    let mut want = BTreeSet::new();
    let dpkg = |a: &str, op: &str, b: &str| dpkg_cmp(a, op, b);
    for a in DEB {
        if (a.extra)().get("withdrawn").is_some() || !(a.ecosystem == "Debian:12" || a.ecosystem == "Debian") {
            continue;
        }
        for (bin, src, srcver) in pkgs {
            if src == a.name
                && let Some(fixed) = expect(a, srcver, &dpkg)
            {
                want.insert((bin.clone(), a.id.to_string(), fixed));
            }
        }
    }
    // PyPI: every comparison one packaging call; names compare PEP 503-normalized.
    let mut triples = Vec::new();
    for a in PYPI {
        for sp in a.spans {
            for (op, b) in [("ge", Some(sp.introduced)), ("lt", sp.fixed), ("le", sp.last_affected)] {
                if let Some(b) = b.filter(|b| *b != "0") {
                    triples.push(("1.16.0".to_string(), op, b.to_string()));
                }
            }
        }
    }
    let answers = py_cmp(&triples);
    let py = |a: &str, op: &str, b: &str| {
        let i = triples.iter().position(|t| t.0 == a && t.1 == op && t.2 == b).unwrap();
        answers[i]
    };
    for a in PYPI {
        if let Some(fixed) = expect(a, "1.16.0", &py) {
            want.insert(("six".to_string(), a.id.to_string(), fixed));
        }
    }
    want
}

fn write_db(dir: &Path, advs: &[&Adv]) {
    for a in advs {
        let sub = dir.join(a.ecosystem.split(':').next().unwrap());
        std::fs::create_dir_all(&sub).unwrap();
        write_file(&sub.join(format!("{}.json", a.id)), serde_json::to_string_pretty(&osv(a)).unwrap().as_bytes());
    }
}

fn findings(j: &Value) -> BTreeSet<(String, String, Option<String>)> {
    j["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["package"].as_str().unwrap().into(),
                f["id"].as_str().unwrap().into(),
                f["fixed"].as_str().map(Into::into),
            )
        })
        .collect()
}

#[test]
fn findings_equal_what_dpkg_and_packaging_decide_from_dir_and_zip() {
    let t = tmp();
    let (root, pkgs) = make_root(t.path());
    assert!(pkgs.iter().any(|p| p.0 == "libfoo1" && p.1 == "foo" && p.2 == "1:2.0~rc1-1"), "{pkgs:?}");
    let want = expected(&pkgs);
    // The oracles decided these; the list is checked against them, not written by hand.
    assert!(want.len() >= 8, "{want:?}");
    let db = t.path().join("osv");
    write_db(&db, &DEB.iter().chain(PYPI).collect::<Vec<_>>());
    // Broken files: not JSON, JSON but not an advisory, a range without introduced next
    // to a good one, a GIT range.
    write_file(&db.join("Debian/broken.json"), b"{\"id\": \"X\", ");
    write_file(&db.join("Debian/list.json"), b"[1, 2]");
    let bad_range = json!({"id": "DSA-T-BAD", "affected": [{"package": {"ecosystem": "Debian:12", "name": "baz"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "1"}]}, {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9"}]}]}]});
    write_file(&db.join("Debian/bad-range.json"), bad_range.to_string().as_bytes());
    let git = json!({"id": "OSV-T-GIT", "affected": [{"package": {"ecosystem": "Debian:12", "name": "bar"},
        "ranges": [{"type": "GIT", "repo": "https://example.org/bar.git", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]}]});
    write_file(&db.join("Debian/git.json"), git.to_string().as_bytes());
    let mut want = want;
    if dpkg_cmp("2.0-1~deb12u1", "lt", "9") {
        want.insert(("baz".into(), "DSA-T-BAD".into(), Some("9".into())));
    }

    let r = dc(&["inspect", "--output", "json", "--vuln-db", &s(&db), &s(&root)]).expect_code(3).expect_stderr_all(&[
        "debian/broken.json: not an osv advisory",
        "debian/list.json: not an osv advisory",
        "debian/bad-range.json: dsa-t-bad: a bad range (a range without an introduced event)",
    ]);
    let j = r.json();
    assert_eq!(findings(&j), want);
    assert_eq!(j["vuln_db"]["git_ranges"], 1, "{}", j["vuln_db"]);
    assert_eq!(j["vuln_db"]["withdrawn"], 1, "{}", j["vuln_db"]);
    let one = j["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "DSA-T-1" && f["package"] == "libfoo1")
        .unwrap();
    assert_eq!(one["severity"], "critical");
    assert_eq!(one["score"], 9.8);
    assert_eq!(one["installed"], "1:2.0~rc1-1+b1");
    assert_eq!(one["source"], "foo 1:2.0~rc1-1");
    assert_eq!(one["aliases"][0], "CVE-2099-7");

    // The same database as a zip made by Python's zipfile.
    let zip = t.path().join("osv.zip");
    run(
        "/usr/bin/python3",
        &["-c", "import sys, shutil; shutil.make_archive(sys.argv[1][:-4], 'zip', sys.argv[2])", &s(&zip), &s(&db)],
    );
    let z = dc(&["inspect", "--output", "json", "--vuln-db", &s(&zip), &s(&root)]).expect_code(3);
    assert_eq!(findings(&z.json()), want);

    // The table names every finding after the packages.
    let table = dc(&["inspect", "--vuln-db", &s(&db), &s(&root)]).expect_code(3).stdout_str();
    assert!(table.contains(&format!("Vulnerabilities: {} (", want.len())), "{table}");
    for (p, id, _) in &want {
        assert!(table.lines().any(|l| l.contains(id.as_str()) && l.contains(p.as_str())), "{id} {p} missing:\n{table}");
    }
}

#[test]
fn exit_status_follows_fail_on_and_cyclonedx_passes_the_strict_validator() {
    let t = tmp();
    let (root, _) = make_root(t.path());
    // Only high (DSA-T-5) and unrated (DSA-T-4) findings.
    let db = t.path().join("high");
    write_db(&db, &[&DEB[4], &DEB[3], &DEB[1]]);
    dc(&["inspect", "--vuln-db", &s(&db), &s(&root)]).expect_code(3);
    dc(&["inspect", "--vuln-db", &s(&db), "--fail-on", "high", &s(&root)]).expect_code(3);
    dc(&["inspect", "--vuln-db", &s(&db), "--fail-on", "critical", &s(&root)]).expect_ok();
    // Nothing affected: exit 0.
    let clean = t.path().join("clean");
    write_db(&clean, &[&DEB[1], &DEB[5], &PYPI[1]]);
    let j = dc(&["inspect", "--output", "json", "--vuln-db", &s(&clean), &s(&root)]).expect_ok().json();
    assert_eq!(j["vulnerabilities"].as_array().unwrap().len(), 0);
    // --fail-on without a database is a usage error.
    dc(&["inspect", "--fail-on", "high", &s(&root)]).expect_code(1);

    let doc = dc(&["inspect", "--output", "cyclonedx-json", "--vuln-db", &s(&db), &s(&root)]).expect_code(3);
    assert_python_accepts(t.path(), CYCLONEDX_CHECK, &doc.stdout, "cyclonedx-json");
    let bom = doc.json();
    let refs: BTreeSet<&str> =
        bom["components"].as_array().unwrap().iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
    let vulns = bom["vulnerabilities"].as_array().unwrap();
    let ids: BTreeSet<&str> = vulns.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["DSA-T-4", "DSA-T-5"]));
    for v in vulns {
        for a in v["affects"].as_array().unwrap() {
            let r = a["ref"].as_str().unwrap();
            assert!(refs.contains(r), "{r} is no component");
            let c = bom["components"].as_array().unwrap().iter().find(|c| c["bom-ref"] == r).unwrap();
            assert_eq!(c["name"], if v["id"] == "DSA-T-5" { "baz" } else { "bar" });
        }
    }
    let high = vulns.iter().find(|v| v["id"] == "DSA-T-5").unwrap();
    assert_eq!(high["ratings"][0]["score"], 7.8);
    assert_eq!(high["ratings"][0]["method"], "CVSSv31");
}
