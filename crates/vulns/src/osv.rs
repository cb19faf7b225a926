//! OSV advisories (<https://ossf.github.io/osv-schema/>) and the database they come in:
//! a directory of `*.json` files (optionally one subdirectory per ecosystem) and of zips
//! of them (as `vulndb update` lays them out: `all.zip`, `ECOSYSTEM/all.zip`), or one zip
//! (osv.dev's `all.zip` or one ecosystem's `ECOSYSTEM/all.zip`). Each advisory
//! is parsed on its own: a file that is not JSON, not an advisory or over a cap is a
//! warning naming it, and the rest is still read. The database is streamed: an advisory
//! is handed to the caller and dropped, so memory stays at one advisory.

use crate::versions::Scheme;
use diskcast_layout::u64_from_usize;
use serde::Deserialize;
use serde_json::Value;
use std::cmp::Ordering;
use std::io::Read;
use std::path::Path;

/// Largest advisory file read (osv.dev's largest are a few hundred KiB: long `versions`
/// lists of PyPI and Maven packages).
pub const MAX_ADVISORY_BYTES: u64 = 16 << 20;
/// Most files read from one database (osv.dev's `all.zip` holds about half a million).
pub const MAX_FILES: usize = 4 << 20;
/// Most bytes read or inflated from one database in all (all of osv.dev is a few GiB).
pub const MAX_DB_BYTES: u64 = 64 << 30;
/// Most events in one range, and most `affected` entries in one advisory: real ones have
/// a handful; a range is evaluated in `n log n` of its events.
pub const MAX_EVENTS: usize = 1 << 16;
/// Deepest directory read below the database directory (`ECOSYSTEM/ID.json` is 1).
pub const MAX_DEPTH: usize = 4;

/// A list given as `null` is an empty list (some exporters write `"aliases": null`).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// One advisory.
#[derive(Debug, Clone, Deserialize)]
pub struct Advisory {
    /// `GHSA-...`, `DSA-...`, `PYSEC-...`, `CVE-...`.
    pub id: String,
    /// Other ids of the same vulnerability (CVE).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub aliases: Vec<String>,
    /// Upstream ids this advisory derives from (Debian's `DEBIAN-CVE-*` and Ubuntu's
    /// entries name their CVE here).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub upstream: Vec<String>,
    /// One line.
    #[serde(default)]
    pub summary: Option<String>,
    /// Longer text; its first line stands in for a missing summary.
    #[serde(default)]
    pub details: Option<String>,
    /// When set, the advisory was withdrawn and is not matched.
    #[serde(default)]
    pub withdrawn: Option<String>,
    /// `[{type: CVSS_V3, score: VECTOR}]`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub severity: Vec<SeverityEntry>,
    /// The packages and versions affected.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub affected: Vec<Affected>,
    /// Database-specific fields (`severity` in GitHub's).
    #[serde(default)]
    pub database_specific: Option<Value>,
}

/// One `severity[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct SeverityEntry {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The vector, or a word.
    #[serde(default)]
    pub score: String,
}

/// One `affected[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Affected {
    /// Which package.
    #[serde(default)]
    pub package: Option<PackageRef>,
    /// Version ranges.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub ranges: Vec<Range>,
    /// Versions listed one by one.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub versions: Vec<String>,
    /// Ecosystem-specific fields (`severity` in some).
    #[serde(default)]
    pub ecosystem_specific: Option<Value>,
    /// Database-specific fields.
    #[serde(default)]
    pub database_specific: Option<Value>,
    /// Per-package severity (OSV 1.6).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub severity: Vec<SeverityEntry>,
}

/// `affected[].package`.
#[derive(Debug, Clone, Deserialize)]
pub struct PackageRef {
    /// `Debian:12`, `PyPI`, `npm`...
    #[serde(default)]
    pub ecosystem: String,
    /// The package name as the ecosystem writes it.
    #[serde(default)]
    pub name: String,
    /// Its purl, when given.
    #[serde(default)]
    pub purl: Option<String>,
}

/// `affected[].ranges[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    /// `ECOSYSTEM`, `SEMVER` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The events.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub events: Vec<Event>,
}

/// One range event: exactly one of the fields is set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Event {
    /// Affected from this version on (`0`: from the first).
    #[serde(default)]
    pub introduced: Option<String>,
    /// Fixed in this version.
    #[serde(default)]
    pub fixed: Option<String>,
    /// The last affected version.
    #[serde(default)]
    pub last_affected: Option<String>,
    /// No version at or above this is in the range.
    #[serde(default)]
    pub limit: Option<String>,
}

