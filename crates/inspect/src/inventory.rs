//! Everything a tree holds that an SBOM lists: the OS packages of its database (dpkg,
//! apk, rpm) and the language packages found in its files (Python, Node, Go and Rust
//! binaries, Java archives, Ruby gems, PHP Composer), each with its purl and the file it
//! was found in. One walk of the tree; only metadata files and binaries' build-info
//! sections are read, each under a named cap. A file that cannot be read or parsed is a
//! warning naming it, and the rest is still listed.

use crate::purl;
use crate::{Package, ReadFile, binary, jar, packages};
use diskcast_block::Result;
use diskcast_layout::u64_from_usize;
use diskcast_tree::{Content, Kind, NodeId, StreamSource, Tree};
use serde::Serialize;
use std::io::Read;
use std::sync::Arc;

/// Largest language metadata file read (METADATA, package.json, gemspec, pom.properties:
/// a few KiB in practice; a 10 MB description is refused, not read).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Largest Composer `installed.json` read (one entry per package of a project).
pub const MAX_COMPOSER_BYTES: u64 = 32 << 20;
/// Most packages listed from one tree: a hostile tree cannot grow the report without end.
pub const MAX_PACKAGES: usize = 1 << 20;

/// One package, of any ecosystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Component {
    /// The purl type: `deb`, `apk`, `rpm`, `pypi`, `npm`, `golang`, `cargo`, `maven`,
    /// `gem`, `composer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name (with its scope, group or vendor for npm, Maven and Composer: `@types/node`,
    /// `org.slf4j:slf4j-api`, `monolog/monolog`).
    pub name: String,
    /// Version (empty for a Go main module built outside a version control tag).
    pub version: String,
    /// The package URL.
    pub purl: String,
    /// The file it was found in, absolute in the tree (`/var/lib/dpkg/status`,
    /// `/app/lib.jar!/META-INF/maven/g/a/pom.properties` inside an archive).
    pub found_in: String,
    /// Architecture, when the database records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// License, as the package declares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Source package (dpkg's `Source`, apk's origin, rpm's `SOURCERPM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// rpm's epoch, when the package sets one (also the `EPOCH:` of `version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// Installed size in bytes, when the database records it (rpm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// One-line summary, when the database records it (rpm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// For a container image, the digest (as the manifest lists it) of the layer that
    /// added the package: for a file, the topmost layer holding `found_in`; for an OS
    /// package, the lowest layer from which the database records it at this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// What [`inventory`] found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Inventory {
    /// `PRETTY_NAME` of os-release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The OS package database read (`dpkg`, `apk`, `rpm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<String>,
    /// Every package, sorted by type, name, version and file.
    pub packages: Vec<Component>,
    /// Files that could not be read or parsed (each names its file); the rest stands.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// os-release's `ID` and `VERSION_ID`, which advisories name releases by.
    #[serde(skip)]
    pub os_id: OsId,
}

/// The fields of os-release that purls qualify OS packages with.
#[derive(Debug, Default, Clone)]
pub struct OsId {
    /// `ID` (`debian`, `alpine`, `fedora`).
    pub id: String,
    /// `VERSION_ID` (`12`, `3.19.1`).
    pub version_id: String,
}

impl OsId {
    /// `ID` and `VERSION_ID` of an os-release text (empty when it has none).
    pub fn parse(text: &str) -> OsId {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        OsId { id: field("ID"), version_id: field("VERSION_ID") }
    }

    fn distro(&self) -> String {
        match (self.id.as_str(), self.version_id.as_str()) {
            ("", _) => String::new(),
            (id, "") => id.to_string(),
            (id, v) => format!("{id}-{v}"),
        }
    }
}

/// The OS and language packages of `tree`.
pub fn inventory(tree: &Tree) -> Result<Inventory> {
    let read = |path: &[u8], max: u64| -> Result<Option<Vec<u8>>> { Ok(tree.read_optional(path, max)?) };
    inventory_from(tree, packages(tree)?, &|_, _| None, &read)
}

/// What a file of a stream was found to hold when the stream passed (see
/// [`scan_member`]), looked up by stream and offset: its path then, and its findings.
pub type Scanned<'a> = &'a dyn Fn(&Arc<dyn StreamSource>, u64) -> Option<(Vec<u8>, Inventory)>;

