//! `diskcast inspect SRC`: the packages and libraries of any image, as a table, JSON,
//! SPDX 2.3 JSON or CycloneDX 1.6 JSON.

use crate::common::args::SourceArgs;
use crate::common::{print_json, signature_lines, threads, tree_source};
use clap::Args;
use diskcast_block::provenance::Provenance;
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result};
use diskcast_inspect::inventory::{Inventory, inventory};
use diskcast_inspect::sbom::{Made, component_ref, cyclonedx, spdx};
use diskcast_oci::inspect::{LayerReport, Report};
use diskcast_oci::sigstore::SignatureCheck;
use diskcast_tree::{FileData, Kind, ReadOptions, Tree};
use diskcast_vulns::cvss::Severity;
use diskcast_vulns::matcher::{Finding, Index, Matcher};
use diskcast_vulns::osv::{DbStats, read_db};
use std::path::PathBuf;
use std::sync::Arc;

/// What `inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectOutput {
    /// One line per package: type, name, version, purl, where found (and for a
    /// container image its manifest, config, layers and the layer of each package; also
    /// `human`, the name every other command's --output gives its text report).
    #[value(alias = "human")]
    Table,
    /// The packages as JSON objects (purl, found_in, license, source, architecture, and
    /// for a container image the layer that added each, with the image's layers).
    Json,
    /// An SPDX 2.3 JSON document.
    SpdxJson,
    /// A CycloneDX 1.6 JSON document.
    CyclonedxJson,
}

/// The least severity `--fail-on` exits 3 for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Any finding, its severity known or not (the default).
    Unknown,
    /// Low and above.
    Low,
    /// Medium and above.
    Medium,
    /// High and above.
    High,
    /// Critical only.
    Critical,
}

