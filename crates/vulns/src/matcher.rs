//! Matching advisories against the packages of an image: each `affected[]` entry is
//! looked up by ecosystem and name, its ecosystem's release suffix (`Debian:12`,
//! `Alpine:v3.19`, `Ubuntu:22.04:LTS`, `Rocky Linux:9`) checked against the image's
//! os-release, and the installed version tested against its ranges (in the ecosystem's
//! own order) and its explicit `versions` list. Debian and Ubuntu advisories name source
//! packages and source versions, Alpine's name origins: those are matched through each
//! binary package's source.

use crate::cvss::{Method, Severity, score as cvss_score};
use crate::osv::{Advisory, Affected, DbStats, in_range};
use crate::versions::Scheme;
use diskcast_inspect::inventory::{Component, OsId};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Most findings kept: a hostile database cannot grow the report without end.
pub const MAX_FINDINGS: usize = 1 << 20;

/// One vulnerable package.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The package's purl type (`deb`, `pypi`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The package as `inspect` lists it.
    pub package: String,
    /// Its purl.
    pub purl: String,
    /// The file it was found in.
    pub found_in: String,
    /// The installed version.
    pub installed: String,
    /// The source package and version matched, when the advisory names the source
    /// (`openssl 3.0.11-1~deb12u2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The advisory id.
    pub id: String,
    /// Its other ids (CVE).
    pub aliases: Vec<String>,
    /// One line.
    pub summary: String,
    /// The first fixed version above the installed one, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// The rating.
    pub severity: Severity,
    /// The CVSS score computed from `vector` (v3 base, v4.0, or v2 base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The CVSS vector the score comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// Which CVSS the score is (`CVSSv31`, `CVSSv4`, `CVSSv2`: CycloneDX's names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// The advisory's ecosystem (`Debian:12`).
    pub ecosystem: String,
    /// The advisory file.
    pub advisory_file: String,
    /// Index of the package in the inventory.
    #[serde(skip)]
    pub component: usize,
}

/// What an OSV ecosystem is on this side: the purl type of its packages, its version
/// order (None: only explicit version lists match), the os-release IDs of its distros.
struct Eco {
    kind: &'static str,
    scheme: Option<Scheme>,
    os_ids: &'static [&'static str],
}

/// The ecosystems matched, by the name before the first `:`.
fn ecosystem(base: &str) -> Option<Eco> {
    let e = |kind, scheme, os_ids| Some(Eco { kind, scheme: Some(scheme), os_ids });
    match base {
        "Debian" => e("deb", Scheme::Dpkg, &["debian"]),
        "Ubuntu" => e("deb", Scheme::Dpkg, &["ubuntu"]),
        "Alpine" => e("apk", Scheme::Apk, &["alpine"]),
        "Wolfi" => e("apk", Scheme::Apk, &["wolfi"]),
        "Chainguard" => e("apk", Scheme::Apk, &["chainguard"]),
        "Red Hat" => e("rpm", Scheme::Rpm, &["rhel"]),
        "Rocky Linux" => e("rpm", Scheme::Rpm, &["rocky"]),
        "AlmaLinux" => e("rpm", Scheme::Rpm, &["almalinux"]),
        "openSUSE" => e("rpm", Scheme::Rpm, &["opensuse-leap", "opensuse-tumbleweed", "opensuse"]),
        "SUSE" => e("rpm", Scheme::Rpm, &["sles", "sles_sap", "sle-micro"]),
        "Mageia" => e("rpm", Scheme::Rpm, &["mageia"]),
        "Photon OS" => e("rpm", Scheme::Rpm, &["photon"]),
        "openEuler" => e("rpm", Scheme::Rpm, &["openEuler"]),
        "PyPI" => e("pypi", Scheme::Pep440, &[]),
        "npm" => e("npm", Scheme::Semver, &[]),
        "Go" => e("golang", Scheme::Semver, &[]),
        "crates.io" => e("cargo", Scheme::Semver, &[]),
        "Maven" => e("maven", Scheme::Maven, &[]),
        "RubyGems" => e("gem", Scheme::RubyGems, &[]),
        "Packagist" => e("composer", Scheme::Composer, &[]),
        _ => None,
    }
}

/// The ecosystem base of a purl type, for advisories that give only a purl.
fn base_of_purl_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "pypi" => "PyPI",
        "npm" => "npm",
        "golang" => "Go",
        "cargo" => "crates.io",
        "maven" => "Maven",
        "gem" => "RubyGems",
        "composer" => "Packagist",
        _ => return None,
    })
}

