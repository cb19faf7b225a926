//! The argument groups every command of a kind shares, defined once so each flag has one
//! spelling and one help text: opening images ([`OpenArgs`], `-U` [`ShareArgs`]),
//! writing them ([`WriteArgs`]: `-c`, `-p`, `--progress`, `-j`; [`OutputArgs`]: `-o`,
//! `-O`, `--format-options`), tree sources ([`SourceArgs`]) and container images
//! ([`ContainerArgs`]).

use super::progress::ProgressMode;
use clap::{ArgAction, Args, ValueEnum};
use diskcast_block::lock::Locks;
use diskcast_block::progress::Progress;
use diskcast_block::{Error, Result};
use diskcast_oci::{OpenOptions, Platform};
use diskcast_sources::SourceOptions;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

/// `--allow-backing`: the backing files outside an image's directory the user trusts
/// (every command that opens images; alone in `rebase` and `commit`, which lock their
/// images themselves).
#[derive(Debug, Default, Clone, Args)]
pub struct BackingArgs {
    /// Allow opening this backing file (or any file under this directory) even though it is
    /// outside the directory of the image that names it. May be repeated.
    #[arg(long = "allow-backing", value_name = "PATH")]
    pub allow_backing: Vec<PathBuf>,
}

/// Options every command that opens images takes.
#[derive(Debug, Default, Args)]
pub struct OpenArgs {
    #[command(flatten)]
    pub backing: BackingArgs,
    /// If an image has a pending log (a VHDX that was not closed cleanly), replay the log
    /// into the image file before reading it. This WRITES TO THE INPUT FILE, as Hyper-V and
    /// qemu do when they open it; without this flag such an image is refused.
    #[arg(long = "replay-log", conflicts_with = "force_share")]
    pub replay_log: bool,
    #[command(flatten)]
    pub share: ShareArgs,
    /// For an OVA holding several disks: read disk N (1-based, in the order of the OVF
    /// descriptor's DiskSection, as `info` lists them) instead of the first. Applies to
    /// every OVA the command opens; refused where none of its images is an OVA.
    #[arg(long = "disk", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub disk: Option<u32>,
}

/// `-U`: the same flag and help for every command that reads images (`info`, `convert`,
/// ..., and the tree commands).
#[derive(Debug, Default, Clone, Copy, Args)]
pub struct ShareArgs {
    /// Read an image even though another process (a running VM, qemu-io) has it open for
    /// writing, as qemu-img -U does. Without it such an image is refused, since what is
    /// read may be torn. diskcast locks the images it uses the way qemu does, so each
    /// sees the other.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

impl ShareArgs {
    /// How the images read are locked: qemu-img's shared read lock, or with `-U` one
    /// that lets writers be.
    pub fn lock_mode(self) -> diskcast_block::lock::LockMode {
        if self.force_share { diskcast_block::lock::LockMode::ReadShared } else { diskcast_block::lock::LockMode::Read }
    }
}

/// qemu-img's cache modes (`-t`, `-T` of `convert`, `rebase` and `commit`, `-t` of `bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheMode {
    None,
    Writeback,
    Unsafe,
    Directsync,
    Writethrough,
}

/// `-p` and `--progress`: how a long job reports progress (every writing command,
/// `extract`).
#[derive(Debug, Clone, Args)]
pub struct ProgressArgs {
    /// Show a progress bar (same as --progress=bar).
    #[arg(short = 'p')]
    pub bar: bool,
    /// How to report progress.
    #[arg(long = "progress", value_name = "PROGRESS", value_enum, default_value = "auto")]
    pub mode: ProgressMode,
    /// Set by qemu-img's verbs: `-p` prints qemu-img's lines there.
    #[arg(skip)]
    pub qemu: Option<super::progress::QemuProgress>,
}

impl ProgressArgs {
    /// The reporter these flags ask for.
    pub fn reporter(&self) -> Box<dyn Progress> {
        match self.qemu {
            Some(to) if self.bar && self.mode == ProgressMode::Auto => super::progress::qemu_reporter(to),
            _ => super::progress::reporter(self.mode, self.bar),
        }
    }
}

/// `-j`: the thread budget of a command (copy, layer decoding, layer gzip, extraction).
#[derive(Debug, Clone, Default, Args)]
pub struct JobsArgs {
    /// Worker threads (default: one per core).
    #[arg(short = 'j', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
}