/// Whether [`inventory`] reads the file at `path` (relative to the root) with `mode`
/// and `size`: a stream's reader may then hand its bytes to [`scan_member`] as they pass.
pub fn reads(path: &[u8], mode: u32, size: u64) -> bool {
    classify(path, mode & 0o111 != 0).is_some_and(|w| size <= w.cap())
}

/// The packages and warnings of one file at `path` (relative to the root) with `mode`,
/// from its bytes, as [`inventory`] finds them.
pub fn scan_member(path: &[u8], mode: u32, bytes: &[u8]) -> Inventory {
    let mut inv = Inventory::default();
    if let Some(what) = classify(path, mode & 0o111 != 0) {
        let shown = format!("/{}", String::from_utf8_lossy(path));
        if what == What::Binary && !bytes.starts_with(b"\x7fELF") {
            return inv;
        }
        if let Err(w) = handle(&mut inv, what, path, bytes, shown) {
            inv.warnings.push(w);
        }
    }
    inv
}

/// [`inventory`], with the OS packages already read from the tree's database, and the
/// files of streams that were scanned as the streams passed (`scanned`; a container
/// image's layers): those are not read again. `read` reads os-release (a container
/// image's inspection keeps its bytes as the layer passes, so that reading it does not
/// decode the layer again up to it).
pub fn inventory_from(tree: &Tree, found: crate::Found, scanned: Scanned<'_>, read: ReadFile<'_>) -> Result<Inventory> {
    let release = crate::os_release_text(read);
    let os = OsId::parse(&release);
    let mut inv = Inventory {
        os: crate::pretty_name(&release),
        package_manager: found.manager.clone(),
        os_id: os.clone(),
        ..Inventory::default()
    };
    if let Some(e) = &found.error {
        inv.warnings.push(e.clone());
    }
    let db = match found.manager.as_deref() {
        Some("dpkg") => "/var/lib/dpkg/status",
        Some("apk") => "/lib/apk/db/installed",
        _ => "/var/lib/rpm",
    };
    for p in &found.packages {
        inv.packages.push(os_component(found.manager.as_deref().unwrap_or(""), &os, p, db));
    }
    scan_files(tree, &mut inv, scanned);
    if inv.packages.len() > MAX_PACKAGES {
        inv.warnings.push(format!("more than {MAX_PACKAGES} packages (the MAX_PACKAGES cap): the rest are not listed"));
        inv.packages.truncate(MAX_PACKAGES);
    }
    inv.packages.sort();
    inv.packages.dedup();
    Ok(inv)
}

fn os_component(manager: &str, os: &OsId, p: &Package, db: &str) -> Component {
    let distro = os.distro();
    let (kind, ns, default_ns) = match manager {
        "dpkg" => ("deb", os.id.as_str(), "debian"),
        "apk" => ("apk", os.id.as_str(), "alpine"),
        _ => ("rpm", os.id.as_str(), "rpm"),
    };
    let ns = if ns.is_empty() { default_ns } else { ns };
    let epoch = p.epoch.map(|e| e.to_string()).unwrap_or_default();
    let purl = purl::build(
        kind,
        Some(ns),
        &p.name,
        Some(&p.version),
        &[("arch", &p.architecture), ("distro", &distro), ("epoch", &epoch)],
    );
    Component {
        kind: kind.into(),
        name: p.name.clone(),
        version: os_version(p),
        purl,
        found_in: db.into(),
        architecture: Some(p.architecture.clone()).filter(|a| !a.is_empty()),
        license: p.license.clone(),
        source: p.source.clone(),
        epoch: p.epoch,
        size: p.size,
        summary: p.summary.clone(),
        layer: None,
    }
}

/// An OS package's version as a [`Component`] shows it: rpm's epoch as `EPOCH:`.
pub fn os_version(p: &Package) -> String {
    match p.epoch {
        Some(e) => format!("{e}:{}", p.version),
        None => p.version.clone(),
    }
}

