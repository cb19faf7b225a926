//! Each ecosystem's version order, one module each, each tested against its reference
//! implementation (tests/versions.rs).

pub mod apk;
pub mod composer;
pub mod dpkg;
pub mod maven;
pub mod pep440;
pub mod rpm;
pub mod rubygems;
pub mod semver;

use std::cmp::Ordering;

/// A version order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Debian and Ubuntu (`dpkg --compare-versions`).
    Dpkg,
    /// The Red Hat family, SUSE (`rpm.vercmp`).
    Rpm,
    /// Alpine (`apk version -t`).
    Apk,
    /// PyPI (PEP 440).
    Pep440,
    /// npm, Go, crates.io, and OSV's `SEMVER` ranges.
    Semver,
    /// Maven's `ComparableVersion`.
    Maven,
    /// RubyGems (`Gem::Version`).
    RubyGems,
    /// Packagist (Composer's normalization, then `version_compare`).
    Composer,
}

impl Scheme {
    /// Compares two versions in this order.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Dpkg => dpkg::compare(a, b),
            Scheme::Rpm => rpm::compare(a, b),
            Scheme::Apk => apk::compare(a, b),
            Scheme::Pep440 => pep440::compare(a, b),
            Scheme::Semver => semver::compare(a, b),
            Scheme::Maven => maven::compare(a, b),
            Scheme::RubyGems => rubygems::compare(a, b),
            Scheme::Composer => composer::compare(a, b),
        }
    }
}
