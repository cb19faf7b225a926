//! Block devices as targets: a disk, a partition, an LV or a loop device is written only
//! when nothing uses it.
//!
//! [`open_target`] refuses, naming the reason, a device that is mounted or holds a
//! mounted partition, is a swap area, is part of a device-mapper or RAID device, holds
//! the running system (the device of `/`, the disk it is on, or what its device-mapper
//! or RAID device is built from; `/boot` and `/boot/efi` count too), is one of the
//! command's inputs or holds one (the filesystem an input file lives on, or the file a
//! loop device reads), is read-only, or is smaller than the image. What uses a device is read from `/proc/self/mountinfo`,
//! `/proc/swaps` and `/sys/dev/block/MAJ:MIN` (its partitions, `holders`, `slaves`,
//! `ro`). Then it is opened with `O_EXCL`, which the kernel refuses while anything
//! holds the device exclusively (a mount, swap, dm, md), and which keeps others from
//! claiming it while we write.

use crate::io::ImageFile;
use crate::{Error, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How deep `slaves` links are followed from the root filesystem's device (dm on md on
/// partitions is three); a loop in sysfs cannot make us walk forever.
const MAX_STACK_DEPTH: usize = 8;

/// A device number, `major:minor`.
pub type DevNo = (u32, u32);

/// The mount points whose devices hold the running system: writing over any of them
/// (or what they are built from) breaks the machine, mounted or not.
const SYSTEM_MOUNTS: [&str; 3] = ["/", "/boot", "/boot/efi"];

/// What a command reads, as the device checks see it: inputs that are block devices by
/// device number, files by device and inode with the device their filesystem is on.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    devices: Vec<DevNo>,
    files: Vec<InputFile>,
}

#[derive(Debug, Clone)]
struct InputFile {
    path: PathBuf,
    /// The device the file's filesystem is on (`st_dev`).
    fs: DevNo,
    /// `(st_dev, st_ino)`.
    id: (u64, u64),
}

impl Inputs {
    /// The inputs among `paths` that exist (symlinks followed); the others are the
    /// opening's business.
    pub fn of<P: AsRef<Path>>(paths: &[P]) -> Inputs {
        let mut inputs = Inputs::default();
        for p in paths.iter().map(AsRef::as_ref) {
            let Ok(m) = std::fs::metadata(p) else { continue };
            if m.file_type().is_block_device() {
                inputs.devices.push(split_rdev(m.rdev()));
            } else if m.is_file() {
                inputs.files.push(InputFile { path: p.to_path_buf(), fs: split_rdev(m.dev()), id: (m.dev(), m.ino()) });
            }
        }
        inputs
    }

    /// Inputs that are the block devices `devices` (tests).
    pub fn devices(devices: &[DevNo]) -> Inputs {
        Inputs { devices: devices.to_vec(), files: Vec::new() }
    }
}

/// A block device as the prompt before writing shows it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The kernel's name (`sdb`, `loop3`, `nvme0n1p2`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Vendor and model, where the device reports them.
    pub model: Option<String>,
    /// The file a loop device reads.
    pub backing_file: Option<String>,
    /// Partitions: name and size in bytes.
    pub partitions: Vec<(String, u64)>,
}

/// Where the kernel's views are (the real `/proc` and `/sys`, or a copy in tests).
#[derive(Debug, Clone)]
pub struct HostView {
    /// `/proc`.
    pub proc: PathBuf,
    /// `/sys`.
    pub sys: PathBuf,
}

impl Default for HostView {
    fn default() -> Self {
        HostView { proc: PathBuf::from("/proc"), sys: PathBuf::from("/sys") }
    }
}

/// One block device as sysfs shows it.
#[derive(Debug, Clone)]
struct SysDev {
    name: String,
    dev: DevNo,
    dir: PathBuf,
}

/// `major:minor` of a `dev` file or a mountinfo field.
fn parse_devno(text: &str) -> Option<DevNo> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The major and minor numbers of `rdev` (glibc's `gnu_dev_major`/`gnu_dev_minor`).
pub fn split_rdev(rdev: u64) -> DevNo {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (u32::try_from(major).unwrap_or(u32::MAX), u32::try_from(minor).unwrap_or(u32::MAX))
}

/// `(device, mount point)` of every mount, from mountinfo's third and fifth fields.
fn parse_mountinfo(text: &str) -> Vec<(DevNo, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((parse_devno(f.get(2)?)?, unescape(f.get(4)?)))
        })
        .collect()
}

