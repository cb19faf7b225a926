//! `oci inspect`: what an image is made of. The layers are read once (to measure them
//! and to check their digests), flattened, and the result inspected as any tree is
//! ([`diskcast_inspect`]: installed packages, OS release).

use crate::digest::Digest;
use crate::flatten::{Flattened, Flattener, scan_all};
use crate::image::Image;
use crate::spec::{History, Platform, RunConfig};
use diskcast_block::Result;
use diskcast_inspect::{Package, os_release, packages};
use serde::Serialize;

/// Everything `oci inspect` shows.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The reference it was opened from.
    pub source: String,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// True for legacy `docker save` archives, which carry no manifest.
    pub manifest_synthesized: bool,
    /// The manifest media type.
    pub media_type: Option<String>,
    /// The config digest.
    pub config_digest: Digest,
    /// OS and architecture.
    pub platform: Platform,
    /// When the image was made.
    pub created: Option<String>,
    /// Who made it.
    pub author: Option<String>,
    /// Run-time defaults.
    pub config: RunConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// The build history, with the layer each step made.
    pub history: Vec<HistoryReport>,
    /// Totals of the flattened root filesystem.
    pub rootfs: diskcast_tree::TreeStats,
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os_release: Option<String>,
    /// Packages installed in the flattened image.
    pub packages: Vec<Package>,
    /// Where the package list came from (`dpkg`, `apk`, `rpm`), or why there is none.
    pub package_manager: Option<String>,
    /// Why the package database that was found could not be read (the rest of the
    /// report stands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_error: Option<String>,
    /// Members of the layers that were skipped (as [`crate::flatten::Flattened`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One layer.
#[derive(Debug, Serialize)]
pub struct LayerReport {
    /// Blob digest.
    pub digest: Digest,
    /// Media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed tar size.
    pub uncompressed_size: u64,
    /// Digest of the uncompressed tar (checked).
    pub diff_id: Option<Digest>,
    /// Members of the tar.
    pub entries: usize,
    /// Whiteouts and opaque markers among them.
    pub whiteouts: usize,
}

/// One history step.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    /// When.
    pub created: Option<String>,
    /// The command.
    pub created_by: Option<String>,
    /// Comment.
    pub comment: Option<String>,
    /// True when the step made no layer.
    pub empty_layer: bool,
    /// Which layer (index) it made.
    pub layer: Option<usize>,
}

/// Reads every layer, flattens, and gathers the report.
pub fn inspect(image: &Image, threads: usize) -> Result<Report> {
    let scanned = scan_all(image, threads)?;
    let mut flat = Flattener::new(image, &scanned)?;
    let mut layers = Vec::with_capacity(scanned.len());
    for (layer, s) in image.layers.iter().zip(&scanned) {
        flat.apply(s)?;
        layers.push(LayerReport {
            digest: layer.descriptor.digest.clone(),
            media_type: layer.descriptor.media_type.clone(),
            size: layer.descriptor.size,
            uncompressed_size: s.uncompressed,
            diff_id: layer.diff_id.clone(),
            entries: s.entries.len(),
            whiteouts: s
                .entries
                .iter()
                .filter(|m| {
                    m.path.rsplit(|&b| b == b'/').find(|c| !c.is_empty()).is_some_and(|n| n.starts_with(b".wh."))
                })
                .count(),
        });
    }
    let history = history(&image.config.history, image.layers.len());
    let Flattened { tree, warnings } = flat.finish();
    let found = packages(&tree)?;
    Ok(Report {
        source: image.source.clone(),
        manifest_digest: image.manifest_digest.clone(),
        manifest_synthesized: image.manifest_synthesized,
        media_type: image.manifest.media_type.clone(),
        config_digest: image.config_digest.clone(),
        platform: image.platform(),
        created: image.config.created.clone(),
        author: image.config.author.clone(),
        config: image.config.config.clone().unwrap_or_default(),
        layers,
        history,
        rootfs: tree.stats(),
        os_release: os_release(&tree),
        packages: found.packages,
        package_manager: found.manager,
        package_error: found.error,
        warnings,
    })
}

fn history(h: &[History], layers: usize) -> Vec<HistoryReport> {
    let mut next = 0;
    h.iter()
        .map(|e| {
            let layer = if e.empty_layer || next >= layers {
                None
            } else {
                next += 1;
                Some(next - 1)
            };
            HistoryReport {
                created: e.created.clone(),
                created_by: e.created_by.clone(),
                comment: e.comment.clone(),
                empty_layer: e.empty_layer,
                layer,
            }
        })
        .collect()
}