/// PEP 503's normalized name.
fn pypi_name(n: &str) -> String {
    let mut out = String::with_capacity(n.len());
    let mut sep = false;
    for c in n.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The name an advisory's package is looked up by.
fn key_name(kind: &str, name: &str) -> String {
    if kind == "pypi" { pypi_name(name) } else { name.to_string() }
}

/// Whether an ecosystem's release suffix (`12`, `v3.19`, `22.04:LTS`,
/// `enterprise_linux:9::appstream`, `Leap 15.5`) names the image's `VERSION_ID`: one of
/// its `:`-separated parts (its last word, without a leading `v`) equals it or is a
/// leading part of it (`9` of `9.3`, `3.19` of `3.19.1`). No suffix matches any release.
fn release_matches(suffix: &str, version_id: &str) -> bool {
    if suffix.is_empty() || version_id.is_empty() {
        return true;
    }
    suffix.split(':').any(|part| {
        let word = part.split_whitespace().last().unwrap_or("");
        let word = word.strip_prefix('v').unwrap_or(word);
        !word.is_empty() && (word == version_id || version_id.strip_prefix(word).is_some_and(|r| r.starts_with('.')))
    })
}

/// One package to match: its inventory index, the version to test, the source matched.
#[derive(Debug, Clone)]
struct Target {
    component: usize,
    version: String,
    source: Option<String>,
}

/// The packages of an image, indexed by (purl type, name).
#[derive(Debug, Default)]
pub struct Index {
    by_name: HashMap<(String, String), Vec<Target>>,
    os: OsId,
}

/// dpkg's `Source: NAME (VERSION)`, or `NAME` (the binary's version is the source's).
fn deb_source(source: &str, binary_version: &str) -> (String, String) {
    match source.split_once(" (") {
        Some((n, v)) => (n.trim().to_string(), v.trim_end_matches(')').trim().to_string()),
        None => (source.trim().to_string(), binary_version.to_string()),
    }
}

/// rpm's `SOURCERPM` (`openssl-3.0.7-24.el9.src.rpm`) without its version and release.
fn rpm_source_name(srpm: &str) -> Option<&str> {
    let s = srpm.strip_suffix(".src.rpm").or_else(|| srpm.strip_suffix(".nosrc.rpm"))?;
    let (nv, _release) = s.rsplit_once('-')?;
    Some(nv.rsplit_once('-')?.0)
}

impl Index {
    /// Indexes the packages (with a version) of an inventory, on the OS `os`.
    pub fn new(packages: &[Component], os: &OsId) -> Index {
        let mut ix = Index { by_name: HashMap::new(), os: os.clone() };
        for (i, p) in packages.iter().enumerate() {
            if p.version.is_empty() {
                continue;
            }
            let mut add = |name: &str, version: &str, source: Option<String>| {
                ix.by_name.entry((p.kind.clone(), key_name(&p.kind, name))).or_default().push(Target {
                    component: i,
                    version: version.to_string(),
                    source,
                });
            };
            match (p.kind.as_str(), p.source.as_deref()) {
                ("deb", Some(src)) => {
                    let (n, v) = deb_source(src, &p.version);
                    let shown = Some(format!("{n} {v}"));
                    add(&n, &v, shown);
                }
                // Alpine's advisories name origins; every subpackage has its origin's version.
                ("apk", Some(origin)) => add(origin, &p.version, (origin != p.name).then(|| origin.to_string())),
                ("rpm", src) => {
                    add(&p.name, &p.version, None);
                    if let Some(s) = src.and_then(rpm_source_name).filter(|s| *s != p.name) {
                        add(s, &p.version, Some(s.to_string()));
                    }
                }
                _ => add(&p.name, &p.version, None),
            }
        }
        ix
    }
}

/// A severity, with the CVSS score, vector and method it comes from when it was computed.
type Rated = (Severity, Option<f64>, Option<String>, Option<Method>);

/// The CVSS types of `severity[]` entries, in the order one is chosen: v3 first (the
/// rating most databases and scanners show), then v4.0, then v2.
const CVSS_PREFERENCE: [&str; 3] = ["CVSS_V3", "CVSS_V4", "CVSS_V2"];

/// The severity of an advisory for one affected entry: a CVSS vector (the entry's, else
/// the advisory's; by [`CVSS_PREFERENCE`]) scored, else a word from
/// `database_specific.severity`, `ecosystem_specific.severity` or a `severity[]` entry of
/// another type. A malformed vector is skipped, with a message in `bad`.
fn severity(a: &Advisory, aff: &Affected, bad: &mut Vec<String>) -> Rated {
    for kind in CVSS_PREFERENCE {
        for s in aff.severity.iter().chain(&a.severity).filter(|s| s.kind == kind) {
            match cvss_score(&s.kind, &s.score) {
                Some(Ok((method, score))) => {
                    return (Severity::of_score(score), Some(score), Some(s.score.clone()), Some(method));
                }
                Some(Err(e)) => bad.push(format!("severity {kind}: {e}: not used")),
                None => {}
            }
        }
    }
    let word = |v: &Option<Value>| {
        v.as_ref().and_then(|v| v.get("severity")).and_then(Value::as_str).and_then(Severity::from_word)
    };
    let found = word(&a.database_specific)
        .or_else(|| word(&aff.ecosystem_specific))
        .or_else(|| word(&aff.database_specific))
        .or_else(|| aff.severity.iter().chain(&a.severity).find_map(|s| Severity::from_word(&s.score)));
    (found.unwrap_or(Severity::Unknown), None, None, None)
}

/// The advisory's other ids: `aliases`, then `upstream` ones not among them.
fn aliases(a: &Advisory) -> Vec<String> {
    let mut out = a.aliases.clone();
    for u in &a.upstream {
        if !out.contains(u) && *u != a.id {
            out.push(u.clone());
        }
    }
    out
}

/// Matches advisories one at a time against an [`Index`].
#[derive(Debug)]
pub struct Matcher<'a> {
    index: &'a Index,
    packages: &'a [Component],
    /// The findings so far.
    pub findings: Vec<Finding>,
    /// What was skipped.
    pub stats: DbStats,
    /// Advisories with a bad range and the like (each names its file).
    pub warnings: Vec<String>,
    seen: HashSet<(usize, String)>,
    /// The warnings given, each once.
    warned: HashSet<String>,
}