/// The paths of `/proc/swaps` (its first column, after the header line).
fn parse_swaps(text: &str) -> Vec<String> {
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(unescape).collect()
}

/// The kernel writes space, tab, newline and backslash in these files as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl HostView {
    fn read(&self, path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The device `dev` in sysfs.
    fn device(&self, dev: DevNo) -> Option<SysDev> {
        let dir = std::fs::canonicalize(self.sys.join(format!("dev/block/{}:{}", dev.0, dev.1))).ok()?;
        let name = dir.file_name()?.to_string_lossy().into_owned();
        Some(SysDev { name, dev, dir })
    }

    /// A device's size in bytes: sysfs counts 512-byte sectors whatever the block size.
    fn size(&self, d: &SysDev) -> Option<u64> {
        self.read(&d.dir.join("size")).trim().parse::<u64>().ok()?.checked_mul(512)
    }

    /// The device `dev` as the prompt before writing shows it.
    pub fn describe(&self, dev: DevNo) -> Option<DeviceInfo> {
        let me = self.device(dev)?;
        let text = |rel: &str| Some(self.read(&me.dir.join(rel)).trim().to_string()).filter(|t| !t.is_empty());
        let model = match (text("device/vendor"), text("device/model")) {
            (Some(v), Some(m)) => Some(format!("{v} {m}")),
            (v, m) => v.or(m),
        };
        let mut partitions: Vec<(String, u64)> =
            self.partitions(&me).iter().map(|p| (p.name.clone(), self.size(p).unwrap_or(0))).collect();
        partitions.sort();
        Some(DeviceInfo {
            name: me.name.clone(),
            size: self.size(&me)?,
            model,
            backing_file: text("loop/backing_file"),
            partitions,
        })
    }

    /// The partitions of a whole-disk device (none for a partition).
    fn partitions(&self, d: &SysDev) -> Vec<SysDev> {
        let mut parts = Vec::new();
        for e in std::fs::read_dir(&d.dir).into_iter().flatten().flatten() {
            let dir = e.path();
            if dir.join("partition").is_file()
                && let Some(dev) = parse_devno(&self.read(&dir.join("dev")))
            {
                parts.push(SysDev { name: e.file_name().to_string_lossy().into_owned(), dev, dir });
            }
        }
        parts
    }

    /// The whole disk a partition belongs to (itself for a whole disk).
    fn whole_disk(&self, d: &SysDev) -> SysDev {
        if d.dir.join("partition").is_file()
            && let Some(parent) = d.dir.parent()
            && let Some(dev) = parse_devno(&self.read(&parent.join("dev")))
        {
            let name = parent.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return SysDev { name, dev, dir: parent.to_path_buf() };
        }
        d.clone()
    }

    /// The devices a device-mapper or RAID device is built from, recursively, with the
    /// device itself and the whole disks of all of them.
    fn stack(&self, top: &SysDev) -> Vec<SysDev> {
        let mut all = vec![top.clone()];
        let mut frontier = vec![top.clone()];
        for _ in 0..MAX_STACK_DEPTH {
            let mut next = Vec::new();
            for d in &frontier {
                for e in std::fs::read_dir(d.dir.join("slaves")).into_iter().flatten().flatten() {
                    let dir = std::fs::canonicalize(e.path()).unwrap_or_else(|_| e.path());
                    if let Some(dev) = parse_devno(&self.read(&dir.join("dev")))
                        && !all.iter().any(|a| a.dev == dev)
                    {
                        let s = SysDev { name: e.file_name().to_string_lossy().into_owned(), dev, dir };
                        all.push(s.clone());
                        next.push(s);
                    }
                }
            }
            frontier = next;
        }
        let disks: Vec<SysDev> = all.iter().map(|d| self.whole_disk(d)).collect();
        for d in disks {
            if !all.iter().any(|a| a.dev == d.dev) {
                all.push(d);
            }
        }
        all
    }

    /// Why the device `dev` must not be written, or `None`.
    pub fn why_busy(&self, dev: DevNo, inputs: &Inputs) -> Option<String> {
        let Some(me) = self.device(dev) else {
            return Some(format!("block device {}:{} is not in {}", dev.0, dev.1, self.sys.display()));
        };
        let mut mine = vec![me.clone()];
        mine.extend(self.partitions(&me));
        let who = |d: &SysDev| if d.dev == me.dev { me.name.clone() } else { format!("its partition {}", d.name) };
        let what = |d: &SysDev| format!("{} is", who(d));
        if inputs.devices.contains(&me.dev) {
            return Some(format!("{} is the input itself", me.name));
        }
        if let Some(d) = mine.iter().find(|d| inputs.devices.contains(&d.dev)) {
            return Some(format!("{} an input of this command", what(d)));
        }
        for f in &inputs.files {
            let Some(fs) = self.device(f.fs) else { continue };
            let under = self.stack(&fs);
            if let Some(d) = mine.iter().find(|d| under.iter().any(|s| s.dev == d.dev)) {
                return Some(format!(
                    "{} holds the input {} (its filesystem is on {})",
                    who(d),
                    f.path.display(),
                    fs.name
                ));
            }
        }
        let backing = self.read(&me.dir.join("loop/backing_file"));
        if let Ok(m) = std::fs::metadata(backing.trim())
            && let Some(f) = inputs.files.iter().find(|f| f.id == (m.dev(), m.ino()))
        {
            return Some(format!("{} is a loop device over the input {}", me.name, f.path.display()));
        }
        let mounts = parse_mountinfo(&self.read(&self.proc.join("self/mountinfo")));
        for at in SYSTEM_MOUNTS {
            let Some(sys) = mounts.iter().find(|(_, m)| m == at).and_then(|(d, _)| self.device(*d)) else { continue };
            let system = self.stack(&sys);
            if let Some(d) = mine.iter().find(|d| system.iter().any(|s| s.dev == d.dev)) {
                return Some(format!("{} holds the running system ({at} is on {})", who(d), sys.name));
            }
        }
        for d in &mine {
            if let Some((_, at)) = mounts.iter().find(|(m, _)| *m == d.dev) {
                return Some(format!("{} mounted at {at}", what(d)));
            }
        }
        for path in parse_swaps(&self.read(&self.proc.join("swaps"))) {
            let Ok(m) = std::fs::metadata(&path) else { continue };
            let swap_dev = split_rdev(m.rdev());
            if m.file_type().is_block_device()
                && let Some(d) = mine.iter().find(|d| d.dev == swap_dev)
            {
                return Some(format!("{} a swap area ({path} in /proc/swaps)", what(d)));
            }
        }
        for d in &mine {
            if let Some(h) = std::fs::read_dir(d.dir.join("holders")).into_iter().flatten().flatten().next() {
                let holder = h.file_name().to_string_lossy().into_owned();
                let dm_name = self.read(&h.path().join("dm/name"));
                let named = if dm_name.trim().is_empty() { holder } else { format!("{holder} ({})", dm_name.trim()) };
                return Some(format!("{} part of {named}, a device-mapper or RAID device", what(d)));
            }
        }
        if self.read(&me.dir.join("ro")).trim() == "1" {
            return Some(format!("{} is read-only", me.name));
        }
        None
    }
}

