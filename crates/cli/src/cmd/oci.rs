//! Container images: the options every command that reads one takes, and
//! `diskcast oci ...`.

use clap::{ArgAction, Args};
use diskcast_block::Result;
use diskcast_block::lock::Locks;
use diskcast_oci::{OpenOptions, Platform};

/// How to read a container image source (`oci:`, `oci-archive:`, `docker-archive:`,
/// `docker://`).
#[derive(Debug, Default, Clone, Args)]
pub struct ContainerArgs {
    /// Which image of a multi-platform index: OS/ARCH[/VARIANT] (default: this machine's).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Registry credentials USER:PASSWORD (default: ~/.docker/config.json, else anonymous).
    #[arg(long = "creds", value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Registry credentials file (Docker's config.json format; default: $REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json).
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<std::path::PathBuf>,
    /// Verify registry TLS certificates; false also allows plain HTTP (local registries).
    #[arg(long = "tls-verify", value_name = "BOOL", action = ArgAction::Set, default_value_t = true)]
    pub tls_verify: bool,
}

impl ContainerArgs {
    /// The library's options for these arguments.
    pub fn open_options(&self) -> Result<OpenOptions> {
        let mut o = OpenOptions {
            platform: self.platform.as_deref().map(Platform::parse).transpose()?,
            ..OpenOptions::default()
        };
        o.registry.creds = self.creds.clone();
        o.registry.auth_file = self.authfile.clone();
        // Downloads show a bar on a terminal.
        o.progress = std::sync::Arc::from(crate::progress::reporter(crate::args::ProgressMode::Auto, false));
        o.registry.tls_verify = self.tls_verify;
        Ok(o)
    }
}

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
    pub output: crate::args::OutputFormat,
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
    let report = diskcast_oci::inspect::inspect(&image, super::threads(None)?)?;
    for w in &report.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    if a.output == crate::args::OutputFormat::Json {
        super::print_json(&serde_json::to_value(&report).map_err(|e| diskcast_block::Error::invalid(e.to_string()))?);
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

/// `convert` options for a container image DST (`oci:`, `oci-archive:`, `docker-archive:`).
#[derive(Debug, Default, Clone, Args)]
#[command(
    next_help_heading = "Container image output (DST oci:DIR:TAG, oci-archive:FILE:TAG, docker-archive:FILE:REPO:TAG, docker://REGISTRY/REPO:TAG)"
)]
pub struct ImageWriteArgs {
    /// The image's entrypoint: a JSON array (`["/bin/sh","-c"]`) or one program.
    #[arg(long = "entrypoint", value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Default arguments: a JSON array or one word.
    #[arg(long = "cmd", value_name = "ARGS")]
    pub cmd: Option<String>,
    /// An environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (and group) the container runs as.
    #[arg(long = "user", value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// CPU architecture of the image (amd64, arm64...; default: this machine's).
    #[arg(long = "arch", value_name = "ARCH")]
    pub arch: Option<String>,
    #[command(flatten)]
    pub container: ContainerArgs,
}

fn command_list(v: &Option<String>, flag: &str) -> Result<Option<Vec<String>>> {
    let Some(v) = v else { return Ok(None) };
    if v.trim_start().starts_with('[') {
        return serde_json::from_str(v)
            .map(Some)
            .map_err(|e| diskcast_block::Error::argument(format!("{flag} {v:?}: not a JSON array of strings: {e}")));
    }
    Ok(Some(vec![v.clone()]))
}

/// `diskcast convert SRC oci:DIR:TAG`: any tree source as a single-layer image, written or
/// pushed (`docker://`); an `oci:`/`oci-archive:` SRC pushed without config options is
/// copied as stored.
pub fn convert(
    src: &str,
    dst: &str,
    format: Option<String>,
    a: &ImageWriteArgs,
    share: crate::args::ShareArgs,
    progress: &dyn diskcast_block::progress::Progress,
) -> Result<u8> {
    let dst_ref = diskcast_oci::ImageRef::parse(dst)?;
    if let diskcast_oci::ImageRef::OciArchive { file, .. } | diskcast_oci::ImageRef::DockerArchive { file, .. } =
        &dst_ref
    {
        diskcast_block::output::refuse_inputs(file, &Vec::from_iter(diskcast_sources::source_path(src)))?;
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.label {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| diskcast_block::Error::argument(format!("--label {l:?}: expected KEY=VALUE")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    for e in &a.env {
        if !e.contains('=') {
            return Err(diskcast_block::Error::argument(format!("--env {e:?}: expected NAME=VALUE")));
        }
    }
    let image_opts = a.container.open_options()?;
    let config_given = a.entrypoint.is_some()
        || a.cmd.is_some()
        || !a.env.is_empty()
        || a.workdir.is_some()
        || a.user.is_some()
        || !a.label.is_empty()
        || a.arch.is_some();
    if let diskcast_oci::ImageRef::Registry(r) = &dst_ref
        && !config_given
        && (src.starts_with("oci:") || src.starts_with("oci-archive:"))
    {
        let img = diskcast_oci::open(src, &image_opts)?;
        let pushed = diskcast_oci::registry::push_image(&img, r, &image_opts.registry, progress)?;
        eprintln!(
            "copied {src} to {dst}: manifest {}; uploaded {} blobs ({} bytes), {} already there",
            img.manifest_digest, pushed.uploaded, pushed.bytes, pushed.present
        );
        return Ok(0);
    }
    let clock = diskcast_block::provenance::Provenance::from_env()?;
    let cfg = diskcast_oci::write::WriteConfig {
        architecture: a.arch.clone(),
        entrypoint: command_list(&a.entrypoint, "--entrypoint")?,
        cmd: command_list(&a.cmd, "--cmd")?,
        env: a.env.clone(),
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        labels,
        epoch: clock.now(),
        reproducible: clock.is_reproducible(),
        registry: image_opts.registry.clone(),
    };
    let locks = Some(std::sync::Arc::new(Locks::new(share.lock_mode())));
    let opts = diskcast_sources::SourceOptions { tree: None, format, image: image_opts, locks };
    let opened = diskcast_sources::open_tree(src, &opts)?;
    for w in &opened.warnings {
        eprintln!("diskcast: warning: {src}: {w}");
    }
    let report = diskcast_oci::write::write_image(&opened.tree, &dst_ref, &cfg, progress)?;
    for s in &report.skipped {
        eprintln!("diskcast: skipped {s}");
    }
    match &report.push {
        Some(p) => eprintln!(
            "pushed {dst}: manifest {}, layer {} ({} bytes); uploaded {} blobs ({} bytes), {} already there",
            report.manifest_digest, report.layer.digest, report.layer.size, p.uploaded, p.bytes, p.present
        ),
        None => eprintln!(
            "wrote {dst}: manifest {}, layer {} ({} bytes)",
            report.manifest_digest, report.layer.digest, report.layer.size
        ),
    }
    Ok(0)
}
