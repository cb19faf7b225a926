//! `diskcast inspect SRC`: the packages and libraries of any image, as a table, JSON,
//! SPDX 2.3 JSON or CycloneDX 1.6 JSON.

use crate::common::args::SourceArgs;
use crate::common::{print_json, signature_lines, threads, tree_source};
use clap::Args;
use diskcast_block::provenance::Provenance;
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result};
use diskcast_inspect::inventory::{Inventory, inventory};
use diskcast_inspect::sbom::{Made, cyclonedx, spdx};
use diskcast_tree::{FileData, Kind, ReadOptions, Tree};
use std::sync::Arc;

/// What `inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectOutput {
    /// One line per package: type, name, version, purl, where found (also `human`, the
    /// name every other command's --output gives its text report).
    #[value(alias = "human")]
    Table,
    /// The packages as JSON objects (purl, found_in, license, source, architecture).
    Json,
    /// An SPDX 2.3 JSON document.
    SpdxJson,
    /// A CycloneDX 1.6 JSON document.
    CyclonedxJson,
}

/// `diskcast inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: InspectOutput,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The image: a container image reference (oci:, oci-archive:, docker-archive:,
    /// docker://), a disk image in any format (DISK or DISK:PART), an ISO (a live ISO's
    /// squashfs root is read), a directory or a tar.
    pub src: String,
}

/// Where live ISOs keep their root filesystem image, in the order looked for (Debian
/// live, Ubuntu's casper, Fedora/RHEL LiveOS, Arch).
const LIVE_ROOTS: [&str; 5] = [
    "live/filesystem.squashfs",
    "casper/filesystem.squashfs",
    "casper/minimal.squashfs",
    "LiveOS/squashfs.img",
    "arch/x86_64/airootfs.sfs",
];

/// Runs `inspect`.
pub fn run(a: InspectArgs) -> Result<u8> {
    let provenance = Provenance::from_env()?;
    let opened = tree_source::open(&a.src, &a.source, threads(None)?)?;
    let signatures = opened.signatures;
    let (tree, mut what) = (opened.tree, opened.description);
    let tree = match live_root(&tree)? {
        Some((root, path)) => {
            what = format!("{what}, live root /{path}");
            root
        }
        None => tree,
    };
    let inv = inventory(&tree)?;
    for w in &inv.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    let made = Made {
        time: provenance.now(),
        reproducible: provenance.is_reproducible(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    match a.output {
        InspectOutput::Json => {
            let mut doc = serde_json::json!({
                "source": a.src,
                "description": what,
                "os": inv.os,
                "package_manager": inv.package_manager,
                "packages": inv.packages,
                "warnings": inv.warnings,
            });
            // Only when --verify-key asked: the image opened, so one of them verified.
            if !a.source.container.verify_keys.is_empty() {
                doc["signatures"] = serde_json::json!(signatures);
            }
            print_json(&doc)
        }
        InspectOutput::SpdxJson => print_json(&spdx(&a.src, &inv, &made)),
        InspectOutput::CyclonedxJson => print_json(&cyclonedx(&a.src, &inv, &made)),
        InspectOutput::Table => {
            table(&what, &inv);
            signature_lines(&signatures);
        }
    }
    Ok(0)
}

fn table(what: &str, inv: &Inventory) {
    println!("Source:       {what}");
    println!("OS:           {}", inv.os.as_deref().unwrap_or("unknown"));
    println!("Packages:     {}", inv.packages.len());
    for p in &inv.packages {
        println!("  {:<9} {:<40} {:<28} {}  ({})", p.kind, p.name, p.version, p.purl, p.found_in);
    }
}

/// A live ISO's root: the squashfs (or any filesystem image) at one of [`LIVE_ROOTS`],
/// when the tree has no OS of its own. Fedora's `LiveOS/squashfs.img` holds an ext4
/// `LiveOS/rootfs.img`, which is read in turn.
fn live_root(tree: &Tree) -> Result<Option<(Tree, String)>> {
    if tree.exists(b"etc/os-release") || tree.exists(b"usr/lib/os-release") || tree.exists(b"var/lib/dpkg/status") {
        return Ok(None);
    }
    for path in LIVE_ROOTS {
        let Ok(id) = tree.resolve(path.as_bytes(), true) else { continue };
        let Kind::File(f) = &tree.node(id).kind else { continue };
        let mut inner = read_image(f, path)?;
        if let Some((nested, _)) = [&b"LiveOS/rootfs.img"[..], b"LiveOS/ext3fs.img"]
            .iter()
            .find_map(|p| inner.resolve(p, true).ok().map(|id| (id, *p)))
            && let Kind::File(f) = &inner.node(nested).kind
        {
            inner = read_image(f, &format!("{path}!/LiveOS/rootfs.img"))?;
        }
        return Ok(Some((inner, path.to_string())));
    }
    Ok(None)
}

fn read_image(f: &FileData, label: &str) -> Result<Tree> {
    let disk: Arc<dyn BlockRead> = Arc::new(FileDisk(f.clone()));
    let opts = ReadOptions { tree: None, label: label.to_string() };
    Ok(diskcast_sources::read_filesystem(disk, &opts)?.0)
}

/// A file of a tree read as a disk: how a live ISO's squashfs is opened without
/// extracting it.
#[derive(Debug)]
struct FileDisk(FileData);

impl BlockRead for FileDisk {
    fn size(&self) -> u64 {
        self.0.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_at(buf, offset)
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.0.size {
            return Err(Error::out_of_bounds("extent past the end of the file").with_offset(offset));
        }
        Ok(Extent { offset, len: max_len.min(self.0.size - offset), alloc: Alloc::Data })
    }
    fn info(&self) -> ImageInfo {
        ImageInfo::default()
    }
}