impl<'a> Matcher<'a> {
    /// A matcher for the inventory `packages` indexed as `index`.
    pub fn new(index: &'a Index, packages: &'a [Component]) -> Matcher<'a> {
        Matcher {
            index,
            packages,
            findings: Vec::new(),
            stats: DbStats::default(),
            warnings: Vec::new(),
            seen: HashSet::new(),
            warned: HashSet::new(),
        }
    }

    /// Matches one advisory (read from `file`).
    pub fn advisory(&mut self, file: &str, a: &Advisory) {
        self.stats.advisories += 1;
        if a.withdrawn.is_some() {
            self.stats.withdrawn += 1;
            return;
        }
        for aff in &a.affected {
            let Some(pkg) = &aff.package else { continue };
            let (base, suffix) = pkg.ecosystem.split_once(':').unwrap_or((pkg.ecosystem.as_str(), ""));
            let mut name = pkg.name.clone();
            let eco = match ecosystem(base) {
                Some(e) => e,
                None => {
                    // An entry known by its purl only.
                    let Some((kind, pname)) = pkg.purl.as_deref().and_then(purl_name) else { continue };
                    let Some(e) = base_of_purl_type(&kind).and_then(ecosystem) else { continue };
                    name = pname;
                    e
                }
            };
            if !eco.os_ids.is_empty() {
                let os = &self.index.os;
                if !os.id.is_empty() && !eco.os_ids.contains(&os.id.as_str()) {
                    continue;
                }
                if !release_matches(suffix, &os.version_id) {
                    continue;
                }
            }
            let Some(targets) = self.index.by_name.get(&(eco.kind.to_string(), key_name(eco.kind, &name))) else {
                continue;
            };
            for t in targets {
                if self.seen.contains(&(t.component, a.id.clone())) {
                    continue;
                }
                let Some(fixed) = self.affects(file, a, aff, &eco, &t.version) else { continue };
                if self.findings.len() >= MAX_FINDINGS {
                    self.warnings.push(format!(
                        "more than {MAX_FINDINGS} findings (the MAX_FINDINGS cap): the rest are not listed"
                    ));
                    return;
                }
                self.seen.insert((t.component, a.id.clone()));
                let p = &self.packages[t.component];
                let mut bad = Vec::new();
                let (severity, score, vector, method) = severity(a, aff, &mut bad);
                for b in bad {
                    let w = format!("{file}: {}: {b}", a.id);
                    if self.warned.insert(w.clone()) {
                        self.warnings.push(w);
                    }
                }
                let summary = a
                    .summary
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .or_else(|| {
                        a.details.as_deref().and_then(|d| d.lines().find(|l| !l.trim().is_empty())).map(str::to_string)
                    })
                    .unwrap_or_default();
                self.findings.push(Finding {
                    kind: p.kind.clone(),
                    package: p.name.clone(),
                    purl: p.purl.clone(),
                    found_in: p.found_in.clone(),
                    installed: p.version.clone(),
                    source: t.source.clone(),
                    id: a.id.clone(),
                    aliases: aliases(a),
                    summary: summary.trim().to_string(),
                    fixed,
                    severity,
                    score,
                    vector,
                    method,
                    ecosystem: pkg.ecosystem.clone(),
                    advisory_file: file.to_string(),
                    component: t.component,
                });
            }
        }
    }

    /// Whether the entry affects `version`: Some(first fixed version above it) when it
    /// does.
    fn affects(
        &mut self,
        file: &str,
        a: &Advisory,
        aff: &Affected,
        eco: &Eco,
        version: &str,
    ) -> Option<Option<String>> {
        let same = |v: &String| match eco.scheme {
            Some(s) => s.compare(v, version).is_eq(),
            None => v == version,
        };
        let mut hit = aff.versions.iter().any(same);
        let mut fixed: Option<String> = None;
        for r in &aff.ranges {
            let scheme = match (r.kind.as_str(), eco.scheme) {
                ("SEMVER", _) => Scheme::Semver,
                ("ECOSYSTEM", Some(s)) => s,
                ("ECOSYSTEM", None) => {
                    self.stats.unordered_ranges += 1;
                    continue;
                }
                ("GIT", _) => {
                    self.stats.git_ranges += 1;
                    continue;
                }
                (other, _) => {
                    self.warnings.push(format!(
                        "{file}: {}: range type {other:?} is not one of ECOSYSTEM, SEMVER, GIT: skipped",
                        a.id
                    ));
                    continue;
                }
            };
            match in_range(scheme, &r.events, version) {
                Ok(res) => {
                    if res.affected {
                        hit = true;
                        if let Some(f) = res.fixed
                            && fixed.as_ref().is_none_or(|g| scheme.compare(&f, g).is_lt())
                        {
                            fixed = Some(f);
                        }
                    }
                }
                Err(e) => self.warnings.push(format!("{file}: {}: a bad range ({e}): skipped", a.id)),
            }
        }
        hit.then_some(fixed)
    }

    /// The findings, most severe first, then by package and advisory.
    pub fn finish(mut self) -> (Vec<Finding>, DbStats, Vec<String>) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.package.cmp(&b.package))
                .then_with(|| a.installed.cmp(&b.installed))
                .then_with(|| a.id.cmp(&b.id))
                .then_with(|| a.component.cmp(&b.component))
        });
        (self.findings, self.stats, self.warnings)
    }
}