/// Checks the block device `path` as a target for an image of `needed` bytes read from
/// `inputs` (the module docs say what is refused), without opening it, and describes it.
pub fn check<P: AsRef<Path>>(path: &Path, needed: u64, inputs: &[P]) -> Result<DeviceInfo> {
    let m = std::fs::metadata(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
    if !m.file_type().is_block_device() {
        return Err(Error::argument("not a block device").with_file(path));
    }
    let host = HostView::default();
    let dev = split_rdev(m.rdev());
    if let Some(why) = host.why_busy(dev, &Inputs::of(inputs)) {
        return Err(Error::refused(format!("will not write this block device: {why}")).with_file(path));
    }
    let info = host.describe(dev).ok_or_else(|| {
        Error::refused(format!("will not write this block device: its size is not in {}", host.sys.display()))
            .with_file(path)
    })?;
    refuse_small(path, info.size, needed)?;
    Ok(info)
}

fn refuse_small(path: &Path, len: u64, needed: u64) -> Result<()> {
    if len < needed {
        return Err(Error::refused(format!(
            "will not write this block device: it holds {len} bytes, less than the {needed}-byte image"
        ))
        .with_file(path));
    }
    Ok(())
}

/// Opens the block device `path` to write an image of `needed` bytes into it, after the
/// checks of the module docs ([`check`]); `inputs` are the files the command reads.
/// Large aligned writes go to the device directly, past the page cache.
pub fn open_target<P: AsRef<Path>>(path: &Path, needed: u64, inputs: &[P]) -> Result<ImageFile> {
    check(path, needed, inputs)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(i32::from_ne_bytes(rustix::fs::OFlags::EXCL.bits().to_ne_bytes()))
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(n) if n == rustix::io::Errno::BUSY.raw_os_error() => Error::refused(
                "will not write this block device: the kernel has it in use (mounted, a swap area, or part of a \
                 RAID or device-mapper device) or another program opened it exclusively",
            )
            .with_file(path),
            Some(n) if n == rustix::io::Errno::ROFS.raw_os_error() || n == rustix::io::Errno::ACCESS.raw_os_error() => {
                Error::refused("will not write this block device: it is read-only").with_file(path)
            }
            _ => Error::io("cannot open for writing", e).with_file(path),
        })?;
    let file = ImageFile::from_file(file, path).with_direct_writes(path);
    refuse_small(path, file.len()?, needed)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys and /proc: loop0 (7:0) with partition loop0p1 (259:0), vda (253:0)
    /// with vda1 (253:1) under dm-0 (252:0), which holds /.
    fn host(mountinfo: &str) -> (tempfile::TempDir, HostView) {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let dev = |dir: &Path, no: &str| {
            std::fs::create_dir_all(dir.join("holders")).unwrap();
            std::fs::write(dir.join("dev"), format!("{no}\n")).unwrap();
            std::fs::write(dir.join("ro"), "0\n").unwrap();
        };
        let blk = sys.join("devices/virtual/block");
        let loop0 = blk.join("loop0");
        dev(&loop0, "7:0");
        dev(&loop0.join("loop0p1"), "259:0");
        std::fs::write(loop0.join("loop0p1/partition"), "1\n").unwrap();
        let vda = sys.join("devices/pci/vda");
        dev(&vda, "253:0");
        dev(&vda.join("vda1"), "253:1");
        std::fs::write(vda.join("vda1/partition"), "1\n").unwrap();
        let dm = blk.join("dm-0");
        dev(&dm, "252:0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(vda.join("vda1"), dm.join("slaves/vda1")).unwrap();
        std::os::unix::fs::symlink(&dm, vda.join("vda1/holders/dm-0")).unwrap();
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        std::fs::write(dm.join("dm/name"), "vg-root\n").unwrap();
        let by_no = sys.join("dev/block");
        std::fs::create_dir_all(&by_no).unwrap();
        for (no, dir) in [("7:0", loop0.clone()), ("259:0", loop0.join("loop0p1")), ("253:0", vda.clone())] {
            std::os::unix::fs::symlink(dir, by_no.join(no)).unwrap();
        }
        std::os::unix::fs::symlink(vda.join("vda1"), by_no.join("253:1")).unwrap();
        std::os::unix::fs::symlink(&dm, by_no.join("252:0")).unwrap();
        let proc = t.path().join("proc");
        std::fs::create_dir_all(proc.join("self")).unwrap();
        std::fs::write(proc.join("self/mountinfo"), mountinfo).unwrap();
        std::fs::write(proc.join("swaps"), "Filename\tType\tSize\tUsed\tPriority\n").unwrap();
        for (dir, sectors) in [(loop0.clone(), "131072"), (loop0.join("loop0p1"), "129024")] {
            std::fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
        }
        (t, HostView { proc, sys })
    }

    const ROOT_ON_DM: &str = "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n";

    #[test]
    fn each_reason_is_named() {
        let (_t, h) = host(ROOT_ON_DM);
        let none = Inputs::default();
        assert_eq!(h.why_busy((7, 0), &none), None);
        assert_eq!(h.why_busy((7, 0), &Inputs::devices(&[(7, 0)])).unwrap(), "loop0 is the input itself");
        assert!(
            h.why_busy((7, 0), &Inputs::devices(&[(259, 0)])).unwrap().contains("its partition loop0p1 is an input")
        );
        let why = h.why_busy((253, 0), &none).unwrap();
        assert!(why.contains("holds the running system") && why.contains("dm-0"), "{why}");
        assert!(h.why_busy((253, 1), &none).unwrap().contains("holds the running system"));

        let (_t, h) = host(&format!("{ROOT_ON_DM}40 22 259:0 / /mnt/my\\040data rw - ext4 /dev/loop0p1 rw\n"));
        assert_eq!(h.why_busy((7, 0), &Inputs::default()).unwrap(), "its partition loop0p1 is mounted at /mnt/my data");
        assert_eq!(h.why_busy((259, 0), &Inputs::default()).unwrap(), "loop0p1 is mounted at /mnt/my data");

        let (_t, h) = host("22 1 0:21 / / rw - overlay overlay rw\n");
        assert!(h.why_busy((253, 0), &none).unwrap().contains("part of dm-0 (vg-root)"));
        std::fs::write(h.sys.join("devices/virtual/block/loop0/ro"), "1\n").unwrap();
        assert_eq!(h.why_busy((7, 0), &Inputs::default()).unwrap(), "loop0 is read-only");
        assert!(h.why_busy((9, 9), &Inputs::default()).unwrap().contains("is not in"));
    }

    /// A device holding an input file's filesystem, a loop device reading the input, and
    /// the device of /boot are refused as what they are.
    #[test]
    fn inputs_and_boot_are_held() {
        let (t, h) = host("22 1 0:21 / / rw - overlay overlay rw\n30 22 253:1 / /boot rw - ext4 /dev/vda1 rw\n");
        let why = h.why_busy((253, 0), &Inputs::default()).unwrap();
        assert_eq!(why, "vda holds the running system (/boot is on vda1)");
        let img = t.path().join("disk.qcow2");
        std::fs::write(&img, b"x").unwrap();
        let m = std::fs::metadata(&img).unwrap();
        let on_p1 = Inputs {
            devices: Vec::new(),
            files: vec![InputFile { path: img.clone(), fs: (259, 0), id: (m.dev(), m.ino()) }],
        };
        assert_eq!(
            h.why_busy((7, 0), &on_p1).unwrap(),
            format!("loop0 holds the input {} (its filesystem is on loop0p1)", img.display())
        );
        let elsewhere = Inputs { files: vec![InputFile { fs: (1, 1), ..on_p1.files[0].clone() }], ..on_p1 };
        assert_eq!(h.why_busy((7, 0), &elsewhere), None);
        let loop_dir = h.sys.join("devices/virtual/block/loop0/loop");
        std::fs::create_dir_all(&loop_dir).unwrap();
        std::fs::write(loop_dir.join("backing_file"), format!("{}\n", img.display())).unwrap();
        assert_eq!(
            h.why_busy((7, 0), &elsewhere).unwrap(),
            format!("loop0 is a loop device over the input {}", img.display())
        );
        let info = h.describe((7, 0)).unwrap();
        assert_eq!((info.name.as_str(), info.size), ("loop0", 64 << 20));
        assert_eq!(info.partitions, [("loop0p1".to_string(), 129024 * 512)]);
        assert_eq!(info.backing_file, Some(img.display().to_string()));
    }

    #[test]
    fn kernel_files_parse() {
        assert_eq!(split_rdev(0x0700), (7, 0));
        assert_eq!(split_rdev((259 << 8) | 3), (259, 3));
        assert_eq!(split_rdev((259 << 8) | 0x45 | (0x12300 << 12)), (259, 0x12345));
        assert_eq!(
            parse_swaps("Filename Type\n/dev/sda2 partition 1 0 -2\n/swap\\040file file 1 0 -3\n"),
            ["/dev/sda2", "/swap file"]
        );
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    }
}
