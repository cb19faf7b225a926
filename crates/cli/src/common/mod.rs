//! What the commands share, below all of them: the argument groups ([`args`]), opening
//! images ([`Images`]), `-o` parsing, the one thread budget ([`threads`]), progress
//! ([`progress`]), the one output path ([`output`]), tree sources ([`tree_source`]) and
//! the identities of new filesystems and disks ([`build`]).
//! Nothing here imports a command, and no command imports another.

pub mod args;
pub mod build;
pub mod output;
pub mod progress;
pub mod tree_source;

use args::OpenArgs;
pub use args::threads;
use diskcast_block::gate::Gate;
use diskcast_block::lock::{LockMode, Locks};
use diskcast_block::provenance::Provenance;
use diskcast_block::registry::{CreateOptions, OpenContext, Preallocation, Registry};
use diskcast_block::{BlockRead, Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// An error and the exit status it maps to (1 for most commands, 2 for `compare`).
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub exit_code: u8,
}

/// Errors exit 1, except an image refused for want of a verified signature
/// (`--verify-key`), which exits 4, as `check --profile` does for a rejected image.
impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let exit_code = if error.kind() == diskcast_block::ErrorKind::Untrusted { 4 } else { 1 };
        Failure { error, exit_code }
    }
}

/// The registry and the backing gate a command opens images with.
pub struct Images {
    pub registry: Registry,
    pub gate: Gate,
    /// `--replay-log`: drivers may write a pending log into the image they open.
    pub replay_log: bool,
    /// The qemu-compatible locks on every image opened, held until the command ends.
    pub locks: Locks,
}

impl Images {
    pub fn new(open: &OpenArgs) -> Result<Self> {
        let mut gate = Gate::new();
        for p in &open.allow_backing {
            gate.allow(p)?;
        }
        // Replaying a log writes to the input, so it is locked as a target is.
        let mode = if open.replay_log { LockMode::Write } else { open.share.lock_mode() };
        Ok(Images {
            registry: diskcast_formats::registry(),
            gate,
            replay_log: open.replay_log,
            locks: Locks::new(mode),
        })
    }

    /// Opens `path` as `format` (probed when `None`) with its backing chain.
    pub fn open(&self, path: &Path, format: Option<&str>) -> Result<Box<dyn BlockRead>> {
        refuse_stream(path)?;
        self.registry.open(path, format, &self.context())
    }

    /// A context that opens backing files through this command's gate.
    pub fn context(&self) -> OpenContext<'_> {
        OpenContext::new(&self.registry, &self.gate).with_log_replay(self.replay_log).with_locks(&self.locks)
    }

    /// A context that opens no backing file (`info` without `--backing-chain`).
    pub fn context_without_backing(&self) -> OpenContext<'_> {
        OpenContext::without_backing(&self.registry, &self.gate)
            .with_log_replay(self.replay_log)
            .with_locks(&self.locks)
    }
}

/// Refuses a pipe, socket or character device where an image is read at any offset:
/// its length says nothing (a pipe reads as an empty disk). Only `convert` reads them,
/// whole, as raw.
pub fn refuse_stream(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_char_device() || m.file_type().is_socket() => {
            Err(Error::argument(
                "is a pipe or character device, which can only be read front to back; convert reads one \
                 as a raw disk (diskcast convert -f raw SRC out.raw), other commands need a file",
            )
            .with_file(path))
        }
        _ => Ok(()),
    }
}