/// Adds a language package.
pub(crate) fn push_lang(
    inv: &mut Inventory,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    license: Option<String>,
    found_in: String,
) {
    if name.is_empty() || inv.packages.len() > MAX_PACKAGES {
        return;
    }
    let purl = purl::build(kind, namespace, name, Some(version), &[]);
    let shown = match (kind, namespace) {
        ("maven", Some(g)) => format!("{g}:{name}"),
        (_, Some(ns)) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    };
    inv.packages.push(Component {
        kind: kind.into(),
        name: shown,
        version: version.into(),
        purl,
        found_in,
        architecture: None,
        license: license.filter(|l| !l.is_empty()),
        source: None,
        epoch: None,
        size: None,
        summary: None,
        layer: None,
    });
}

/// What a file found by the walk is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Python,
    Node,
    Gem,
    Composer,
    Pom,
    Archive,
    Binary,
}

impl What {
    /// The most bytes read of such a file.
    fn cap(self) -> u64 {
        match self {
            What::Composer => MAX_COMPOSER_BYTES,
            What::Archive => jar::MAX_ARCHIVE_BYTES,
            What::Binary => binary::MAX_BINARY_BYTES,
            _ => MAX_METADATA_BYTES,
        }
    }
}

fn classify(path: &[u8], executable: bool) -> Option<What> {
    let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    let parent = parent_name(path);
    Some(
        if (name == b"METADATA" && parent.ends_with(b".dist-info"))
            || (name == b"PKG-INFO" && parent.ends_with(b".egg-info"))
        {
            What::Python
        } else if path.ends_with(b".egg-info") {
            // An egg-info may also be a single file (distutils).
            What::Python
        } else if name == b"package.json" && in_node_modules(path) {
            What::Node
        } else if name.ends_with(b".gemspec") && parent == b"specifications" {
            What::Gem
        } else if name == b"installed.json" && parent == b"composer" {
            What::Composer
        } else if name == b"pom.properties" && path.windows(14).any(|w| w == b"META-INF/maven") {
            What::Pom
        } else if [&b".jar"[..], b".war", b".ear"].iter().any(|e| name.ends_with(e)) {
            What::Archive
        } else if executable {
            What::Binary
        } else {
            return None;
        },
    )
}

/// Lists the packages a file's bytes name.
fn handle(
    inv: &mut Inventory,
    what: What,
    path: &[u8],
    bytes: &[u8],
    shown: String,
) -> std::result::Result<(), String> {
    let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    match what {
        What::Python => python(inv, bytes, shown),
        What::Node => return node(inv, bytes, shown),
        What::Gem => gem(inv, bytes, name, shown),
        What::Composer => return composer(inv, bytes, shown),
        What::Pom => jar::pom_properties(inv, bytes, shown),
        What::Archive => return jar::scan_bytes(bytes, &shown, inv),
        What::Binary => return binary::scan_bytes(bytes, inv, &shown),
    }
    Ok(())
}

/// A file of a front-to-back stream (a container layer, a compressed tar), read later
/// in stream order.
struct Queued {
    offset: u64,
    size: u64,
    path: Vec<u8>,
    what: What,
}

