//! KubeVirt containerDisk: a VM disk shipped as a container image, so a cluster pulls
//! it from a registry like any other image.
//!
//! KubeVirt's layout (its user guide, "containerDisk"): one layer holding the disk file
//! under `/disk/`, qcow2 or raw, readable by the qemu user (uid/gid 107, mode 0440, as
//! `ADD --chown=107:107 disk.qcow2 /disk/` makes it). The image is written by our own OCI
//! writer ([`diskcast_oci::write`]): the disk file stays a reference to the host file and
//! is streamed once into the gzip layer.

use crate::{Arch, Profile};
use diskcast_block::progress::Progress;
use diskcast_block::provenance::Provenance;
use diskcast_block::{Error, Result};
use diskcast_oci::ImageRef;
use diskcast_oci::write::{ImageTarget, WriteConfig, WriteReport, write_image};
use diskcast_tree::{FileData, HostFile, Kind, Meta, Node, Timestamp, Tree};
use std::path::{Path, PathBuf};

/// The qemu user and group KubeVirt runs the VM as.
pub const QEMU_ID: u32 = 107;
/// The mode KubeVirt documents for the disk file.
pub const DISK_MODE: u32 = 0o440;

/// The path of the disk inside the image for a disk of block format `format`.
pub fn disk_path(format: &str) -> Result<&'static str> {
    match format {
        "qcow2" => Ok("disk/disk.qcow2"),
        "raw" => Ok("disk/disk.img"),
        other => Err(Error::argument(format!("a containerDisk holds a qcow2 or raw disk, not {other}"))),
    }
}

/// The one-file tree of a containerDisk: `/disk/<name>` referring to `disk` on the host.
pub fn tree(disk: &Path, format: &str, mtime: u64) -> Result<Tree> {
    let mtime = Timestamp::from_secs(i64::try_from(mtime).unwrap_or(i64::MAX));
    let dir_meta = Meta::new(0o755, mtime);
    let mut t = Tree::new(dir_meta.clone());
    let (dir, name) = disk_path(format)?.split_once('/').unwrap_or(("disk", "disk.qcow2"));
    let parent = t.create_dir_all(dir.as_bytes(), &dir_meta)?;
    let meta = Meta { uid: QEMU_ID, gid: QEMU_ID, ..Meta::new(DISK_MODE, mtime) };
    let data = FileData::host(HostFile::open_path(disk)?);
    t.insert(parent, name.as_bytes(), Node::new(meta, Kind::File(data)))?;
    Ok(t)
}

/// Wraps the disk image at `disk` (`qcow2` or `raw`) into the containerDisk image `dst`
/// (`oci:DIR:TAG`, `oci-archive:FILE:TAG`): architecture amd64 (this does not look into
/// the disk; `vm` and `convert` go through [`Staged`], whose `arch` is the disk's), os
/// linux. Dates come
/// from `clock`, so under `SOURCE_DATE_EPOCH` the same disk gives the same digest.
/// `how` gives the threads and the Ctrl-C flag; the image config is the containerDisk's.
pub fn write(
    disk: &Path,
    format: &str,
    dst: &str,
    clock: &Provenance,
    how: WriteConfig,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    let dst_ref = ImageRef::parse(dst)?;
    if !matches!(dst_ref, ImageRef::Layout { .. } | ImageRef::OciArchive { .. }) {
        return Err(Error::argument(format!(
            "{dst}: a containerDisk is written as oci:DIR:TAG or oci-archive:FILE:TAG (push it with skopeo copy)"
        )));
    }
    let target = ImageTarget::open(dst_ref, &[disk])?;
    let tree = tree(disk, format, clock.now())?;
    wrap(&tree, target, clock, how, Arch::Amd64, progress)
}

/// Writes the one-file tree of a containerDisk as the image `dst_ref`.
fn wrap(
    tree: &Tree,
    target: ImageTarget,
    clock: &Provenance,
    how: WriteConfig,
    arch: Arch,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    let epoch = clock.now();
    // The image's platform is the disk's guest architecture: KubeVirt nodes of that
    // architecture pull it.
    let cfg = WriteConfig {
        architecture: Some(arch.name().into()),
        epoch,
        reproducible: clock.is_reproducible(),
        cancel: how.cancel,
        ..WriteConfig::new(how.threads)
    };
    write_image(tree, target, &cfg, progress)
}

/// `diskcast vm --profile kubevirt -o oci:DIR:TAG`: the qcow2 is written to a temporary
/// file beside the image target, then wrapped. The temporary file is removed when this
/// is dropped, on success or error, so no half-written output stays behind.
#[derive(Debug)]
pub struct Staged {
    /// Where the disk is written first.
    pub disk: PathBuf,
    /// The image target (`oci:DIR:TAG`, `oci-archive:FILE:TAG`).
    pub target: String,
    /// The guest's architecture, the image config's (set once the disk is planned).
    pub arch: Arch,
}

impl Staged {
    /// Checks `out` for `profile`: an image target exactly when the profile is kubevirt.
    /// `Ok(None)` means `out` is a plain disk file.
    pub fn for_output(profile: Option<Profile>, out: &str) -> Result<Option<Self>> {
        let is_image = diskcast_oci::is_image_ref(out);
        match (profile == Some(Profile::Kubevirt), is_image) {
            (false, false) => Ok(None),
            (true, false) => Err(Error::argument(format!(
                "--profile kubevirt writes a containerDisk image, oci:DIR:TAG or oci-archive:FILE:TAG, not {out}"
            ))),
            (false, true) => Err(Error::argument(format!(
                "{out} is a container image; only --profile kubevirt writes one (a containerDisk)"
            ))),
            (true, true) => {
                let beside = match ImageRef::parse(out)? {
                    ImageRef::Layout { dir, .. } => dir,
                    ImageRef::OciArchive { file, .. } => file,
                    _ => {
                        return Err(Error::argument(format!(
                            "{out}: a containerDisk is written as oci:DIR:TAG or oci-archive:FILE:TAG"
                        )));
                    }
                };
                let parent = beside.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    return Err(Error::argument(format!("the directory {} does not exist", parent.display())));
                }
                let name = beside.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let disk = parent.join(format!(".{name}.{}.containerdisk.qcow2", std::process::id()));
                Ok(Some(Staged { disk, target: out.to_string(), arch: Arch::Amd64 }))
            }
        }
    }

    /// Wraps the written qcow2 into `target` (this [`Staged::target`], opened by the
    /// caller's output path before any input was read). The tree holds the qcow2 open, so
    /// its name is removed before the wrapping starts: a `kill -9` from here on leaves
    /// nothing beside the target (the qcow2 itself was written unnamed until committed).
    /// `how` gives the threads and the Ctrl-C flag, as for [`write`].
    pub fn finish(
        &self,
        target: ImageTarget,
        clock: &Provenance,
        how: WriteConfig,
        progress: &dyn Progress,
    ) -> Result<WriteReport> {
        let tree = tree(&self.disk, "qcow2", clock.now())?;
        std::fs::remove_file(&self.disk)
            .map_err(|e| Error::io("cannot remove the staged disk", e).with_file(&self.disk))?;
        wrap(&tree, target, clock, how, self.arch, progress)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.disk);
    }
}