impl JobsArgs {
    /// The thread count ([`threads`]: `-j`, else one per core).
    pub fn count(&self) -> Result<usize> {
        threads(self.threads)
    }
}

/// Threads to use: the user's `-j`, or one per core. The one place the thread budget is
/// decided: the libraries (copy engine, layer decoding, layer gzip, extraction) take
/// the count they are given.
pub fn threads(requested: Option<usize>) -> Result<usize> {
    match requested {
        Some(0) => Err(Error::argument("-j must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
    }
}

/// How an image is written, for every command that writes one: compression, progress
/// and threads.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Compress the output (qcow2: zlib, or zstd with the format option
    /// compression_type=zstd; streamOptimized VMDK).
    #[arg(short = 'c')]
    pub compress: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
}

/// Nothing compressed, no progress, one thread per core: for writers without these
/// flags (`create`).
impl Default for WriteArgs {
    fn default() -> Self {
        WriteArgs {
            compress: false,
            progress: ProgressArgs { bar: false, mode: ProgressMode::None, qemu: None },
            jobs: JobsArgs::default(),
        }
    }
}

/// Where and how a built image is written: the flags of `mkfs` and `mkdisk`, turned into
/// an [`DiskTarget`] by [`OutputArgs::resolve`] before anything is read.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// The image to write: a file (written in full, then put in place), `-` or a pipe or
    /// character device (raw only, front to back), or a block device (raw, written in
    /// place when nothing uses it).
    #[arg(short = 'o', long = "out", alias = "output", value_name = "OUT", value_parser = out_path)]
    pub output: PathBuf,
    /// Block format of OUT (raw, qcow2, vmdk, vhd, vhdx, vdi); default: the one OUT's
    /// name ends with (.qcow2 .vmdk .vhd .vhdx .vdi; .img and .raw are raw), else raw.
    #[arg(short = 'O', long = "output-format", value_name = "FMT")]
    pub format_given: Option<String>,
    /// Format options of OUT, comma separated (`diskcast formats` lists them).
    #[arg(long = "format-options", value_name = "KEY=VALUE,..")]
    pub format_options: Vec<String>,
    #[command(flatten)]
    pub write: WriteArgs,
}

impl OutputArgs {
    /// The target these flags name: the format is `-O`, else the one OUT's name says,
    /// else raw; a contradiction (`-O raw` with `disk.qcow2`) is a usage error.
    pub fn resolve(&self) -> diskcast_block::Result<DiskTarget> {
        let format = format_for_output(&self.output, self.format_given.as_deref())?.unwrap_or("raw".into());
        Ok(DiskTarget {
            output: self.output.clone(),
            format,
            format_options: self.format_options.clone(),
            write: self.write.clone(),
        })
    }
}

/// An image output with its format decided: what [`ImageWriter`](super::output::ImageWriter)
/// opens. `mkfs` and `mkdisk` get it from their flags, `vm` from its profile and flags.
#[derive(Debug, Clone)]
pub struct DiskTarget {
    pub output: PathBuf,
    /// The block format written (raw, qcow2, vmdk, ...).
    pub format: String,
    /// Format options, comma separated groups as given.
    pub format_options: Vec<String>,
    pub write: WriteArgs,
}

/// The value of `-o`/`--out`, the file a command writes. `--output` was its long
/// spelling in `mkfs`, `mkdisk`, `extract`, `iso create` and `iso remaster` before
/// `--output` became the report format of every command; it stays a hidden alias there
/// for one release, and `human`/`json` (a report format given to a command that has no
/// report) are refused rather than written as files of those names.
pub fn out_path(value: &str) -> std::result::Result<PathBuf, String> {
    match value {
        "human" | "json" => Err(format!(
            "{value:?} is a report format (--output human|json), not a file; this command writes no report. \
             Give the file to write with -o/--out (a file of that name: ./{value})"
        )),
        _ => Ok(PathBuf::from(value)),
    }
}

/// The block format a file name ends with (`.qcow2`, `.vmdk`, `.vhd`, `.vhdx`, `.vdi`;
/// `.img` and `.raw` are raw).
pub fn format_of_name(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "qcow2" => "qcow2",
        "vmdk" => "vmdk",
        "vhd" => "vhd",
        "vhdx" => "vhdx",
        "vdi" => "vdi",
        "img" | "raw" => "raw",
        _ => return None,
    })
}