/// Parses `-o a=b,c=d` (repeatable) plus the flags that map to options.
pub fn create_options(options: &[String], compress: bool) -> Result<CreateOptions> {
    let mut map = BTreeMap::new();
    for group in options {
        for pair in group.split(',').filter(|p| !p.is_empty()) {
            let (k, v) =
                pair.split_once('=').ok_or_else(|| Error::argument(format!("-o {pair:?}: expected KEY=VALUE")))?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    // Every format takes preallocation= (qemu-img passes it to the file under the image).
    let preallocation = map.remove("preallocation").map(|p| Preallocation::parse(&p)).transpose()?.unwrap_or_default();
    // The one place SOURCE_DATE_EPOCH is read: every writer gets its clock and ids from here.
    let provenance = Provenance::from_env()?;
    Ok(CreateOptions { options: map, compress, provenance, preallocation, ..CreateOptions::default() })
}

/// The name qemu-img gives a format in its output (`vpc` for VHD), so JSON written for
/// qemu-img reads ours unchanged.
pub fn qemu_format_name(name: &str) -> &str {
    match name {
        "vhd" => "vpc",
        other => other,
    }
}

/// Prints pretty JSON on standard output. A reader that went away (`| head`) ends the
/// output quietly; any other write error is reported and exits 1.
pub fn print_json(value: &serde_json::Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("diskcast: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// The image a qemu-img verb names and its format: `name` itself with `-f FMT` (probed
/// when `None`), or with `--image-opts` the path and driver of qemu's option string
/// ([`image_opts`]), which `-f` cannot accompany.
pub fn image_name(
    name: &Path,
    format: Option<&str>,
    is_image_opts: bool,
) -> Result<(std::path::PathBuf, Option<String>)> {
    match (is_image_opts, format) {
        (true, Some(_)) => Err(Error::argument("--image-opts and -f cannot be used together")),
        (true, None) => {
            let (p, f) = image_opts(&name.to_string_lossy())?;
            Ok((p, Some(f)))
        }
        (false, f) => Ok((name.to_path_buf(), f.map(str::to_string))),
    }
}

/// An image named by `--image-opts`: qemu's option string, in its plain forms
/// `driver=FMT,file.filename=PATH` (with `file.driver=file`, or `driver=file,filename=PATH`
/// for a raw file). `,,` is a literal comma, as in qemu. Anything else (protocols, nested
/// drivers, encryption keys) is refused, naming the key.
pub fn image_opts(spec: &str) -> Result<(std::path::PathBuf, String)> {
    // `,,` stands for a comma inside a value; NUL cannot occur in an argument.
    let pairs: Vec<String> = spec.replace(",,", "\0").split(',').map(|p| p.replace('\0', ",")).collect();
    let (mut driver, mut path, mut inner) = (None, None, None);
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Error::argument(format!("--image-opts {spec:?}: {pair:?} is not KEY=VALUE")))?;
        match k {
            "driver" => driver = Some(v.to_string()),
            "file.filename" | "filename" => path = Some(std::path::PathBuf::from(v)),
            "file.driver" => inner = Some(v.to_string()),
            _ => {
                return Err(Error::argument(format!(
                    "--image-opts {spec:?}: option {k:?} is not supported; diskcast takes only the plain forms \
                     driver=FMT,file.filename=PATH and driver=file,filename=PATH"
                )));
            }
        }
    }
    if inner.as_deref().is_some_and(|d| d != "file") {
        return Err(Error::argument(format!(
            "--image-opts {spec:?}: only local files (file.driver=file) are supported"
        )));
    }
    let driver = driver.ok_or_else(|| Error::argument(format!("--image-opts {spec:?}: driver= is missing")))?;
    let path = path.ok_or_else(|| Error::argument(format!("--image-opts {spec:?}: file.filename= is missing")))?;
    match (driver.as_str(), pairs.iter().any(|p| p.starts_with("file.filename="))) {
        ("file", false) => Ok((path, "raw".to_string())),
        ("file", true) => {
            Err(Error::argument(format!("--image-opts {spec:?}: driver=file takes filename=, not file.filename=")))
        }
        (_, false) => Err(Error::argument(format!("--image-opts {spec:?}: driver={driver} takes file.filename=PATH"))),
        _ => Ok((path, driver)),
    }
}

/// The `Signatures:` line of the table and one line per signature checked.
pub fn signature_lines(signatures: &[diskcast_oci::sigstore::SignatureCheck]) {
    if signatures.is_empty() {
        return;
    }
    let verified = signatures.iter().filter(|s| s.verified).count();
    println!("Signatures:   {verified} of {} verified (sigstore)", signatures.len());
    for s in signatures {
        let state = if s.verified { "verified" } else { "not counted" };
        let detail = match (&s.key, &s.reason) {
            (Some(k), None) => format!("key {k}"),
            (_, Some(r)) => r.clone(),
            (None, None) => String::new(),
        };
        println!(
            "  {state:<11} {}  {}  ({detail})",
            s.identity.as_deref().unwrap_or("-"),
            s.digest.as_deref().unwrap_or("-")
        );
    }
}
