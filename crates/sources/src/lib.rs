//! The one place a user's SRC string becomes a [`Tree`]: `ls`, `cat`, `extract` and
//! every command that takes a tree source call [`open_tree`].
//!
//! - `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`,
//!   `docker://REGISTRY/REPO[:TAG|@DIGEST]`: container images, flattened
//!   ([`diskcast_oci`]).
//! - An existing directory: read as is ([`diskcast_host::read_dir`]).
//! - A tar (plain, gzip or zstd, by magic): [`diskcast_tar::read_tar`].
//! - Anything else is a disk image of any block format ([`diskcast_formats::registry`]:
//!   raw, qcow2, VMDK, VHD, VHDX, VDI), and the filesystem on it is found by probing each
//!   reader of the filesystem registry ([`diskcast_formats::filesystems`]); failing that, its GPT or MBR partition table is read and
//!   `DISK:PART` picks a partition by number, GPT name or type (`esp`, `root`), or
//!   without PART the root partition (the Discoverable Partitions root type, else the
//!   only Linux filesystem, else the only filesystem diskcast reads).
#![forbid(unsafe_code)]

mod disk;

use diskcast_block::gate::Gate;
use diskcast_block::lock::Locks;
use diskcast_block::registry::OpenContext;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::{ReadOptions, Tree};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// How to open a source. No `Default`: the thread count is the caller's (the CLI's
/// `-j`), so [`SourceOptions::new`] takes it.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Which tree of a medium with several (`--tree`: `udf`, `rockridge`, `joliet`,
    /// `iso9660` on discs). Only media with several trees accept it.
    pub tree: Option<String>,
    /// `-f`: the block format of a disk image, instead of probing.
    pub format: Option<String>,
    /// Container images: platform, registry credentials and TLS; decompression limits
    /// (for compressed tars too).
    pub image: diskcast_oci::OpenOptions,
    /// Locks every disk image opened (and its backing files) as qemu does, so an image a
    /// VM writes is refused (or, with `-U`, read anyway); the caller keeps them until it
    /// is done with the tree. `None`: no locks.
    pub locks: Option<Arc<Locks>>,
    /// Threads decoding a container image's layers (at least 1).
    pub threads: usize,
}

impl SourceOptions {
    /// Probe everything, default image options, no locks, `threads` decoders.
    pub fn new(threads: usize) -> Self {
        SourceOptions { tree: None, format: None, image: diskcast_oci::OpenOptions::default(), locks: None, threads }
    }
}

/// A source read into a tree.
#[derive(Debug)]
pub struct Opened {
    /// The tree.
    pub tree: Tree,
    /// What the source was (`directory /srv/root`, `tar (gzip) rootfs.tar.gz`,
    /// `ext4 on qcow2 disk.qcow2`).
    pub description: String,
    /// Entries that could not be taken over (a tar member with `..`), one message each.
    pub warnings: Vec<String>,
    /// A container image's run-time defaults (ENTRYPOINT, CMD, Env...); `None` for other
    /// sources.
    pub config: Option<diskcast_oci::spec::RunConfig>,
    /// A container image's platform, as its config declares it (`diskcast vm` makes the
    /// disk for its architecture); `None` for other sources.
    pub platform: Option<diskcast_oci::spec::Platform>,
    /// A `docker://` image's sigstore signatures, checked because `--verify-key` asked
    /// (at least one verified); empty for other sources.
    pub signatures: Vec<diskcast_oci::sigstore::SignatureCheck>,
}

/// Opens `spec` as a tree (see the crate docs for what `spec` may be).
pub fn open_tree(spec: &str, opts: &SourceOptions) -> Result<Opened> {
    open_tree_into(spec, opts, None)
}

