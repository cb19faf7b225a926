//! What a tree holds: the packages installed (dpkg, apk, rpm's sqlite or Berkeley DB
//! database) and the OS release. It reads any [`Tree`], so a container image, a VM disk's
//! root partition, an ISO, a directory or a tar are inspected alike.
//!
//! - [`packages`]: dpkg (`/var/lib/dpkg/status`), apk (`/lib/apk/db/installed`), rpm
//!   (`rpmdb.sqlite`, or the older Berkeley DB `Packages`, under `/var/lib/rpm` or
//!   `/usr/lib/sysimage/rpm`; see [`rpmdb`] and [`bdb`]); rpm's ndb is named, not read.
//! - [`os_release`]: `PRETTY_NAME` of `/etc/os-release` or `/usr/lib/os-release`.
//!
//! Paths are resolved inside the tree (symlinks followed there only) and every database
//! is read whole up to a named cap, so a hostile tree costs at most that much memory.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod bdb;
mod binary;
pub mod inventory;
mod jar;
pub mod purl;
pub mod rpmdb;
pub mod sbom;

use diskcast_block::Result;
use diskcast_tree::{FileType, Tree};
use serde::Serialize;

/// Largest dpkg or apk database read (Debian's full status file is a few MiB).
const MAX_DB_BYTES: u64 = 64 << 20;

/// Largest os-release file read (real ones are a few hundred bytes).
pub(crate) const MAX_OS_RELEASE: u64 = 1 << 20;

/// An installed package. Every database gives name, version and architecture; rpm also
/// gives the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version: dpkg's full version (with its epoch), apk's, or rpm's `VERSION-RELEASE`.
    pub version: String,
    /// Architecture (empty for rpm's `gpg-pubkey` entries, which have none).
    pub architecture: String,
    /// rpm's epoch, when the package sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// Installed size in bytes (rpm's `LONGSIZE`, else `SIZE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// One-line summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// License.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The source package (dpkg's `Source`, apk's origin, rpm's `SOURCERPM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Package {
    /// A package known by name, version and architecture only.
    pub fn new(name: &str, version: &str, architecture: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: architecture.into(),
            epoch: None,
            size: None,
            summary: None,
            license: None,
            source: None,
        }
    }
}

/// Where os-release is looked for, in order (the first one present counts).
pub const OS_RELEASE: [&[u8]; 2] = [b"etc/os-release", b"usr/lib/os-release"];

/// `PRETTY_NAME` from the tree's os-release, when it has one.
pub fn os_release(tree: &Tree) -> Option<String> {
    let read = |path: &[u8], max: u64| -> Result<Option<Vec<u8>>> { Ok(tree.read_optional(path, max)?) };
    pretty_name(&os_release_text(&read))
}