/// An event's kind, in the order events at one version are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Introduced,
    LastAffected,
    Fixed,
    Limit,
}

impl Event {
    fn kind_version(&self) -> Result<(EventKind, &str), String> {
        let set: Vec<(EventKind, &str)> = [
            (EventKind::Introduced, &self.introduced),
            (EventKind::Fixed, &self.fixed),
            (EventKind::LastAffected, &self.last_affected),
            (EventKind::Limit, &self.limit),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect();
        match set.as_slice() {
            [(k, v)] if !v.trim().is_empty() => Ok((*k, v)),
            _ => Err("an event must set exactly one of introduced, fixed, last_affected, limit".into()),
        }
    }
}

/// What a range says of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRange {
    /// The version is in the range.
    pub affected: bool,
    /// The lowest `fixed` event above the version, when there is one.
    pub fixed: Option<String>,
}

/// Whether `version` is in the range of `events`, in the order `scheme`, as OSV's
/// evaluation rules say: events sorted by version (`introduced: 0` first), the version is
/// affected when the last event at or below it is an `introduced` (a `last_affected` event
/// counts only strictly below it), and never at or above a `limit`. Events may come in any
/// order, several `introduced` included. A malformed event is an error.
pub fn in_range(scheme: Scheme, events: &[Event], version: &str) -> Result<InRange, String> {
    if events.len() > MAX_EVENTS {
        return Err(format!("{} events, more than the MAX_EVENTS cap ({MAX_EVENTS})", events.len()));
    }
    let mut list = Vec::with_capacity(events.len());
    for e in events {
        list.push(e.kind_version()?);
    }
    if !list.iter().any(|(k, _)| *k == EventKind::Introduced) {
        return Err("a range without an introduced event".into());
    }
    let cmp = |a: &str, b: &str| match (a, b) {
        ("0", "0") => Ordering::Equal,
        ("0", _) => Ordering::Less,
        (_, "0") => Ordering::Greater,
        _ => scheme.compare(a, b),
    };
    list.sort_by(|(ka, va), (kb, vb)| cmp(va, vb).then(ka.cmp(kb)));
    let mut affected = false;
    for (k, v) in &list {
        match k {
            EventKind::Introduced if *v == "0" || cmp(version, v).is_ge() => affected = true,
            EventKind::Fixed if cmp(version, v).is_ge() => affected = false,
            EventKind::LastAffected if cmp(version, v).is_gt() => affected = false,
            EventKind::Limit if cmp(version, v).is_ge() => affected = false,
            _ => {}
        }
    }
    let fixed = list
        .iter()
        .filter(|(k, v)| *k == EventKind::Fixed && cmp(v, version).is_gt())
        .map(|(_, v)| v.to_string())
        .next();
    Ok(InRange { affected, fixed })
}

/// Parses one advisory file.
pub fn parse(bytes: &[u8]) -> Result<Advisory, String> {
    let a: Advisory = serde_json::from_slice(bytes).map_err(|e| format!("not an OSV advisory: {e}"))?;
    if a.id.trim().is_empty() {
        return Err("an advisory without an id".into());
    }
    if a.affected.len() > MAX_EVENTS {
        return Err(format!("{} affected entries, more than the MAX_EVENTS cap ({MAX_EVENTS})", a.affected.len()));
    }
    Ok(a)
}

/// How much of a database was read.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DbStats {
    /// Advisory files parsed.
    pub advisories: usize,
    /// Withdrawn advisories (not matched).
    pub withdrawn: usize,
    /// GIT ranges (commit ranges: no version order to apply; skipped).
    pub git_ranges: usize,
    /// ECOSYSTEM ranges of ecosystems without a version order here (none of the matched
    /// ecosystems today): only their explicit `versions` lists are matched.
    pub unordered_ranges: usize,
}