/// Walks the tree once and reads the files that name language packages. Files inside a
/// stream (a layer, a compressed tar) are read in one pass over each stream, in its
/// order: reading each at its offset would decode the stream once per file.
fn scan_files(tree: &Tree, inv: &mut Inventory, scanned: Scanned<'_>) {
    let mut streams: Vec<(Arc<dyn StreamSource>, Vec<Queued>)> = Vec::new();
    for (path, id) in tree.walk(NodeId::ROOT) {
        let node = tree.node(id);
        let Kind::File(f) = &node.kind else { continue };
        let Some(what) = classify(&path, node.meta.mode & 0o111 != 0) else { continue };
        let shown = format!("/{}", String::from_utf8_lossy(&path));
        if f.size > what.cap() {
            // Executables larger than the cap are skipped quietly: they are not build
            // info, and a warning per large binary would drown the rest.
            if what != What::Binary {
                inv.warnings.push(format!(
                    "{shown}: {} bytes, more than the {}-byte cap: not read",
                    f.size,
                    what.cap()
                ));
            }
            continue;
        }
        if let Content::Stream { stream, offset } = &f.content {
            // Found as the stream passed, under the same rule: its names were the
            // member's, which this path may not be (a symlink on the way).
            if let Some((at, found)) = scanned(stream, *offset)
                && classify(&at, node.meta.mode & 0o111 != 0) == Some(what)
            {
                let was = format!("/{}", String::from_utf8_lossy(&at));
                let here = |t: String| match t.strip_prefix(&was) {
                    Some(rest) => format!("{shown}{rest}"),
                    None => t,
                };
                for mut p in found.packages {
                    p.found_in = here(p.found_in);
                    inv.packages.push(p);
                }
                inv.warnings.extend(found.warnings.into_iter().map(here));
                continue;
            }
            let q = Queued { offset: *offset, size: f.size, path, what };
            match streams.iter_mut().find(|(s, _)| Arc::ptr_eq(s, stream)) {
                Some((_, list)) => list.push(q),
                None => streams.push((stream.clone(), vec![q])),
            }
            continue;
        }
        let result = if what == What::Binary {
            binary::scan(f, inv, &shown)
        } else {
            tree.read(&path, what.cap())
                .map_err(|e| format!("{shown}: {e}"))
                .and_then(|b| handle(inv, what, &path, &b, shown))
        };
        if let Err(w) = result {
            inv.warnings.push(w);
        }
    }
    for (stream, mut list) in streams {
        list.sort_by_key(|q| q.offset);
        if let Err(w) = read_stream(stream.as_ref(), &list, inv) {
            inv.warnings.push(w);
        }
    }
}

/// Reads the queued files of one stream front to back, each once. An executable that
/// does not start with the ELF magic is skipped after its first four bytes.
fn read_stream(stream: &dyn StreamSource, list: &[Queued], inv: &mut Inventory) -> std::result::Result<(), String> {
    let name = stream.name();
    let err = |e: std::io::Error| format!("{name}: {e}");
    let mut r = stream.open().map_err(|e| format!("{name}: {e}"))?;
    let mut pos = 0u64;
    for q in list {
        if q.offset < pos {
            // Two names for one member (a hard link): already read.
            continue;
        }
        std::io::copy(&mut (&mut r).take(q.offset - pos), &mut std::io::sink()).map_err(err)?;
        pos = q.offset;
        let shown = format!("/{}", String::from_utf8_lossy(&q.path));
        let mut bytes = Vec::new();
        let first = if q.what == What::Binary { q.size.min(4) } else { q.size };
        (&mut r).take(first).read_to_end(&mut bytes).map_err(err)?;
        if q.what == What::Binary && bytes.starts_with(b"\x7fELF") {
            (&mut r).take(q.size - first).read_to_end(&mut bytes).map_err(err)?;
        }
        pos += u64_from_usize(bytes.len());
        if u64_from_usize(bytes.len()) < first {
            return Err(format!("{name}: ends inside {shown}"));
        }
        if q.what == What::Binary && !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        if let Err(w) = handle(inv, q.what, &q.path, &bytes, shown) {
            inv.warnings.push(w);
        }
    }
    Ok(())
}

fn parent_name(path: &[u8]) -> &[u8] {
    let mut parts = path.rsplit(|&c| c == b'/');
    parts.next();
    parts.next().unwrap_or(b"")
}

/// `node_modules/NAME/package.json` or `node_modules/@SCOPE/NAME/package.json`: the
/// package's own manifest, not one of the files a package ships.
fn in_node_modules(path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    let n = parts.len();
    (n >= 3 && parts[n - 3] == b"node_modules")
        || (n >= 4 && parts[n - 4] == b"node_modules" && parts[n - 3].starts_with(b"@"))
}

/// Core metadata (`METADATA`, `PKG-INFO`): RFC 822 headers up to the first blank line.
fn python(inv: &mut Inventory, bytes: &[u8], found_in: String) {
    let text = String::from_utf8_lossy(bytes);
    let (mut name, mut version, mut license, mut expr) = ("", "", "", "");
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some(("Name", v)) => name = v.trim(),
            Some(("Version", v)) => version = v.trim(),
            Some(("License", v)) => license = v.trim(),
            Some(("License-Expression", v)) => expr = v.trim(),
            _ => {}
        }
    }
    // PyPI names compare case-insensitively with `_`, `.` and `-` alike (PEP 503); the
    // purl spec asks for that normalized form.
    let normalized: String =
        name.to_ascii_lowercase().split(['_', '.', '-']).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-");
    let license = if expr.is_empty() { license } else { expr };
    push_lang(inv, "pypi", None, &normalized, version, Some(license.to_string()), found_in);
}