/// The text of the first of [`OS_RELEASE`] that `read` finds (empty when none is
/// readable): read once, for both `PRETTY_NAME` and the `ID` fields.
pub(crate) fn os_release_text(read: ReadFile<'_>) -> String {
    let bytes = OS_RELEASE.iter().find_map(|p| read(p, MAX_OS_RELEASE).ok().flatten()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `PRETTY_NAME` of an os-release text.
pub(crate) fn pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
}

/// What [`packages`] found.
#[derive(Debug, Default, Clone)]
pub struct Found {
    /// The packages, sorted by name.
    pub packages: Vec<Package>,
    /// Which database (`dpkg`, `apk`, `rpm`), or what was found and is not read.
    pub manager: Option<String>,
    /// Why the database found could not be read.
    pub error: Option<String>,
}

/// Where rpm keeps its sqlite database (Fedora 36+ moved it to /usr/lib/sysimage/rpm and
/// left /var/lib/rpm a symlink to it).
const RPMDB_SQLITE: [&[u8]; 2] = [b"var/lib/rpm/rpmdb.sqlite", b"usr/lib/sysimage/rpm/rpmdb.sqlite"];
/// Where rpm before 4.16 kept its Berkeley DB `Packages`.
const RPMDB_BDB: [&[u8]; 2] = [b"var/lib/rpm/Packages", b"usr/lib/sysimage/rpm/Packages"];
/// openSUSE Leap 15's rpm ndb database (named, not read).
const RPMDB_NDB: [&[u8]; 2] = [b"var/lib/rpm/Packages.db", b"usr/lib/sysimage/rpm/Packages.db"];
const DPKG_STATUS: &[u8] = b"var/lib/dpkg/status";
const APK_INSTALLED: &[u8] = b"lib/apk/db/installed";

/// Every file [`packages_in`] may look at, relative to the root: a reader that keeps
/// these files' bytes as it passes them (a container layer's scan) can answer it.
pub const DB_FILES: [&[u8]; 10] = [
    DPKG_STATUS,
    APK_INSTALLED,
    RPMDB_SQLITE[0],
    RPMDB_SQLITE[1],
    b"var/lib/rpm/rpmdb.sqlite-wal",
    b"usr/lib/sysimage/rpm/rpmdb.sqlite-wal",
    RPMDB_BDB[0],
    RPMDB_BDB[1],
    RPMDB_NDB[0],
    RPMDB_NDB[1],
];

/// The installed packages, from whichever database the image has (dpkg, apk, rpm's
/// sqlite, rpm's Berkeley DB). A damaged rpm database is reported in [`Found::error`]
/// rather than failing the whole inspection.
pub fn packages(tree: &Tree) -> Result<Found> {
    let read = |path: &[u8], max: u64| -> Result<Option<Vec<u8>>> { Ok(tree.read_optional(path, max)?) };
    let is_file = |path: &[u8]| tree.metadata(path).is_ok_and(|m| m.file_type == FileType::File);
    packages_in(&read, &is_file)
}

/// Reads a file of the tree up to a cap (an error past it): `None` when there is none.
pub type ReadFile<'a> = &'a dyn Fn(&[u8], u64) -> Result<Option<Vec<u8>>>;

/// [`packages`] over any reader of the [`DB_FILES`]: `read(path, max)` gives a file's
/// bytes (an error past `max`), `None` when there is none; `is_file(path)` says whether
/// a regular file is there.
pub fn packages_in(read: ReadFile<'_>, is_file: &dyn Fn(&[u8]) -> bool) -> Result<Found> {
    if let Some(b) = read(DPKG_STATUS, MAX_DB_BYTES)? {
        return Ok(Found {
            packages: parse_dpkg(&String::from_utf8_lossy(&b)),
            manager: Some("dpkg".into()),
            error: None,
        });
    }
    if let Some(b) = read(APK_INSTALLED, MAX_DB_BYTES)? {
        return Ok(Found {
            packages: parse_apk(&String::from_utf8_lossy(&b)),
            manager: Some("apk".into()),
            error: None,
        });
    }
    // rpm 4.16+ (sqlite), then rpm before 4.16 (RHEL/CentOS 7 and 8, older Fedora: a
    // Berkeley DB hash file); the first one present is read.
    let rpm = RPMDB_SQLITE.iter().map(|p| (*p, true)).chain(RPMDB_BDB.iter().map(|p| (*p, false)));
    for (path, sqlite) in rpm {
        let shown = format!("/{}", String::from_utf8_lossy(path));
        let read = || -> Result<Option<Vec<Package>>> {
            let max = if sqlite { crate::rpmdb::MAX_DB_BYTES } else { crate::rpmdb::MAX_BDB_BYTES };
            let Some(main) = read(path, max)? else { return Ok(None) };
            if !sqlite {
                return crate::rpmdb::read_bdb(&shown, &main).map(Some);
            }
            let mut wal_path = path.to_vec();
            wal_path.extend_from_slice(b"-wal");
            let wal = read(&wal_path, max)?;
            crate::rpmdb::read_sqlite(&shown, main, wal).map(Some)
        };
        let rpm = Some("rpm".to_string());
        match read() {
            Ok(None) => continue,
            Ok(Some(packages)) => return Ok(Found { packages, manager: rpm, error: None }),
            Err(e) => return Ok(Found { packages: Vec::new(), manager: rpm, error: Some(e.to_string()) }),
        }
    }
    // openSUSE Leap 15's rpm: its own "ndb" format. Named, not read.
    for path in RPMDB_NDB {
        if is_file(path) {
            return Ok(Found {
                packages: Vec::new(),
                manager: Some("rpm".into()),
                error: Some(format!(
                    "/{} is an rpm ndb database (openSUSE Leap 15), which is not read; rpm's sqlite and \
                     Berkeley DB databases are",
                    String::from_utf8_lossy(path)
                )),
            });
        }
    }
    Ok(Found::default())
}

/// dpkg's status file: RFC 822-style paragraphs; only `install ok installed` counts.
pub fn parse_dpkg(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut name = "";
        let mut version = "";
        let mut arch = "";
        let mut source = None;
        let mut installed = false;
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = v.trim();
            } else if let Some(v) = line.strip_prefix("Architecture:") {
                arch = v.trim();
            } else if let Some(v) = line.strip_prefix("Source:") {
                // `Source: NAME (VERSION)` when the source version differs.
                source = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status:") {
                installed = v.split_whitespace().last() == Some("installed");
            }
        }
        if installed && !name.is_empty() {
            let mut p = Package::new(name, version, arch);
            p.source = source;
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// apk's installed database: blank-line separated records of `K:value` lines.
pub fn parse_apk(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut p = Package::new("", "", "");
        for line in para.lines() {
            match line.split_once(':') {
                Some(("P", v)) => p.name = v.to_string(),
                Some(("V", v)) => p.version = v.to_string(),
                Some(("A", v)) => p.architecture = v.to_string(),
                Some(("o", v)) => p.source = Some(v.to_string()),
                Some(("L", v)) => p.license = Some(v.to_string()),
                _ => {}
            }
        }
        if !p.name.is_empty() {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_and_apk_databases() {
        let dpkg = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\nArchitecture: amd64\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b7\n";
        let p = parse_dpkg(dpkg);
        assert_eq!(p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["bash", "zlib1g"]);
        assert_eq!(p[0].version, "5.2.15-2+b7");
        let apk = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nT:the musl c library\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n";
        let p = parse_apk(apk);
        assert_eq!(p[0], Package::new("busybox", "1.36.1-r5", "x86_64"));
        assert_eq!(p.len(), 2);
    }
}