/// Whether the name says a format only by default: `.img` names raw and qcow2 files alike.
pub fn name_is_ambiguous(out: &std::path::Path) -> bool {
    out.extension().is_some_and(|e| e.eq_ignore_ascii_case("img"))
}

/// The format to write `out` in: `given` (`-O`), checked against the one the name
/// says, or the name's; `None` when neither says. `.img` says raw only when `-O` is not
/// given: it names qcow2 files too (Ubuntu's cloud images), so it contradicts nothing.
pub fn format_for_output(out: &std::path::Path, given: Option<&str>) -> diskcast_block::Result<Option<String>> {
    let named = format_of_name(out).filter(|_| !(name_is_ambiguous(out) && given.is_some()));
    match (given, named) {
        (Some(g), Some(n)) if g != n && !(n == "vhd" && g == "vpc") => Err(diskcast_block::Error::argument(format!(
            "-O {g} contradicts the output's name {}, which says {n}; drop -O or rename the output",
            out.display()
        ))),
        (Some(g), _) => Ok(Some(g.to_string())),
        (None, n) => Ok(n.map(str::to_string)),
    }
}

/// One image to look at (`check`, `map`).
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub open: OpenArgs,
    pub file: PathBuf,
}

/// `--tls-verify`: one flag for registries and `https://` images.
#[derive(Debug, Clone, Copy, Args)]
pub struct TlsArgs {
    /// Verify TLS certificates (of registries and of https:// images) against the system's
    /// CA store (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs: corporate CAs) and the
    /// bundled Mozilla roots; false accepts any certificate, and for registries also
    /// allows plain HTTP (local registries).
    #[arg(long = "tls-verify", value_name = "BOOL", action = ArgAction::Set, default_value_t = true)]
    pub tls_verify: bool,
}

impl Default for TlsArgs {
    fn default() -> Self {
        TlsArgs { tls_verify: true }
    }
}

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
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Use a docker:// image only when a sigstore signature attached to it in its registry
    /// (tag sha256-DIGEST.sig, as cosign and skopeo --sign-by-sigstore-private-key write
    /// it) verifies with this public key (PEM: ECDSA P-256, Ed25519 or RSA) and names the
    /// manifest pulled and the image's repository (and tag, when pulled by tag). Repeat
    /// for several keys: any one may match. Otherwise nothing is written and the exit
    /// status is 4; other sources are refused with it.
    #[arg(long = "verify-key", value_name = "KEY.pub")]
    pub verify_keys: Vec<PathBuf>,
    /// Without --platform, take an index's only image whatever its platform (set by
    /// `vm`, which makes the disk for the image's architecture; not a flag).
    #[arg(skip)]
    pub lone_platform: bool,
}

impl ContainerArgs {
    /// The library's options for these arguments.
    pub fn open_options(&self) -> Result<OpenOptions> {
        let mut o = OpenOptions {
            platform: self.platform.as_deref().map(Platform::parse).transpose()?,
            lone_platform: self.lone_platform,
            ..OpenOptions::default()
        };
        o.registry.creds = self.creds.clone();
        o.registry.auth_file = self.authfile.clone();
        // Downloads show a bar on a terminal.
        o.progress = std::sync::Arc::from(super::progress::reporter(ProgressMode::Auto, false));
        o.registry.tls_verify = self.tls.tls_verify;
        o.verify_keys = diskcast_oci::sigstore::read_keys(&self.verify_keys)?;
        Ok(o)
    }
}

/// Options of a tree source.
#[derive(Debug, Default, Args)]
pub struct SourceArgs {
    /// Which tree of a disc with several: udf, rockridge, joliet, iso9660 (default: the
    /// richest one present).
    #[arg(long = "tree", value_name = "NAME")]
    pub tree: Option<String>,
    /// Block format of a disk image SRC (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    #[command(flatten)]
    pub share: ShareArgs,
    #[command(flatten)]
    pub container: ContainerArgs,
}