/// Reads every advisory of the database at `path` (a directory or a zip), calling
/// `each(file, advisory)` for each one parsed; `warn` gets one message per file that
/// could not be read or parsed (naming it). An error is a database that cannot be
/// opened at all.
pub fn read_db(
    path: &Path,
    mut each: impl FnMut(&str, Advisory),
    mut warn: impl FnMut(String),
) -> Result<usize, String> {
    let shown = path.display().to_string();
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut count = 0usize;
    let mut one = |name: &str, bytes: std::result::Result<Vec<u8>, String>| {
        count += 1;
        match bytes.and_then(|b| parse(&b)) {
            Ok(a) => each(name, a),
            Err(e) => warn(format!("{name}: {e}")),
        }
    };
    if meta.is_dir() {
        read_dir(path, &mut one)?;
    } else if meta.is_file() {
        read_zip(path, &mut one)?;
    } else {
        return Err(format!("{shown}: not a directory or a zip file (a symlink is not followed)"));
    }
    Ok(count)
}

/// What each database file is handed to: its name and its bytes, or why they could not
/// be read.
type OneFile<'a> = dyn FnMut(&str, Result<Vec<u8>, String>) + 'a;

/// Running totals over a whole database (a directory may hold several zips).
#[derive(Debug, Default)]
struct Totals {
    files: usize,
    bytes: u64,
}

impl Totals {
    /// Counts one file of `size` bytes; an error past [`MAX_FILES`] or [`MAX_DB_BYTES`].
    fn add(&mut self, size: u64, db: &str) -> Result<(), String> {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
        if self.files > MAX_FILES || self.bytes > MAX_DB_BYTES {
            return Err(format!(
                "{db}: more than the MAX_FILES ({MAX_FILES} files) or MAX_DB_BYTES ({MAX_DB_BYTES} bytes) cap"
            ));
        }
        Ok(())
    }
}

/// The `*.json` files of a directory tree, and the `*.zip` files in it (`vulndb
/// update` writes `all.zip` and `ECOSYSTEM/all.zip`), read through diskcast's host
/// directory reader (nothing followed, each file opened beneath its directory).
fn read_dir(path: &Path, one: &mut OneFile<'_>) -> Result<(), String> {
    let tree = diskcast_host::read_dir(path, &diskcast_host::DirOptions::default()).map_err(|e| e.to_string())?;
    let shown = path.display().to_string();
    let mut totals = Totals::default();
    for (rel, id) in tree.walk(diskcast_tree::NodeId::ROOT) {
        let zip = rel.ends_with(b".zip");
        if !rel.ends_with(b".json") && !zip {
            continue;
        }
        let name = format!("{shown}/{}", String::from_utf8_lossy(&rel));
        let f = match &tree.node(id).kind {
            diskcast_tree::Kind::File(f) => f,
            diskcast_tree::Kind::Symlink(_) => {
                one(&name, Err("a symlink, which is not followed".into()));
                continue;
            }
            _ => continue,
        };
        if rel.iter().filter(|&&c| c == b'/').count() > MAX_DEPTH {
            one(&name, Err(format!("deeper than the MAX_DEPTH cap ({MAX_DEPTH}): not read")));
            continue;
        }
        if zip {
            // Opened beneath the directory, checked to be the file scanned.
            let opened = match &f.content {
                diskcast_tree::Content::Host(h) => h.open().map_err(|e| e.to_string()),
                _ => Err("not a host file".to_string()),
            };
            // A zip that cannot be opened is a warning like any bad file; the rest is read.
            match opened.and_then(|img| img.file().try_clone().map_err(|e| e.to_string())) {
                Ok(file) => match open_zip(file) {
                    Ok(z) => read_members(z, &name, one, &mut totals)?,
                    Err(e) => one(&name, Err(e)),
                },
                Err(e) => one(&name, Err(format!("cannot open: {e}"))),
            }
            continue;
        }
        totals.add(f.size, &shown)?;
        if f.size > MAX_ADVISORY_BYTES {
            one(&name, Err(format!("{} bytes, more than the MAX_ADVISORY_BYTES cap ({MAX_ADVISORY_BYTES})", f.size)));
            continue;
        }
        one(&name, tree.read(&rel, MAX_ADVISORY_BYTES).map_err(|e| e.to_string()));
    }
    Ok(())
}

/// The `*.json` members of the zip at `path`.
fn read_zip(path: &Path, one: &mut OneFile<'_>) -> Result<(), String> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let zip = open_zip(file).map_err(|e| format!("{shown}: {e}"))?;
    read_members(zip, &shown, one, &mut Totals::default())
}

type Zip = zip::ZipArchive<std::io::BufReader<std::fs::File>>;