/// [`open_tree`], handing a container image's file contents to `sink` while its layers
/// are read (see [`diskcast_oci::flatten::ContentSink`]); other sources ignore it.
pub fn open_tree_into(
    spec: &str,
    opts: &SourceOptions,
    sink: Option<&dyn diskcast_oci::flatten::ContentSink>,
) -> Result<Opened> {
    if diskcast_oci::is_image_ref(spec) {
        if opts.tree.is_some() || opts.format.is_some() {
            return Err(Error::argument("--tree and -f do not apply to a container image"));
        }
        let image = diskcast_oci::open(spec, &opts.image)?;
        let flat = diskcast_oci::flatten::flatten_into(&image, opts.threads, sink)?;
        let description = format!(
            "container image {spec} ({}, {}, {} layers)",
            image.manifest_digest.short(),
            image.platform(),
            image.layers.len()
        );
        let config = Some(image.config.config.clone().unwrap_or_default());
        let platform = Some(image.platform());
        let warnings = image.warnings.into_iter().chain(flat.warnings).collect();
        let signatures = image.signatures;
        return Ok(Opened { tree: flat.tree, description, warnings, config, platform, signatures });
    }
    if !opts.image.verify_keys.is_empty() {
        return Err(Error::untrusted(format!(
            "--verify-key checks sigstore signatures attached to an image in its registry; {spec} is not a \
             docker:// image, so it cannot be verified (drop --verify-key to read it unverified)"
        )));
    }
    if spec.starts_with("docker-daemon:") {
        return Err(Error::unsupported(format!(
            "{spec}: reading from the Docker daemon is not supported; `docker save IMAGE -o FILE` and use docker-archive:FILE"
        )));
    }
    let (disk_path, part) = disk::split_spec(spec);
    let path = Path::new(disk_path);
    let md = std::fs::metadata(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
    // A tar is read through the descriptor its first block was looked at through.
    let tar = match opts.format {
        None if !md.is_dir() => open_tar(path, &opts.image.limits)?,
        _ => None,
    };
    if part.is_some() && (md.is_dir() || tar.is_some()) {
        return Err(Error::argument(format!("{disk_path} is not a disk image, so :PART names nothing")));
    }
    if md.is_dir() {
        if opts.tree.is_some() {
            return Err(tree_not_applicable("a directory"));
        }
        let tree = diskcast_host::read_dir(path, &diskcast_host::DirOptions::default())?;
        return Ok(Opened {
            tree,
            description: format!("directory {spec}"),
            warnings: Vec::new(),
            config: None,
            platform: None,
            signatures: Vec::new(),
        });
    }
    if let Some(stream) = tar {
        if opts.tree.is_some() {
            return Err(tree_not_applicable("a tar"));
        }
        let t = diskcast_tar::read_tar_file(stream, opts.threads)?;
        let description = match t.compression {
            diskcast_tar::Compression::None => format!("tar {spec}"),
            c => format!("tar ({}) {spec}", c.name()),
        };
        return Ok(Opened {
            tree: t.tree,
            description,
            warnings: t.warnings,
            config: None,
            platform: None,
            signatures: Vec::new(),
        });
    }
    let registry = diskcast_formats::registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&registry, &gate);
    let ctx = match &opts.locks {
        Some(locks) => ctx.with_locks(locks),
        None => ctx,
    };
    let disk = registry.open(path, opts.format.as_deref(), &ctx)?;
    let format = disk.info().format.clone();
    let disk: Arc<dyn BlockRead> = Arc::from(disk);
    let read = ReadOptions { tree: opts.tree.clone(), label: disk_path.to_string() };
    let mut opened = read_disk_tree(disk, part, &read)?;
    opened.description = format!("{} on {format} {disk_path}", opened.description);
    Ok(opened)
}

/// The tree of a disk already open (what [`open_tree`] does once a disk image is open):
/// a filesystem on the whole disk, else on the partition `part` names or the one
/// chosen as the root. `description` says which filesystem and where (`fat on partition
/// 1 (esp) of GPT table`). The tree fuzzer drives this from memory.
pub fn read_disk_tree(disk: Arc<dyn BlockRead>, part: Option<&str>, opts: &ReadOptions) -> Result<Opened> {
    let d = disk::read_disk(disk, part, opts)?;
    Ok(Opened {
        tree: d.tree,
        description: d.what,
        warnings: d.warnings,
        config: None,
        platform: None,
        signatures: Vec::new(),
    })
}

/// The file or directory of this machine that `spec` reads (the disk of `DISK:PART`, the
/// directory of `oci:DIR`, the file of an archive), or `None` for a registry: what a
/// command must not write over.
pub fn source_path(spec: &str) -> Option<std::path::PathBuf> {
    if diskcast_oci::is_image_ref(spec) {
        return match diskcast_oci::ImageRef::parse(spec).ok()? {
            diskcast_oci::ImageRef::Layout { dir, .. } => Some(dir),
            diskcast_oci::ImageRef::OciArchive { file, .. } | diskcast_oci::ImageRef::DockerArchive { file, .. } => {
                Some(file)
            }
            diskcast_oci::ImageRef::Registry(_) => None,
        };
    }
    Some(std::path::PathBuf::from(disk::split_spec(spec).0))
}