/// `(type, name)` of a purl (`pkg:npm/%40scope/name@1.0` gives `npm`, `@scope/name`;
/// Maven's namespace joins with `:`).
fn purl_name(purl: &str) -> Option<(String, String)> {
    let rest = purl.strip_prefix("pkg:")?;
    let rest = rest.split(['@', '?', '#']).next()?;
    let (kind, path) = rest.split_once('/')?;
    let decoded = path.replace("%40", "@").replace("%2F", "/").replace("%2f", "/");
    let name = if kind == "maven" { decoded.replacen('/', ":", 1) } else { decoded };
    Some((kind.to_ascii_lowercase(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_names() {
        assert!(release_matches("12", "12"));
        assert!(!release_matches("11", "12"));
        assert!(!release_matches("1", "12"));
        assert!(release_matches("v3.19", "3.19.1"));
        assert!(!release_matches("v3.1", "3.19.1"));
        assert!(release_matches("22.04:LTS", "22.04"));
        assert!(release_matches("Pro:22.04:LTS", "22.04"));
        assert!(release_matches("enterprise_linux:9::appstream", "9.3"));
        assert!(release_matches("Leap 15.5", "15.5"));
        assert!(release_matches("", "12"));
        assert_eq!(pypi_name("Foo.Bar__baz"), "foo-bar-baz");
        assert_eq!(
            deb_source("openssl (3.0.11-1~deb12u2)", "3.0.11-1~deb12u2+b1"),
            ("openssl".into(), "3.0.11-1~deb12u2".into())
        );
        assert_eq!(rpm_source_name("openssl-3.0.7-24.el9.src.rpm"), Some("openssl"));
        assert_eq!(purl_name("pkg:npm/%40scope/name@1.0"), Some(("npm".into(), "@scope/name".into())));
        assert_eq!(purl_name("pkg:maven/org.x/y@1"), Some(("maven".into(), "org.x:y".into())));
    }

    fn comp(kind: &str, name: &str, version: &str, source: Option<&str>) -> Component {
        Component {
            kind: kind.into(),
            name: name.into(),
            version: version.into(),
            purl: format!("pkg:{kind}/{name}@{version}"),
            found_in: "/db".into(),
            architecture: None,
            license: None,
            source: source.map(str::to_string),
            epoch: None,
            size: None,
            summary: None,
            layer: None,
        }
    }

    fn adv(json: &str) -> Advisory {
        crate::osv::parse(json.as_bytes()).unwrap()
    }

    /// (package, id, fixed, severity) found for `packages` on `os` in `advisories`.
    fn run(
        packages: &[Component],
        os: (&str, &str),
        advisories: &[&str],
    ) -> Vec<(String, String, Option<String>, Severity)> {
        let os = OsId { id: os.0.into(), version_id: os.1.into() };
        let ix = Index::new(packages, &os);
        let mut m = Matcher::new(&ix, packages);
        for a in advisories {
            m.advisory("t.json", &adv(a));
        }
        let (f, _, w) = m.finish();
        assert!(w.is_empty(), "{w:?}");
        f.into_iter().map(|f| (f.package, f.id, f.fixed, f.severity)).collect()
    }

    #[test]
    fn alpine_origins_rocky_sources_ubuntu_releases_and_language_packages() {
        let apk = [comp("apk", "libcrypto3", "3.1.4-r0", Some("openssl"))];
        let a319 = r#"{"id": "ALPINE-1", "affected": [{"package": {"ecosystem": "Alpine:v3.19", "name": "openssl"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.4-r1"}]}]}]}"#;
        let a318 = a319.replace("v3.19", "v3.18").replace("ALPINE-1", "ALPINE-2");
        assert_eq!(
            run(&apk, ("alpine", "3.19.1"), &[a319, &a318]),
            [("libcrypto3".into(), "ALPINE-1".into(), Some("3.1.4-r1".into()), Severity::Unknown)]
        );
        let rpm = [comp("rpm", "openssl-libs", "1:3.0.7-24.el9", Some("openssl-3.0.7-24.el9.src.rpm"))];
        let rocky = r#"{"id": "RLSA-1", "upstream": ["CVE-1"], "affected": [{"package": {"ecosystem": "Rocky Linux:9", "name": "openssl"},
            "ecosystem_specific": {"severity": "Important"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:3.0.7-25.el9"}]}]}]}"#;
        assert_eq!(
            run(&rpm, ("rocky", "9.3"), &[rocky]),
            [("openssl-libs".into(), "RLSA-1".into(), Some("1:3.0.7-25.el9".into()), Severity::High)]
        );
        assert!(run(&rpm, ("almalinux", "9.3"), &[rocky]).is_empty());
        let ix = Index::new(&rpm, &OsId { id: "rocky".into(), version_id: "9".into() });
        let mut m = Matcher::new(&ix, &rpm);
        m.advisory("t.json", &adv(rocky));
        assert_eq!(m.findings[0].aliases, ["CVE-1"]);
        let deb = [comp("deb", "curl", "7.81.0-1ubuntu1.14", None)];
        let ubuntu = r#"{"id": "USN-1", "severity": [{"type": "Ubuntu", "score": "medium"}],
            "affected": [{"package": {"ecosystem": "Ubuntu:22.04:LTS", "name": "curl"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "7.81.0-1ubuntu1.15"}]}]}]}"#;
        assert_eq!(run(&deb, ("ubuntu", "22.04"), &[ubuntu]).len(), 1);
        assert!(run(&deb, ("ubuntu", "24.04"), &[ubuntu]).is_empty());
        assert!(run(&deb, ("debian", "12"), &[ubuntu]).is_empty());
        let lang = [
            comp("golang", "github.com/x/y", "v1.2.3", None),
            comp("maven", "org.x:y", "2.0-beta1", None),
            comp("npm", "@s/n", "1.0.0-rc.1", None),
            comp("pypi", "zope-interface", "5.0", None),
        ];
        let go = r#"{"id": "GO-1", "affected": [{"package": {"ecosystem": "Go", "name": "github.com/x/y"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.4"}]}]}]}"#;
        let mvn = r#"{"id": "GHSA-m", "database_specific": {"severity": "CRITICAL"}, "affected": [{"package": {"ecosystem": "Maven", "name": "org.x:y"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.0-alpha"}, {"fixed": "2.0"}]}]}]}"#;
        let npm = r#"{"id": "GHSA-n", "affected": [{"package": {"purl": "pkg:npm/%40s/n"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}]}]}"#;
        let py = r#"{"id": "PYSEC-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "Zope.Interface"},
            "versions": ["5.0.0"]}]}"#;
        let got = run(&lang, ("", ""), &[go, mvn, npm, py]);
        let ids: Vec<&str> = got.iter().map(|f| f.1.as_str()).collect();
        assert_eq!(ids, ["GHSA-m", "GHSA-n", "GO-1", "PYSEC-1"]);
        assert_eq!(got[0].3, Severity::Critical);
    }

    #[test]
    fn cvss_v4_and_v2_vectors_rate_and_malformed_ones_are_named() {
        let pkg = [comp("npm", "x", "1.0.0", None)];
        let ix = Index::new(&pkg, &OsId::default());
        let mut m = Matcher::new(&ix, &pkg);
        let with = |id: &str, sev: &str| {
            adv(&format!(
                r#"{{"id": "{id}", "severity": {sev}, "affected": [{{"package": {{"ecosystem": "npm", "name": "x"}},
                "ranges": [{{"type": "SEMVER", "events": [{{"introduced": "0"}}, {{"fixed": "1.0.1"}}]}}]}}]}}"#
            ))
        };
        m.advisory(
            "v4.json",
            &with(
                "V4",
                r#"[{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:N/I:N/A:C"},
            {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]"#,
            ),
        );
        m.advisory("v2.json", &with("V2", r#"[{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:N/I:N/A:C"}]"#));
        m.advisory(
            "bad.json",
            &with("BAD", r#"[{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:Q"}, {"type": "X", "score": "low"}]"#),
        );
        let (f, _, w) = m.finish();
        let got: Vec<_> = f.iter().map(|f| (f.id.as_str(), f.severity, f.score, f.method)).collect();
        assert_eq!(
            got,
            [
                ("V4", Severity::Critical, Some(9.3), Some(Method::V40)),
                ("V2", Severity::High, Some(7.8), Some(Method::V2)),
                ("BAD", Severity::Low, None, None),
            ]
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("bad.json") && w[0].contains("BAD") && w[0].contains("metric AC"), "{w:?}");
    }

    #[test]
    fn gem_and_composer_ranges_in_their_orders() {
        let pkgs =
            [comp("gem", "rack", "2.2.3.pre1", None), comp("composer", "symfony/http-kernel", "v5.4.0-RC1", None)];
        let gem = r#"{"id": "GEM-1", "affected": [{"package": {"ecosystem": "RubyGems", "name": "rack"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.2.0"}, {"fixed": "2.2.3"}]}]}]}"#;
        let gem_not = r#"{"id": "GEM-2", "affected": [{"package": {"ecosystem": "RubyGems", "name": "rack"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.2.3.a"}]}]}]}"#;
        let php = r#"{"id": "PHP-1", "affected": [{"package": {"ecosystem": "Packagist", "name": "symfony/http-kernel"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "5.4.0-beta1"}, {"fixed": "5.4.0"}]}]}]}"#;
        let php_not = r#"{"id": "PHP-2", "affected": [{"package": {"ecosystem": "Packagist", "name": "symfony/http-kernel"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "5.4.0-rc2"}]}]}]}"#;
        let got = run(&pkgs, ("", ""), &[gem, gem_not, php, php_not]);
        let ids: Vec<(&str, Option<&str>)> = got.iter().map(|f| (f.1.as_str(), f.2.as_deref())).collect();
        assert_eq!(ids, [("GEM-1", Some("2.2.3")), ("PHP-1", Some("5.4.0"))]);
    }
}