impl SourceArgs {
    /// The library's options; disk images are locked as qemu-img locks its inputs (the
    /// shared read lock, or with `-U` one that lets writers be), until the command ends.
    /// A container image's layers are decoded by `threads` (the command's `-j`).
    pub fn options(&self, threads: usize) -> Result<SourceOptions> {
        let locks = Arc::new(Locks::new(self.share.lock_mode()));
        // The tree reads its images until the command ends, so their locks stay as long.
        static HELD: Mutex<Vec<Arc<Locks>>> = Mutex::new(Vec::new());
        HELD.lock().unwrap_or_else(|p| p.into_inner()).push(locks.clone());
        Ok(SourceOptions {
            tree: self.tree.clone(),
            format: self.format.clone(),
            image: self.container.open_options()?,
            locks: Some(locks),
            threads,
        })
    }
}

/// The virtual machine an OVA describes (`-o app.ova`, `-O ova`): its hardware as the
/// OVF descriptor states it; the disk is always a streamOptimized VMDK.
#[derive(Debug, Clone, Args)]
pub struct OvaArgs {
    /// OVA: virtual CPUs of the VM.
    #[arg(long = "cpus", value_name = "N", default_value = "2")]
    pub cpus: u32,
    /// OVA: memory of the VM (M, G; a whole number of MiB).
    #[arg(long = "memory", value_name = "SIZE", default_value = "2G")]
    pub memory: String,
    /// OVA: the disk's controller: pvscsi, lsilogicsas or sata (default: pvscsi for
    /// --profile esxi, else sata, which VMware and VirtualBox both import).
    #[arg(long = "ova-controller", value_name = "CONTROLLER")]
    pub controller: Option<String>,
}

/// Most virtual CPUs an OVA may state (VMware's maximum per VM is 768).
const OVA_CPUS_MAX: u32 = 768;

impl OvaArgs {
    /// The descriptor's hardware for a VM called after `out`'s file name (without its
    /// `.ova`), booting with `firmware`, for `profile` (esxi, aws or none: an OVA is for
    /// VMware and VirtualBox), its disk on the profile's controller (esxi: pvscsi, else
    /// sata) unless `--ova-controller` says otherwise.
    pub fn hardware(
        &self,
        out: &std::path::Path,
        profile: Option<diskcast_vm::Profile>,
        firmware: Option<diskcast_ova::descriptor::Firmware>,
    ) -> diskcast_block::Result<diskcast_ova::descriptor::Hardware> {
        use diskcast_block::Error;
        use diskcast_ova::descriptor::Controller;
        use diskcast_vm::Profile;
        let default_controller = match profile {
            None | Some(Profile::Aws) => Controller::Sata,
            Some(Profile::Esxi) => Controller::Pvscsi,
            Some(p) => {
                return Err(Error::argument(format!(
                    "an OVA is for VMware and VirtualBox (--profile esxi or aws, or none), not --profile {}",
                    p.name()
                )));
            }
        };
        if !(1..=OVA_CPUS_MAX).contains(&self.cpus) {
            return Err(Error::argument(format!("--cpus {}: 1 to {OVA_CPUS_MAX}", self.cpus)));
        }
        let memory = diskcast_block::size::parse_size(&self.memory)?;
        if memory == 0 || !memory.is_multiple_of(1 << 20) {
            return Err(Error::argument(format!("--memory {}: a whole number of MiB, at least 1M", self.memory)));
        }
        let controller = match &self.controller {
            Some(c) => diskcast_ova::descriptor::Controller::parse(c)?,
            None => default_controller,
        };
        let file = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = file.strip_suffix(".ova").or_else(|| file.strip_suffix(".OVA")).unwrap_or(&file).to_string();
        Ok(diskcast_ova::descriptor::Hardware { name, cpus: self.cpus, memory_mib: memory >> 20, controller, firmware })
    }
}

/// Checks a `--profile gce` output name: `-` or `NAME.tar.gz` (`.tgz`), what Compute
/// Engine's import takes.
pub fn check_gce_output(out: &std::path::Path) -> diskcast_block::Result<()> {
    if out.as_os_str() != "-" && !diskcast_vm::Archive::GceTar.named(out) {
        return Err(diskcast_block::Error::argument(format!(
            "--profile gce writes disk.raw in a gzip'd tar: name the output NAME.tar.gz, not {}",
            out.display()
        )));
    }
    Ok(())
}
