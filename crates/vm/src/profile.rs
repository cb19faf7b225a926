//! Target profiles: what each platform demands of an uploaded disk.

use diskcast_block::{Error, Result};

/// A platform a disk is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Azure: fixed VHD whose virtual size is a whole number of MiB.
    Azure,
    /// VMware ESXi: streamOptimized VMDK.
    Esxi,
    /// AWS (VM import): streamOptimized VMDK.
    Aws,
    /// Hyper-V generation 2: VHDX, UEFI, GPT.
    Hyperv,
    /// KubeVirt: a qcow2 wrapped as a containerDisk OCI image.
    Kubevirt,
    /// QEMU/KVM: qcow2 with zstd compression.
    Qemu,
    /// Google Compute Engine: `disk.raw`, a whole number of GiB, in a gzip'd old GNU tar.
    Gce,
}

/// One GiB: Compute Engine's disk size unit.
pub const GIB: u64 = 1 << 30;

/// The block format and options a profile writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    /// Format name as `-O` takes it.
    pub format: &'static str,
    /// `-o` options.
    pub options: &'static [(&'static str, &'static str)],
    /// Compressed clusters/grains.
    pub compress: bool,
}

impl Profile {
    /// Every profile, in the order `--help` lists them.
    pub const ALL: [Profile; 7] =
        [Profile::Azure, Profile::Esxi, Profile::Aws, Profile::Hyperv, Profile::Kubevirt, Profile::Qemu, Profile::Gce];

    /// The profile called `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
            Error::argument(format!("--profile {name:?}: one of {}", names.join(", ")))
        })
    }

    /// The name `--profile` takes.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Azure => "azure",
            Profile::Esxi => "esxi",
            Profile::Aws => "aws",
            Profile::Hyperv => "hyperv",
            Profile::Kubevirt => "kubevirt",
            Profile::Qemu => "qemu",
            Profile::Gce => "gce",
        }
    }

    /// The format the disk is written in.
    pub fn output(self) -> OutputSpec {
        match self {
            Profile::Azure => {
                OutputSpec { format: "vhd", options: &[("subformat", "fixed"), ("force_size", "on")], compress: false }
            }
            Profile::Esxi | Profile::Aws => {
                OutputSpec { format: "vmdk", options: &[("subformat", "streamOptimized")], compress: true }
            }
            Profile::Hyperv => OutputSpec { format: "vhdx", options: &[], compress: false },
            Profile::Kubevirt => OutputSpec { format: "qcow2", options: &[], compress: false },
            Profile::Qemu => OutputSpec { format: "qcow2", options: &[("compression_type", "zstd")], compress: true },
            // The raw disk that goes into the tar (see [`Profile::archive`]).
            Profile::Gce => OutputSpec { format: "raw", options: &[], compress: false },
        }
    }

    /// The archive the disk is shipped in, when the platform takes one rather than a
    /// disk file: GCE's `*.tar.gz`.
    pub fn archive(self) -> Option<Archive> {
        match self {
            Profile::Gce => Some(Archive::GceTar),
            _ => None,
        }
    }

    /// Refuses a profile whose platform does not run `arch` guests. VMware ESXi is an
    /// x86-64 hypervisor (ESXi-Arm is a Fling, not the platform the profile's OVA
    /// targets) and Linux's vmw_pvscsi builds only for x86. The others run arm64: AWS
    /// Graviton (NVMe), Azure and Hyper-V on Arm64 (generation 2, hv_storvsc), Compute
    /// Engine's Arm machines (NVMe), QEMU/KVM and KubeVirt on Arm servers (virtio).
    pub fn check_arch(self, arch: crate::Arch) -> Result<()> {
        if self == Profile::Esxi && arch != crate::Arch::Amd64 {
            return Err(Error::argument(format!(
                "VMware ESXi (--profile esxi) runs x86-64 guests only, and Linux's paravirtual SCSI driver for it \
                 (vmw_pvscsi) exists only for x86; for an {arch} disk use --profile qemu, aws, azure, hyperv, gce or \
                 kubevirt, or no profile"
            ))
            .with_field("arch"));
        }
        Ok(())
    }

    /// Whether the platform boots only UEFI guests.
    pub fn requires_uefi(self) -> bool {
        matches!(self, Profile::Hyperv)
    }

    /// The disk size to write for a disk that needs `size` bytes.
    pub fn disk_size(self, size: u64) -> u64 {
        match self {
            Profile::Azure => size.next_multiple_of(1 << 20),
            // Compute Engine imports only disks of a whole number of GiB.
            Profile::Gce => size.next_multiple_of(GIB),
            _ => size,
        }
    }
}

/// A disk wrapped in an archive for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// Compute Engine's import format: `disk.raw` (sparse) in a gzip'd old GNU tar.
    GceTar,
    /// An OVA: OVF descriptor, manifest and streamOptimized VMDK in a tar.
    Ova,
}

impl Archive {
    /// The file name endings that say this archive (`-o NAME`), lowercase.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Archive::GceTar => &[".tar.gz", ".tgz"],
            Archive::Ova => &[".ova"],
        }
    }

    /// Whether `name` ends in one of [`suffixes`](Self::suffixes).
    pub fn named(self, name: &std::path::Path) -> bool {
        let n = name.to_string_lossy().to_ascii_lowercase();
        self.suffixes().iter().any(|s| n.ends_with(s))
    }
}

/// What a command writes under a profile: the user's `-O` and format options merged
/// with the profile's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOutput {
    /// Format name.
    pub format: String,
    /// Every format option, `key=value`: the user's, then the profile's they lacked.
    pub options: Vec<String>,
    /// Compressed output.
    pub compress: bool,
}

impl Profile {
    /// Merges what the user asked for (`format`: their `-O`, if any; `options`: their
    /// comma-separated format option groups; `compress`: their `-c`) with what the
    /// profile writes plus `extra` options. A contradiction is a usage error naming both
    /// sides; an option the user gave the profile's value is kept once.
    pub fn resolve(
        self,
        format: Option<&str>,
        options: &[String],
        compress: bool,
        extra: &[(&str, &str)],
    ) -> Result<ResolvedOutput> {
        let spec = self.output();
        if let Some(f) = format
            && f != spec.format
            && !(spec.format == "vhd" && f == "vpc")
        {
            return Err(Error::argument(format!(
                "-O {f} contradicts --profile {}, which writes {}; drop one of them",
                self.name(),
                spec.format
            )));
        }
        let given: Vec<(&str, &str)> = options
            .iter()
            .flat_map(|g| g.split(','))
            .filter_map(|o| o.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let mut out: Vec<String> = options.to_vec();
        for &(k, v) in spec.options.iter().chain(extra) {
            match given.iter().find(|(gk, _)| *gk == k) {
                Some((_, gv)) if *gv != v => {
                    return Err(Error::argument(format!(
                        "format option {k}={gv} contradicts --profile {}, which needs {k}={v}",
                        self.name()
                    )));
                }
                Some(_) => {}
                None => out.push(format!("{k}={v}")),
            }
        }
        Ok(ResolvedOutput { format: spec.format.to_string(), options: out, compress: compress || spec.compress })
    }
}