/// `package.json`: `name` (`@scope/name` for scoped packages), `version`, `license`.
fn node(inv: &mut Inventory, bytes: &[u8], found_in: String) -> std::result::Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{found_in}: not a package.json (not JSON: {e})"))?;
    let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("");
    let version = v.get("version").and_then(|n| n.as_str()).unwrap_or("");
    let license = match v.get("license") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(o) => o.get("type").and_then(|t| t.as_str()).map(str::to_string),
        None => None,
    };
    let (scope, name) = match name.split_once('/') {
        Some((s, n)) if s.starts_with('@') => (Some(s), n),
        _ => (None, name),
    };
    push_lang(inv, "npm", scope, name, version, license, found_in);
    Ok(())
}

/// A gem's `specifications/NAME-VERSION.gemspec`: `s.name = "..."`, `s.version = "..."`,
/// `s.licenses = ["..."]` as RubyGems writes them.
fn gem(inv: &mut Inventory, bytes: &[u8], file: &[u8], found_in: String) {
    let text = String::from_utf8_lossy(bytes);
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (lhs, rhs) = l.split_once('=')?;
            if !lhs.trim().ends_with(key) {
                return None;
            }
            let rhs = rhs.split_once('"')?.1;
            Some(rhs.split_once('"')?.0.to_string())
        })
    };
    let stem = String::from_utf8_lossy(file.strip_suffix(b".gemspec").unwrap_or(file)).into_owned();
    let (name, version) = match (field(".name"), field(".version")) {
        (Some(n), Some(v)) => (n, v),
        // Else the file's name: NAME-VERSION.
        _ => match stem.rsplit_once('-') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (stem.clone(), String::new()),
        },
    };
    push_lang(inv, "gem", None, &name, &version, field(".licenses"), found_in);
}

/// Composer's `vendor/composer/installed.json`: `{"packages": [...]}` (Composer 2) or
/// a bare array (Composer 1).
fn composer(inv: &mut Inventory, bytes: &[u8], found_in: String) -> std::result::Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{found_in}: not a Composer installed.json: {e}"))?;
    let list = v.get("packages").unwrap_or(&v).as_array().cloned().unwrap_or_default();
    for p in list {
        let full = p.get("name").and_then(|n| n.as_str()).unwrap_or("");
        let version = p.get("version").and_then(|n| n.as_str()).unwrap_or("");
        let license = p
            .get("license")
            .and_then(|l| l.as_array())
            .map(|l| l.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(" OR "));
        let (vendor, name) = full.split_once('/').map_or((None, full), |(v, n)| (Some(v), n));
        push_lang(inv, "composer", vendor, name, version, license, found_in.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_modules_manifests_only() {
        assert!(in_node_modules(b"app/node_modules/left-pad/package.json"));
        assert!(in_node_modules(b"node_modules/@types/node/package.json"));
        assert!(!in_node_modules(b"node_modules/left-pad/lib/package.json"));
        assert!(!in_node_modules(b"app/package.json"));
    }

    #[test]
    fn python_names_are_normalized() {
        let mut inv = Inventory::default();
        python(&mut inv, b"Metadata-Version: 2.1\nName: Foo_Bar.baz\nVersion: 1.0\nLicense: MIT\n\nbody", "/m".into());
        assert_eq!(inv.packages[0].purl, "pkg:pypi/foo-bar-baz@1.0");
        assert_eq!(inv.packages[0].license.as_deref(), Some("MIT"));
    }

    #[test]
    fn hostile_package_json_is_a_warning() {
        let mut inv = Inventory::default();
        let e = node(&mut inv, b"{not json", "/node_modules/x/package.json".into()).unwrap_err();
        assert!(e.starts_with("/node_modules/x/package.json: not a package.json (not JSON"), "{e}");
    }
}