impl FailOn {
    fn severity(self) -> Severity {
        match self {
            FailOn::Unknown => Severity::Unknown,
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

/// Exit status when the image has a vulnerable package (at or above `--fail-on`).
pub const EXIT_VULNERABLE: u8 = 3;

/// Most database warnings kept and shown: a database of a million broken files says
/// so in one line past these.
const MAX_DB_WARNINGS: usize = 1000;

/// `diskcast inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: InspectOutput,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Match the packages against the OSV advisories in DIR (`*.json` and zips of them,
    /// one subdirectory per ecosystem allowed, as `diskcast vulndb update DIR` fetches
    /// them) or in ZIP (osv.dev's all.zip or an ecosystem's zip); exit 3 when a package is
    /// affected.
    #[arg(long, value_name = "DIR|ZIP")]
    pub vuln_db: Option<PathBuf>,
    /// With --vuln-db: exit 3 only for findings at least this severe (a finding whose
    /// advisory gives no severity counts as unknown, below low).
    #[arg(long, value_enum, value_name = "SEVERITY", requires = "vuln_db")]
    pub fail_on: Option<FailOn>,
    /// The image: a container image reference (oci:, oci-archive:, docker-archive:,
    /// docker://), a disk image in any format (DISK, DISK:PART or DISK:VG/LV), an ISO (a live ISO's
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

/// What `inspect` read from its source, whatever the source.
struct Found {
    read: Read,
    /// The signatures `--verify-key` checked.
    signatures: Vec<SignatureCheck>,
}

enum Read {
    /// A tree source, as the table describes it, and its packages.
    Tree { what: String, inventory: Inventory },
    /// A container image: manifest, config, layers, history and packages.
    Image(Box<Report>),
}

impl Read {
    fn inventory(&self) -> &Inventory {
        match self {
            Read::Tree { inventory, .. } => inventory,
            Read::Image(report) => &report.inventory,
        }
    }

    fn inventory_mut(&mut self) -> &mut Inventory {
        match self {
            Read::Tree { inventory, .. } => inventory,
            Read::Image(report) => &mut report.inventory,
        }
    }
}

/// Runs `inspect`.
pub fn run(a: InspectArgs) -> Result<u8> {
    let provenance = Provenance::from_env()?;
    let made = Made {
        time: provenance.now(),
        reproducible: provenance.is_reproducible(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut found = if diskcast_oci::is_image_ref(&a.src) { container(&a)? } else { tree(&a)? };
    let inv = found.read.inventory_mut();
    for w in &inv.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    let vulns = match &a.vuln_db {
        Some(db) => {
            let v = vulnerabilities(db, inv)?;
            for w in &v.warnings {
                eprintln!("diskcast: warning: {w}");
            }
            inv.warnings.extend(v.warnings.iter().cloned());
            Some(v)
        }
        None => None,
    };
    let inv = found.read.inventory();
    match a.output {
        InspectOutput::Json => {
            let mut doc = match &found.read {
                Read::Image(report) => serde_json::to_value(report).map_err(|e| Error::invalid(e.to_string()))?,
                Read::Tree { what, .. } => serde_json::json!({
                    "source": a.src,
                    "description": what,
                    "os": inv.os,
                    "package_manager": inv.package_manager,
                    "packages": inv.packages,
                    "warnings": inv.warnings,
                }),
            };
            // Only when --verify-key asked: the image opened, so one of them verified.
            if !a.source.container.verify_keys.is_empty() {
                doc["signatures"] = serde_json::json!(found.signatures);
            }
            if let Some(v) = &vulns {
                doc["vulnerabilities"] = serde_json::json!(v.findings);
                let mut db = serde_json::json!(v.stats);
                db["path"] = serde_json::json!(v.path);
                db["files"] = serde_json::json!(v.files);
                doc["vuln_db"] = db;
            }
            print_json(&doc)
        }
        InspectOutput::SpdxJson => print_json(&spdx(&a.src, inv, &made)),
        InspectOutput::CyclonedxJson => {
            let mut doc = cyclonedx(&a.src, inv, &made);
            if let Some(v) = &vulns {
                doc["vulnerabilities"] =
                    serde_json::json!(diskcast_vulns::report::cyclonedx(&v.findings, component_ref));
            }
            print_json(&doc)
        }
        InspectOutput::Table => {
            match &found.read {
                Read::Image(report) => {
                    image_table(report);
                    packages_table(inv, Some(&report.layers));
                }
                Read::Tree { what, .. } => table(what, inv),
            }
            signature_lines(&found.signatures);
            if let Some(v) = &vulns {
                vuln_table(v);
            }
        }
    }
    let threshold = a.fail_on.unwrap_or(FailOn::Unknown).severity();
    let vulnerable = vulns.is_some_and(|v| v.findings.iter().any(|f| f.severity >= threshold));
    Ok(if vulnerable { EXIT_VULNERABLE } else { 0 })
}

/// `inspect` of any tree source (a live ISO through its root filesystem image).
fn tree(a: &InspectArgs) -> Result<Found> {
    let opened = tree_source::open(&a.src, &a.source, threads(None)?)?;
    let (tree, mut what) = (opened.tree, opened.description);
    let tree = match live_root(&tree)? {
        Some((root, path)) => {
            what = format!("{what}, live root /{path}");
            root
        }
        None => tree,
    };
    Ok(Found { read: Read::Tree { what, inventory: inventory(&tree)? }, signatures: opened.signatures })
}

/// What `--vuln-db` found.
#[derive(Debug)]
struct Vulns {
    path: String,
    files: usize,
    findings: Vec<Finding>,
    stats: DbStats,
    warnings: Vec<String>,
}

/// Matches the inventory against every advisory of the database, read once, one
/// advisory at a time.
fn vulnerabilities(db: &std::path::Path, inv: &Inventory) -> Result<Vulns> {
    let index = Index::new(&inv.packages, &inv.os_id);
    let mut m = Matcher::new(&index, &inv.packages);
    let mut warnings = Vec::new();
    let mut dropped = 0usize;
    let files = read_db(
        db,
        |file, adv| m.advisory(file, &adv),
        |w| {
            if warnings.len() < MAX_DB_WARNINGS {
                warnings.push(w);
            } else {
                dropped += 1;
            }
        },
    )
    .map_err(|e| Error::argument(format!("--vuln-db: {e}")))?;
    let (findings, stats, mut more) = m.finish();
    more.truncate(MAX_DB_WARNINGS);
    warnings.extend(more);
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} more database files could not be read (past the MAX_DB_WARNINGS cap of {MAX_DB_WARNINGS} shown)"
        ));
    }
    Ok(Vulns { path: db.display().to_string(), files, findings, stats, warnings })
}

fn vuln_table(v: &Vulns) {
    let count = |s: Severity| v.findings.iter().filter(|f| f.severity == s).count();
    let by: Vec<String> = [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Unknown]
        .iter()
        .filter(|&&s| count(s) > 0)
        .map(|&s| format!("{} {}", count(s), s.name()))
        .collect();
    println!();
    println!(
        "Vulnerabilities: {}{} ({} advisories in {})",
        v.findings.len(),
        if by.is_empty() { String::new() } else { format!(" ({})", by.join(", ")) },
        v.stats.advisories,
        v.path
    );
    for f in &v.findings {
        let fixed = f.fixed.as_deref().map_or("(no fix)".to_string(), |x| format!("fixed in {x}"));
        let aliases = if f.aliases.is_empty() { String::new() } else { format!(" [{}]", f.aliases.join(", ")) };
        let score = f.score.map_or(String::new(), |s| format!(" {s:.1}"));
        println!(
            "  {:<8}{:<5} {:<22} {:<28} {:<24} {}{}  {}",
            f.severity.name(),
            score,
            f.id,
            f.package,
            f.installed,
            fixed,
            aliases,
            f.summary
        );
    }
}

fn table(what: &str, inv: &Inventory) {
    println!("Source:       {what}");
    println!("OS:           {}", inv.os.as_deref().unwrap_or("unknown"));
    packages_table(inv, None);
}

/// The package lines; for a container image (`layers`, bottom first) each names the
/// index and short digest of the layer that added it.
fn packages_table(inv: &Inventory, layers: Option<&[LayerReport]>) {
    println!(
        "Packages:     {}{}",
        inv.packages.len(),
        inv.package_manager.as_ref().map(|m| format!(" (OS: {m})")).unwrap_or_default()
    );
    for p in &inv.packages {
        let layer = match (layers, &p.layer) {
            (None, _) => String::new(),
            (Some(ls), Some(d)) => match ls.iter().rposition(|l| l.digest.to_string() == *d) {
                Some(i) => format!("{:>3} {}  ", i, &d[..d.len().min(19)]),
                None => format!("    {d}  "),
            },
            (Some(_), None) => format!("{:<25}", "    -"),
        };
        println!("  {layer}{:<9} {:<40} {:<28} {}  ({})", p.kind, p.name, p.version, p.purl, p.found_in);
    }
}

/// `inspect` of a container image: its layers read once, each package with the layer
/// that added it, and the image's manifest, config, layers and history.
fn container(a: &InspectArgs) -> Result<Found> {
    if a.source.tree.is_some() || a.source.format.is_some() {
        return Err(Error::argument("--tree and -f do not apply to a container image"));
    }
    let image = diskcast_oci::open(&a.src, &a.source.container.open_options()?)?;
    for w in &image.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    let report = diskcast_oci::inspect::inspect(&image, threads(None)?)?;
    Ok(Found { read: Read::Image(Box::new(report)), signatures: image.signatures })
}

/// A container image's manifest, config, layers (with the step that made each) and
/// history, as a registry's image details page shows them.
fn image_table(r: &Report) {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    println!("Image:        {}", r.source);
    let synth = if r.manifest_synthesized { " (made from a docker save archive, which has no manifest)" } else { "" };
    println!("Manifest:     {}{synth}", r.manifest_digest);
    if let Some(mt) = &r.media_type {
        println!("Media type:   {mt}");
    }
    println!("Config:       {}", r.config_digest);
    println!("Platform:     {}", r.platform);
    println!("OS:           {}", r.inventory.os.as_deref().unwrap_or("unknown"));
    for (k, v) in [("Created:", &r.created), ("Author:", &r.author)] {
        if let Some(v) = v {
            println!("{k:<14}{v}");
        }
    }
    let c = &r.config;
    let list = |v: &Option<Vec<String>>| v.as_ref().map(|v| serde_json::to_string(v).unwrap_or_default());
    for (k, v) in [
        ("Entrypoint:", list(&c.entrypoint)),
        ("Cmd:", list(&c.cmd)),
        ("User:", c.user.clone()),
        ("WorkingDir:", c.working_dir.clone()),
        ("StopSignal:", c.stop_signal.clone()),
    ] {
        if let Some(v) = v {
            println!("{k:<14}{v}");
        }
    }
    for e in c.env.iter().flatten() {
        println!("Env:          {e}");
    }
    for (k, v) in c.labels.iter().flatten() {
        println!("Label:        {k}={v}");
    }
    for p in c.exposed_ports.iter().flat_map(|m| m.keys()) {
        println!("Port:         {p}");
    }
    for p in c.volumes.iter().flat_map(|m| m.keys()) {
        println!("Volume:       {p}");
    }
    let (comp, uncomp) = r.layers.iter().fold((0, 0), |(a, b), l| (a + l.size, b + l.uncompressed_size));
    println!("Layers:       {} ({} compressed, {} uncompressed)", r.layers.len(), mib(comp), mib(uncomp));
    for (i, l) in r.layers.iter().enumerate() {
        println!(
            "  {i:>3}  {}  {:>10}  {:>12}  {:>6} entries  {:>5} packages  {}",
            l.digest,
            l.size,
            l.uncompressed_size,
            l.entries,
            l.packages,
            l.created_by.as_deref().unwrap_or("-")
        );
    }
    if !r.history.is_empty() {
        println!("History:");
        for h in &r.history {
            let layer = match h.layer {
                Some(i) => format!("layer {i:>3}"),
                None => "(empty)  ".to_string(),
            };
            println!(
                "  {layer}  {}  {}",
                h.created.as_deref().unwrap_or("-"),
                h.created_by.as_deref().or(h.comment.as_deref()).unwrap_or("")
            );
        }
    }
    let s = &r.rootfs;
    println!(
        "Root fs:      {} files ({}), {} directories, {} symlinks, {} hard links, {} special files",
        s.files,
        mib(s.file_bytes),
        s.dirs,
        s.symlinks,
        s.hardlinks,
        s.specials
    );
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