/// A zip's central directory read.
fn open_zip(file: std::fs::File) -> Result<Zip, String> {
    let zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| format!("not a zip or a directory: {e}"))?;
    if zip.len() > MAX_FILES {
        return Err(format!("{} members, more than the MAX_FILES cap ({MAX_FILES})", zip.len()));
    }
    Ok(zip)
}

/// The `*.json` members of a zip (`shown` in messages), each inflated to at most
/// [`MAX_ADVISORY_BYTES`].
fn read_members(mut zip: Zip, shown: &str, one: &mut OneFile<'_>, totals: &mut Totals) -> Result<(), String> {
    for i in 0..zip.len() {
        let mut member = match zip.by_index(i) {
            Ok(m) => m,
            Err(e) => {
                one(&format!("{shown}!/#{i}"), Err(format!("damaged zip member: {e}")));
                continue;
            }
        };
        if member.is_dir() || !member.name().ends_with(".json") {
            continue;
        }
        let name = format!("{shown}!/{}", member.name());
        if member.size() > MAX_ADVISORY_BYTES {
            one(
                &name,
                Err(format!("{} bytes, more than the MAX_ADVISORY_BYTES cap ({MAX_ADVISORY_BYTES})", member.size())),
            );
            continue;
        }
        // The size in the header may lie: the read stops at the cap all the same.
        let mut bytes = Vec::new();
        let read = (&mut member).take(MAX_ADVISORY_BYTES + 1).read_to_end(&mut bytes);
        totals.add(u64_from_usize(bytes.len()), &format!("{shown} (inflated)"))?;
        let bytes = match read {
            Err(e) => Err(format!("damaged zip member: {e}")),
            Ok(_) if u64_from_usize(bytes.len()) > MAX_ADVISORY_BYTES => {
                Err(format!("more than the MAX_ADVISORY_BYTES cap ({MAX_ADVISORY_BYTES}) inflated"))
            }
            Ok(_) => Ok(bytes),
        };
        one(&name, bytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, v: &str) -> Event {
        let mut e = Event::default();
        let s = Some(v.to_string());
        match kind {
            "i" => e.introduced = s,
            "f" => e.fixed = s,
            "l" => e.last_affected = s,
            _ => e.limit = s,
        }
        e
    }

    #[test]
    fn ranges_in_any_order() {
        // Two introduced/fixed pairs, given out of order.
        let events = [ev("f", "1.5"), ev("i", "2.0"), ev("i", "1.0"), ev("f", "2.3")];
        let at = |v: &str| in_range(Scheme::Semver, &events, v).unwrap();
        assert!(!at("0.9.0").affected);
        assert_eq!(at("1.2.0"), InRange { affected: true, fixed: Some("1.5".into()) });
        assert!(!at("1.5.0").affected);
        assert!(!at("1.9.9").affected);
        assert_eq!(at("2.1.0"), InRange { affected: true, fixed: Some("2.3".into()) });
        assert!(!at("2.3.0").affected);
        let last = [ev("i", "0"), ev("l", "1:2.0-1")];
        assert!(in_range(Scheme::Dpkg, &last, "2.0-1").unwrap().affected);
        assert!(in_range(Scheme::Dpkg, &last, "1:2.0-1").unwrap().affected);
        assert!(!in_range(Scheme::Dpkg, &last, "1:2.0-1+b1").unwrap().affected);
        let limit = [ev("i", "0"), ev("lim", "3.0")];
        assert!(in_range(Scheme::Pep440, &limit, "2.9").unwrap().affected);
        assert!(!in_range(Scheme::Pep440, &limit, "3.0").unwrap().affected);
        assert_eq!(
            in_range(Scheme::Semver, &[ev("f", "1.0")], "0.1.0").unwrap_err(),
            "a range without an introduced event"
        );
        assert_eq!(
            in_range(Scheme::Semver, &[Event::default()], "0.1.0").unwrap_err(),
            "an event must set exactly one of introduced, fixed, last_affected, limit"
        );
    }

    #[test]
    fn nulls_and_missing_fields_are_empty() {
        let a = parse(
            br#"{"id": "X-1", "aliases": null, "severity": [{"type": "CVSS_V4"}],
            "affected": [{"package": {"ecosystem": "npm", "name": "x"}, "ranges": null, "versions": null}]}"#,
        )
        .unwrap();
        assert!(a.aliases.is_empty() && a.affected[0].ranges.is_empty() && a.severity[0].score.is_empty());
        assert_eq!(parse(b"{\"id\": \"\"}").unwrap_err(), "an advisory without an id");
    }
}
