//! `diskcast convert SRC oci:DIR:TAG` (and `oci-archive:`, `docker-archive:`,
//! `docker://`): a tree as a one-layer container image.

use crate::common::args::{ShareArgs, WriteArgs};
use crate::common::output::ContainerWriter;
use clap::Args;
use diskcast_block::Result;
use diskcast_block::lock::Locks;
use diskcast_block::size::count;

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
    pub container: crate::common::args::ContainerArgs,
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
    share: ShareArgs,
    write: &WriteArgs,
) -> Result<u8> {
    // The target is checked (not the source itself, not in use) before the source is read.
    let writer = ContainerWriter::open(dst, &Vec::from_iter(diskcast_sources::source_path(src)), write)?;
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
    if let diskcast_oci::ImageRef::Registry(r) = writer.image_ref()
        && !config_given
        && (src.starts_with("oci:") || src.starts_with("oci-archive:"))
    {
        let img = diskcast_oci::open(src, &image_opts)?;
        let progress = write.progress.reporter();
        let pushed = diskcast_oci::registry::push_image(&img, r, &image_opts.registry, progress.as_ref())?;
        eprintln!(
            "copied {src} to {dst}: manifest {}; uploaded {} ({}), {} already there",
            img.manifest_digest,
            count(pushed.uploaded, "blob", "blobs"),
            count(pushed.bytes, "byte", "bytes"),
            pushed.present
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
        ..writer.config()?
    };
    let threads = cfg.threads;
    let locks = Some(std::sync::Arc::new(Locks::new(share.lock_mode())));
    let opts = diskcast_sources::SourceOptions { tree: None, format, image: image_opts, locks, threads };
    let opened = diskcast_sources::open_tree(src, &opts)?;
    for w in &opened.warnings {
        eprintln!("diskcast: warning: {src}: {w}");
    }
    let report = writer.write(&opened.tree, &cfg)?;
    for s in &report.skipped {
        eprintln!("diskcast: skipped {s}");
    }
    match &report.push {
        Some(p) => eprintln!(
            "pushed {dst}: manifest {}, layer {} ({}); uploaded {} ({}), {} already there",
            report.manifest_digest,
            report.layer.digest,
            count(report.layer.size, "byte", "bytes"),
            count(p.uploaded, "blob", "blobs"),
            count(p.bytes, "byte", "bytes"),
            p.present
        ),
        None => eprintln!(
            "wrote {dst}: manifest {}, layer {} ({})",
            report.manifest_digest,
            report.layer.digest,
            count(report.layer.size, "byte", "bytes")
        ),
    }
    Ok(0)
}