/// The tree of the filesystem on `disk`: the first filesystem of the registry whose
/// reader recognises it. Returns the tree and the filesystem's name.
pub fn read_filesystem(disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<(Tree, &'static str)> {
    let registry = diskcast_formats::filesystems();
    if let Some((fs, reader)) = registry.probe(disk.as_ref())? {
        return Ok((reader.read(disk, opts)?, fs.name));
    }
    let tried = registry.reader_names().join(", ");
    Err(Error::unsupported(format!(
        "no filesystem diskcast can read found in {} (tried: {tried}; a tar, a directory or a container image reference are also accepted)",
        opts.label
    )))
}

fn tree_not_applicable(what: &str) -> Error {
    Error::argument(format!("--tree chooses between the trees of a disc; {what} has only one"))
}

/// The file opened as a tar stream (under `limits`, the decompression cap OCI layers
/// obey) when it is a tar: its first block (decompressed when it starts with a gzip or
/// zstd magic) is a tar header with a valid checksum; `None` for anything else.
fn open_tar(path: &Path, limits: &diskcast_tar::Limits) -> Result<Option<diskcast_tar::FileStream>> {
    // xz/bzip2/lz4: nothing else of ours starts like that: the error says why it cannot be read.
    let stream = diskcast_tar::FileStream::open(path)?.with_limits(limits);
    let mut head = [0u8; 512];
    let mut r = diskcast_tree::StreamSource::open(&stream)?;
    let compression = stream.compression();
    let plain = compression == diskcast_tar::Compression::None;
    let verb = if plain { "cannot read" } else { "cannot decompress" };
    let n = read_up_to(&mut r, &mut head).map_err(|e| Error::io(verb, e).with_file(path))?;
    let is_tar = n == 512 && diskcast_tar::is_tar_header(&head);
    if plain {
        // An OVA is a tar too, but it is read as the disk it carries.
        return Ok((is_tar && !diskcast_ova::is_package_head(&head)).then_some(stream));
    }
    if !is_tar {
        return Err(Error::unsupported(format!("{} data that is not a tar", compression.name())).with_file(path));
    }
    Ok(Some(stream))
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_prefixes_and_unknown_disks_get_clear_errors() {
        let e = open_tree("docker-daemon:alpine", &SourceOptions::new(1)).unwrap_err();
        assert!(e.to_string().contains("docker save"), "{e}");
        let e = open_tree("oci:/nonexistent/layout", &SourceOptions::new(1)).unwrap_err();
        assert!(e.to_string().contains("not an OCI image layout"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let e = open_tree(p.to_str().unwrap(), &SourceOptions::new(1)).unwrap_err();
        assert!(e.to_string().contains("no filesystem diskcast can read found in"), "{e}");
        assert!(e.to_string().contains("(tried: "), "{e}");
    }

    /// Plain and gzip tars (made by GNU tar and gzip) are known by their first block,
    /// read through the descriptor that looked at it; a tar has no partitions; gzip
    /// data that is not a tar says so.
    #[test]
    fn a_tar_is_known_by_its_first_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        std::fs::write(dir.path().join("note"), "not a tar").unwrap();
        let spec = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        diskcast_testkit::run("tar", &["-cf", &spec("t.tar"), "-C", &spec(""), "a.txt"]);
        diskcast_testkit::run("gzip", &["-k", &spec("t.tar")]);
        diskcast_testkit::run("gzip", &["-k", &spec("note")]);

        for (name, what) in [("t.tar", "tar "), ("t.tar.gz", "tar (gzip) ")] {
            let o = open_tree(&spec(name), &SourceOptions::new(2)).unwrap();
            assert!(o.description.starts_with(what), "{}", o.description);
            assert_eq!(o.tree.read(b"a.txt", 100).unwrap(), b"hello");
            // A tar has no partitions.
            let e = open_tree(&format!("{}:1", spec(name)), &SourceOptions::new(1)).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains("is not a disk image, so :PART names nothing"), "{e}");
        }
        let e = open_tree(&spec("note.gz"), &SourceOptions::new(1)).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("gzip data that is not a tar"), "{e}");
    }
}
