//! Offline vulnerability matching: OSV advisories ([`osv`]) matched ([`matcher`]) against
//! the packages `diskcast inspect` lists, with each ecosystem's own version order
//! ([`versions`]) and CVSS v2, v3 and v4.0 scores computed from their vectors ([`cvss`]);
//! osv.dev's database zips fetched into a directory ([`update`]).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod cvss;
pub mod matcher;
pub mod osv;
pub mod report;
pub mod update;
pub mod versions;
