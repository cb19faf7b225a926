//! `diskcast oci ...`: container image commands.

use crate::common::args::{ContainerArgs, OutputFormat};
use crate::common::{print_json, signature_lines, threads};
use clap::Args;
use diskcast_block::Result;

/// `diskcast oci ...`.
#[derive(Debug, clap::Subcommand)]
pub enum OciCommand {
    /// Show an image's manifest, platform, config, layers, history and installed packages.
    #[command(after_help = "\
Examples:
  diskcast oci inspect oci:./layout:latest
  diskcast oci inspect docker-archive:busybox.tar
  diskcast oci inspect --platform linux/arm64 docker://registry.example/app:1.2
  diskcast oci inspect --output json oci-archive:img.tar | jq '.packages[].name'

Every layer is read once: its digest and diff_id are checked and its uncompressed size
measured; the layers are flattened in memory to list the packages installed (dpkg, apk, rpm's sqlite or Berkeley DB database).")]
    Inspect(InspectArgs),
}

/// `oci inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub container: ContainerArgs,
    /// The image: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
    /// docker://[REGISTRY/]REPO[:TAG|@DIGEST].
    pub src: String,
}

/// Runs an `oci` subcommand.
pub fn run(c: OciCommand) -> Result<u8> {
    match c {
        OciCommand::Inspect(a) => inspect(a),
    }
}

fn inspect(a: InspectArgs) -> Result<u8> {
    let image = diskcast_oci::open(&a.src, &a.container.open_options()?)?;
    for w in &image.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    let report = diskcast_oci::inspect::inspect(&image, threads(None)?)?;
    for w in &report.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    if a.output == OutputFormat::Json {
        let mut doc = serde_json::to_value(&report).map_err(|e| diskcast_block::Error::invalid(e.to_string()))?;
        if !a.container.verify_keys.is_empty() {
            doc["signatures"] = serde_json::json!(image.signatures);
        }
        print_json(&doc);
        return Ok(0);
    }
    let r = &report;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    println!("Image:        {}", r.source);
    let synth = if r.manifest_synthesized { " (made from a docker save archive, which has no manifest)" } else { "" };
    println!("Manifest:     {}{synth}", r.manifest_digest);
    if let Some(mt) = &r.media_type {
        println!("Media type:   {mt}");
    }
    println!("Config:       {}", r.config_digest);
    println!("Platform:     {}", r.platform);
    if let Some(os) = &r.os_release {
        println!("OS:           {os}");
    }
    signature_lines(&image.signatures);
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
            "  {i:>3}  {}  {:>10}  {:>12}  {:>6} entries  {}",
            l.digest, l.size, l.uncompressed_size, l.entries, l.media_type
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
    match (&r.package_manager, &r.package_error) {
        (Some(pm), Some(err)) => println!("Packages:     not read ({pm}): {err}"),
        (Some(pm), None) => {
            println!("Packages:     {} ({pm})", r.packages.len());
            for p in &r.packages {
                // rpm shows an epoch as EPOCH:VERSION-RELEASE.
                let version = match p.epoch {
                    Some(e) => format!("{e}:{}", p.version),
                    None => p.version.clone(),
                };
                let size = match p.size {
                    Some(b) if b < 1 << 10 => format!("{b} B"),
                    Some(b) if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
                    Some(b) => mib(b),
                    None => String::new(),
                };
                println!("  {:<32} {:<32} {:<8} {size}", p.name, version, p.architecture);
            }
        }
        (None, _) => println!("Packages:     none found (no dpkg, apk or rpm database)"),
    }
    Ok(0)
}
